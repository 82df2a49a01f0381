"""The simulator checked against a real Envoy: the same requests, the same choices?

Flows in: one proxy's generated ResourceSet. Flows out: an Envoy bootstrap that holds those
resources statically and tells, in response headers, what it chose (`envoy_copy`); the
requests the configuration itself suggests (`requests_for`); and, per request, the choice of
each side (`SimulatedChoice`, `EnvoyChoice`) for a test to compare.

What the Envoy copy changes, and why none of it touches a choice under test:

* every route says who it is: ``x-plait-route: <virtual host>|<index>`` and, per cluster
  (weighted ones too), ``x-plait-cluster``; every connection manager's routes say which
  listener and filter chain they belong to (``x-plait-listener``, ``x-plait-chain``). Envoy
  adds route headers to its own replies too (redirects, direct responses, faults, 403s);
  a request no route takes (404 NR) has none;
* every cluster becomes a static cluster of one loopback echo backend (same name), so
  nothing leaves the machine and any cluster with hosts answers; transport sockets are
  dropped (no certificates needed) and per-route faults removed (the simulator reports them
  as policies of the chosen route, it does not roll their percentages);
* listeners are bound on loopback addresses: a gateway's on one address (same ports), a
  capture-mode sidecar's ``0.0.0.0:PORT`` listeners (``bind_to_port: false``) on one
  address and each exact ``IP:PORT`` listener on an address of its own, standing in for
  iptables and virtualOutbound's hand-off; ``virtualOutbound``/``virtualInbound`` are left
  out (without iptables they would loop).

Only plaintext HTTP chains are exercised (`requests_for` skips TLS chains and says so).
"""

from __future__ import annotations

import copy
import http.client
from collections.abc import Iterator
from dataclasses import dataclass, field

from plait.model.proxy import Proxy
from plait.xds.resources import ResourceSet
from plait.xds.simulate import Outcome, Request, simulate
from plait.xds.simulate.request import Resolver
from plait.xds.static import static_bootstrap

HCM = "envoy.filters.network.http_connection_manager"
FAULT = "envoy.filters.http.fault"
CAPTURE_LISTENERS = ("virtualOutbound", "virtualInbound")
HEADERS = ("x-plait-listener", "x-plait-chain", "x-plait-route", "x-plait-cluster")


# ------------------------------------------------------------------ the Envoy copy


def _literal(value: str) -> str:
    return value.replace("%", "%%")  # header values are format strings


def _say(key: str, value: str) -> dict:
    return {"header": {"key": key, "value": _literal(value)}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}


def _chains(listener: dict) -> Iterator[tuple[str, dict]]:
    for index, chain in enumerate(listener.get("filter_chains", [])):
        yield chain.get("name") or f"#{index}", chain
    if "default_filter_chain" in listener:
        yield listener["default_filter_chain"].get("name") or "default_filter_chain", listener["default_filter_chain"]


def _hcm(chain: dict) -> dict | None:
    return next((f.get("typed_config", {}) for f in chain.get("filters", []) if f.get("name") == HCM), None)


def _tag_routes(config: dict, listener: str, chain: str) -> dict:
    config = copy.deepcopy(config)
    config["response_headers_to_add"] = [
        *config.get("response_headers_to_add", []),
        _say("x-plait-listener", listener),
        _say("x-plait-chain", chain),
    ]
    for vhost in config.get("virtual_hosts", []):
        for index, route in enumerate(vhost.get("routes", [])):
            said = [_say("x-plait-route", f"{vhost.get('name', '')}|{index}")]
            action = route.get("route", {})
            if isinstance(action.get("cluster"), str):
                said.append(_say("x-plait-cluster", action["cluster"]))
            for weighted in action.get("weighted_clusters", {}).get("clusters", []):
                weighted["response_headers_to_add"] = [
                    *weighted.get("response_headers_to_add", []),
                    _say("x-plait-cluster", weighted["name"]),
                ]
            route["response_headers_to_add"] = [*route.get("response_headers_to_add", []), *said]
            route.get("typed_per_filter_config", {}).pop(FAULT, None)  # faults are policies, not choices
    return config


def _has_hosts(cluster: dict, resources: ResourceSet) -> bool:
    """Would the real cluster have hosts to send to (DNS answers, original destinations exist)?"""
    if "cluster_type" in cluster or cluster.get("type") == "ORIGINAL_DST":
        return True
    if cluster.get("type") == "EDS":
        assignment = resources.endpoints.get(
            cluster.get("eds_cluster_config", {}).get("service_name") or cluster["name"], {}
        )
    else:
        assignment = cluster.get("load_assignment", {})
    return any(group.get("lb_endpoints") for group in assignment.get("endpoints", []))


def _echo_cluster(cluster: dict, resources: ResourceSet, echo: tuple[str, int]) -> dict:
    """The cluster as one static host, the echo backend (none if the real one has no hosts)."""
    name = cluster["name"]
    address = {"socket_address": {"address": echo[0], "port_value": echo[1]}}
    hosts = [{"lb_endpoints": [{"endpoint": {"address": address}}]}] if _has_hosts(cluster, resources) else []
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": hosts},
    }


@dataclass
class Addresses:
    """Where the Envoy copy binds each listener: original (ip, port) → loopback ip."""

    wildcard: str  # for 0.0.0.0 listeners (and a gateway's every listener)
    spare: list[str]  # one for each exact-IP listener address
    mapped: dict[str, str] = field(default_factory=dict)

    def of(self, ip: str, gateway: bool) -> str:
        if gateway or ip == "0.0.0.0":
            return self.wildcard
        if ip not in self.mapped:
            self.mapped[ip] = self.spare[len(self.mapped)]
        return self.mapped[ip]


def _address(listener: dict) -> tuple[str, int]:
    sock = listener.get("address", {}).get("socket_address", {})
    return sock.get("address", ""), int(sock.get("port_value", 0))


def envoy_copy(resources: ResourceSet, proxy: Proxy, addresses: Addresses, echo: tuple[str, int]) -> dict:
    """The bootstrap of an Envoy that holds `resources` and says what it chose (see the module docstring)."""
    copied = ResourceSet(clusters={n: _echo_cluster(c, resources, echo) for n, c in resources.clusters.items()})
    for name, original in resources.listeners.items():
        if name in CAPTURE_LISTENERS:
            continue
        listener = copy.deepcopy(original)
        ip, port = _address(listener)
        single = proxy.kind == "router" or proxy.mode == "proxy"  # one address: the client knows no other
        listener["address"] = {"socket_address": {"address": addresses.of(ip, single), "port_value": port}}
        listener.pop("bind_to_port", None)
        listener.pop("use_original_dst", None)
        for chain_name, chain in _chains(listener):
            chain.pop("transport_socket", None)
            hcm = _hcm(chain)
            if hcm is None:
                continue
            if "rds" in hcm:
                rds = hcm.pop("rds")["route_config_name"]
                hcm["route_config"] = resources.routes.get(rds, {"name": rds})
            hcm["route_config"] = _tag_routes(hcm.get("route_config", {}), name, chain_name)
        copied.listeners[name] = listener
    return static_bootstrap(copied)


# ------------------------------------------------------------------ requests the configuration suggests


@dataclass(frozen=True)
class Probe:
    """One request to send: to which listener (its address: ``0.0.0.0`` or the exact IP the application
    connects to), with which Host, path, headers."""

    dest_ip: str
    port: int
    authority: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "GET"


def concrete(domain: str) -> str:
    """A Host a virtual host's domain pattern takes (``*`` → any name, ``*.x`` → ``plait-any.x``)."""
    if domain == "*":
        return "plait-any.example"
    if domain.startswith("*"):
        return "plait-any" + domain[1:]
    if domain.endswith("*"):
        return domain[:-1] + "plait-any"
    return domain


def _header_value(matcher: dict) -> str | None:
    """A value that satisfies a header matcher, when one is easy to make (None: leave the header out)."""
    if matcher.get("invert_match"):
        return None
    if matcher.get("present_match"):
        return "1"
    string = matcher.get("string_match", {})
    for kind, make in (
        ("exact", lambda v: v),
        ("prefix", lambda v: v + "x"),
        ("suffix", lambda v: "x" + v),
        ("contains", lambda v: v),
    ):
        if kind in string:
            return make(string[kind])
    return None


def _path_and_extras(match: dict) -> tuple[str, list[tuple[str, str]], str] | None:
    """(path with query, headers, method) that should take the route; None for a route no request is made for."""
    if "prefix" in match:
        path = match["prefix"] or "/"
    elif "path" in match:
        path = match["path"]
    elif "path_separated_prefix" in match:
        path = match["path_separated_prefix"]
    else:
        return None  # regex and CONNECT routes: no probe is synthesised
    headers, method = [], "GET"
    for matcher in match.get("headers", []):
        value = _header_value(matcher)
        if value is not None and matcher["name"] == ":method":
            method = value
        elif value is not None and not matcher["name"].startswith(":"):
            headers.append((matcher["name"], value))
    query = [f"{q['name']}={q.get('string_match', {}).get('exact', '1')}" for q in match.get("query_parameters", [])]
    return path + ("?" + "&".join(query) if query else ""), headers, method


def _outbound(proxy: Proxy, name: str) -> bool:
    """Listeners an application's (or a gateway client's) requests reach: in explicit-proxy mode
    only ``explicit_proxy`` (the others serve the workload's inbound side)."""
    if proxy.kind == "sidecar" and proxy.mode == "proxy":
        return name == "explicit_proxy"
    return name not in CAPTURE_LISTENERS


def requests_for(resources: ResourceSet, proxy: Proxy) -> tuple[list[Probe], list[str]]:
    """Every virtual host domain × every route match, plus a miss per virtual host (an unknown path) and
    per route configuration (an unknown Host), on every outbound plaintext HTTP chain; and what was left out."""
    probes: dict[Probe, None] = {}
    left_out: list[str] = []
    for name, listener in sorted(resources.listeners.items()):
        if not _outbound(proxy, name):
            continue
        ip, port = _address(listener)
        for chain_name, chain in _chains(listener):
            hcm = _hcm(chain)
            if hcm is None:
                continue
            if "transport_socket" in chain:
                left_out.append(f"{name} {chain_name}: a TLS chain (the harness sends plaintext only)")
                continue
            config = (
                resources.routes.get(hcm["rds"]["route_config_name"], {})
                if "rds" in hcm
                else hcm.get("route_config", {})
            )
            for vhost in config.get("virtual_hosts", []):
                domains = [concrete(d) for d in vhost.get("domains", [])]
                for index, route in enumerate(vhost.get("routes", [])):
                    made = _path_and_extras(route.get("match", {}))
                    if made is None:
                        left_out.append(
                            f"{name} {vhost.get('name')} route #{index}: no request is made for a "
                            "regex or CONNECT match"
                        )
                        continue
                    for domain in domains:
                        probes[Probe(ip, port, domain, made[0], tuple(made[1]), made[2])] = None
                if domains:
                    probes[Probe(ip, port, domains[0], "/plait-miss/unknown-path")] = None
            probes[Probe(ip, port, "plait-nowhere.invalid", "/")] = None
    return list(probes), left_out


# ------------------------------------------------------------------ both sides' choices


@dataclass(frozen=True)
class Choice:
    """What one side did with a request: who answered, and through which listener, chain, route, cluster.
    `route` is ``<virtual host>|<index>``; None fields: not observed (no route was taken)."""

    status_kind: str  # "forwarded" | "answered <status>" | "no route"
    listener: str | None = None
    chain: str | None = None
    route: str | None = None
    clusters: frozenset[str] = frozenset()


def simulated_choice(outcome: Outcome) -> Choice:
    if outcome.route_index is None:  # answered before routing (404 NR, or a gateway's 401/403)
        if outcome.status == 404:
            return Choice("no route")
        return Choice(f"answered {outcome.status}", outcome.listener, outcome.filter_chain)
    route = f"{outcome.virtual_host}|{outcome.route_index}"
    if outcome.action in ("redirect", "direct_response") or outcome.status is not None:
        return Choice(f"answered {outcome.status}", outcome.listener, outcome.filter_chain, route)
    return Choice("forwarded", outcome.listener, outcome.filter_chain, route, frozenset(outcome.cluster_names))


def agree(simulated: Choice, envoy: Choice) -> bool:
    """Same listener, chain, route and outcome; Envoy's one cluster among the simulator's (weighted
    clusters: the simulator reports them all, Envoy picks one)."""
    if simulated.route is None:  # the simulator stopped before routing: Envoy's route is not compared
        where = envoy.listener is None or (simulated.listener, simulated.chain) == (envoy.listener, envoy.chain)
        return simulated.status_kind == envoy.status_kind and where
    same = (simulated.status_kind, simulated.listener, simulated.chain, simulated.route) == (
        envoy.status_kind,
        envoy.listener,
        envoy.chain,
        envoy.route,
    )
    return same and envoy.clusters <= simulated.clusters and bool(envoy.clusters) == bool(simulated.clusters)


def envoy_choice(status: int, headers: dict[str, str], forwarded: bool) -> Choice:
    if "x-plait-route" not in headers:
        return Choice("no route" if status == 404 else f"answered {status}")
    cluster = headers.get("x-plait-cluster")
    kind = "forwarded" if forwarded else f"answered {status}"
    return Choice(
        kind,
        headers.get("x-plait-listener"),
        headers.get("x-plait-chain"),
        headers["x-plait-route"],
        frozenset([cluster]) if cluster and forwarded else frozenset(),
    )


def _host(authority: str) -> str:
    return authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority


def simulate_probe(resources: ResourceSet, proxy: Proxy, probe: Probe, resolve: Resolver) -> Outcome:
    """The simulator's walk for a probe: sent to the gateway's port, through the sidecar's HTTP_PROXY
    (explicit mode: the URL names host and port), or captured on its way to the probe's port."""
    if proxy.kind == "router":
        url = f"http://{proxy.ip}:{probe.port}{probe.path}"
    elif proxy.mode == "proxy":
        url = f"http://{probe.authority}{probe.path}"
    else:  # the application connects to the listener's IP, or to what the Host's name resolves to
        host = probe.dest_ip if probe.dest_ip != "0.0.0.0" else _host(probe.authority)
        url = f"http://{host}:{probe.port}{probe.path}"
    request = Request.from_url(url, probe.method, [("host", probe.authority), *probe.headers])
    return simulate(resources, proxy, request, resolve)


def envoy_address(resources: ResourceSet, proxy: Proxy, probe: Probe, resolve: Resolver, addresses: Addresses) -> str:
    """Where the probe reaches the Envoy copy: what iptables and virtualOutbound would do in capture mode
    (the listener on the resolved ip:port when there is one, else the 0.0.0.0 one)."""
    if proxy.kind == "router" or proxy.mode == "proxy":
        return addresses.wildcard
    if probe.dest_ip != "0.0.0.0":
        return addresses.of(probe.dest_ip, False)
    ip = resolve(_host(probe.authority))
    exact = ip is not None and any(
        _address(listener) == (ip, probe.port)
        for n, listener in resources.listeners.items()
        if n not in CAPTURE_LISTENERS
    )
    return addresses.of(ip, False) if exact else addresses.wildcard


def send_probe(
    address: str, probe: Probe, *, absolute: bool = False, echo_name: str
) -> tuple[int, dict[str, str], bool]:
    """(status, response headers lower-cased, did the echo backend answer) of the probe sent to the Envoy copy."""
    target = f"http://{probe.authority}{probe.path}" if absolute else probe.path
    connection = http.client.HTTPConnection(address, probe.port, timeout=10)
    try:
        connection.putrequest(probe.method, target, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", probe.authority)
        for key, value in probe.headers:
            connection.putheader(key, value)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        forwarded = "x-envoy-upstream-service-time" in headers or echo_name.encode() in body
        return response.status, headers, forwarded
    except (TimeoutError, OSError, http.client.HTTPException) as error:
        raise ConnectionError(f"{probe} to {address}: {error}") from error
    finally:
        connection.close()
