"""Istio's sidecar capture rules (what ``istio-iptables`` installs), and installing them.

In: a `CaptureConfig` — the istio-iptables flags (``-p -z -u -g -m -i -x -b -d -o -q``), parsed by
`CaptureConfig.from_flags`. Out: `render_rules(config)`, the nat-table rules as
``iptables-restore`` input (pure; no I/O). `apply` installs them with
``iptables-restore --noflush`` (nft or legacy backend, optionally inside a network namespace)
after removing any earlier copy; `cleanup` removes exactly Istio's four chains and the jumps
into them (`removal_input`, pure, works from ``iptables-save`` output).

The rules (Istio's, IPv4, nat table): TCP arriving on any port but the excluded ones goes to
the inbound capture port (15006); TCP the pod sends goes to the outbound capture port (15001)
unless it comes from the proxy's uid/gid (1337), goes to 127.0.0.1, or to an excluded range
or port. The proxy's own connections over loopback to the pod's IP are sent inbound (15006),
so app → own service VIP → sidecar → sidecar inbound → app works, as in Istio.

With ``--redirect-dns`` (Istio's DNS capture, for the agent's DNS proxy): DNS the pod sends to the
nameservers of its /etc/resolv.conf (or to any address, ``--capture-all-dns``) goes to the agent's
port 15053, over UDP (rules in OUTPUT, after RETURNs for the proxy's uid/gid, whose upstream
queries must get out) and over TCP (in ISTIO_OUTPUT, after the proxy's own RETURNs), as Istio
writes them. Istio's raw-table conntrack zones for DNS are not written.

`apply` and `cleanup` block on subprocesses (each bounded by a timeout).
"""

from __future__ import annotations

import ipaddress
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Literal

CHAINS = ("ISTIO_INBOUND", "ISTIO_REDIRECT", "ISTIO_IN_REDIRECT", "ISTIO_OUTPUT")
WILDCARD = "*"
TUNNEL_PORT = 15008  # Istio's HBONE port: never captured inbound, never sent back inbound by the proxy
ALWAYS_EXCLUDED_INBOUND_PORTS = (15090, 15021, 15020)  # Prometheus, health, merged metrics: the proxy's own
PASSTHROUGH_SOURCE = "127.0.0.6/32"  # Envoy's inbound passthrough binds this source address
LOCALHOST = "127.0.0.1/32"
BACKENDS = {
    "nft": ("iptables-nft-restore", "iptables-nft-save"),
    "legacy": ("iptables-legacy-restore", "iptables-legacy-save"),
}
Backend = Literal["nft", "legacy"]
COMMAND_TIMEOUT = 30.0
DNS_PROXY_PORT = 15053  # the agent's DNS proxy

Ranges = Literal["*"] | tuple[IPv4Network, ...]
Ports = Literal["*"] | tuple[int, ...]


class IptablesError(Exception):
    """The rules could not be parsed, generated, installed or removed; the message says why."""


@dataclass(frozen=True)
class CaptureConfig:
    """What to capture. Defaults are what Istio's sidecar injector passes to istio-iptables."""

    proxy_port: int = 15001  # -p: outbound capture port (Envoy's virtualOutbound)
    inbound_capture_port: int = 15006  # -z: inbound capture port (Envoy's virtualInbound)
    proxy_uids: tuple[int, ...] = (1337,)  # -u: never capture these users' connections
    proxy_gids: tuple[int, ...] = (1337,)  # -g: … nor these groups' (Istio: same as -u unless given)
    outbound_ranges: Ranges = WILDCARD  # -i: destinations to capture; "*" = all, () = none
    outbound_ranges_exclude: tuple[IPv4Network, ...] = ()  # -x
    inbound_ports: Ports = WILDCARD  # -b: inbound ports to capture; "*" = all, () = none
    inbound_ports_exclude: tuple[int, ...] = ()  # -d (with -b "*"); 15090, 15021, 15020 are always excluded
    outbound_ports_exclude: tuple[int, ...] = ()  # -o
    outbound_ports_include: tuple[int, ...] = ()  # -q: captured whatever their destination (before -i's ranges)
    redirect_dns: bool = False  # --redirect-dns: DNS to `dns_servers` goes to the agent's `dns_port`
    dns_servers: tuple[IPv4Network, ...] = ()  # the IPv4 nameservers of the pod's resolv.conf
    capture_all_dns: bool = False  # --capture-all-dns: DNS to any address, not only `dns_servers`
    dns_port: int = DNS_PROXY_PORT

    @classmethod
    def from_flags(
        cls,
        *,
        proxy_port: str = "15001",
        inbound_capture_port: str = "15006",
        proxy_uid: str = "1337",
        proxy_gid: str | None = None,
        interception_mode: str = "REDIRECT",
        outbound_ranges: str = WILDCARD,
        outbound_ranges_exclude: str = "",
        inbound_ports: str = WILDCARD,
        inbound_ports_exclude: str = "",
        outbound_ports_exclude: str = "",
        outbound_ports_include: str = "",
        redirect_dns: bool = False,
        capture_all_dns: bool = False,
        dns_servers: Sequence[str] = (),
    ) -> CaptureConfig:
        """Parse istio-iptables' flag values (strings, comma-separated lists) into a config."""
        if interception_mode.upper() == "TPROXY":
            raise IptablesError(
                "-m TPROXY is not supported: plait redirects inbound traffic with REDIRECT "
                "(Istio's default); use -m REDIRECT"
            )
        if interception_mode.upper() != "REDIRECT":
            raise IptablesError(f"-m: unknown inbound interception mode {interception_mode!r}; use REDIRECT")
        uids = parse_ids(proxy_uid, "-u")
        return cls(
            proxy_port=parse_port(proxy_port, "-p"),
            inbound_capture_port=parse_port(inbound_capture_port, "-z"),
            proxy_uids=uids,
            proxy_gids=uids if proxy_gid is None else parse_ids(proxy_gid, "-g"),
            outbound_ranges=parse_ranges(outbound_ranges, "-i"),
            outbound_ranges_exclude=parse_excluded_ranges(outbound_ranges_exclude),
            inbound_ports=WILDCARD if inbound_ports.strip() == WILDCARD else parse_ports(inbound_ports, "-b"),
            inbound_ports_exclude=parse_ports(inbound_ports_exclude, "-d"),
            outbound_ports_exclude=parse_ports(outbound_ports_exclude, "-o"),
            outbound_ports_include=parse_ports(outbound_ports_include, "-q"),
            redirect_dns=redirect_dns,
            capture_all_dns=capture_all_dns,
            dns_servers=ipv4_nameservers(dns_servers),
        )


def ipv4_nameservers(addresses: Sequence[str]) -> tuple[IPv4Network, ...]:
    """The IPv4 nameservers among `addresses` (resolv.conf's, in order) as /32s; IPv6 ones are left
    out (plait captures IPv4 only)."""
    out = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            raise IptablesError(f"nameserver {address!r} is not an IP address") from None
        if ip.version == 4:
            out.append(IPv4Network(f"{ip}/32"))
    return tuple(dict.fromkeys(out))


def split_list(text: str) -> list[str]:
    """Istio's list syntax: comma-separated, blanks ignored."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_port(text: str, flag: str) -> int:
    if not text.strip().isdigit() or not 0 < int(text) < 65536:
        raise IptablesError(f"{flag}: {text!r} is not a port number (1-65535)")
    return int(text)


def parse_ports(text: str, flag: str) -> tuple[int, ...]:
    return tuple(dict.fromkeys(parse_port(item, flag) for item in split_list(text)))


def parse_ids(text: str, flag: str) -> tuple[int, ...]:
    ids = split_list(text)
    if not ids or not all(item.isdigit() for item in ids):
        raise IptablesError(f"{flag}: expected numeric ids, comma-separated (e.g. 1337), got {text!r}")
    return tuple(int(item) for item in ids)


def parse_ranges(text: str, flag: str) -> Ranges:
    """``*`` or comma-separated IPv4 CIDRs (a bare address means /32)."""
    if text.strip() == WILDCARD:
        return WILDCARD
    ranges = []
    for item in split_list(text):
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise IptablesError(f"{flag}: {item!r} is not an IP range in CIDR form (e.g. 10.96.0.0/12)") from None
        if network.version != 4:
            raise IptablesError(f"{flag}: {item!r} is IPv6; plait captures IPv4 only")
        ranges.append(network)
    return tuple(ranges)


def parse_excluded_ranges(text: str) -> tuple[IPv4Network, ...]:
    ranges = parse_ranges(text, "-x")
    if ranges == WILDCARD:
        raise IptablesError("-x: '*' is not allowed (to capture no outbound traffic, pass -i '')")
    return ranges


def render_rules(config: CaptureConfig) -> str:
    """The nat-table rules as ``iptables-restore --noflush`` input (``:CHAIN`` creates or empties a chain)."""
    lines = [
        "*nat",
        *(f":{chain} - [0:0]" for chain in CHAINS),
        f"-A ISTIO_INBOUND -p tcp --dport {TUNNEL_PORT} -j RETURN",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {config.proxy_port}",
        f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {config.inbound_capture_port}",
        *inbound_rules(config),
        *outbound_rules(config),
        *dns_udp_rules(config),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def inbound_rules(config: CaptureConfig) -> list[str]:
    """PREROUTING → ISTIO_INBOUND: every port but the excluded ones (``*``), or just the listed ones."""
    if not config.inbound_ports:
        return []
    rules = ["-A PREROUTING -p tcp -j ISTIO_INBOUND"]
    if config.inbound_ports == WILDCARD:
        excluded = dict.fromkeys((*config.inbound_ports_exclude, *ALWAYS_EXCLUDED_INBOUND_PORTS))
        rules += [f"-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN" for port in excluded]
        rules.append("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
    else:
        rules += [f"-A ISTIO_INBOUND -p tcp --dport {port} -j ISTIO_IN_REDIRECT" for port in config.inbound_ports]
    return rules


def outbound_rules(config: CaptureConfig) -> list[str]:
    """OUTPUT → ISTIO_OUTPUT: port exclusions, the proxy's own traffic, loopback, ranges (Istio's order)."""
    rules = ["-A OUTPUT -p tcp -j ISTIO_OUTPUT"]
    rules += [f"-A ISTIO_OUTPUT -p tcp --dport {port} -j RETURN" for port in config.outbound_ports_exclude]
    rules.append(f"-A ISTIO_OUTPUT -o lo -s {PASSTHROUGH_SOURCE} -j RETURN")
    loopback_captured = config.outbound_ranges != WILDCARD and any(r.is_loopback for r in config.outbound_ranges)
    owners = [("--uid-owner", uid) for uid in config.proxy_uids] + [("--gid-owner", gid) for gid in config.proxy_gids]
    # With DNS capture, TCP DNS is kept out of the loopback rules, as Istio does: the proxy's DNS over
    # loopback is not sent inbound, and the app's DNS to a nameserver on loopback is still captured.
    not_port = "! --dport 53" if config.redirect_dns else f"! --dport {TUNNEL_PORT}"
    app_loopback = "-o lo -p tcp ! --dport 53" if config.redirect_dns else "-o lo"
    for match, owner in owners:
        # The proxy talking to the pod's own IP over loopback is inbound traffic: send it to 15006.
        rules.append(
            f"-A ISTIO_OUTPUT -o lo ! -d {LOCALHOST} -p tcp {not_port} -m owner {match} {owner} -j ISTIO_IN_REDIRECT"
        )
        if not loopback_captured:  # the app talking to itself over loopback is left alone
            rules.append(f"-A ISTIO_OUTPUT {app_loopback} -m owner ! {match} {owner} -j RETURN")
        rules.append(f"-A ISTIO_OUTPUT -m owner {match} {owner} -j RETURN")  # the proxy's own connections
    rules += dns_tcp_rules(config)
    rules.append(f"-A ISTIO_OUTPUT -d {LOCALHOST} -j RETURN")
    rules += [f"-A ISTIO_OUTPUT -d {cidr} -j RETURN" for cidr in config.outbound_ranges_exclude]
    rules += [f"-A ISTIO_OUTPUT -p tcp --dport {port} -j ISTIO_REDIRECT" for port in config.outbound_ports_include]
    if config.outbound_ranges == WILDCARD:
        rules.append("-A ISTIO_OUTPUT -j ISTIO_REDIRECT")
    elif config.outbound_ranges:
        rules += [f"-A ISTIO_OUTPUT -d {cidr} -j ISTIO_REDIRECT" for cidr in config.outbound_ranges]
        rules.append("-A ISTIO_OUTPUT -j RETURN")
    return rules


def _dns_destinations(config: CaptureConfig) -> list[str]:
    """``-d SERVER/32`` for each nameserver, or one empty match with --capture-all-dns."""
    return [""] if config.capture_all_dns else [f"-d {server} " for server in config.dns_servers]


def dns_tcp_rules(config: CaptureConfig) -> list[str]:
    """ISTIO_OUTPUT: TCP DNS to the nameservers → the agent (after the proxy's own RETURNs)."""
    if not config.redirect_dns:
        return []
    return [
        f"-A ISTIO_OUTPUT {match}-p tcp --dport 53 -j REDIRECT --to-ports {config.dns_port}"
        for match in _dns_destinations(config)
    ]


def dns_udp_rules(config: CaptureConfig) -> list[str]:
    """OUTPUT: UDP DNS to the nameservers → the agent, except the proxy's (uid/gid) own queries."""
    if not config.redirect_dns:
        return []
    owners = [("--uid-owner", uid) for uid in config.proxy_uids] + [("--gid-owner", gid) for gid in config.proxy_gids]
    rules = [f"-A OUTPUT -p udp --dport 53 -m owner {match} {owner} -j RETURN" for match, owner in owners]
    rules += [
        f"-A OUTPUT {match}-p udp --dport 53 -j REDIRECT --to-ports {config.dns_port}"
        for match in _dns_destinations(config)
    ]
    return rules


def is_dns_udp_rule(words: Sequence[str]) -> bool:
    """Is this saved ``-A OUTPUT …`` rule one of `dns_udp_rules` (UDP to port 53, RETURN or REDIRECT)?"""
    return (
        words[:2] == ["-A", "OUTPUT"]
        and "udp" in words
        and "--dport" in words[:-1]
        and words[words.index("--dport") + 1] == "53"
        and jump_target(words) in ("RETURN", "REDIRECT")
    )


def removal_input(saved_nat: str) -> str:
    """``iptables-restore --noflush`` input removing Istio's chains, every jump into them and the UDP
    DNS rules in OUTPUT.

    `saved_nat` is ``iptables-save -t nat`` output. Returns "" when there is nothing to remove.
    """
    present, jumps = [], []
    for line in saved_nat.splitlines():
        words = line.split()
        if line.startswith(":") and line[1:].split()[0] in CHAINS:
            present.append(line[1:].split()[0])
        elif (
            words[:1] == ["-A"] and words[1] not in CHAINS and (jump_target(words) in CHAINS or is_dns_udp_rule(words))
        ):
            jumps.append("-D" + line[2:])
    if not present and not jumps:
        return ""
    lines = ["*nat", *jumps, *(f"-F {chain}" for chain in present), *(f"-X {chain}" for chain in present), "COMMIT"]
    return "\n".join(lines) + "\n"


def jump_target(words: Sequence[str]) -> str | None:
    for flag in ("-j", "-g"):
        if flag in words[:-1]:
            return words[words.index(flag) + 1]
    return None


def installed_chains(saved_nat: str) -> list[str]:
    """Which of Istio's chains ``iptables-save -t nat`` output shows."""
    return [
        line[1:].split()[0] for line in saved_nat.splitlines() if line.startswith(":") and line[1:].split()[0] in CHAINS
    ]


def apply(config: CaptureConfig, *, backend: Backend = "nft", netns: str | None = None) -> str:
    """Install the rules (replacing any earlier copy) in `netns` (or here); returns what was restored."""
    cleanup(backend=backend, netns=netns)
    rules = render_rules(config)
    restore(rules, backend=backend, netns=netns)
    return rules


def cleanup(*, backend: Backend = "nft", netns: str | None = None) -> bool:
    """Remove Istio's chains and the jumps into them; True if there was anything to remove."""
    removal = removal_input(save_nat(backend=backend, netns=netns))
    if removal:
        restore(removal, backend=backend, netns=netns)
    return bool(removal)


def save_nat(*, backend: Backend = "nft", netns: str | None = None) -> str:
    """``iptables-save -t nat`` with the chosen backend, in `netns` (or here)."""
    return run_tool(BACKENDS[backend][1], ["-t", "nat"], netns=netns)


def restore(text: str, *, backend: Backend = "nft", netns: str | None = None) -> None:
    run_tool(BACKENDS[backend][0], ["--noflush", "--wait=10"], netns=netns, stdin=text)


def run_tool(tool: str, args: list[str], *, netns: str | None, stdin: str | None = None) -> str:
    if shutil.which(tool) is None:
        raise IptablesError(f"{tool} not found: install iptables (Debian/Ubuntu: apt-get install iptables)")
    argv = ["ip", "netns", "exec", netns, tool, *args] if netns else [tool, *args]
    try:
        proc = subprocess.run(argv, input=stdin, check=False, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise IptablesError(f"{argv[0]} not found (ip comes with iproute2)") from None
    except subprocess.TimeoutExpired:
        raise IptablesError(f"{shlex.join(argv)} did not finish in {COMMAND_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        raise IptablesError(
            f"{shlex.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}" + permission_hint(proc.stderr)
        )
    return proc.stdout


def permission_hint(stderr: str) -> str:
    text = stderr.lower()
    if "permission denied" in text or "must be root" in text or "operation not permitted" in text:
        return "\nplait iptables needs root (or CAP_NET_ADMIN); without it, run the mesh with --mode proxy"
    return ""
