"""Answering DNS questions from the mesh's name table, without I/O (the server is `dnsproxy`).

`LookupTable(name_table, proxy_namespace, search_domains)` expands Istio's NDS table into every
name a pod may ask for, as Istio's agent does:

* each host itself (``reviews.default.svc.cluster.local``, ``api.example.com``);
* for a Kubernetes service, ``NAME.NS`` and ``NAME.NS.svc``, and ``NAME`` when the service is in the
  proxy's own namespace (what the pod's search domains turn into the FQDN);
* each of those with a search domain appended (``api.example.com.default.svc.cluster.local``: the
  resolver's search-list tries for a name with fewer dots than ``ndots``), answered with a CNAME to
  the host and its addresses, so the lookup ends at the first try instead of walking the list.

`answer(query)` returns the response to send, or None when the name is not the mesh's and the
query goes to the upstream nameservers. Known names get A (IPv4) or AAAA (IPv6) records, or an
empty NOERROR answer (NODATA) when the host has no address of that family, so resolvers do not
fall back to asking elsewhere; other record types are forwarded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from plait.xds.nametable import KUBERNETES, NameTable

TTL_SECONDS = 30  # Istio's agent answers with a 30 s TTL
DNS_PORT = 53


@dataclass(frozen=True)
class ResolvConf:
    """What the pod's /etc/resolv.conf says: upstream nameservers and search domains."""

    nameservers: tuple[tuple[str, int], ...]  # (address, port); port 53 unless a test says otherwise
    search: tuple[str, ...] = ()


def parse_resolv_conf(text: str) -> ResolvConf:
    """`nameserver` and `search`/`domain` lines of resolv.conf(5); the last search/domain line wins."""
    nameservers: list[tuple[str, int]] = []
    search: tuple[str, ...] = ()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) >= 2 and words[0] == "nameserver":
            nameservers.append((words[1].split("%", 1)[0], DNS_PORT))
        elif words and words[0] in ("search", "domain"):
            search = tuple(w.strip(".").lower() for w in words[1:])
    return ResolvConf(tuple(nameservers), search)


def read_resolv_conf(path: Path = Path("/etc/resolv.conf")) -> ResolvConf:
    return parse_resolv_conf(path.read_text())


def parse_upstream(text: str) -> tuple[str, int]:
    """``IP`` or ``IP:PORT`` or ``[IPv6]:PORT`` → (address, port); ValueError with what is expected."""
    host, port = text, DNS_PORT
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else DNS_PORT
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        port = int(number)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"upstream nameserver {text!r}: expected IP or IP:PORT") from None
    return host, port


@dataclass(frozen=True)
class Entry:
    host: str  # the table's host: the CNAME target for a search-domain expansion
    ipv4: tuple[str, ...]
    ipv6: tuple[str, ...]
    expanded: bool = False  # reached through a search domain: answer with a CNAME to `host`


class LookupTable:
    def __init__(self, table: NameTable, proxy_namespace: str, search_domains: Iterable[str] = ()):
        self.names: dict[str, Entry] = {}
        search = tuple(search_domains)
        for host, info in sorted(table.table.items()):
            ips = [ipaddress.ip_address(ip) for ip in info.ips]
            ipv4 = tuple(str(ip) for ip in ips if ip.version == 4)
            ipv6 = tuple(str(ip) for ip in ips if ip.version == 6)
            names = [host, *info.alt_hosts, *_kubernetes_names(host, info, proxy_namespace)]
            for name in names:
                self.names.setdefault(name, Entry(host, ipv4, ipv6))
            for name in names:
                for domain in search:
                    self.names.setdefault(f"{name}.{domain}", Entry(host, ipv4, ipv6, expanded=True))

    def lookup(self, name: str) -> Entry | None:
        return self.names.get(name.lower().rstrip("."))

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        """The response for `query` from the table, or None: forward it upstream."""
        if len(query.question) != 1 or query.opcode() != 0:
            return None
        question = query.question[0]
        if question.rdclass != dns.rdataclass.IN or question.rdtype not in (dns.rdatatype.A, dns.rdatatype.AAAA):
            return None
        entry = self.lookup(question.name.to_text())
        if entry is None:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA | dns.flags.RA
        target = question.name
        if entry.expanded:
            target = dns.name.from_text(entry.host)
            response.answer.append(dns.rrset.from_text(question.name, TTL_SECONDS, "IN", "CNAME", target.to_text()))
        addresses = entry.ipv4 if question.rdtype == dns.rdatatype.A else entry.ipv6
        if addresses:
            kind = dns.rdatatype.to_text(question.rdtype)
            response.answer.append(dns.rrset.from_text_list(target, TTL_SECONDS, "IN", kind, list(addresses)))
        return response


def _kubernetes_names(host: str, info, proxy_namespace: str) -> list[str]:
    """``NAME.NS``, ``NAME.NS.svc`` and (same namespace) ``NAME`` for a Kubernetes service's host."""
    if info.registry != KUBERNETES or not info.shortname or not info.namespace:
        return []
    short = f"{info.shortname}.{info.namespace}"
    if not host.startswith(f"{short}.svc."):
        return []
    names = [short, f"{short}.svc"]
    if info.namespace == proxy_namespace:
        names.append(info.shortname)
    return names


def servfail(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.SERVFAIL)
    return response
