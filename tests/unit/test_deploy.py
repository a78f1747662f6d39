"""The container deployment in deploy/, in this process: the built-in Kubernetes kinds
checked by a real validator (kubernetes-validate, of the ``test`` extra), shown to reject a
broken copy (so a green run means something), and the files checked against one another and
against the daemon itself (its config loader, its lane layout, its ports). The validators
that run as processes of their own (check-jsonschema, hadolint) are in the end-to-end tests.
Nothing is downloaded at run time.
"""

from __future__ import annotations

import copy
import functools
import importlib.metadata
import importlib.util
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from packaging.version import Version

from ai_analytics.client import _layout
from ai_analytics.client._segments import (
    DAEMON_UID_ENV,
    DEFAULT_NAMESPACE,
    NAMESPACE_ENV,
    SEGMENT_DIR_ENV,
)
from ai_analytics.core.config import Config, config_from_mapping

from helpers import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    KUBERNETES,
    REPO,
    TOPOLOGIES,
    Manifest,
    is_custom_resource,
    manifest_files,
    yaml_documents,
)

DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
RULES = REPO / "docs" / "prometheus" / "rules.yml"

# The sidecar is a native sidecar (an init container with restartPolicy: Always), on by
# default from Kubernetes 1.29: the manifests are checked against that and the newest release
# the installed kubernetes-validate knows.
OLDEST_KUBERNETES = Version("1.29")
DAEMON_CONTAINER = "ai-analyticsd"
DAEMON_IMAGE = "ai-analyticsd"
# The lanes volume must hold at least this many lanes of the configured geometry.
MIN_LANES = 64
# The job the alerting rules' AIAnalyticsDaemonDown expects (docs/fleet.md).
JOB = "ai-analytics"


# -- reading the files -----------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):  # also inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = (pending + stripped).strip()
        pending = ""
        keyword, _, rest = whole.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


@dataclass(frozen=True)
class Image:
    """What deploy/Dockerfile says about the runtime image."""

    uid: int
    gid: int
    config_path: str
    healthcheck: str
    exposed: tuple[int, ...]
    from_images: tuple[str, ...]
    copied: tuple[str, ...]  # sources of COPY from the build context
    stop_signal: str
    entrypoint: str


@functools.cache
def image() -> Image:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    users = [args for keyword, args in instructions if keyword == "USER"]
    uid, _, gid = users[-1].partition(":")
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    config = re.search(r"\bAI_ANALYTICS_CONFIG=(\S+)", env)
    assert config, "the image sets no AI_ANALYTICS_CONFIG"
    copied: list[str] = []
    for keyword, args in instructions:
        if keyword == "COPY" and "--from=" not in args:
            copied.extend(args.split()[:-1])
    return Image(
        uid=int(uid),
        gid=int(gid),
        config_path=config[1],
        healthcheck=next(args for keyword, args in instructions if keyword == "HEALTHCHECK"),
        exposed=tuple(int(p.split("/")[0]) for k, a in instructions if k == "EXPOSE"
                      for p in a.split()),
        from_images=tuple(args.split()[0] for keyword, args in instructions if keyword == "FROM"),
        copied=tuple(copied),
        stop_signal=next(args for keyword, args in instructions if keyword == "STOPSIGNAL"),
        entrypoint=next(args for keyword, args in instructions if keyword == "ENTRYPOINT"),
    )


def daemon_config(data: object, source: str) -> Config:
    """The daemon's Config for a config.yaml mapping, through the daemon's own loader."""
    assert isinstance(data, dict), f"{source}: not a mapping"
    config = config_from_mapping(data, source)
    assert config.segment_dir.startswith("/"), f"{source}: segment_dir {config.segment_dir!r}"
    return config


def lane_bytes(config: Config) -> int:
    return _layout.lane_size(config.max_queue_size, config.names_per_lane)


_BINARY_SUFFIXES = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def kubernetes_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity with a binary suffix (or none), in bytes."""
    match = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi)?", quantity)
    assert match, f"unexpected quantity {quantity!r}"
    return int(match[1]) * _BINARY_SUFFIXES.get(match[2] or "", 1)


def project_version() -> str:
    return importlib.metadata.version("ai-analytics")


# -- Kubernetes: pods, containers and what they share ----------------------------------------


@dataclass(frozen=True)
class Pod:
    """A pod template of a workload, with the manifest it comes from."""

    workload: Manifest
    spec: Manifest

    @property
    def labels(self) -> dict[str, str]:
        return self.workload["spec"]["template"]["metadata"].get("labels", {})

    def containers(self) -> Iterator[Manifest]:
        yield from self.spec.get("initContainers", [])
        yield from self.spec["containers"]

    def volume(self, name: str) -> Manifest:
        return next(v for v in self.spec.get("volumes", []) if v["name"] == name)

    def security(self, container: Manifest) -> Manifest:
        """The container's effective security context: the container's over the pod's."""
        merged = {k: v for k, v in self.spec.get("securityContext", {}).items()
                  if k not in ("fsGroup", "fsGroupChangePolicy", "supplementalGroups",
                               "sysctls")}
        merged.update(container.get("securityContext", {}))
        return merged

    def groups(self, container: Manifest) -> set[int]:
        """Every group the container's processes have."""
        pod = self.spec.get("securityContext", {})
        groups = set(pod.get("supplementalGroups", []))
        if "fsGroup" in pod:
            groups.add(pod["fsGroup"])
        gid = self.security(container).get("runAsGroup")
        if gid is not None:
            groups.add(gid)
        return groups

    def mount_source(self, container: Manifest, mount_path: str) -> tuple[str, ...]:
        """What is mounted at ``mount_path`` in ``container``: the same tuple for two mounts
        means the same directory (an emptyDir of this pod, or a directory of the node)."""
        mount = next((m for m in container.get("volumeMounts", [])
                      if m["mountPath"] == mount_path), None)
        assert mount, f"{container['name']}: nothing mounted at {mount_path}"
        volume = self.volume(mount["name"])
        if "hostPath" in volume:
            path = volume["hostPath"]["path"].rstrip("/")
            if mount.get("subPath"):
                path = f"{path}/{mount['subPath']}"
            return ("node", path)
        if "emptyDir" in volume:
            return ("pod", self.workload["metadata"]["name"], volume["name"])
        raise AssertionError(f"{container['name']}: {mount_path} is not a shared directory")


@dataclass(frozen=True)
class Topology:
    name: str
    documents: tuple[Manifest, ...]

    def of_kind(self, kind: str) -> list[Manifest]:
        return [doc for doc in self.documents if doc["kind"] == kind]

    def pods(self) -> list[Pod]:
        return [Pod(doc, doc["spec"]["template"]["spec"]) for doc in self.documents
                if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job")]

    def daemon(self) -> tuple[Pod, Manifest]:
        found = [(pod, c) for pod in self.pods() for c in pod.containers()
                 if c["name"] == DAEMON_CONTAINER]
        assert len(found) == 1, f"{self.name}: {len(found)} containers named {DAEMON_CONTAINER}"
        return found[0]

    def workers(self) -> list[tuple[Pod, Manifest]]:
        return [(pod, c) for pod in self.pods() for c in pod.containers()
                if any(e["name"] == SEGMENT_DIR_ENV for e in c.get("env", []))]

    def config(self) -> Config:
        """The daemon's config, through the daemon's own loader."""
        return daemon_config(self.config_mapping(), f"{self.name}/configmap")

    def config_mapping(self) -> dict[str, object]:
        """The daemon's config.yaml: the ConfigMap mounted where the image reads its config."""
        pod, daemon = self.daemon()
        config_dir, _, filename = image().config_path.rpartition("/")
        mount = next(m for m in daemon["volumeMounts"] if m["mountPath"] == config_dir)
        volume = pod.volume(mount["name"])
        name = volume["configMap"]["name"]
        configmap = next(c for c in self.of_kind("ConfigMap") if c["metadata"]["name"] == name)
        mapping = yaml.safe_load(configmap["data"][filename])
        assert isinstance(mapping, dict), f"{self.name}/configmap {name}: not a mapping"
        return mapping


@functools.cache
def topology(name: str) -> Topology:
    docs = [doc for path in sorted((KUBERNETES / name).glob("*.yaml"))
            if path.name != "kustomization.yaml" for doc in yaml_documents(path)]
    return Topology(name, tuple(docs))


def env_value(container: Manifest, name: str) -> str | None:
    return next((e.get("value") for e in container.get("env", []) if e["name"] == name), None)


def namespace_of(container: Manifest, settings: dict[str, object] | None = None) -> object:
    """The namespace a worker (or, with its config, the daemon) uses: the config's
    namespace, else $AI_ANALYTICS_NAMESPACE, else the default."""
    if settings and "namespace" in settings:
        return settings["namespace"]
    return env_value(container, NAMESPACE_ENV) or DEFAULT_NAMESPACE


# -- the tools -------------------------------------------------------------------------------


def kubernetes_versions() -> list[str]:
    known = sorted({Version(v) for v in kubernetes_validate.utils.all_versions()})
    wanted = [v for v in known if v >= OLDEST_KUBERNETES]
    assert wanted, f"kubernetes-validate knows no Kubernetes >= {OLDEST_KUBERNETES}: {known}"
    return sorted({str(wanted[0]), str(wanted[-1])}, key=Version)


def validate_builtin(doc: Manifest) -> None:
    """kubernetes-validate in strict mode (unknown fields are errors), for the oldest
    supported and the newest known Kubernetes. A kind it has no schema for fails here:
    kubernetes-validate itself would only warn."""
    for version in kubernetes_versions():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise AssertionError(exc.message) from None


# -- Kubernetes manifests: schemas -----------------------------------------------------------


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    """Every built-in-kind manifest validates against the Kubernetes schemas of the oldest
    supported and the newest known release, strictly (a misspelt field is an error)."""
    docs = yaml_documents(path)
    assert docs, f"{path}: no document"
    for doc in docs:
        if not is_custom_resource(doc):
            validate_builtin(doc)


def _sidecar_daemon(doc: Manifest) -> Manifest:
    return next(c for c in doc["spec"]["template"]["spec"]["initContainers"]
                if c["name"] == DAEMON_CONTAINER)


def _misspell_read_only_root(doc: Manifest) -> None:
    context = _sidecar_daemon(doc)["securityContext"]
    context["readOnlyRootFileSystem"] = context.pop("readOnlyRootFilesystem")


def _port_as_string(doc: Manifest) -> None:
    port = _sidecar_daemon(doc)["ports"][0]
    port["containerPort"] = str(port["containerPort"])


def _volume_in_container(doc: Manifest) -> None:
    _sidecar_daemon(doc)["emptyDir"] = {"medium": "Memory"}


BROKEN_DEPLOYMENTS: dict[str, Callable[[Manifest], None]] = {
    "misspelt field": _misspell_read_only_root,
    "wrong type": _port_as_string,
    "field in the wrong place": _volume_in_container,
}


@pytest.mark.parametrize("breakage", sorted(BROKEN_DEPLOYMENTS))
def test_kubernetes_validate_rejects_a_broken_deployment(breakage: str) -> None:
    """The Kubernetes validation is live: a broken copy of the sidecar Deployment is
    rejected."""
    (doc,) = yaml_documents(KUBERNETES / "sidecar" / "deployment.yaml")
    validate_builtin(doc)
    broken = copy.deepcopy(doc)
    BROKEN_DEPLOYMENTS[breakage](broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_builtin(broken)


def test_a_kind_without_schema_is_not_passed_silently() -> None:
    """A resource kubernetes-validate has no schema for (which it would pass with a warning)
    fails the manifest check instead of slipping through unchecked."""
    doc = {"apiVersion": "example.com/v1", "kind": "Unknown", "metadata": {"name": "x"}}
    with pytest.raises(AssertionError, match="Couldn't find schema"):
        validate_builtin(doc)


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_kustomization_lists_every_manifest(name: str) -> None:
    """Each topology's kustomization.yaml (kubectl apply -k) lists exactly the manifests
    beside it and nothing else (no kustomize binary offline: checked structurally)."""
    directory = KUBERNETES / name
    (kustomization,) = yaml_documents(directory / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization) == {"apiVersion", "kind", "resources"}
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == sorted(p.name for p in directory.glob("*.yaml")
                                    if p.name != "kustomization.yaml")


# -- Kubernetes manifests: agreement with one another and with the daemon --------------------


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_daemon_config_in_configmap_is_accepted(name: str) -> None:
    """The config.yaml in the ConfigMap, mounted where the image reads its config
    ($AI_ANALYTICS_CONFIG), is accepted by the daemon's own config loader, listens on the
    pod IP, and stops well within the pod's grace period."""
    topo = topology(name)
    config = topo.config()
    assert config.http_host == "0.0.0.0"
    pod, _ = topo.daemon()
    grace = pod.spec.get("terminationGracePeriodSeconds", 30)
    assert grace >= config.stop_timeout_seconds + 5


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_workers_and_daemon_share_the_segment_dir(name: str) -> None:
    """segment_dir is where the daemon's lanes volume is mounted, and every worker's
    AI_ANALYTICS_SEGMENT_DIR is where the same directory (same emptyDir, or same node path)
    is mounted in the worker; the directory is memory (an emptyDir of medium Memory, or a
    node path on a tmpfs) big enough for MIN_LANES lanes; both sides use the same
    namespace."""
    topo = topology(name)
    config = topo.config()
    pod, daemon = topo.daemon()
    shared = pod.mount_source(daemon, config.segment_dir)
    workers = topo.workers()
    assert workers, f"{name}: no worker sets {SEGMENT_DIR_ENV}"
    namespace = namespace_of(daemon, topo.config_mapping())
    for worker_pod, worker in workers:
        assert namespace_of(worker) == namespace
        worker_dir = env_value(worker, SEGMENT_DIR_ENV)
        assert worker_dir, f"{worker['name']}: {SEGMENT_DIR_ENV} is empty"
        assert worker_pod.mount_source(worker, worker_dir) == shared
    if shared[0] == "pod":
        empty_dir = pod.volume(shared[2])["emptyDir"]
        assert empty_dir["medium"] == "Memory"
        assert kubernetes_bytes(empty_dir["sizeLimit"]) >= MIN_LANES * lane_bytes(config)
    else:
        # /var/run is /run on the node: a tmpfs, sized by the node's memory.
        assert re.match(r"/(var/run|run|dev/shm)/", shared[1]), shared


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_uids_and_group_agree(name: str) -> None:
    """The daemon runs as the image's uid, which every worker names in AI_ANALYTICS_DAEMON_UID;
    each worker runs under a uid of its own that the daemon's trusted_uids lists; and
    worker and daemon share the daemon's group, which the lanes directory carries."""
    topo = topology(name)
    config = topo.config()
    pod, daemon = topo.daemon()
    security = pod.security(daemon)
    assert (security["runAsUser"], security["runAsGroup"]) == (image().uid, image().gid)
    shared_gid = security["runAsGroup"]
    for worker_pod, worker in topo.workers():
        uid = worker_pod.security(worker)["runAsUser"]
        assert uid != image().uid
        assert uid in config.trusted_uids
        assert env_value(worker, DAEMON_UID_ENV) == str(image().uid)
        assert shared_gid in worker_pod.groups(worker)
    shared = pod.mount_source(daemon, config.segment_dir)
    if shared[0] == "pod":
        # An emptyDir gets the pod's fsGroup (and the setgid bit).
        assert pod.spec["securityContext"]["fsGroup"] == shared_gid
    else:
        # A hostPath does not: the init container sets the group, from these variables.
        (prepare,) = pod.spec["initContainers"]
        assert env_value(prepare, "SHARED_GID") == str(shared_gid)
        assert env_value(prepare, "DAEMON_UID") == str(image().uid)
        script = "\n".join(prepare["args"])
        assert 'chgrp "$SHARED_GID"' in script and "chmod 2770" in script
        # Root, but with only what chgrp, chown and a setgid chmod need (FSETID: without it
        # the kernel drops the setgid bit, and lanes would get each worker's own group).
        assert prepare["securityContext"]["capabilities"] == {
            "drop": ["ALL"], "add": ["CHOWN", "FOWNER", "FSETID"]}
        assert prepare["securityContext"]["allowPrivilegeEscalation"] is False


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_state_dir_is_a_volume(name: str) -> None:
    """state_dir is a mounted volume (the root file system is read-only): a node directory
    for the DaemonSet, so counts survive restarts; an emptyDir large enough for the history
    database in the sidecar."""
    topo = topology(name)
    config = topo.config()
    pod, daemon = topo.daemon()
    source = pod.mount_source(daemon, config.state_dir)
    if name == "daemonset":
        assert source[0] == "node"
    else:
        size = kubernetes_bytes(pod.volume(source[2])["emptyDir"]["sizeLimit"])
        assert size > config.history_max_megabytes * 1e6


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_port_probes_and_podmonitor_agree(name: str) -> None:
    """The daemon's named port is http_port; liveness, readiness (and startup) probes GET
    /healthz on it; the PodMonitor selects the daemon's pods, scrapes /metrics on that port
    and sets the job the alerting rules expect."""
    topo = topology(name)
    config = topo.config()
    pod, daemon = topo.daemon()
    (port,) = daemon["ports"]
    assert port["containerPort"] == config.http_port
    assert "livenessProbe" in daemon and "readinessProbe" in daemon
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        if kind in daemon:
            assert daemon[kind]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    (monitor,) = topo.of_kind("PodMonitor")
    selector = monitor["spec"]["selector"]
    assert set(selector) == {"matchLabels"}
    assert selector["matchLabels"].items() <= pod.labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == (port["name"], "/metrics")
    assert {"targetLabel": "job", "replacement": JOB} in endpoint["relabelings"]
    assert f'up{{job="{JOB}"}}' in RULES.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_containers_are_hardened_and_share_no_process_namespace(name: str) -> None:
    """The daemon (and every worker) runs non-root on a read-only root with no capability,
    no privilege escalation and the runtime's seccomp profile; no pod shares a process or
    IPC namespace with the host or between its containers; no service-account token."""
    topo = topology(name)
    for pod in topo.pods():
        for key in ("hostPID", "hostIPC", "hostNetwork", "shareProcessNamespace"):
            assert not pod.spec.get(key), f"{name}: {key}"
        assert pod.spec.get("automountServiceAccountToken") is False
    hardened = [topo.daemon(), *topo.workers()]
    for pod, container in hardened:
        security = pod.security(container)
        where = f"{name}/{container['name']}"
        assert security.get("runAsNonRoot") is True, where
        assert security.get("runAsUser", 0) != 0, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("capabilities") == {"drop": ["ALL"]}, where
        assert security.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        assert "limits" in container["resources"] and "requests" in container["resources"]


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_images_and_commands_exist(name: str) -> None:
    """Every container runs the daemon image at this project's version, and the stand-in
    workers' `python -m MODULE` is a module the image has."""
    for pod in topology(name).pods():
        for container in pod.containers():
            repository, _, tag = container["image"].rpartition(":")
            assert repository.rsplit("/", 1)[-1] == DAEMON_IMAGE
            assert tag == project_version()
            command = container.get("command", [])
            if command[:2] == ["python", "-m"]:
                assert importlib.util.find_spec(command[2]) is not None, command


# -- docker compose ---------------------------------------------------------------------------


@functools.cache
def compose() -> Manifest:
    (doc,) = yaml_documents(COMPOSE)
    return doc


def compose_mount(service: Manifest, source: str) -> str:
    """The container path where ``service`` mounts ``source`` (a volume name or a file)."""
    for mount in service["volumes"]:
        parts = mount.split(":")
        if parts[0] == source:
            return parts[1]
    raise AssertionError(f"{source} is not mounted")


def test_compose_services_agree() -> None:
    """In the compose file the daemon reads a config its loader accepts, mounted where the
    image reads it; daemon and worker mount the same tmpfs volume at segment_dir /
    AI_ANALYTICS_SEGMENT_DIR, in the same namespace; the uids, the shared group and the
    published port agree."""
    services = compose()["services"]
    daemon, worker = services["ai-analyticsd"], services["worker"]
    config_file = next(m.split(":")[0] for m in daemon["volumes"] if m.startswith("./"))
    assert compose_mount(daemon, config_file) == image().config_path
    config = daemon_config(
        yaml.safe_load((DEPLOY / config_file).read_text(encoding="utf-8")), config_file)
    # The lanes: one tmpfs volume, the daemon's group, setgid, big enough.
    assert compose_mount(daemon, "lanes") == config.segment_dir
    assert compose_mount(worker, "lanes") == worker["environment"][SEGMENT_DIR_ENV]
    settings = yaml.safe_load((DEPLOY / config_file).read_text(encoding="utf-8"))
    daemon_namespace = settings.get("namespace") or daemon.get("environment", {}).get(
        NAMESPACE_ENV, DEFAULT_NAMESPACE)
    assert worker["environment"].get(NAMESPACE_ENV, DEFAULT_NAMESPACE) == daemon_namespace
    options = dict(o.split("=") for o in compose()["volumes"]["lanes"]["driver_opts"]["o"]
                   .split(","))
    assert compose()["volumes"]["lanes"]["driver_opts"]["type"] == "tmpfs"
    assert (options["gid"], options["mode"]) == (str(image().gid), "2770")
    size = re.fullmatch(r"([0-9]+)m", options["size"])
    assert size and int(size[1]) << 20 >= MIN_LANES * lane_bytes(config)
    # Who is who.
    assert daemon["user"] == f"{image().uid}:{image().gid}"
    worker_uid = int(worker["user"].split(":")[0])
    assert worker_uid != image().uid and worker_uid in config.trusted_uids
    assert worker["environment"][DAEMON_UID_ENV] == str(image().uid)
    assert str(image().gid) in [str(g) for g in worker.get("group_add", [])]
    # The endpoint, published on loopback; the stop within the grace period.
    assert config.http_host == "0.0.0.0"
    assert daemon["ports"] == [f"127.0.0.1:{config.http_port}:{config.http_port}"]
    grace = re.fullmatch(r"([0-9]+)s", daemon["stop_grace_period"])
    assert grace and int(grace[1]) >= config.stop_timeout_seconds + 5
    # The image both run, and the stand-in worker's module.
    assert daemon["image"] == worker["image"] == f"{DAEMON_IMAGE}:{project_version()}"
    assert daemon["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert importlib.util.find_spec(worker["entrypoint"][2]) is not None
    for service in (daemon, worker):
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert "ipc" not in service and "pid" not in service


# -- Dockerfile -------------------------------------------------------------------------------


def test_image_agrees_with_its_config_and_the_project() -> None:
    """The image's default config is accepted by the daemon's loader and listens where
    EXPOSE and the HEALTHCHECK (GET /healthz) look; the user is numeric and non-root (as
    runAsNonRoot needs); the base images are pinned to a full Python version; SIGTERM stops
    it; the entry point is the project's daemon script."""
    config = daemon_config(
        yaml.safe_load((DEPLOY / "config.yaml").read_text(encoding="utf-8")),
        "deploy/config.yaml")
    assert image().config_path == "/etc/ai-analytics/config.yaml"
    assert config.http_host == "0.0.0.0"
    assert image().exposed == (config.http_port,)
    assert f"http://127.0.0.1:{config.http_port}/healthz" in image().healthcheck
    assert "urllib.request.urlopen" in image().healthcheck
    assert image().uid != 0 and image().gid != 0
    for base in image().from_images:
        assert re.fullmatch(r"python:3\.[0-9]+\.[0-9]+-slim-[a-z]+", base), base
    assert image().stop_signal == "SIGTERM"
    scripts = {ep.name for ep in importlib.metadata.distribution("ai-analytics").entry_points
               if ep.group == "console_scripts"}
    assert image().entrypoint == '["ai-analyticsd"]' and "ai-analyticsd" in scripts
    assert config.segment_dir == "/var/run/ai-analytics/lanes"


def test_dockerignore_lets_through_what_the_dockerfile_copies() -> None:
    """Dockerfile.dockerignore (next to the Dockerfile, where BuildKit looks) excludes
    everything, then lets through exactly what the COPY instructions take from the
    repository root, each of which exists."""
    lines = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {source.rstrip("/") for source in image().copied}
    assert copied == allowed
    for source in copied:
        assert (REPO / source).exists(), source
