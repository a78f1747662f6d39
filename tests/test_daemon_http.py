"""The daemon's loopback endpoint, end to end: a real daemon, a real HTTP client."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from helpers import http_get, run_python, wait_for


def test_status_and_healthz_from_a_running_daemon(daemon_factory, namespace, make_config):
    """/status serves the daemon's latest snapshot (with findings and recommendations);
    /healthz says ok while the loop turns; unknown paths are 404, POST is 405."""
    config = make_config()
    port = int(config.read_text().split("http_port: ")[1].split()[0])
    daemon = daemon_factory(config)
    run_python('from ai_analytics import client\nfor _ in range(40): client.emit("web", 2.0)',
               namespace)

    def served() -> dict | None:
        status, body = http_get(port, "/status")
        if status != 200:
            return None
        document = json.loads(body)
        return document if document["events"]["received"] == 40 else None

    document = wait_for(served, what="/status with the events")
    assert document["namespace"] == namespace
    assert "findings" in document and "recommendations" in document
    assert http_get(port, "/healthz") == (200, b"ok\n")
    assert http_get(port, "/nope")[0] == 404
    request = urllib.request.Request(f"http://127.0.0.1:{port}/status", data=b"x",
                                     method="POST")
    try:
        urllib.request.urlopen(request, timeout=5)
        raise AssertionError("POST was accepted")
    except urllib.error.HTTPError as error:
        assert error.code == 405
    assert daemon.stop() == 0
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        raise AssertionError("the port is still open after the daemon stopped")
    except OSError:
        pass


def test_port_in_use_is_a_clear_error(make_config):
    """A taken port stops the start with one line naming host:port, exit 1, no traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = make_config(http_port=port)
        result = subprocess.run([sys.executable, "-m", "ai_analytics.daemon", "--config",
                                 str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "already in use" in result.stderr
    assert "Traceback" not in result.stderr
