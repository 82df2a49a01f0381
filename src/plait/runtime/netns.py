"""Pods as network namespaces on a bridge: the plumbing of capture mode (Linux, root).

A `Network` names one bridge (``plait0``, host side 10.244.0.1/16), its subnet and the prefix
of its namespaces (``plait-<pod>``); tests use a bridge, subnet and prefix of their own.
`ensure_bridge` creates the bridge; `add_pod` creates a pod's namespace with ``lo`` up, a veth
pair (``eth0`` inside, joined to the bridge outside), the pod address and a default route via
the bridge, plus ``/etc/netns/<namespace>/hosts`` and ``resolv.conf``, which
``ip netns exec`` bind-mounts over ``/etc/hosts`` and ``/etc/resolv.conf`` for every process
started in the namespace. `write_hosts` rewrites the hosts file in place (same inode), so
running processes see the change. `exec_argv` is the command line that starts a process in a
pod, optionally as the proxy's uid (``setpriv``). `remove_pod` and `teardown` delete
everything and may be called again; they refuse while processes still run in a namespace.

Pods on one bridge reach each other and the host (the bridge address) without IP forwarding;
no sysctl is changed. Every call runs ``ip`` (iproute2) and blocks until it returns.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

NETNS_ETC = Path("/etc/netns")
PROXY_UID = 1337
IFNAME_MAX = 15  # Linux interface names: at most 15 characters
POD_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
COMMAND_TIMEOUT = 30.0
RESOLV_CONF = (
    "# plait: names resolve from this pod's /etc/hosts; no DNS server is reachable, so fail fast\n"
    "options timeout:1 attempts:1\n"
)


class NetnsError(Exception):
    """A namespace, link or address could not be set up or removed; the message says why."""


class CaptureUnavailable(NetnsError):
    """Capture mode cannot run here: ``ip`` (iproute2) is missing. `why_not_capture` says more."""


@dataclass(frozen=True)
class Network:
    """One bridge, its IPv4 subnet (the bridge takes the first address) and its namespaces' prefix."""

    bridge: str = "plait0"
    subnet: str = "10.244.0.0/16"
    prefix: str = "plait-"

    def __post_init__(self) -> None:
        if len(self.bridge) > IFNAME_MAX:
            raise NetnsError(f"bridge name {self.bridge!r} is longer than {IFNAME_MAX} characters")

    @property
    def gateway(self) -> str:
        """The bridge's (host side) address: the subnet's first host, e.g. 10.244.0.1."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def namespace(self, pod: str) -> str:
        """``plait-<pod>``: the pod's network namespace."""
        if not POD_NAME.match(pod):
            raise NetnsError(f"pod name {pod!r}: use lower-case letters, digits, '-' and '.'")
        return self.prefix + pod

    def host_veth(self, pod: str) -> str:
        """The host end of the pod's veth pair (a hash, since pod names can exceed 15 characters)."""
        return "pv" + hashlib.sha256(self.namespace(pod).encode()).hexdigest()[:11]


def why_not_capture() -> str | None:
    """None if capture mode can run here, else the reason (for ``--mode auto``)."""
    if not sys.platform.startswith("linux"):
        return "capture mode needs Linux network namespaces; use --mode proxy"
    if os.geteuid() != 0:
        return "capture mode needs root; use --mode proxy"
    missing = [tool for tool in ("ip", "setpriv", "iptables-nft-restore") if shutil.which(tool) is None]
    if missing:
        return f"capture mode needs {', '.join(missing)} (Debian: apt-get install iproute2 util-linux iptables)"
    probe = f"plaitprobe-{os.getpid()}"  # outside any Network's prefix
    created = ip("netns", "add", probe, check=False)
    if created.returncode != 0:
        return f"cannot create network namespaces here ({created.stderr.strip()}); use --mode proxy"
    ip("netns", "del", probe)
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; a failure raises NetnsError with ip's message (unless check=False)."""
    argv = ["ip", *args]
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise CaptureUnavailable("the ip command (iproute2) is not installed") from None
    except subprocess.TimeoutExpired:
        raise NetnsError(f"{shlex.join(argv)} did not finish in {COMMAND_TIMEOUT:.0f} s") from None
    if check and proc.returncode != 0:
        hint = "; capture mode needs root, use --mode proxy" if os.geteuid() != 0 else ""
        raise NetnsError(f"{shlex.join(argv)} failed: {proc.stderr.strip()}{hint}")
    return proc


def link_exists(name: str) -> bool:
    return ip("link", "show", "dev", name, check=False).returncode == 0


def ensure_bridge(network: Network) -> None:
    """Create the bridge with its address, up; an existing bridge is kept (and given its address)."""
    if not link_exists(network.bridge):
        ip("link", "add", network.bridge, "type", "bridge")
    address = f"{network.gateway}/{network.prefixlen}"
    if f"inet {address} " not in ip("-o", "addr", "show", "dev", network.bridge).stdout:
        ip("addr", "add", address, "dev", network.bridge)
    ip("link", "set", network.bridge, "up")


def namespaces(network: Network) -> list[str]:
    """This network's namespaces that exist now (``ip netns list`` filtered by the prefix)."""
    names = [line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()]
    return sorted(name for name in names if name.startswith(network.prefix))


def add_pod(network: Network, pod: str, address: str, hosts: Mapping[str, Iterable[str]] | None = None) -> str:
    """Create the pod's namespace, wired to the bridge at `address`; returns the namespace name.

    `hosts` maps addresses to names for the pod's hosts file (e.g. a service VIP to
    ``reviews reviews.default reviews.default.svc.cluster.local``). On failure nothing is left.
    """
    ns, veth = network.namespace(pod), network.host_veth(pod)
    if ipaddress.ip_address(address) not in ipaddress.ip_network(network.subnet):
        raise NetnsError(f"pod address {address} is outside the network {network.subnet}")
    if ns in namespaces(network):
        raise NetnsError(f"network namespace {ns} already exists (left from an earlier run? `plait down` removes it)")
    ip("netns", "add", ns)
    try:
        write_hosts(network, pod, address, hosts or {})
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("link", "set", veth, "master", network.bridge, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"{address}/{network.prefixlen}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "route", "add", "default", "via", network.gateway)
    except NetnsError:
        remove_pod(network, pod)
        raise
    return ns


def hosts_text(pod: str, address: str, hosts: Mapping[str, Iterable[str]]) -> str:
    """The pod's /etc/hosts: localhost, the pod's own name, then `hosts` (address → names)."""
    lines = [
        "# plait: this pod's hosts file (service names → service addresses)",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"{address}\t{pod}",
    ]
    lines += [f"{addr}\t{' '.join(names)}" for addr, names in hosts.items()]
    return "\n".join(lines) + "\n"


def write_hosts(network: Network, pod: str, address: str, hosts: Mapping[str, Iterable[str]]) -> None:
    """Write (or rewrite in place, keeping the inode that ``ip netns exec`` bind-mounted) the pod's files."""
    directory = NETNS_ETC / network.namespace(pod)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "hosts", "w", encoding="utf-8") as hosts_file:  # truncates the same inode
        hosts_file.write(hosts_text(pod, address, hosts))
    (directory / "resolv.conf").write_text(RESOLV_CONF, encoding="utf-8")


DROPPED_CAPABILITIES = "-sys_admin,-sys_ptrace,-sys_module"


def exec_argv(
    namespace: str,
    argv: Sequence[str],
    *,
    uid: int | None = None,
    gid: int | None = None,
    hide: Sequence[Path] = (),
    keep: Path | None = None,
) -> list[str]:
    """The command line running `argv` in `namespace`, as `uid`/`gid` (gid defaults to uid) if given.

    Use ``uid=PROXY_UID`` for the sidecar: iptables leaves uid 1337's own connections alone.
    `hide`: directories to cover with an empty tmpfs in the process's mount namespace (`ip netns
    exec` gives it a private one); `keep`: a directory inside one of them that stays visible (it is
    opened before the cover goes on and bind-mounted back through that descriptor). The process then
    loses CAP_SYS_ADMIN and CAP_SYS_PTRACE (DROPPED_CAPABILITIES), so not even root in it can unmount
    a cover or look through another process's /proc/PID/root.
    """
    prefix = ["ip", "netns", "exec", namespace]
    if hide:
        prefix += ["sh", "-c", _cover_script(hide, keep), "sh", *map(str, hide), *([str(keep)] if keep else [])]
    if uid is not None:
        prefix += ["setpriv", f"--reuid={uid}", f"--regid={uid if gid is None else gid}", "--clear-groups"]
    return [*prefix, *argv]


def _cover_script(hide: Sequence[Path], keep: Path | None) -> str:
    """sh -c script for `exec_argv`: positional parameters are the hidden directories, then `keep`."""
    steps = [f'exec 3<"${{{len(hide) + 1}}}"'] if keep else []
    for i, path in enumerate(hide, 1):
        mode = "711" if keep and path in keep.parents else "000"  # 711: a path through, no listing
        steps.append(f'mount -t tmpfs -o size=4k,mode={mode} plait-hidden "${{{i}}}"')
    if keep:
        at = f'"${{{len(hide) + 1}}}"'
        steps.append(f"mkdir -p {at} && mount --no-canonicalize --bind /proc/self/fd/3 {at} && exec 3<&-")
    shift = len(hide) + (1 if keep else 0)
    return " && ".join(steps) + f' && shift {shift} && exec setpriv --bounding-set={DROPPED_CAPABILITIES} "$@"'


def namespace_pids(namespace: str) -> list[int]:
    proc = ip("netns", "pids", namespace, check=False)
    return [int(pid) for pid in proc.stdout.split()] if proc.returncode == 0 else []


def remove_pod(network: Network, pod: str) -> None:
    """Delete the pod's veth, namespace and /etc/netns files; a pod already gone is fine."""
    remove_namespace(network.namespace(pod), network.host_veth(pod))


def remove_namespace(ns: str, veth: str | None = None) -> None:
    pids = namespace_pids(ns)
    if pids:
        raise NetnsError(f"network namespace {ns} still has processes {', '.join(map(str, pids))}: stop them first")
    if veth and link_exists(veth):
        ip("link", "del", veth)  # deletes both ends at once (a namespace's deletion would, later)
    ip("netns", "del", ns, check=False)
    shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)


def teardown(network: Network) -> None:
    """Remove every namespace of `network`, anything still on its bridge, the bridge, the /etc/netns files."""
    for ns in namespaces(network):
        remove_namespace(ns, network.host_veth(ns.removeprefix(network.prefix)))
    if link_exists(network.bridge):
        for port in ip("-o", "link", "show", "master", network.bridge).stdout.splitlines():
            ip("link", "del", port.split(":")[1].strip().split("@")[0])
        ip("link", "del", network.bridge)
    if NETNS_ETC.is_dir():
        for leftover in NETNS_ETC.glob(f"{network.prefix}*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if not any(NETNS_ETC.iterdir()):
            NETNS_ETC.rmdir()


def leftovers(network: Network) -> list[str]:
    """What of `network` exists now (namespaces, bridge, /etc/netns entries): [] after a clean teardown."""
    found = [f"namespace {ns}" for ns in namespaces(network)]
    if link_exists(network.bridge):
        found.append(f"bridge {network.bridge}")
    if NETNS_ETC.is_dir():
        found += [f"file {path}" for path in NETNS_ETC.glob(f"{network.prefix}*")]
    return found
