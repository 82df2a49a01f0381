"""Pods as network namespaces: names, hosts files, connectivity, running as the proxy's uid, teardown.

The real tests (root; CI runs as root) use a bridge, subnet and namespace prefix of their own
and only send traffic to addresses inside the namespaces they create (and the bridge's).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest

from plait.runtime import netns
from plait.runtime.netns import NETNS_ETC, NetnsError, Network

SERVER = textwrap.dedent("""
    import socket, sys
    server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
    print("ready", flush=True)
    while True:
        conn, peer = server.accept()
        with conn:
            conn.sendall(("hello from %s to %s" % (conn.getsockname()[0], peer[0])).encode())
""")

CONNECT = textwrap.dedent("""
    import socket, sys
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as conn:
        print(conn.recv(100).decode())
""")


def test_names_fit_linux_limits() -> None:
    network = Network()
    assert network.gateway == "10.244.0.1" and network.prefixlen == 16
    assert network.namespace("productpage-v1-0") == "plait-productpage-v1-0"
    veth = network.host_veth("a-pod-name-much-longer-than-fifteen-characters")
    assert len(veth) <= 15 and veth != network.host_veth("another-pod")
    with pytest.raises(NetnsError, match="longer than 15"):
        Network(bridge="a-very-long-bridge")
    with pytest.raises(NetnsError, match="pod name 'Bad_Name'"):
        network.namespace("Bad_Name")


def test_hosts_file_maps_service_names_to_addresses() -> None:
    text = netns.hosts_text(
        "reviews-v1-0",
        "10.244.0.5",
        {"10.96.0.12": ["ratings", "ratings.default", "ratings.default.svc.cluster.local"]},
    )
    assert text.splitlines()[1:] == [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "10.244.0.5\treviews-v1-0",
        "10.96.0.12\tratings ratings.default ratings.default.svc.cluster.local",
    ]


def test_exec_argv_runs_the_proxy_as_uid_1337() -> None:
    assert netns.exec_argv("plait-a", ["envoy", "-c", "x.yaml"], uid=netns.PROXY_UID) == [
        "ip",
        "netns",
        "exec",
        "plait-a",
        "setpriv",
        "--reuid=1337",
        "--regid=1337",
        "--clear-groups",
        "envoy",
        "-c",
        "x.yaml",
    ]
    assert netns.exec_argv("plait-a", ["app"]) == ["ip", "netns", "exec", "plait-a", "app"]


# --- real namespaces (root) ---------------------------------------------------------------------


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces); CI runs it as root")


@pytest.fixture
def network() -> Iterator[Network]:
    require_root()
    net = Network(bridge=f"plt-n{os.getpid()}", subnet=f"10.251.{os.getpid() % 250}.0/24", prefix=f"pltn{os.getpid()}-")
    netns.teardown(net)
    netns.ensure_bridge(net)
    yield net
    netns.teardown(net)


def address(network: Network, host: int) -> str:
    return f"{network.gateway.rsplit('.', 1)[0]}.{host}"


def start(processes: list[subprocess.Popen[str]], argv: list[str], **kwargs: object) -> subprocess.Popen[str]:
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **kwargs)  # type: ignore[call-overload]
    processes.append(proc)
    return proc


def serve(processes: list[subprocess.Popen[str]], ns: str, port: int) -> None:
    server = start(processes, netns.exec_argv(ns, [sys.executable, "-I", "-c", SERVER, str(port)]))
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"


def run_in(ns: str, code: str, *args: str, uid: int | None = None) -> str:
    done = subprocess.run(
        netns.exec_argv(ns, [sys.executable, "-I", "-c", code, *args], uid=uid),
        check=False,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_capture_is_available_here() -> None:
    require_root()
    assert netns.why_not_capture() is None


def test_pods_reach_each_other_by_name_and_the_host_reaches_them(
    network: Network, processes: list[subprocess.Popen[str]]
) -> None:
    netns.ensure_bridge(network)  # again: the existing bridge is kept as it is
    a_ip, b_ip = address(network, 2), address(network, 3)
    pod_a = netns.add_pod(network, "client-v1-0", a_ip, {b_ip: ["backend", "backend.default"]})
    pod_b = netns.add_pod(network, "backend-v1-0", b_ip)
    serve(processes, pod_b, 8000)
    assert run_in(pod_a, CONNECT, "backend", "8000") == f"hello from {b_ip} to {a_ip}"
    assert run_in(pod_a, CONNECT, "backend.default", "8000") == f"hello from {b_ip} to {a_ip}"
    with socket.create_connection((b_ip, 8000), timeout=5) as conn:  # from the host, over the bridge
        assert conn.recv(100).decode() == f"hello from {b_ip} to {network.gateway}"
    assert run_in(pod_b, "import socket; print(socket.gethostbyname('backend-v1-0'))") == b_ip
    ifaces = run_in(pod_a, "import socket; print(sorted(n for _, n in socket.if_nameindex()))")
    assert ifaces == "['eth0', 'lo']"


def test_hosts_file_updates_reach_running_processes(network: Network, processes: list[subprocess.Popen[str]]) -> None:
    a_ip = address(network, 2)
    pod = netns.add_pod(network, "a", a_ip, {"10.96.0.20": ["reviews"]})
    lookup = (
        "import socket, sys\nfor _ in range(2):\n    print(socket.gethostbyname('reviews'), flush=True)\n"
        "    sys.stdin.readline()\n"
    )
    proc = start(processes, netns.exec_argv(pod, [sys.executable, "-I", "-c", lookup]))
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline().strip() == "10.96.0.20"
    netns.write_hosts(network, "a", a_ip, {"10.96.0.21": ["reviews"]})
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "10.96.0.21"


def test_unknown_names_fail_fast(network: Network) -> None:
    pod = netns.add_pod(network, "a", address(network, 2))
    code = "import socket\ntry:\n    socket.getaddrinfo('no-such-service', 80)\nexcept OSError:\n    print('failed')"
    started = time.monotonic()
    assert run_in(pod, code) == "failed"
    assert time.monotonic() - started < 3


def test_proxy_runs_as_uid_1337_without_groups(network: Network) -> None:
    pod = netns.add_pod(network, "a", address(network, 2))
    ids = run_in(pod, "import os; print(os.getuid(), os.getgid(), os.getgroups())", uid=netns.PROXY_UID)
    assert ids == "1337 1337 []"


def test_add_pod_refuses_bad_input_and_leaves_nothing(network: Network) -> None:
    with pytest.raises(NetnsError, match="outside the network"):
        netns.add_pod(network, "a", "10.9.9.9")
    netns.add_pod(network, "a", address(network, 2))
    with pytest.raises(NetnsError, match="already exists"):
        netns.add_pod(network, "a", address(network, 3))
    no_bridge = Network(bridge=network.bridge + "x", subnet=network.subnet, prefix=network.prefix + "x")
    with pytest.raises(NetnsError, match=f"master {no_bridge.bridge}"):
        netns.add_pod(no_bridge, "b", address(network, 4))  # fails half-way: the bridge does not exist
    assert netns.namespaces(network) == [network.namespace("a")]
    assert not netns.link_exists(no_bridge.host_veth("b"))
    assert not (NETNS_ETC / no_bridge.namespace("b")).exists()


def test_teardown_removes_everything_and_can_run_again(
    network: Network, processes: list[subprocess.Popen[str]]
) -> None:
    pods = {"a": address(network, 2), "b": address(network, 3)}
    for pod, ip in pods.items():
        netns.add_pod(network, pod, ip, {"10.96.0.30": ["svc"]})
    server = start(processes, netns.exec_argv(network.namespace("a"), [sys.executable, "-I", "-c", SERVER, "8000"]))
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    with pytest.raises(NetnsError, match=f"still has processes {server.pid}"):
        netns.teardown(network)
    server.kill()
    server.wait(timeout=10)

    netns.teardown(network)
    netns.teardown(network)
    assert netns.leftovers(network) == []
    assert not any(netns.link_exists(network.host_veth(pod)) for pod in pods)
    assert not any((NETNS_ETC / network.namespace(pod)).exists() for pod in pods)
