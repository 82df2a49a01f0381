"""DNS capture in a real network namespace: `plait iptables --redirect-dns` sends the pod's DNS to the
agent's DNS proxy, which answers ServiceEntry hosts from the control plane's name table and
forwards other names to the pod's nameserver (a fake one in another namespace).

Root only (CI runs as root). A bridge, subnet and namespace prefix of this test's own; the control
plane listens on free ports. The agent runs with gid 1337 (the proxy's group, which the capture
rules let out), as root: uid 1337 cannot run this machine's Python (under /root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from plait.runtime import iptables, netns
from plait.runtime.netns import NETNS_ETC, Network
from plait.testing.live import ControlPlaneProcess, free_port, wait_until

MESH = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.corp.example]
  addresses: [192.168.7.10]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 192.168.7.11}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.12
  ports: [{name: http, port: 9080}]
"""
UPSTREAM_ANSWER = "203.0.113.5"
RESOLVE = textwrap.dedent("""
    import socket, sys
    try:
        print(socket.gethostbyname(sys.argv[1]))
    except OSError as exc:
        print("failed:", exc)
""")


@pytest.fixture
def network() -> Iterator[Network]:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces); CI runs it as root")
    net = Network(bridge=f"plt-d{os.getpid()}", subnet=f"10.252.{os.getpid() % 250}.0/24", prefix=f"pltd{os.getpid()}-")
    netns.teardown(net)
    netns.ensure_bridge(net)
    yield net
    netns.teardown(net)


def address(network: Network, host: int) -> str:
    return f"{network.gateway.rsplit('.', 1)[0]}.{host}"


def resolve_in(ns: str, name: str) -> str:
    done = subprocess.run(
        netns.exec_argv(ns, [sys.executable, "-I", "-c", RESOLVE, name]),
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_pod_resolves_service_entry_hosts_through_the_agent(
    network: Network, processes: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    app_ip, dns_ip = address(network, 2), address(network, 3)
    app = netns.add_pod(network, "app", app_ip)
    upstream = netns.add_pod(network, "dns", dns_ip)
    resolv = f"nameserver {dns_ip}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    (NETNS_ETC / app / "resolv.conf").write_text(resolv)
    fake = [sys.executable, "-m", "plait.testing.dns", "--listen", f"{dns_ip}:53", "--answer", UPSTREAM_ANSWER]
    processes.append(subprocess.Popen(netns.exec_argv(upstream, fake), stdout=subprocess.DEVNULL))
    wait_until(lambda: resolve_in(app, "probe.example") == UPSTREAM_ANSWER, 10, "the fake nameserver")
    assert resolve_in(app, "legacy.corp.example") == UPSTREAM_ANSWER  # before capture: the cluster DNS's answer

    config = iptables.CaptureConfig.from_flags(
        outbound_ranges="", inbound_ports="", redirect_dns=True, dns_servers=[dns_ip]
    )
    iptables.apply(config, netns=app)
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "mesh.yaml").write_text(MESH)
    with ControlPlaneProcess(tmp_path / "mesh", tmp_path, extra_args=["--host", "0.0.0.0"]) as cp:
        state = Path(tempfile.mkdtemp(prefix="plait-dns-agent-"))
        agent = [
            sys.executable,
            "-m",
            "plait",
            "agent",
            "--name",
            "app",
            "--ip",
            app_ip,
            "--control-plane",
            f"{network.gateway}:{cp.xds_port}",
            "--control-plane-api",
            f"http://{network.gateway}:{cp.http_port}",
            "--admin-port",
            str(free_port()),
            "--state-dir",
            str(state),
            "--dns-capture",
        ]
        log = open(tmp_path / "agent.log", "wb")  # noqa: SIM115 - the child owns it
        processes.append(
            subprocess.Popen(netns.exec_argv(app, agent, uid=0, gid=netns.PROXY_UID), stdout=log, stderr=log)
        )
        log.close()
        try:
            wait_until(
                lambda: resolve_in(app, "legacy.corp.example") == "192.168.7.10",
                20,
                "the ServiceEntry host to resolve through the agent",
            )
            assert resolve_in(app, "reviews") == "10.96.0.12"  # a search-domain name, from the table
            assert resolve_in(app, "www.example.org") == UPSTREAM_ANSWER  # forwarded by the agent, not looped
            saved = iptables.save_nat(netns=app)
            assert f"-A OUTPUT -d {dns_ip}/32 -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053" in saved
        finally:
            print((tmp_path / "agent.log").read_text()[-3000:])  # shown when the test fails
            for proc in processes[1:]:
                proc.terminate()  # the agent drains and stops its Envoy
                proc.wait(timeout=30)
            shutil.rmtree(state, ignore_errors=True)
        assert iptables.cleanup(netns=app)
        assert "15053" not in iptables.save_nat(netns=app)
