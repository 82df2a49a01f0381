"""Tap with real Envoys: a client sidecar calls a server sidecar over mutual TLS (the proxies of
test_metrics_live, their control plane on the TLS xDS port with pod tokens). Nothing is sent while
nobody taps; a tap session gets each request within 2 s; once it closes, the proxies stop sending."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import test_metrics_live
from test_metrics_live import SERVICE_PORT, Proxies

from plait.cli.tap import TapSession
from plait.client import ClientError
from plait.model.proxy import EXPLICIT_PROXY_PORT
from plait.telemetry.tap import tap_lines
from plait.testing.http import http_request
from plait.testing.live import AgentProcess, wait_until

WITHIN = 2.0  # seconds from a request to its tap event
proxies = test_metrics_live.proxies  # the same proxies (started again for this module)


def logs_written(process: AgentProcess) -> int:
    """What the proxy's gRPC access loggers sent (Envoy's own counters)."""
    stats = process.admin.get("/stats?format=json&filter=grpc_access_log")["stats"]
    return sum(s.get("value", 0) for s in stats if s["name"].endswith("logs_written"))


def events_received(proxies: Proxies) -> float:
    metrics = proxies.cp.api.get("/metrics")
    return float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("plait_tap_events_total")))


def calls(proxies: Proxies, path: str, n: int = 3) -> None:
    for _ in range(n):
        assert proxies.call(f"http://server:{SERVICE_PORT}{path}") == 200


def test_nothing_is_sent_while_nobody_taps(proxies: Proxies) -> None:
    before = (logs_written(proxies.client), logs_written(proxies.server), events_received(proxies))
    calls(proxies, "/untapped", 5)
    time.sleep(1.0)  # five flush intervals
    assert (logs_written(proxies.client), logs_written(proxies.server), events_received(proxies)) == before


class Reader(threading.Thread):
    """Reads a tap session's events into a list, with the time each arrived."""

    def __init__(self, events):
        super().__init__(daemon=True)
        self.events, self.seen, self.error = events, [], None

    def run(self) -> None:
        try:
            for event in self.events:
                self.seen.append((time.monotonic(), event))
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def of(self, path: str) -> list[tuple[float, dict]]:
        return [(at, e) for at, e in list(self.seen) if e.get("path") == path]


def test_a_tap_session_gets_each_request_within_2s_and_stops_the_proxies_when_it_closes(proxies: Proxies) -> None:
    query = {"target": "po/server-v1", "namespace": "default"}
    with TapSession(proxies.cp.api.base, query) as session:
        tapping = session.first
        assert tapping["type"] == "tapping"
        assert [p.split("~")[2] for p in tapping["proxies"]] == ["server-v1.default"]
        reader = Reader(session)
        reader.start()
        path = f"/tapped/{uuid.uuid4().hex}"
        sent = time.monotonic()
        calls(proxies, path, 3)
        wait_until(lambda: len(reader.of(path)) == 3, WITHIN + 1, "three tap events")
        arrived = [at for at, _ in reader.of(path)]
        assert max(arrived) - sent < WITHIN, f"events came {max(arrived) - sent:.2f}s after the requests"
        event = reader.of(path)[0][1]
        assert (event["proxy"], event["pod"], event["tls"], event["method"], event["status"]) == (
            "in",
            "server-v1",
            True,
            "GET",
            200,
        )
        assert (event["src_workload"], event["dst_workload"]) == ("client-v1", "server-v1")
        assert event["dst"] == f"{proxies.net}.21:{SERVICE_PORT}" or event["dst"].endswith(f":{SERVICE_PORT}")
        req, rsp, end = tap_lines(event)
        assert req.startswith("req id=") and " proxy=in " in req and " tls=true " in req and f":path={path}" in req
        assert ":status=200 latency=" in rsp and end.split()[-1].startswith("response-length=")
        assert logs_written(proxies.server) >= 3  # Envoy's counter counts what the tap sent
        assert logs_written(proxies.client) == 0  # only the tapped proxy sends
    # the client went away: the session closes and the proxy is turned off again
    wait_until(lambda: "plait_tap_sessions 0.0" in proxies.cp.api.get("/metrics"), 5, "the session to close")
    wait_until(lambda: "plait_tap_proxies 0.0" in proxies.cp.api.get("/metrics"), 5, "the proxy turned off")
    time.sleep(0.5)  # an event of the requests above still in flight
    before = logs_written(proxies.server)
    calls(proxies, "/after", 3)
    time.sleep(1.0)
    assert logs_written(proxies.server) == before


def test_filters_pick_path_and_method(proxies: Proxies) -> None:
    marker = uuid.uuid4().hex
    query = {"target": "po/server-v1", "namespace": "default", "path": f"/only/{marker}", "method": "GET"}
    with TapSession(proxies.cp.api.base, query) as session:
        assert session.first["proxies"]
        reader = Reader(session)
        reader.start()
        for method, path in (("GET", f"/other/{marker}"), ("POST", f"/only/{marker}"), ("GET", f"/only/{marker}")):
            reply = http_request(
                f"{proxies.net}.1", EXPLICIT_PROXY_PORT, f"http://server:{SERVICE_PORT}{path}", method=method
            )
            assert reply.status < 500
        wait_until(lambda: reader.seen, WITHIN + 1, "the GET's event")
        time.sleep(0.5)
        assert [(e["method"], e["path"]) for _, e in reader.seen] == [("GET", f"/only/{marker}")]


def test_a_bad_target_is_refused_with_what_is_expected(proxies: Proxies) -> None:
    with pytest.raises(
        ClientError, match="cannot tap 'svc/server': expected one of deploy/NAME, po/NAME, ns/NS"
    ) as info:
        TapSession(proxies.cp.api.base, {"target": "svc/server"})
    assert info.value.status == 400
