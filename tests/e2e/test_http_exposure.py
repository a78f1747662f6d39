"""The safety rule of the HTTP endpoint for real (docs/http.md): a daemon bound to 0.0.0.0
in a network namespace of the test's own, with a private address on an interface there,
serves /metrics and /healthz through that address and everything else only through
loopback, unless http_pages_beyond_loopback is true. Every request goes to an address
inside that namespace; nothing leaves it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import TESTS

ADDRESS = "10.203.0.1"
NETWORK_NAMESPACE = ["unshare", "--net"]
PATHS = ("/", "/ui/index.html", "/api/series?metric=events&range=5m", "/status", "/healthz",
         "/metrics")
EVERYWHERE = {"/healthz", "/metrics"}


def _cannot_make_network_namespaces() -> str | None:
    """None when a network namespace with an interface of its own can be made here, else
    why not (for the skip reason)."""
    try:
        result = subprocess.run([*NETWORK_NAMESPACE, "ip", "link", "set", "lo", "up"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if result.returncode == 0 else (result.stderr.strip() or "failed")


_NO_NAMESPACES = _cannot_make_network_namespaces()
pytestmark = pytest.mark.skipif(
    _NO_NAMESPACES is not None,
    reason=f"cannot make network namespaces here (needs root, unshare and ip): {_NO_NAMESPACES}")

# Runs inside the new network namespace: an interface with ADDRESS (a dummy one, or a veth
# pair where the kernel has no dummy driver), the daemon, then each path through each
# address; prints {"<host> <path>": [status, body]} as JSON.
IN_NAMESPACE = textwrap.dedent("""
    import json, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    from helpers import fetch, wait_for

    config, log_path, address, port, paths = sys.argv[2:4] + [sys.argv[4], int(sys.argv[5]),
                                                              json.loads(sys.argv[6])]

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("link", "set", "lo", "up")
    try:
        ip("link", "add", "d0", "type", "dummy")
    except subprocess.CalledProcessError:
        ip("link", "add", "d0", "type", "veth", "peer", "name", "d1")
        ip("link", "set", "d1", "up")
    ip("addr", "add", f"{address}/24", "dev", "d0")
    ip("link", "set", "d0", "up")
    with open(log_path, "ab") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "ai_analytics.daemon", "--config",
                                   config], stdout=log, stderr=log)
    try:
        def answered(host):
            try:
                return fetch((host, port), path="/healthz", timeout=5)[0] == 200
            except OSError:
                return daemon.poll() is not None
        for host in (address, "127.0.0.1"):
            wait_for(lambda: answered(host), timeout=30, what=f"the daemon on {host}")
        assert daemon.poll() is None, "the daemon exited"
        # A snapshot exists: /status answers 200 where it is served.
        wait_for(lambda: fetch(("127.0.0.1", port))[0] == 200, timeout=30, what="a snapshot")
        results = {}
        for host in (address, "127.0.0.1"):
            for path in paths:
                status, _, body = fetch((host, port), path=path)
                results[f"{host} {path}"] = [status, body.decode(errors="replace")[:400]]
        print(json.dumps(results))
    finally:
        daemon.terminate()
        daemon.wait(30)
""")


def serve_in_namespace(config: Path) -> dict[str, tuple[int, str]]:
    """Each path through ADDRESS and through 127.0.0.1 of a daemon run with ``config`` in a
    new network namespace: {(host, path): (status, body)}."""
    from helpers import read_config

    port = read_config(config)["http_port"]
    log_path = config.with_suffix(".log")
    result = subprocess.run(
        [*NETWORK_NAMESPACE, sys.executable, "-c", IN_NAMESPACE, str(TESTS), str(config),
         str(log_path), ADDRESS, str(port), json.dumps(PATHS)],
        capture_output=True, text=True, timeout=120)
    daemon_log = log_path.read_text(errors="replace") if log_path.exists() else ""
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{daemon_log}"
    answers = json.loads(result.stdout.splitlines()[-1])
    return {tuple(key.split(" ", 1)): tuple(value) for key, value in answers.items()}


def test_beyond_loopback_only_metrics_and_healthz_by_default(make_config):
    """Through the private address: /metrics and /healthz; the page, /api/series and /status
    answer 404 naming the switch. Through loopback (kubectl port-forward's way in): all."""
    answers = serve_in_namespace(make_config(http_host="0.0.0.0"))
    for path in PATHS:
        status, body = answers[(ADDRESS, path)]
        if path in EVERYWHERE:
            assert status == 200, (path, body)
        else:
            assert status == 404, (path, body)
            reason = json.loads(body)["error"]
            assert f"served on loopback only, and this connection arrived on {ADDRESS}" in reason
            assert "set http_pages_beyond_loopback: true" in reason
        assert answers[("127.0.0.1", path)][0] == 200, (path, answers[("127.0.0.1", path)])
    assert answers[("127.0.0.1", PATHS[2])][1].startswith('{"metric":"events"')


def test_the_switch_serves_everything_beyond_loopback(make_config):
    answers = serve_in_namespace(make_config(http_host="0.0.0.0",
                                             http_pages_beyond_loopback=True))
    for (host, path), (status, body) in answers.items():
        assert status == 200, (host, path, body)
