"""Follow one request through one proxy's Envoy configuration, choosing at each step as Envoy does.

Flows in: the ResourceSet generated for the source proxy, that Proxy, a Request
(URL, method, headers) and a resolver (hostname → IP, what DNS answers inside
the mesh). Flows out: an Outcome — listener → filter chain → HTTP connection
manager → route configuration → virtual host → route → cluster(s) →
endpoints, with the reason for every choice and the policies of the route.
Pure: no I/O, no clock, no randomness (weights and fault percentages are
reported, never rolled). This engine serves the simulation tests and
``plait explain``.

Envoy's rules, as followed here:

* capture mode: ``virtualOutbound`` hands a connection to the listener whose
  address is exactly the original destination ip:port, else to the
  ``0.0.0.0:<port>`` listener, else keeps it (passthrough or blackhole);
* filter chains: criterion by criterion (destination port, destination IP,
  server name, transport protocol, application protocols, source), keep the
  most specific chains that match, never backtrack; none → the default chain;
* virtual hosts: the exact domain, then the longest ``*suffix`` wildcard,
  then the longest ``prefix*`` wildcard, then ``*``; the Host is lower-cased
  and keeps its ``:port``;
* routes: the first whose path, headers and query parameters all match
  (``safe_regex`` is an RE2 full match on the path without its query).
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import re2

from plait.model.hosts import client_names
from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot
from plait.xds.generator import generate
from plait.xds.resources import ResourceSet
from plait.xds.translate.listeners import gateway_listen_port

Resolver = Callable[[str], "str | None"]

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"
CAPTURE_LISTENER = "virtualOutbound"
EXPLICIT_PROXY_LISTENER = "explicit_proxy"
ENVOY_DEFAULT_TIMEOUT = "15s"
_DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}
_REDIRECT_CODES = {"MOVED_PERMANENTLY": 301, "FOUND": 302, "SEE_OTHER": 303, "TEMPORARY_REDIRECT": 307,
                   "PERMANENT_REDIRECT": 308}
RESPONSE_FLAGS = {"NR": "no route", "NC": "no cluster", "UH": "no healthy upstream"}
_VS_PATH = re.compile(r"/namespaces/([^/]+)/virtual-service/([^/]+)$")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


# ----------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class Request:
    """One HTTP request as the application sends it. Header names are lower case."""

    scheme: str
    host: str
    port: int
    path: str
    query: str = ""
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    explicit_port: bool = False

    @classmethod
    def from_url(cls, url: str, method: str = "GET", headers: Iterable[tuple[str, str]] = ()) -> Request:
        """Parse ``http[s]://host[:port]/path?query``; a URL without a scheme is taken as http://."""
        text = url.strip()
        if "://" not in text:
            text = "http://" + text
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url!r}: only http:// and https:// URLs can be explained")
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"{url!r}: the port is not a number between 0 and 65535") from None
        if not parts.hostname:
            raise ValueError(f"{url!r}: no host name; expected e.g. http://reviews:9080/reviews/0")
        default_port = 443 if parts.scheme == "https" else 80
        return cls(scheme=parts.scheme, host=parts.hostname, port=port or default_port, path=parts.path or "/",
                   query=parts.query, method=method.upper(),
                   headers=tuple((k.strip().lower(), v.strip()) for k, v in headers), explicit_port=port is not None)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.explicit_port else ""
        return f"{self.scheme}://{host}{port}{self.path}" + (f"?{self.query}" if self.query else "")

    @property
    def authority(self) -> str:
        """The Host header: given explicitly, else the URL's host, with ``:port`` when the URL has one."""
        given = self._values("host") or self._values(":authority")
        if given:
            return given[0]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.explicit_port else host

    def _values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def header(self, name: str) -> str | None:
        """A header's value as Envoy matches it (repeated headers joined with ','); pseudo-headers too."""
        if name in (":authority", "host"):
            return self.authority
        pseudo = {":method": self.method, ":scheme": self.scheme,
                  ":path": self.path + (f"?{self.query}" if self.query else "")}
        if name in pseudo:
            return pseudo[name]
        values = self._values(name)
        return ",".join(values) if values else None


@dataclass(frozen=True)
class Connection:
    """What a listener sees of the connection once its listener filters ran."""

    dest_ip: str | None
    dest_port: int
    source_ip: str | None = None
    server_name: str | None = None
    transport: str = "raw_buffer"
    alpn: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- the outcome


@dataclass
class Hop:
    """One decision on the way: what was chosen and why."""

    stage: str
    name: str
    why: str = ""


@dataclass
class Endpoint:
    address: str
    weight: int | None = None
    locality: str | None = None


@dataclass
class ClusterTarget:
    """One upstream cluster the request may go to, with its share of the traffic."""

    name: str
    weight: int | None = None
    percent: float = 100.0
    kind: str = ""
    endpoints: list[Endpoint] = field(default_factory=list)
    exists: bool = True
    note: str = ""
    header_changes: list[str] = field(default_factory=list)  # a weighted cluster's own, "request set x: y"


@dataclass
class Fault:
    delay: str | None = None
    delay_percent: float | None = None
    abort_http_status: int | None = None
    abort_grpc_status: int | None = None
    abort_percent: float | None = None


@dataclass
class Retries:
    attempts: int
    retry_on: str = ""
    per_try_timeout: str | None = None
    retriable_status_codes: list[int] = field(default_factory=list)


@dataclass
class Policies:
    timeout: str | None = None
    retries: Retries | None = None
    fault: Fault | None = None
    mirrors: list[tuple[str, float]] = field(default_factory=list)
    request_headers: list[str] = field(default_factory=list)
    response_headers: list[str] = field(default_factory=list)
    rewrite: list[str] = field(default_factory=list)
    hash_policy: list[str] = field(default_factory=list)
    cors: dict | None = None


@dataclass
class Outcome:
    """Where a request goes and why. `status` is set when Envoy itself answers (404 NR, 503 NC, redirects…)."""

    request: Request
    proxy: str
    mode: str
    hops: list[Hop] = field(default_factory=list)
    protocol: str = "http"
    destination: str | None = None
    listener: str | None = None
    filter_chain: str | None = None
    route_config: str | None = None
    virtual_host: str | None = None
    route: str | None = None
    route_index: int | None = None
    virtual_service: str | None = None
    vs_route: str | None = None
    skipped_routes: list[str] = field(default_factory=list)
    action: str = "none"
    clusters: list[ClusterTarget] = field(default_factory=list)
    status: int | None = None
    response_flag: str | None = None
    location: str | None = None
    body: str | None = None
    upstream_path: str | None = None
    upstream_host: str | None = None
    policies: Policies = field(default_factory=Policies)
    notes: list[str] = field(default_factory=list)

    def step(self, stage: str, name: str, why: str = "") -> None:
        self.hops.append(Hop(stage, name, why))

    def fail(self, status: int | None, flag: str | None, why: str) -> Outcome:
        self.status, self.response_flag = status, flag
        self.notes.append(why)
        return self

    @property
    def failed(self) -> bool:
        """Envoy does not forward the request (and does not answer it with a redirect or direct response)."""
        answered = self.action in ("redirect", "direct_response", "bypass")
        return not answered and (self.status is not None or self.response_flag is not None or not self.clusters)

    @property
    def cluster_names(self) -> list[str]:
        return [c.name for c in self.clusters]

    def summary(self) -> str:
        """One line: where it lands, or what Envoy answers."""
        if self.action == "redirect":
            return f"{self.status} redirect to {self.location}"
        if self.action == "direct_response":
            return f"{self.status} direct response" + (f": {self.body!r}" if self.body else "")
        if self.action == "bypass":
            return f"not through the sidecar: {self.notes[-1]}"
        if self.failed:
            what = f"{self.status or ''} {RESPONSE_FLAGS.get(self.response_flag or '', '')}".strip()
            flag = f" ({self.response_flag})" if self.response_flag else ""
            return f"{what or 'fails'}{flag}: {self.notes[-1] if self.notes else 'nothing matched'}"
        if len(self.clusters) == 1:
            return self.clusters[0].name
        return ", ".join(f"{c.percent:g}% {c.name}" for c in self.clusters)


# ----------------------------------------------------------------------------- small helpers


def _is_ip(text: str | None) -> bool:
    try:
        ipaddress.ip_address(text or "")
        return True
    except ValueError:
        return False


def _address(listener: dict) -> tuple[str, int]:
    sock = listener.get("address", {}).get("socket_address", {})
    return sock.get("address", ""), int(sock.get("port_value", 0))


def percent(fraction: dict | None, default: float = 100.0) -> float:
    """A FractionalPercent as a percentage (``{numerator: 100000, denominator: MILLION}`` → 10.0)."""
    if fraction is None:
        return default
    return 100.0 * int(fraction.get("numerator", 0)) / _DENOMINATORS[fraction.get("denominator", "HUNDRED")]


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str):
    return re2.compile(pattern, _RE2_OPTIONS)


def full_match(pattern: str, value: str) -> bool:
    """RE2 full match, as Envoy's safe_regex."""
    return _regex(pattern).fullmatch(value) is not None


def string_matches(matcher: dict, value: str) -> bool:
    """Envoy's StringMatcher: exact, prefix, suffix, contains, safe_regex; ignore_case for all but regex."""
    if "safe_regex" in matcher:
        return full_match(matcher["safe_regex"]["regex"], value)
    fold = matcher.get("ignore_case", False)
    subject = value.lower() if fold else value
    for kind, test in (("exact", str.__eq__), ("prefix", str.startswith), ("suffix", str.endswith),
                       ("contains", str.__contains__)):
        if kind in matcher:
            wanted = matcher[kind].lower() if fold else matcher[kind]
            return test(subject, wanted)
    return False


def describe_string_match(matcher: dict) -> str:
    if "safe_regex" in matcher:
        return f"regex {matcher['safe_regex']['regex']!r}"
    for kind in ("exact", "prefix", "suffix", "contains"):
        if kind in matcher:
            return f"{kind} {matcher[kind]!r}" + (" (any case)" if matcher.get("ignore_case") else "")
    return "an unsupported string matcher"


def _filter(chain: dict, name: str) -> dict | None:
    return next((f.get("typed_config", {}) for f in chain.get("filters", []) if f.get("name") == name), None)


def virtual_service_of(route: dict) -> tuple[str | None, str | None]:
    """(``namespace/name`` of the VirtualService, ``http[i].match[j]``) from Istio's route metadata."""
    meta = route.get("metadata", {}).get("filter_metadata", {})
    found = _VS_PATH.search(meta.get("istio", {}).get("config", ""))
    return (f"{found.group(1)}/{found.group(2)}" if found else None), meta.get("plait", {}).get("route")


def _python_substitution(substitution: str) -> str:
    """RE2's rewrite string (``\\1`` groups, ``\\\\`` a backslash) in Python's ``re`` syntax."""
    return re.sub(r"\\(\d|\\)", lambda m: "\\\\" if m.group(1) == "\\" else f"\\g<{m.group(1)}>", substitution)


def normalize_path(path: str) -> str:
    """RFC 3986 dot-segment removal, as Envoy's ``normalize_path`` (slashes are not merged)."""
    segments = path.split("/")
    out: list[str] = []
    for i, segment in enumerate(segments[1:], 1):
        last = i == len(segments) - 1
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
            continue
        if last:
            out.append("")
    return "/" + "/".join(out)


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[:host.index("]") + 1] if "]" in host else host
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() and ":" not in name else host


# ----------------------------------------------------------------------------- listeners


def _listener_at(resources: ResourceSet, ip: str, port: int, skip: str = "") -> dict | None:
    return next((listener for name, listener in sorted(resources.listeners.items())
                 if name != skip and _address(listener) == (ip, port)), None)


def _captured_listener(resources: ResourceSet, proxy: Proxy, request: Request, out: Outcome,
                       resolve: Resolver | None) -> tuple[dict, Connection] | None:
    """Capture mode: iptables → virtualOutbound, which hands the connection on by original destination."""
    host, port = request.host, request.port
    ip = host if _is_ip(host) else (resolve(host) if resolve else None)
    out.destination = f"{ip or host}:{port}"
    if ip:
        out.step("destination", f"{ip}:{port}", "an IP address" if ip == host else f"{host} resolves to {ip}")
    else:
        out.step("destination", f"{host}:{port}", f"{host} is not a name the mesh resolves: only port {port} is known")
    if ip and ipaddress.ip_address(ip).is_loopback:
        out.action = "bypass"
        out.notes.append("iptables does not capture traffic to loopback: it goes straight to the local "
                         "application, the sidecar is not involved")
        return None
    conn = Connection(dest_ip=ip, dest_port=port, source_ip=proxy.ip)
    exact = _listener_at(resources, ip, port, skip=CAPTURE_LISTENER) if ip else None
    if exact:
        out.step("listener", exact["name"], f"virtualOutbound hands the connection to the listener on {ip}:{port}")
        return exact, conn
    wildcard = _listener_at(resources, "0.0.0.0", port, skip=CAPTURE_LISTENER)
    if wildcard:
        out.step("listener", wildcard["name"],
                 f"virtualOutbound hands the connection on: no listener on {ip or host}:{port}, "
                 f"the wildcard 0.0.0.0:{port}")
        return wildcard, conn
    capture = resources.listeners.get(CAPTURE_LISTENER)
    if capture is None:
        out.fail(None, None, "the proxy has no virtualOutbound listener: captured traffic goes nowhere")
        return None
    out.step("listener", CAPTURE_LISTENER, f"no listener for port {port}: virtualOutbound keeps the connection")
    return capture, conn


def _gateway_listener(resources: ResourceSet, proxy: Proxy, request: Request,
                      out: Outcome) -> tuple[dict, Connection] | None:
    """A gateway serves the port the client connects to (its Service may map it, e.g. 80 → 8080)."""
    ip = request.host if _is_ip(request.host) else proxy.ip
    mapped = proxy.listen_ports.get(request.port, request.port)
    for port in dict.fromkeys([mapped, request.port]):
        listener = _listener_at(resources, ip, port) or _listener_at(resources, "0.0.0.0", port)
        if listener:
            out.destination = f"{ip}:{port}"
            via = f" (port {request.port} is served on {port})" if port != request.port else ""
            out.step("listener", listener["name"], f"the gateway's listener on port {port}{via}")
            return listener, Connection(dest_ip=ip, dest_port=port)
    ports = ", ".join(str(_address(lst)[1]) for lst in resources.listeners.values()) or "none"
    out.fail(None, None, f"the gateway has no listener on port {request.port} (it listens on {ports}): "
                         "the connection is refused")
    return None


def _explicit_listener(resources: ResourceSet, proxy: Proxy, request: Request,
                       out: Outcome) -> tuple[dict, Connection] | None:
    """Explicit-proxy mode: the application sends every request to its sidecar (HTTP_PROXY)."""
    listener = resources.listeners.get(EXPLICIT_PROXY_LISTENER)
    if listener is None:
        out.fail(None, None, "the proxy has no explicit_proxy listener")
        return None
    ip, port = _address(listener)
    out.destination = f"{ip}:{port}"
    out.step("listener", EXPLICIT_PROXY_LISTENER, f"the application's HTTP_PROXY is {ip}:{port}")
    return listener, Connection(dest_ip=ip, dest_port=port, source_ip=proxy.ip)


def _inspect(listener: dict, conn: Connection, request: Request) -> Connection:
    """What the listener filters detect: TLS (SNI, ALPN) with tls_inspector, HTTP/1.1 with http_inspector."""
    names = {f.get("name") for f in listener.get("listener_filters", [])}
    if request.scheme == "https" and "envoy.filters.listener.tls_inspector" in names:
        sni = None if _is_ip(request.host) else request.host
        return replace(conn, transport="tls", server_name=sni, alpn=("h2", "http/1.1"))
    if request.scheme == "http" and "envoy.filters.listener.http_inspector" in names:
        return replace(conn, alpn=("http/1.1",))
    return conn


# ----------------------------------------------------------------------------- filter chains

Candidates = list[tuple[int, dict]]


def _fcm(candidate: tuple[int, dict]) -> dict:
    return candidate[1].get("filter_chain_match", {})


def _by_port(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    exact = [c for c in cands if _fcm(c).get("destination_port") == conn.dest_port]
    if exact:
        return exact, f"destination_port {conn.dest_port}"
    return [c for c in cands if "destination_port" not in _fcm(c)], None


def _in_range(ip: str, cidr: dict) -> bool:
    network = ipaddress.ip_network(f"{cidr['address_prefix']}/{cidr.get('prefix_len', 0)}", strict=False)
    address = ipaddress.ip_address(ip)
    return address.version == network.version and address in network


def _longest_prefix(cands: Candidates, key: str, ip: str | None, label: str) -> tuple[Candidates, str | None]:
    """Chains whose `key` ranges hold `ip` with the longest prefix; a chain without ranges counts as /0."""
    best, kept, why = -1, [], None
    for c in cands:
        ranges = _fcm(c).get(key)
        length, cidr = 0, None
        if ranges:
            hits = [(int(r.get("prefix_len", 0)), f"{r['address_prefix']}/{r.get('prefix_len', 0)}")
                    for r in ranges if _is_ip(ip) and _in_range(ip, r)]
            if not hits:
                continue
            length, cidr = max(hits)
        if length > best:
            best, kept, why = length, [c], cidr
        elif length == best:
            kept.append(c)
    return kept, (f"{label} {why} holds {ip}" if why else None)


def _by_dest_ip(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    return _longest_prefix(cands, "prefix_ranges", conn.dest_ip, "prefix_ranges")


def _by_server_name(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    sni = (conn.server_name or "").lower()
    wanted = [sni] + ["*" + sni[i:] for i, ch in enumerate(sni) if ch == "."] if sni else []
    for name in wanted:
        hit = [c for c in cands if name in [n.lower() for n in _fcm(c).get("server_names", [])]]
        if hit:
            return hit, f"server_names {name} (SNI {sni})"
    return [c for c in cands if not _fcm(c).get("server_names")], None


def _by_transport(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    hit = [c for c in cands if _fcm(c).get("transport_protocol") == conn.transport]
    if hit:
        return hit, f"transport_protocol {conn.transport}"
    return [c for c in cands if not _fcm(c).get("transport_protocol")], None


def _by_alpn(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    for protocol in conn.alpn:
        hit = [c for c in cands if protocol in _fcm(c).get("application_protocols", [])]
        if hit:
            return hit, f"application_protocols {protocol} (detected)"
    return [c for c in cands if not _fcm(c).get("application_protocols")], None


def _by_direct_source(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    return _longest_prefix(cands, "direct_source_prefix_ranges", conn.source_ip, "direct_source_prefix_ranges")


def _by_source_type(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    local = _is_ip(conn.source_ip) and (conn.source_ip == conn.dest_ip
                                        or ipaddress.ip_address(conn.source_ip).is_loopback)
    wanted = "SAME_IP_OR_LOOPBACK" if local else "EXTERNAL"
    hit = [c for c in cands if _fcm(c).get("source_type") == wanted]
    if hit:
        return hit, f"source_type {wanted}"
    return [c for c in cands if _fcm(c).get("source_type", "ANY") == "ANY"], None


def _by_source_ip(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    return _longest_prefix(cands, "source_prefix_ranges", conn.source_ip, "source_prefix_ranges")


def _by_source_port(cands: Candidates, conn: Connection) -> tuple[Candidates, str | None]:
    return [c for c in cands if not _fcm(c).get("source_ports")], None  # the client's port is not known


_CHAIN_LEVELS = (_by_port, _by_dest_ip, _by_server_name, _by_transport, _by_alpn, _by_direct_source,
                 _by_source_type, _by_source_ip, _by_source_port)


def select_filter_chain(listener: dict, conn: Connection) -> tuple[str, dict, list[str]] | None:
    """Envoy's choice: level by level keep the most specific matching chains; no backtracking."""
    cands: Candidates = list(enumerate(listener.get("filter_chains", [])))
    reasons: list[str] = []
    for level in _CHAIN_LEVELS:
        cands, why = level(cands, conn)
        if why:
            reasons.append(why)
        if not cands:
            break
    if cands:
        index, chain = cands[0]
        return chain.get("name") or f"#{index}", chain, reasons or ["no filter_chain_match: it takes any connection"]
    default = listener.get("default_filter_chain")
    if default is not None:
        return default.get("name") or "default_filter_chain", default, ["no filter chain matches: the default chain"]
    return None


# ----------------------------------------------------------------------------- virtual hosts and routes


def find_virtual_host(route_config: dict, authority: str) -> tuple[dict | None, str]:
    """Envoy's domain search: exact, longest ``*suffix``, longest ``prefix*``, then ``*``."""
    host = authority.lower()
    if route_config.get("ignore_port_in_host_matching"):
        host = _strip_port(host)
    exact: dict[str, dict] = {}
    suffixes: dict[str, dict] = {}
    prefixes: dict[str, dict] = {}
    default = None
    for vhost in route_config.get("virtual_hosts", []):
        for domain in (d.lower() for d in vhost.get("domains", [])):
            if domain == "*":
                default = default or vhost
            elif domain.startswith("*"):
                suffixes.setdefault(domain[1:], vhost)
            elif domain.endswith("*"):
                prefixes.setdefault(domain[:-1], vhost)
            else:
                exact.setdefault(domain, vhost)
    if host in exact:
        return exact[host], f'domain "{host}" (exact)'
    for key in sorted(suffixes, key=len, reverse=True):
        if len(key) < len(host) and host.endswith(key):
            return suffixes[key], f'domain "*{key}" (longest suffix wildcard)'
    for key in sorted(prefixes, key=len, reverse=True):
        if len(key) < len(host) and host.startswith(key):
            return prefixes[key], f'domain "{key}*" (longest prefix wildcard)'
    if default is not None:
        return default, f'domain "*" (no other domain matches {host!r})'
    return None, f"no virtual host has a domain for {host!r}"


_PATH_KINDS = ("prefix", "path", "safe_regex", "path_separated_prefix", "connect_matcher")
_MATCH_KEYS = frozenset(_PATH_KINDS) | {"case_sensitive", "headers", "query_parameters", "grpc"}


def _path_mismatch(match: dict, request: Request) -> str | None:
    path, fold = request.path, match.get("case_sensitive") is False
    if "connect_matcher" in match:
        return None if request.method == "CONNECT" else "not a CONNECT request"
    if request.method == "CONNECT":
        return "a CONNECT request has no path; only a connect_matcher route takes it"
    subject = path.lower() if fold else path
    if "prefix" in match:
        wanted = match["prefix"].lower() if fold else match["prefix"]
        return None if subject.startswith(wanted) else f"path does not start with {match['prefix']!r}"
    if "path" in match:
        wanted = match["path"].lower() if fold else match["path"]
        return None if subject == wanted else f"path is not {match['path']!r}"
    if "safe_regex" in match:
        regex = match["safe_regex"]["regex"]
        return None if full_match(regex, path) else f"path does not fully match regex {regex!r}"
    if "path_separated_prefix" in match:
        wanted = match["path_separated_prefix"].lower() if fold else match["path_separated_prefix"]
        ok = subject == wanted or subject.startswith(wanted + "/")
        return None if ok else f"path is not {match['path_separated_prefix']!r} or below it"
    return "the route has no path matcher plait can evaluate"


def _header_value_matches(hm: dict, value: str) -> bool:
    if "present_match" in hm:
        return bool(hm["present_match"])
    if "string_match" in hm:
        return string_matches(hm["string_match"], value)
    if "range_match" in hm:
        r = hm["range_match"]
        return value.lstrip("-").isdigit() and int(r.get("start", 0)) <= int(value) < int(r.get("end", 0))
    legacy = {"exact_match": "exact", "prefix_match": "prefix", "suffix_match": "suffix",
              "contains_match": "contains", "safe_regex_match": "safe_regex"}
    for key, kind in legacy.items():
        if key in hm:
            return string_matches({kind: hm[key]}, value)
    return False


def describe_header_match(hm: dict) -> str:
    name, invert = hm.get("name", ""), " not" if hm.get("invert_match") else ""
    if "present_match" in hm:
        present = bool(hm["present_match"]) != bool(hm.get("invert_match"))
        return f"header {name} {'present' if present else 'absent'}"
    if "string_match" in hm:
        return f"header {name}{invert} {describe_string_match(hm['string_match'])}"
    rest = ", ".join(f"{k} {v!r}" for k, v in hm.items() if k not in ("name", "invert_match"))
    return f"header {name}{invert} {rest}"


def header_mismatch(hm: dict, request: Request) -> str | None:
    """Envoy's HeaderMatcher: a missing header matches only an (inverted) present_match, unless
    treat_missing_header_as_empty makes it the empty string."""
    value = request.header(hm.get("name", "").lower())
    invert = bool(hm.get("invert_match"))
    if value is None and hm.get("treat_missing_header_as_empty"):
        value = ""
    if value is None:
        ok = "present_match" in hm and bool(hm["present_match"]) == invert
    else:
        ok = _header_value_matches(hm, value) != invert
    if ok:
        return None
    has = "the request has none" if value is None else f"the request has {value!r}"
    return f"wants {describe_header_match(hm)}; {has}"


def _query_params(query: str) -> dict[str, str]:
    """First value of each parameter, not percent-decoded (as Envoy matches them)."""
    params: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        params.setdefault(name, value)
    return params


def _query_mismatch(qm: dict, params: dict[str, str]) -> str | None:
    name = qm.get("name", "")
    if name not in params:
        return f"wants query parameter {name}; the request has none"
    if "string_match" in qm and not string_matches(qm["string_match"], params[name]):
        return f"wants query parameter {name} {describe_string_match(qm['string_match'])}; it is {params[name]!r}"
    return None


def route_mismatch(match: dict, request: Request) -> str | None:
    """None when the route's match holds for the request, else the first reason it does not."""
    unknown = sorted(set(match) - _MATCH_KEYS)
    if unknown:
        return f"matches on {', '.join(unknown)}, which plait cannot evaluate"
    reasons = [_path_mismatch(match, request)]
    reasons += [header_mismatch(hm, request) for hm in match.get("headers", [])]
    params = _query_params(request.query)
    reasons += [_query_mismatch(qm, params) for qm in match.get("query_parameters", [])]
    if "grpc" in match and not (request.header("content-type") or "").startswith("application/grpc"):
        reasons.append("wants a gRPC request (content-type application/grpc)")
    return next((r for r in reasons if r), None)


def describe_match(match: dict) -> str:
    """The conditions of a route match, in words."""
    parts = []
    for kind in _PATH_KINDS:
        if kind in match:
            value = match[kind]["regex"] if kind == "safe_regex" else match[kind]
            parts.append("CONNECT" if kind == "connect_matcher" else f"{kind.replace('safe_', '')} {value!r}")
    if match.get("case_sensitive") is False:
        parts.append("any case")
    parts += [describe_header_match(hm) for hm in match.get("headers", [])]
    for qm in match.get("query_parameters", []):
        how = describe_string_match(qm["string_match"]) if "string_match" in qm else "present"
        parts.append(f"query {qm.get('name')} {how}")
    if "grpc" in match:
        parts.append("gRPC")
    return ", ".join(parts)


def _route_label(index: int, route: dict) -> str:
    vs, where = virtual_service_of(route)
    label = f"#{index}"
    if route.get("name"):
        label += f" {route['name']}"
    return label + (f" ({vs} {where})" if vs else "")


# ----------------------------------------------------------------------------- clusters and endpoints


def _endpoints(assignment: dict | None) -> list[Endpoint]:
    out = []
    for group in (assignment or {}).get("endpoints", []):
        locality = group.get("locality", {})
        where = "/".join(v for v in (locality.get(k) for k in ("region", "zone", "sub_zone")) if v) or None
        for lb in group.get("lb_endpoints", []):
            sock = lb.get("endpoint", {}).get("address", {}).get("socket_address", {})
            out.append(Endpoint(f"{sock.get('address')}:{sock.get('port_value')}", lb.get("load_balancing_weight"),
                                where))
    return out


def _cluster_kind(cluster: dict) -> str:
    if "cluster_type" in cluster:
        return cluster["cluster_type"].get("name", "custom")
    return cluster.get("type", "STATIC")


def cluster_target(name: str, resources: ResourceSet, conn: Connection, request: Request) -> ClusterTarget:
    """A cluster and the endpoints Envoy would pick from."""
    cluster = resources.clusters.get(name)
    if cluster is None:
        return ClusterTarget(name, exists=False, note="no such cluster: Envoy answers 503 (NC, no cluster)")
    target = ClusterTarget(name, kind=_cluster_kind(cluster))
    if target.kind == "EDS":
        service = cluster.get("eds_cluster_config", {}).get("service_name") or name
        target.endpoints = _endpoints(resources.endpoints.get(service))
    elif target.kind == "ORIGINAL_DST":
        where = f"{conn.dest_ip}:{conn.dest_port}" if conn.dest_ip else "the address the application dialled"
        target.endpoints = [Endpoint(where)]
        target.note = "ORIGINAL_DST: the connection goes where the application sent it"
    elif target.kind == "envoy.clusters.dynamic_forward_proxy":
        target.endpoints = [Endpoint(f"{request.host}:{request.port}")]
        target.note = "dynamic forward proxy: the Host is resolved by DNS when the request arrives"
    else:
        target.endpoints = _endpoints(cluster.get("load_assignment"))
        if target.kind in ("STRICT_DNS", "LOGICAL_DNS"):
            target.note = f"{target.kind}: these names are resolved by DNS"
    if not target.endpoints:
        target.note = "no endpoints: Envoy answers 503 (UH, no healthy upstream)"
    return target


def _targets(entries: list[tuple[str, int | None, list[str]]], resources: ResourceSet, conn: Connection,
             request: Request) -> list[ClusterTarget]:
    total = sum(w for _, w, _ in entries if w is not None)
    out = []
    for name, weight, headers in entries:
        target = cluster_target(name, resources, conn, request)
        target.weight, target.header_changes = weight, headers
        target.percent = 100.0 if weight is None else (100.0 * weight / total if total else 0.0)
        out.append(target)
    return out


def _settle(out: Outcome, http: bool) -> Outcome:
    """When no cluster can take the request, say what Envoy does instead."""
    live = [c for c in out.clusters if c.percent > 0]
    if live and all(not c.exists or not c.endpoints for c in live):
        missing = all(not c.exists for c in live)
        what = "no such cluster" if missing else "no endpoints"
        names = ", ".join(c.name for c in live)
        end = "" if http else ": Envoy closes the connection"
        return out.fail(503 if http else None, "NC" if missing else "UH", f"{names}: {what}{end}")
    return out


# ----------------------------------------------------------------------------- route policies


_APPEND_ACTIONS = {"OVERWRITE_IF_EXISTS_OR_ADD": "set", "APPEND_IF_EXISTS_OR_ADD": "add",
                   "ADD_IF_ABSENT": "add if absent", "OVERWRITE_IF_EXISTS": "overwrite if present"}


def header_changes(obj: dict, side: str) -> list[str]:
    """``request``/``response`` header edits of a route, virtual host, route config or weighted cluster."""
    out = []
    for option in obj.get(f"{side}_headers_to_add", []):
        action = option.get("append_action") or (
            "APPEND_IF_EXISTS_OR_ADD" if option.get("append", True) else "OVERWRITE_IF_EXISTS_OR_ADD")
        header = option.get("header", {})
        out.append(f"{_APPEND_ACTIONS.get(action, action)} {header.get('key')}: {header.get('value', '')}")
    return out + [f"remove {name}" for name in obj.get(f"{side}_headers_to_remove", [])]


def _fault(config: dict | None) -> Fault | None:
    if not config or not (config.get("delay") or config.get("abort")):
        return None
    fault = Fault()
    if delay := config.get("delay"):
        fault.delay = delay.get("fixed_delay") or "from the x-envoy-fault-delay-request header"
        fault.delay_percent = percent(delay.get("percentage"), default=0.0)
    if abort := config.get("abort"):
        fault.abort_http_status = abort.get("http_status")
        fault.abort_grpc_status = abort.get("grpc_status")
        fault.abort_percent = percent(abort.get("percentage"), default=0.0)
    return fault


def _retries(policy: dict | None) -> Retries | None:
    if policy is None:
        return None
    return Retries(attempts=int(policy.get("num_retries", 1)), retry_on=policy.get("retry_on", ""),
                   per_try_timeout=policy.get("per_try_timeout"),
                   retriable_status_codes=[int(c) for c in policy.get("retriable_status_codes", [])])


def _describe_hash(policy: dict) -> str:
    if "header" in policy:
        return f"header {policy['header'].get('header_name')}"
    if "cookie" in policy:
        return f"cookie {policy['cookie'].get('name')}"
    if "query_parameter" in policy:
        return f"query parameter {policy['query_parameter'].get('name')}"
    if policy.get("connection_properties", {}).get("source_ip"):
        return "source IP"
    return ", ".join(policy)


def _per_filter(name: str, *levels: dict) -> dict | None:
    """The most specific typed_per_filter_config for a filter: route, then virtual host, then route config."""
    return next((lvl["typed_per_filter_config"][name] for lvl in levels
                 if name in lvl.get("typed_per_filter_config", {})), None)


def _policies(route: dict, vhost: dict, route_config: dict, action: dict, hcm: dict) -> tuple[Policies, list[str]]:
    notes = []
    policies = Policies(fault=_fault(_per_filter(FAULT, route, vhost, route_config)),
                        cors=_per_filter(CORS, route, vhost, route_config) or action.get("cors") or vhost.get("cors"))
    filters = {f.get("name") for f in hcm.get("http_filters", [])}
    if policies.fault and FAULT not in filters:
        notes.append("the route configures a fault but the HTTP filters lack envoy.filters.http.fault: "
                     "nothing is injected")
    timeout = action.get("timeout")
    policies.timeout = f"{ENVOY_DEFAULT_TIMEOUT} (Envoy's default)" if timeout is None else (
        "none (0s disables it)" if timeout in ("0s", "0") else timeout)
    policies.retries = _retries(action.get("retry_policy") or vhost.get("retry_policy"))
    policies.mirrors = [(m.get("cluster", ""), percent(m.get("runtime_fraction", {}).get("default_value")))
                        for m in action.get("request_mirror_policies", [])]
    policies.hash_policy = [_describe_hash(h) for h in action.get("hash_policy", [])]
    for level in (route, vhost, route_config):
        policies.request_headers += header_changes(level, "request")
        policies.response_headers += header_changes(level, "response")
    return policies, notes


def _rewritten_path(spec: dict, match: dict, request: Request) -> str:
    """The path after ``prefix_rewrite`` (the matched prefix, or the whole path) or ``regex_rewrite``."""
    path = request.path
    if "prefix_rewrite" in spec:
        prefix = match.get("prefix", match.get("path_separated_prefix"))
        cut = len(prefix) if prefix is not None else len(path)
        return spec["prefix_rewrite"] + path[cut:]
    if "regex_rewrite" in spec:
        rule = spec["regex_rewrite"]
        return _regex(rule["pattern"]["regex"]).sub(_python_substitution(rule.get("substitution", "")), path)
    return path


def _rewrite(action: dict, match: dict, request: Request, out: Outcome) -> None:
    path = _rewritten_path(action, match, request)
    host = action.get("host_rewrite_literal", request.authority)
    if action.get("auto_host_rewrite"):
        host = "the upstream endpoint's host name"
    query = f"?{request.query}" if request.query else ""
    out.upstream_path, out.upstream_host = path + query, host
    if path != request.path:
        out.policies.rewrite.append(f"path {request.path} → {path}")
    if host != request.authority:
        out.policies.rewrite.append(f"host {request.authority} → {host}")


# ----------------------------------------------------------------------------- route actions


def _redirect(spec: dict, match: dict, request: Request, out: Outcome) -> Outcome:
    """Envoy answers itself with a redirect; Location is rebuilt from the request and the rule
    (a new scheme drops the request's port when it was the old scheme's default)."""
    scheme = spec.get("scheme_redirect") or ("https" if spec.get("https_redirect") else request.scheme)
    host = spec.get("host_redirect") or request.authority  # a new host drops the request's port
    default_port = {"http": ":80", "https": ":443"}[request.scheme]
    if spec.get("port_redirect"):
        host = f"{_strip_port(host)}:{spec['port_redirect']}"
    elif scheme != request.scheme and host.endswith(default_port):
        host = _strip_port(host)
    path = spec.get("path_redirect") or _rewritten_path(spec, match, request)
    query = "" if spec.get("strip_query") or "?" in path or not request.query else f"?{request.query}"
    out.action, out.status = "redirect", _REDIRECT_CODES.get(spec.get("response_code", "MOVED_PERMANENTLY"), 301)
    out.location = f"{scheme}://{host}{path}{query}"
    return out


def _direct_response(spec: dict, out: Outcome) -> Outcome:
    body = spec.get("body", {})
    out.action, out.status = "direct_response", int(spec.get("status", 200))
    if "inline_string" in body:
        out.body = body["inline_string"]
    elif "inline_bytes" in body:
        out.body = base64.b64decode(body["inline_bytes"]).decode("utf-8", "replace")
    return out


def _route_clusters(action: dict, request: Request, out: Outcome) -> list[tuple[str, int | None, list[str]]]:
    if "weighted_clusters" in action:
        out.action = "weighted_clusters"
        return [(c.get("name", ""), int(c.get("weight", 0)),
                 [f"{side} {change}" for side in ("request", "response") for change in header_changes(c, side)])
                for c in action["weighted_clusters"].get("clusters", [])]
    out.action = "cluster"
    if "cluster_header" in action:
        name = request.header(action["cluster_header"].lower()) or ""
        out.notes.append(f"the cluster is named by the request's {action['cluster_header']} header")
        return [(name, None, [])]
    return [(action.get("cluster", ""), None, [])]


def _follow_route(index: int, route: dict, vhost: dict, route_config: dict, hcm: dict, request: Request,
                  out: Outcome, resources: ResourceSet, conn: Connection) -> Outcome:
    out.route, out.route_index = route.get("name") or f"#{index}", index
    out.virtual_service, out.vs_route = virtual_service_of(route)
    owner = f"VirtualService {out.virtual_service} {out.vs_route}" if out.virtual_service else (
        "Istio's default route (no VirtualService)" if route.get("name") == "default" else "")
    conditions = describe_match(route.get("match", {}))
    name = f"#{index}" + (f" {route['name']}" if route.get("name") else "")
    out.step("route", name, "; ".join(filter(None, [owner, f"matches {conditions}"])))
    match = route.get("match", {})
    if "redirect" in route:
        return _redirect(route["redirect"], match, request, out)
    if "direct_response" in route:
        return _direct_response(route["direct_response"], out)
    action = route.get("route")
    if action is None:
        return out.fail(None, None, f"the route's action ({', '.join(route)}) is not one plait follows")
    out.policies, notes = _policies(route, vhost, route_config, action, hcm)
    out.notes += notes
    _rewrite(action, match, request, out)
    out.clusters = _targets(_route_clusters(action, request, out), resources, conn, request)
    return _settle(out, http=True)


def _route_config(hcm: dict, resources: ResourceSet) -> tuple[dict | None, str, str]:
    if "rds" in hcm:
        name = hcm["rds"].get("route_config_name", "")
        return resources.routes.get(name), name, f"RDS {name!r}"
    inline = hcm.get("route_config") or {}
    return inline, inline.get("name", "inline"), "inline route_config"


def _prepare(hcm: dict, request: Request, conn: Connection, out: Outcome) -> Request:
    """What the connection manager does before routing: path normalization, Host port stripping."""
    if hcm.get("normalize_path") and normalize_path(request.path) != request.path:
        out.notes.append(f"normalize_path: {request.path} is routed as {normalize_path(request.path)}")
        request = replace(request, path=normalize_path(request.path))
    authority = request.authority
    strip = hcm.get("strip_any_host_port") or (
        hcm.get("strip_matching_host_port") and authority.endswith(f":{conn.dest_port}"))
    if strip and _strip_port(authority) != authority:
        kept = tuple((k, v) for k, v in request.headers if k not in ("host", ":authority"))
        request = replace(request, headers=kept + (("host", _strip_port(authority)),))
    return request


def _follow_http(hcm: dict, chain: dict, request: Request, conn: Connection, out: Outcome,
                 resources: ResourceSet) -> Outcome:
    tls_chain = "transport_socket" in chain
    if (request.scheme == "https") != tls_chain and request.method != "CONNECT":
        what = "TLS to a plain-HTTP" if not tls_chain else "plain HTTP to a TLS-terminating"
        return out.fail(None, None, f"the client sends {what} connection manager: the request fails")
    route_config, name, source = _route_config(hcm, resources)
    out.route_config = name
    if route_config is None:
        return out.fail(None, None, f"route configuration {name!r} was never sent: Envoy does not serve the listener")
    out.step("route config", name, f"HTTP connection manager, {source}")
    request = _prepare(hcm, request, conn, out)
    vhost, why = find_virtual_host(route_config, request.authority)
    if vhost is None:
        return out.fail(404, "NR", why)
    out.virtual_host = vhost.get("name", "")
    out.step("virtual host", out.virtual_host, f"Host {request.authority!r} → {why}")
    if vhost.get("require_tls") in ("ALL", "EXTERNAL_ONLY") and not tls_chain:
        out.status, out.action = 301, "redirect"
        out.location = f"https://{_strip_port(request.authority)}{request.path}"
        out.notes.append("the virtual host requires TLS: Envoy redirects to https")
        return out
    for index, route in enumerate(vhost.get("routes", [])):
        reason = route_mismatch(route.get("match", {}), request)
        if reason is None:
            return _follow_route(index, route, vhost, route_config, hcm, request, out, resources, conn)
        out.skipped_routes.append(f"{_route_label(index, route)}: {reason}")
    count = len(vhost.get("routes", []))
    return out.fail(404, "NR", f"none of the {count} route(s) of virtual host {out.virtual_host} matches")


def _follow_tcp(tcp: dict, request: Request, conn: Connection, out: Outcome, resources: ResourceSet) -> Outcome:
    out.protocol, out.action = "tcp", "tcp_proxy"
    weighted = tcp.get("weighted_clusters", {}).get("clusters")
    entries: list[tuple[str, int | None, list[str]]] = [(tcp.get("cluster", ""), None, [])]
    if weighted:
        entries = [(c["name"], int(c.get("weight", 0)), []) for c in weighted]
    out.step("tcp proxy", ", ".join(name for name, _, _ in entries), "the bytes are proxied as TCP: no HTTP routing")
    out.clusters = _targets(entries, resources, conn, request)
    return _settle(out, http=False)


def _follow_chain(chain: dict, request: Request, conn: Connection, out: Outcome, resources: ResourceSet) -> Outcome:
    hcm = _filter(chain, HCM)
    if hcm is not None:
        return _follow_http(hcm, chain, request, conn, out, resources)
    tcp = _filter(chain, TCP_PROXY)
    if tcp is not None:
        return _follow_tcp(tcp, request, conn, out, resources)
    names = ", ".join(f.get("name", "?") for f in chain.get("filters", []))
    return out.fail(None, None, f"the filter chain runs {names or 'no filters'}, which plait does not follow")


# ----------------------------------------------------------------------------- entry points


def simulate(resources: ResourceSet, proxy: Proxy, request: Request, resolve: Resolver | None = None) -> Outcome:
    """Where `request`, sent by the application behind `proxy` (or to the gateway `proxy`), ends up."""
    mode = "gateway" if proxy.kind == "router" else f"sidecar, {proxy.mode} mode"
    out = Outcome(request=request, proxy=proxy.id, mode=mode)
    if proxy.kind == "router":
        found = _gateway_listener(resources, proxy, request, out)
    elif proxy.mode == "proxy":
        if request.scheme == "https":
            out.notes.append("an https:// URL through HTTP_PROXY is a CONNECT request for host:port")
            request = replace(request, method="CONNECT", path="", query="", explicit_port=True)
        found = _explicit_listener(resources, proxy, request, out)
    else:
        found = _captured_listener(resources, proxy, request, out, resolve)
    if found is None:
        return out
    listener, conn = found
    out.listener = listener.get("name")
    conn = _inspect(listener, conn, request)
    chosen = select_filter_chain(listener, conn)
    if chosen is None:
        return out.fail(None, None, f"no filter chain of {out.listener} matches and it has no default chain: "
                                    "Envoy closes the connection")
    out.filter_chain, chain, reasons = chosen
    out.step("filter chain", out.filter_chain, "; ".join(reasons))
    return _follow_chain(chain, request, conn, out, resources)


def mesh_resolver(snapshot: MeshSnapshot, namespace: str) -> Resolver:
    """What cluster DNS answers to a workload in `namespace`: a service's names (``reviews`` in its own
    namespace, ``reviews.default``, ``reviews.default.svc``, the FQDN; ServiceEntry hosts) → its address."""
    table: dict[str, str] = {}
    for svc in sorted(snapshot.services.values(), key=lambda s: s.hostname):
        if svc.address == "0.0.0.0" or svc.hostname.startswith("*"):
            continue
        for name in client_names(svc.hostname, 0, namespace):
            if not name.endswith(":0"):
                table.setdefault(name.lower(), svc.address)

    def resolve(host: str) -> str | None:
        host = host.lower().rstrip(".")
        return host if _is_ip(host) else table.get(host)

    return resolve


def simulate_mesh(snapshot: MeshSnapshot, proxy: Proxy, request: Request,
                  resources: ResourceSet | None = None) -> Outcome:
    """Generate the proxy's configuration (unless given) and simulate with the mesh's own DNS; a
    request to a gateway's port goes where the gateway's Service sends it (its targetPort)."""
    resources = resources if resources is not None else generate(snapshot, proxy)
    if proxy.kind == "router":
        listen = gateway_listen_port(snapshot, proxy, request.port)
        proxy = replace(proxy, listen_ports={**proxy.listen_ports, request.port: listen})
    return simulate(resources, proxy, request, mesh_resolver(snapshot, proxy.namespace))
