"""The daemon's loopback endpoint, end to end: a real daemon, a real HTTP client."""

from __future__ import annotations

import gzip
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

from helpers import (
    fetch,
    http_status,
    read_config,
    run_daemon,
    run_python,
    taken_port,
    wait_for,
)


def test_status_and_healthz_from_a_running_daemon(daemon_factory, namespace, make_config):
    """/status serves the daemon's latest snapshot (with findings and recommendations);
    /healthz says ok while the loop turns; unknown paths are 404, POST is 405."""
    config = make_config()
    port = read_config(config)["http_port"]
    daemon = daemon_factory(config)
    run_python('from ai_analytics import client\nfor _ in range(40): client.emit("web", 2.0)',
               namespace)

    def served() -> dict | None:
        status, _, body = fetch(port)
        if status != 200:
            return None
        document = json.loads(body)
        return document if document["events"]["received"] == 40 else None

    document = wait_for(served, what="/status with the events")
    assert document["namespace"] == namespace
    # The daemon encodes each document once: the /status body is the state file's bytes.
    state_file = Path(read_config(config)["state_dir"]) / "state.json"
    wait_for(lambda: fetch(port)[2] == state_file.read_bytes(),
             what="/status and the state file from one snapshot, byte for byte")
    assert "findings" in document and "recommendations" in document
    assert fetch(port, path="/healthz")[::2] == (200, b"ok\n")
    assert fetch(port, path="/nope")[0] == 404
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
    with taken_port() as port:
        result = run_daemon(make_config(http_port=port), timeout=30)
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "already in use" in result.stderr
    assert "Traceback" not in result.stderr


# What Prometheus 2.42 (Debian's) sends with every scrape.
PROMETHEUS_HEADERS = {
    "User-Agent": "Prometheus/2.42.0+ds",
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
              "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}


def test_gzip_from_a_running_daemon(daemon_factory, namespace, make_config):
    """A real daemon answers /metrics and /status in gzip to a request with the headers of
    a Prometheus scrape, and the gzip body decodes to the identity body of the same
    document."""
    config = make_config()
    port = read_config(config)["http_port"]
    daemon_factory(config)
    run_python('from ai_analytics import client\nfor _ in range(40): client.emit("web", 2.0)',
               namespace)
    wait_for(lambda: (doc := http_status(port)) is not None
             and doc["events"]["received"] == 40, what="/status with the events")

    def same_document(path: str) -> tuple[bytes, bytes] | None:
        _, _, plain = fetch(port, path=path)
        status, headers, packed = fetch(port, path=path, headers=PROMETHEUS_HEADERS)
        assert status == 200
        assert headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
        assert int(headers["Content-Length"]) == len(packed)
        again = fetch(port, path=path)[2]
        return (plain, packed) if plain == again else None  # a snapshot came between

    for path in ("/metrics", "/status"):
        plain, packed = wait_for(lambda path=path: same_document(path),
                                 what=f"two answers of {path} from one document")
        assert gzip.decompress(packed) == plain
        assert len(packed) < len(plain)
