"""``plait tap``, ``plait top`` and ``plait logs`` against the running Bookinfo demo: pages loaded
through the ingress gateway show up as linkerd's req/rsp/end lines within 2 s, filters pick what
they say, top counts the paths, and the productpage's istio-proxy log has the access log lines
once meshConfig.accessLogFile is /dev/stdout."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import yaml

from plait.client import Http
from plait.testing.http import http_request
from plait.testing.live import wait_until

WITHIN = 2.0
API = Http("http://127.0.0.1:15014")


class Command:
    """A plait command running in the background, its output lines kept with the time each came."""

    def __init__(self, bookinfo, *args: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "plait", *args],
            cwd=bookinfo.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[tuple[float, str]] = []
        self.err: list[str] = []
        threading.Thread(target=self._read, args=(self.process.stdout, self.out, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.process.stderr, self.err, False), daemon=True).start()

    @staticmethod
    def _read(stream, into: list, timed: bool) -> None:
        for line in stream:
            into.append((time.monotonic(), line.rstrip("\n")) if timed else line.rstrip("\n"))

    def wait_tapping(self) -> None:
        wait_until(lambda: any("tapping" in line for line in self.err), 15, f"the tap to start: {self.err}")
        assert "tapping 1 proxy" in self.err[0], self.err

    def finish(self, timeout: float = 20) -> list[str]:
        assert self.process.wait(timeout) == 0, self.err
        time.sleep(0.1)  # the readers' last lines
        return [line for _, line in self.out]


@contextmanager
def command(bookinfo, *args: str) -> Iterator[Command]:
    running = Command(bookinfo, *args)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.kill()
        running.process.wait()


def pages(bookinfo, n: int) -> None:
    for _ in range(n):
        assert bookinfo.browser.page().status == 200


def fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split()[1:] if "=" in part)


def test_tap_shows_productpage_requests_within_2s(bookinfo) -> None:
    with command(bookinfo, "tap", "deploy/productpage-v1", "--duration", "8") as tap:
        tap.wait_tapping()
        sent = time.monotonic()
        pages(bookinfo, 3)
        wait_until(lambda: sum(":path=/productpage" in line for _, line in tap.out) >= 3, WITHIN + 2, "req lines")
        first = next(at for at, line in tap.out if line.startswith("req ") and ":path=/productpage" in line)
        assert first - sent < WITHIN, f"the first req line came {first - sent:.2f}s after the first page"
        lines = tap.finish()
    inbound = [fields(line) for line in lines if " proxy=in " in line and ":path=/productpage" in line]
    assert len(inbound) == 3 and {f["tls"] for f in inbound} == {"true"}  # from the gateway, over mutual TLS
    ids = {f["id"] for f in inbound}
    for kind in ("rsp", "end"):
        # the id is the request's x-request-id: its calls onwards (proxy=out) share it
        matching = [
            line for line in lines if line.startswith(f"{kind} ") and fields(line)["id"] in ids and " proxy=in " in line
        ]
        assert len(matching) == 3, (kind, lines)
    assert all(f[":status"] == "200" for f in map(fields, lines) if ":status" in f)
    assert all(line.split()[-1].startswith("response-length=") for line in lines if line.startswith("end "))
    outbound = {fields(line)[":path"] for line in lines if line.startswith("req ") and " proxy=out " in line}
    assert {"/details/0", "/reviews/0"} <= outbound, outbound


def test_tap_filters_by_path_and_method(bookinfo) -> None:
    args = ("tap", "deploy/productpage-v1", "--path", "/reviews", "--method", "GET", "-o", "json", "--duration", "6")
    with command(bookinfo, *args) as tap:
        tap.wait_tapping()
        pages(bookinfo, 2)
        wait_until(lambda: len(tap.out) >= 2, WITHIN + 2, "two events")
        events = [json.loads(line) for line in tap.finish()]
    assert len(events) == 2, events
    assert {(e["proxy"], e["method"], e["path"]) for e in events} == {("out", "GET", "/reviews/0")}
    assert all(e["dst_workload"].startswith("reviews-v") for e in events), events


def test_top_counts_productpage_paths(bookinfo) -> None:
    with command(bookinfo, "top", "deploy/productpage-v1", "--duration", "6") as top:
        top.wait_tapping()
        pages(bookinfo, 4)
        lines = top.finish()
    header = lines[0].split()
    assert header[:4] == ["Source", "Destination", "Method", "Path"] and header[-2:] == ["Success", "Rate"], lines
    rows = [line.split() for line in lines[1:] if line.strip()]
    by_path = {(row[1], row[3]): row for row in rows}
    productpage = next(row for (dst, path), row in by_path.items() if path == "/productpage")
    assert (
        productpage[0].startswith("istio-ingressgateway") and productpage[1] == "productpage-v1"
    )  # the workload (its Deployment)
    assert productpage[4] == "4" and productpage[-1] == "100.00%", rows
    assert any(path == "/details/0" and row[4] == "4" for (_, path), row in by_path.items()), rows


def _istio_configmap() -> dict | None:
    items = API.get("/api/v1/config?kind=ConfigMap&namespace=istio-system&name=istio")["items"]
    return items[0] if items else None


def test_logs_show_the_access_log_of_productpages_proxy(bookinfo) -> None:
    original = _istio_configmap()
    config = json.loads(json.dumps(original)) if original else _empty_configmap()
    mesh = yaml.safe_load(config["data"].get("mesh") or "{}") or {}
    config["data"]["mesh"] = yaml.safe_dump({**mesh, "accessLogFile": "/dev/stdout"})
    API.request("POST", "/api/v1/config?filename=test-live", yaml.safe_dump(config).encode())
    try:
        marker = f"/productpage?tap-logs={time.time_ns()}"

        last: list = []

        def logged() -> bool:
            assert http_request("127.0.0.1", bookinfo.ingress_port, marker).status == 200
            result = bookinfo.plait("logs", "productpage-v1-0", "-c", "istio-proxy", "--tail", "200")
            last[:] = [result.returncode, result.stdout[-3000:], result.stderr[-2000:], _istio_configmap()]
            return result.returncode == 0 and any(
                f'"GET {marker} HTTP/1.1" 200' in line for line in result.stdout.splitlines()
            )

        try:
            wait_until(logged, 20, "an access log line in productpage's istio-proxy log", interval=1.0)
        except TimeoutError as error:
            raise AssertionError(f"{error}; the last answer: {last}") from None
        app_log = bookinfo.plait("logs", "productpage-v1-0").stdout
        assert f'"GET {marker} HTTP/1.1" 200 - via_upstream' not in app_log  # the app's container: not the proxy's
    finally:
        if original:
            API.request("POST", "/api/v1/config?filename=test-live", yaml.safe_dump(original).encode())
        else:
            API.request("POST", "/api/v1/config/delete", yaml.safe_dump(config).encode())


def _empty_configmap() -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "istio", "namespace": "istio-system"},
        "data": {},
    }
