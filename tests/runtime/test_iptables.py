"""`plait iptables`: Istio's capture rules, golden-tested, then installed in real network namespaces.

The golden tests compare `render_rules` with the expected ``iptables-restore`` input. The
capture tests (root; CI runs as root) build two pods on a bridge and subnet of their own, install
the rules in pod A with the ``plait iptables`` command Istio's init container runs, and check
where connections land: a listener on 15001/15006 (uid 1337, standing in for Envoy) answers
with the original destination it reads from SO_ORIGINAL_DST.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from plait.cli.iptables import register
from plait.host.envoy_binary import find_envoy
from plait.runtime import netns
from plait.runtime.iptables import (
    CHAINS,
    CaptureConfig,
    IptablesError,
    apply,
    installed_chains,
    removal_input,
    render_rules,
    save_nat,
)

ISTIO_INIT_FLAGS = [
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
]

SIDECAR_GOLDEN = """\
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_REDIRECT - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
"""

RANGES_AND_PORTS_GOLDEN = """\
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_REDIRECT - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15002
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15007
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT
-A ISTIO_INBOUND -p tcp --dport 9443 -j ISTIO_IN_REDIRECT
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -p tcp --dport 22 -j RETURN
-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 2000 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 2000 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 2000 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -d 10.96.5.0/24 -j RETURN
-A ISTIO_OUTPUT -d 10.96.0.0/16 -j ISTIO_REDIRECT
-A ISTIO_OUTPUT -d 10.244.0.0/16 -j ISTIO_REDIRECT
-A ISTIO_OUTPUT -j RETURN
COMMIT
"""


def test_istio_init_container_flags_give_istios_sidecar_rules() -> None:
    config = CaptureConfig.from_flags(
        proxy_port="15001",
        inbound_capture_port="15006",
        proxy_uid="1337",
        interception_mode="REDIRECT",
        outbound_ranges="*",
        outbound_ranges_exclude="",
        inbound_ports="*",
        inbound_ports_exclude="15090,15021,15020",
    )
    assert render_rules(config) == SIDECAR_GOLDEN
    assert render_rules(CaptureConfig()) == SIDECAR_GOLDEN  # the defaults are the injector's flags


def test_docs_show_the_rules_plait_installs() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "capture.md").read_text()
    assert f"```\n{SIDECAR_GOLDEN}```" in doc


def test_ranges_ports_and_gid() -> None:
    config = CaptureConfig.from_flags(
        proxy_port="15002",
        inbound_capture_port="15007",
        proxy_gid="2000",
        outbound_ranges="10.96.0.0/16, 10.244.0.0/16",
        outbound_ranges_exclude="10.96.5.0/24",
        inbound_ports="9080,9443",
        inbound_ports_exclude="9090",
        outbound_ports_exclude="22,3306",
    )
    assert render_rules(config) == RANGES_AND_PORTS_GOLDEN


def test_empty_lists_capture_nothing_but_keep_the_proxy_rules() -> None:
    rules = render_rules(CaptureConfig.from_flags(outbound_ranges="", inbound_ports=""))
    assert "PREROUTING" not in rules
    assert "-j ISTIO_REDIRECT" not in rules
    assert "-A OUTPUT -p tcp -j ISTIO_OUTPUT" in rules
    assert "--uid-owner 1337 -j ISTIO_IN_REDIRECT" in rules


def test_excluded_inbound_ports_keep_istios_own_ports_once() -> None:
    rules = render_rules(CaptureConfig.from_flags(inbound_ports_exclude="22,15021"))
    excluded = [
        line.split("--dport ")[1].split()[0]
        for line in rules.splitlines()
        if line.startswith("-A ISTIO_INBOUND") and line.endswith("-j RETURN")
    ]
    assert excluded == ["15008", "22", "15021", "15090", "15020"]


def test_loopback_in_outbound_ranges_captures_the_apps_loopback_traffic() -> None:
    rules = render_rules(CaptureConfig.from_flags(outbound_ranges="127.0.0.1/32"))
    assert "! --uid-owner" not in rules
    assert "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j ISTIO_REDIRECT" in rules


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"interception_mode": "TPROXY"}, "-m TPROXY is not supported"),
        ({"interception_mode": "NAT"}, "unknown inbound interception mode"),
        ({"proxy_port": "http"}, "-p: 'http' is not a port number"),
        ({"inbound_ports": "80,70000"}, "-b: '70000' is not a port number"),
        ({"proxy_uid": "istio-proxy"}, "-u: expected numeric ids"),
        ({"outbound_ranges": "10.0.0.0/33"}, "-i: '10.0.0.0/33' is not an IP range"),
        ({"outbound_ranges": "fd00::/8"}, "IPv6; plait captures IPv4 only"),
        ({"outbound_ranges_exclude": "*"}, "-x: '*' is not allowed"),
    ],
)
def test_bad_flags_are_refused_with_a_reason(flags: dict[str, str], message: str) -> None:
    with pytest.raises(IptablesError, match=re.escape(message)):
        CaptureConfig.from_flags(**flags)


SAVED = """\
# Generated by iptables-nft-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_OUTPUT - [0:0]
:KUBE-SERVICES - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A OUTPUT -j KUBE-SERVICES
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
-A ISTIO_OUTPUT -j RETURN
COMMIT
"""


def test_removal_deletes_only_istios_chains_and_the_jumps_into_them() -> None:
    assert removal_input(SAVED) == (
        "*nat\n-D PREROUTING -p tcp -j ISTIO_INBOUND\n-D OUTPUT -p tcp -j ISTIO_OUTPUT\n"
        "-F ISTIO_INBOUND\n-F ISTIO_OUTPUT\n-X ISTIO_INBOUND\n-X ISTIO_OUTPUT\nCOMMIT\n"
    )
    assert installed_chains(SAVED) == ["ISTIO_INBOUND", "ISTIO_OUTPUT"]
    assert removal_input("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n") == ""


def cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # keep "iptables" a subcommand, as in the plait CLI
    register(app)
    return app


def test_cli_takes_istio_iptables_flags_verbatim() -> None:
    result = CliRunner().invoke(cli(), ["iptables", *ISTIO_INIT_FLAGS, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout == SIDECAR_GOLDEN


def test_cli_explains_a_refusal() -> None:
    result = CliRunner().invoke(cli(), ["iptables", "-m", "TPROXY", "-n"])
    assert result.exit_code == 1
    assert "TPROXY is not supported" in result.output


# --- real rules in real network namespaces (root) ---------------------------------------------

LISTENER = textwrap.dedent("""
    # Minimal HTTP server on PORT=LABEL pairs; answers "LABEL ORIGINAL_DST UID".
    import os, socket, struct, sys, threading
    def serve(server, label):
        while True:
            conn, _ = server.accept()
            with conn:
                conn.recv(4096)
                try:
                    raw = conn.getsockopt(socket.SOL_IP, 80, 16)  # SO_ORIGINAL_DST
                    dst = "%s:%d" % (socket.inet_ntoa(raw[4:8]), struct.unpack("!H", raw[2:4])[0])
                except OSError:
                    dst = "%s:%d" % conn.getsockname()
                body = "%s %s %d" % (label, dst, os.getuid())
                conn.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\n" + body.encode())
    for spec in sys.argv[1:]:
        port, label = spec.split("=")
        server = socket.create_server(("0.0.0.0", int(port)))
        threading.Thread(target=serve, args=(server, label), daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()
""")

CLIENT = textwrap.dedent("""
    import sys, urllib.request
    url = "http://%s:%s%s" % (sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "/")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    print(opener.open(url, timeout=5).read().decode())
""")


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces and iptables); CI runs it as root")


@pytest.fixture
def network() -> Iterator[netns.Network]:
    require_root()
    net = netns.Network(
        bridge=f"plt-i{os.getpid()}", subnet=f"10.250.{os.getpid() % 250}.0/24", prefix=f"plti{os.getpid()}-"
    )
    netns.teardown(net)
    netns.ensure_bridge(net)
    yield net
    netns.teardown(net)
    assert netns.leftovers(net) == []


def listen(processes: list[subprocess.Popen[str]], ns: str, *ports: str, uid: int | None = None) -> None:
    proc = subprocess.Popen(
        netns.exec_argv(ns, [sys.executable, "-I", "-c", LISTENER, *ports], uid=uid), stdout=subprocess.PIPE, text=True
    )
    processes.append(proc)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"


def request(ns: str, ip: str, port: int, uid: int | None, path: str) -> subprocess.CompletedProcess[str]:
    argv = netns.exec_argv(ns, [sys.executable, "-I", "-c", CLIENT, ip, str(port), path], uid=uid)
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=20)


def get(ns: str, ip: str, port: int, uid: int | None = None, path: str = "/") -> str:
    """GET from inside `ns` (as `uid`); a LISTENER's body says who answered: 'LABEL ORIGINAL_DST UID'."""
    done = request(ns, ip, port, uid, path)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def plait_iptables(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        netns.exec_argv(ns, [sys.executable, "-m", "plait", "iptables", *args]),
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_capture_in_a_pod_namespace(
    network: netns.Network, processes: list[subprocess.Popen[str]], backend: str
) -> None:
    base = network.gateway.rsplit(".", 1)[0]
    a_ip, b_ip = f"{base}.2", f"{base}.3"
    pod_a = netns.add_pod(network, "a", a_ip)
    pod_b = netns.add_pod(network, "b", b_ip)
    listen(processes, pod_b, "8000=app-b")
    listen(processes, pod_a, "15001=outbound", "15006=inbound", uid=netns.PROXY_UID)  # the stand-in Envoy
    listen(processes, pod_a, "15021=health")  # an excluded port: never captured inbound
    assert get(pod_a, b_ip, 8000) == f"app-b {b_ip}:8000 0", "before the rules: direct"

    for _ in range(2):  # installing twice replaces the rules; it does not stack them
        installed = plait_iptables(pod_a, *ISTIO_INIT_FLAGS, "--backend", backend)
        assert installed.returncode == 0, installed.stderr
    saved = save_nat(backend=backend, netns=pod_a)  # type: ignore[arg-type]
    assert sorted(installed_chains(saved)) == sorted(CHAINS)
    assert saved.count("-j ISTIO_OUTPUT") == 1 and saved.count("-j ISTIO_INBOUND") == 1

    assert get(pod_a, b_ip, 8000) == f"outbound {b_ip}:8000 1337", "the app's outbound goes to 15001"
    assert get(pod_a, b_ip, 8000, uid=netns.PROXY_UID) == f"app-b {b_ip}:8000 0", "uid 1337 is not captured"
    assert get(pod_b, a_ip, 9080) == f"inbound {a_ip}:9080 1337", "inbound goes to 15006"
    assert get(pod_b, a_ip, 15021) == f"health {a_ip}:15021 0", "excluded inbound port"
    assert get(pod_a, "127.0.0.1", 15021) == "health 127.0.0.1:15021 0", "loopback is not captured"
    assert get(pod_a, a_ip, 15021) == f"health {a_ip}:15021 0", "the app calling its own pod IP is not captured"
    assert get(pod_a, a_ip, 9080, uid=netns.PROXY_UID) == f"inbound {a_ip}:9080 1337", (
        "the proxy calling its own pod IP goes inbound"
    )

    removed = plait_iptables(pod_a, "--cleanup", "--backend", backend)
    assert removed.returncode == 0, removed.stderr
    assert installed_chains(save_nat(backend=backend, netns=pod_a)) == []  # type: ignore[arg-type]
    assert "ISTIO" not in save_nat(backend=backend, netns=pod_a)  # type: ignore[arg-type]
    assert get(pod_a, b_ip, 8000) == f"app-b {b_ip}:8000 0", "after --cleanup: direct again"
    again = plait_iptables(pod_a, "--cleanup", "--backend", backend)
    assert again.returncode == 0 and "no ISTIO_* chains" in again.stderr


def test_install_into_a_missing_namespace_says_what_failed() -> None:
    require_root()
    result = CliRunner().invoke(cli(), ["iptables", "--netns", f"plt-missing-{os.getpid()}"])
    assert result.exit_code == 1
    assert "error: ip netns exec plt-missing" in result.output and "failed" in result.output


def tcp_passthrough(name: str, port: int, cluster: str, **listener: object) -> dict:
    proxy = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": cluster,
        "cluster": cluster,
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}],
        **listener,
    }


def original_dst_cluster(name: str, **cluster: object) -> dict:
    return {"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED", "connect_timeout": "1s", **cluster}


SIDECAR = {  # Istio's capture listeners, reduced to passthrough
    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
    "static_resources": {
        "listeners": [
            tcp_passthrough("virtualOutbound", 15001, "PassthroughCluster", use_original_dst=True),
            tcp_passthrough(
                "virtualInbound",
                15006,
                "InboundPassthroughCluster",
                listener_filters=[
                    {
                        "name": "envoy.filters.listener.original_dst",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
                        },
                    }
                ],
            ),
        ],
        "clusters": [
            original_dst_cluster("PassthroughCluster"),
            original_dst_cluster(
                "InboundPassthroughCluster",
                upstream_bind_config={"source_address": {"address": "127.0.0.6", "port_value": 0}},
            ),
        ],
    },
}


def test_envoy_as_uid_1337_passes_captured_traffic_through(
    network: netns.Network, processes: list[subprocess.Popen[str]]
) -> None:
    base = network.gateway.rsplit(".", 1)[0]
    a_ip, b_ip = f"{base}.2", f"{base}.3"
    pod_a = netns.add_pod(network, "a", a_ip)
    pod_b = netns.add_pod(network, "b", b_ip)
    listen(processes, pod_a, "9080=app-a")
    listen(processes, pod_b, "8000=app-b")
    apply(CaptureConfig(), netns=pod_a)
    envoy = [find_envoy(), "--config-yaml", json.dumps(SIDECAR), "--disable-hot-restart", "-l", "warning"]
    processes.append(subprocess.Popen(netns.exec_argv(pod_a, envoy, uid=netns.PROXY_UID), text=True))
    for _ in range(100):
        if request(pod_a, "127.0.0.1", 15000, None, "/ready").stdout.strip() == "LIVE":
            break
        time.sleep(0.1)

    assert get(pod_a, b_ip, 8000) == f"app-b {b_ip}:8000 0"
    assert get(pod_b, a_ip, 9080) == f"app-a {a_ip}:9080 0"
    stats = get(pod_a, "127.0.0.1", 15000, path="/stats?filter=Passthrough.*upstream_cx_total")
    assert stats.splitlines() == [
        "cluster.InboundPassthroughCluster.upstream_cx_total: 1",
        "cluster.PassthroughCluster.upstream_cx_total: 1",
    ]
