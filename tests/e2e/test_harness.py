"""The harness itself: Envoy start/stop and errors, and the loopback backends' programmed behaviour."""

from __future__ import annotations

import os
import socket

import pytest

from plait.testing.envoy import EnvoyStartError, run_envoy


def test_envoy_is_stopped_by_pid_on_exit(tmp_path):
    with run_envoy({"static_resources": {}}, workdir=tmp_path) as envoy:
        assert envoy.admin("/ready").strip() == "LIVE"
        pid = envoy.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert (tmp_path / "envoy.log").read_text()


def test_a_rejected_bootstrap_raises_with_envoys_reason(tmp_path):
    bad = {"static_resources": {"clusters": [{"name": "broken", "type": "NO_SUCH_TYPE"}]}}
    with pytest.raises(EnvoyStartError, match="NO_SUCH_TYPE"):
        with run_envoy(bad, workdir=tmp_path):
            pass


def test_http_backend_fails_the_first_requests_then_succeeds(mesh):
    backend = mesh.http_backend("flaky", 11, fail_first=2, fail_status=503)
    statuses = [mesh.direct(backend, f"/{i}").status for i in range(3)]
    assert statuses == [503, 503, 200]
    assert [r.path for r in backend.requests] == ["/0", "/1", "/2"]


def test_tcp_backend_sends_its_name_then_echoes(mesh):
    backend = mesh.tcp_backend("echo", 11, 9000)
    with socket.create_connection((backend.address, backend.port), timeout=5) as sock, sock.makefile("rb") as stream:
        assert stream.readline() == b"echo\n"
        sock.sendall(b"ping")
        assert stream.read(4) == b"ping"
    assert backend.connections == 1


def test_http_backend_answers_with_its_name(mesh):
    backend = mesh.http_backend("named", 12)
    reply = mesh.direct(backend, "/hello", {"X-Probe": "1"})
    assert (reply.status, reply.backend) == (200, "named")
    assert backend.requests[0].headers["x-probe"] == "1"
