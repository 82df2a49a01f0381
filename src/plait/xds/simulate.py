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
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import re2

from plait.model.proxy import Proxy
from plait.xds.resources import ResourceSet

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
    def from_url(cls, url: str, method: str = "GET", headers: Iterable[tuple[str, str]] = ()) -> "Request":
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
    request_headers: list[str] = field(default_factory=list)


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

    def fail(self, status: int | None, flag: str | None, why: str) -> "Outcome":
        self.status, self.response_flag = status, flag
        self.notes.append(why)
        return self

    @property
    def cluster_names(self) -> list[str]:
        return [c.name for c in self.clusters]

    def summary(self) -> str:
        """One line: where it lands, or what Envoy answers."""
        if self.action == "redirect":
            return f"{self.status} redirect to {self.location}"
        if self.action == "direct_response":
            return f"{self.status} direct response" + (f": {self.body!r}" if self.body else "")
        if self.status is not None or not self.clusters:
            flag = f" ({self.response_flag})" if self.response_flag else ""
            return f"{self.status or 'no response'}{flag}: {self.notes[-1] if self.notes else 'nothing matched'}"
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
