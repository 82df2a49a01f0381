"""DNS proxying with real processes: `plait control-plane` serves each proxy's name table, `plait agent
--dns-capture` answers from it and forwards the rest to a fake upstream nameserver (a process),
and keeps answering mesh names when that upstream is gone."""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from plait.testing.backends import loopback_subnet
from plait.testing.dns import addresses
from plait.testing.live import AgentProcess, ControlPlaneProcess, free_port, wait_until

CONVERGE = 10.0  # seconds a change may take to reach the agent's table (well under one: it long-polls)
MESH = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.12
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.corp.example]
  addresses: [192.168.7.10]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 192.168.7.11}]
"""
LATER = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: default}
spec:
  hosts: [payments.partner.example]
  addresses: [192.168.7.20]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
"""
UPSTREAM_ANSWER = "203.0.113.5"


def resolve(name: str, port: int, rdtype: str = "A", tcp: bool = False) -> dns.message.Message:
    ask = dns.query.tcp if tcp else dns.query.udp
    return ask(dns.message.make_query(name, rdtype), "127.0.0.1", timeout=5, port=port)


def get_table(cp: ControlPlaneProcess, proxy_id: str, etag: str | None = None, **query) -> tuple[int, dict, str]:
    url = f"http://127.0.0.1:{cp.http_port}/api/v1/nametable?" + urllib.parse.urlencode({"proxy": proxy_id, **query})
    request = urllib.request.Request(url, headers={"If-None-Match": etag} if etag else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers["ETag"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}"), exc.headers.get("ETag")


@pytest.fixture
def upstream(tmp_path: Path):
    """A fake cluster DNS (a process) that answers every A query with UPSTREAM_ANSWER."""
    port = free_port()
    log = open(tmp_path / "upstream.log", "wb")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(
        [sys.executable, "-m", "plait.testing.dns", "--listen", f"127.0.0.1:{port}", "--answer", UPSTREAM_ANSWER],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    wait_until(lambda: _answers(port), 10, "the fake nameserver to answer")
    yield process, port
    if process.poll() is None:
        process.kill()
        process.wait()


def _answers(port: int) -> bool:
    try:
        return addresses(resolve("probe.example", port)) == [UPSTREAM_ANSWER]
    except (dns.exception.Timeout, OSError):
        return False


def test_control_plane_serves_name_tables_with_etags(tmp_path: Path) -> None:
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "mesh.yaml").write_text(MESH)
    with ControlPlaneProcess(tmp_path / "mesh", tmp_path) as cp:
        proxy_id = "sidecar~10.0.0.1~productpage-1.default~default.svc.cluster.local"
        status, table, etag = get_table(cp, proxy_id)
        assert status == 200
        assert table["table"]["legacy.corp.example"] == {"ips": ["192.168.7.10"], "registry": "External"}
        assert table["table"]["reviews.default.svc.cluster.local"]["shortname"] == "reviews"
        assert get_table(cp, proxy_id, etag)[0] == 304
        assert get_table(cp, proxy_id, etag, wait="0.2")[0] == 304  # nothing changed while it waited
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(get_table, cp, proxy_id, etag, wait="60")  # answered by the change
            cp.apply(LATER)
            status, changed, _ = waiting.result(timeout=CONVERGE)
        assert status == 200 and changed["table"]["payments.partner.example"]["ips"] == ["192.168.7.20"]
        assert get_table(cp, proxy_id)[1]["table"]["payments.partner.example"]["ips"] == ["192.168.7.20"]
        cp.apply(LATER.replace("payments", "billing").replace("  addresses: [192.168.7.20]\n", ""))
        wait_until(
            lambda: "billing.partner.example" in get_table(cp, proxy_id, autoAllocate="true")[1]["table"],
            CONVERGE,
            "an auto-allocated address",
        )
        assert get_table(cp, proxy_id, autoAllocate="true")[1]["table"]["billing.partner.example"] == {
            "ips": ["240.240.0.1"],
            "registry": "External",
        }
        assert "billing.partner.example" not in get_table(cp, proxy_id)[1]["table"]
        status, body, _ = get_table(cp, "not-a-node-id")
        assert status == 400 and "expected a node id" in body["error"]
        status, body, _ = get_table(cp, proxy_id, wait="soon")
        assert status == 400 and "expected a number of seconds" in body["error"]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_agent_answers_mesh_names_and_forwards_the_rest(tmp_path: Path, upstream, tcp: bool) -> None:
    process, upstream_port = upstream
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "mesh.yaml").write_text(MESH)
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n")
    dns_port = free_port()
    with loopback_subnet() as net, ControlPlaneProcess(tmp_path / "mesh", tmp_path) as cp:
        dns_args = [
            "--dns-capture",
            "--dns-port",
            str(dns_port),
            "--dns-upstream",
            f"127.0.0.1:{upstream_port}",
            "--resolv-conf",
            str(resolv_conf),
            "--control-plane-api",
            f"http://127.0.0.1:{cp.http_port}",
        ]
        agent = AgentProcess(cp, tmp_path, mode="proxy", name="productpage-1", ip=f"{net}.1", extra=dns_args)
        agent_log = agent.log_path
        with agent:
            wait_until(
                lambda: addresses(resolve("legacy.corp.example", dns_port, tcp=tcp)) == ["192.168.7.10"],
                CONVERGE,
                "the agent to answer the ServiceEntry host from its table",
            )
            assert addresses(resolve("reviews", dns_port, tcp=tcp)) == ["10.96.0.12"]
            assert addresses(resolve("reviews.default.svc", dns_port, tcp=tcp)) == ["10.96.0.12"]
            assert addresses(resolve("www.example.org", dns_port, tcp=tcp)) == [UPSTREAM_ANSWER]

            cp.apply(LATER)
            wait_until(
                lambda: addresses(resolve("payments.partner.example", dns_port, tcp=tcp)) == ["192.168.7.20"],
                CONVERGE,
                "a ServiceEntry applied later to resolve",
            )

            process.kill()  # cluster DNS goes away: mesh names keep resolving, the rest fails
            process.wait()
            assert addresses(resolve("legacy.corp.example", dns_port, tcp=tcp)) == ["192.168.7.10"]
            assert addresses(resolve("reviews.default", dns_port, tcp=tcp)) == ["10.96.0.12"]
            assert resolve("www.example.org", dns_port, tcp=tcp).rcode() == dns.rcode.SERVFAIL

            cp.stop()  # the control plane goes away too: the agent keeps its last table
            wait_until(lambda: "keeping the last one" in agent_log.read_text(), CONVERGE, "a failed table fetch")
            assert addresses(resolve("payments.partner.example", dns_port, tcp=tcp)) == ["192.168.7.20"]
