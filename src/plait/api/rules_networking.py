"""Istio's cross-field rules for the networking kinds (after pkg/config/validation), as findings.

Each public function takes a validated spec and yields ``(path inside spec, message)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from plait.api import networking as net
from plait.api.rules import (
    DNS1123_LABEL,
    RETRY_ON,
    Finding,
    check_destination_host,
    duplicates,
    export_to,
    hosts_overlap,
    is_ip,
    port_name,
    port_number,
    protocol_name,
    selector,
    status_code,
    unset,
)

MESH = "mesh"
CORS_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*")

# ---------------------------------------------------------------- VirtualService


def virtual_service(vs: net.VirtualServiceSpec) -> Iterator[Finding]:
    applies_to_mesh = not vs.gateways or MESH in vs.gateways
    for i, host in enumerate(vs.hosts):
        if host == "*" and applies_to_mesh:
            yield (
                f"hosts[{i}]",
                (
                    "'*' is not allowed as the host of a VirtualService that applies to the mesh "
                    "(no gateways, or 'mesh' among them); name the hosts"
                ),
            )
    for i in range(len(vs.hosts)):
        for j in range(i + 1, len(vs.hosts)):
            if hosts_overlap(vs.hosts[i], vs.hosts[j]):
                yield (
                    f"hosts[{j}]",
                    (f"duplicate hosts: {vs.hosts[i]!r} and {vs.hosts[j]!r} overlap; list each host once"),
                )
    for i, name in enumerate(vs.gateways):
        yield from gateway_name(f"gateways[{i}]", name)
    for i, route in enumerate(vs.http):
        yield from http_route(f"http[{i}]", route)
    for section in ("tcp", "tls"):
        for i, route in enumerate(getattr(vs, section)):
            for j, dest in enumerate(route.route):
                yield from destination(f"{section}[{i}].route[{j}].destination", dest.destination)
            for j, match in enumerate(route.match):
                yield from l4_match(f"{section}[{i}].match[{j}]", match)
    for i, route in enumerate(vs.tls):
        for j, match in enumerate(route.match):
            yield from sni_hosts(f"tls[{i}].match[{j}].sniHosts", match.sni_hosts, vs.hosts)
    yield from export_to("exportTo", vs.export_to)


def gateway_name(path: str, name: str) -> Iterator[Finding]:
    """``mesh``, ``name``, ``namespace/name`` (both DNS labels) or the legacy ``name.namespace``."""
    namespace, slash, gateway = name.rpartition("/")
    if slash and not (DNS1123_LABEL.match(namespace) and DNS1123_LABEL.match(gateway)):
        yield path, f"gateway {name!r} is not valid; expected 'namespace/name' (DNS labels), a name, or 'mesh'"
    elif not slash and not all(DNS1123_LABEL.match(label) for label in name.split(".")):
        yield path, f"gateway {name!r} is not valid; expected 'namespace/name', a name, or 'mesh'"


def http_route(path: str, route: net.HTTPRoute) -> Iterator[Finding]:
    for i, match in enumerate(route.match):
        if match.source_namespace is not None and not DNS1123_LABEL.match(match.source_namespace):
            yield f"{path}.match[{i}].sourceNamespace", f"{match.source_namespace!r} is not a namespace name"
        for j, name in enumerate(match.gateways):
            yield from gateway_name(f"{path}.match[{i}].gateways[{j}]", name)
    for i, dest in enumerate(route.route):
        yield from destination(f"{path}.route[{i}].destination", dest.destination)
    if route.mirror:
        yield from destination(f"{path}.mirror", route.mirror)
    for i, mirror in enumerate(route.mirrors):
        yield from destination(f"{path}.mirrors[{i}].destination", mirror.destination)
    if route.retries:
        yield from retries(f"{path}.retries", route.retries)
    yield from route_conflicts(path, route)
    yield from header_operations(f"{path}.headers", route.headers)
    for i, dest in enumerate(route.route):
        yield from header_operations(f"{path}.route[{i}].headers", dest.headers)
    if route.redirect is not None:
        yield from redirect(f"{path}.redirect", route.redirect)
    if route.rewrite is not None and not (
        route.rewrite.uri or route.rewrite.uri_regex_rewrite or route.rewrite.authority
    ):
        yield f"{path}.rewrite", "a rewrite needs uri, uriRegexRewrite or authority"
    if route.cors_policy is not None:
        for i, method in enumerate(route.cors_policy.allow_methods):
            if method not in CORS_METHODS:
                yield (
                    f"{path}.corsPolicy.allowMethods[{i}]",
                    f"{method!r} is not an HTTP method ({', '.join(CORS_METHODS)})",
                )
    for i, match in enumerate(route.match):
        yield from string_matches(f"{path}.match[{i}]", match)


def route_conflicts(path: str, route: net.HTTPRoute) -> Iterator[Finding]:
    """A redirect or a direct response ends the request: a fault or a rewrite beside it is a mistake."""
    for action, present in (("redirect", route.redirect), ("directResponse", route.direct_response)):
        if present is not None:
            for name, other in (("fault", route.fault), ("rewrite", route.rewrite)):
                if other is not None:
                    yield f"{path}.{name}", f"an HTTP route cannot have both {action} and {name}"


def header_operations(path: str, headers: net.Headers | None) -> Iterator[Finding]:
    """Envoy cannot set pseudo-headers (``:path``) nor, except through authority rewriting, ``host``."""
    for side in ("request", "response"):
        ops = getattr(headers, side) if headers is not None else None
        if ops is None:
            continue
        for verb, names in (("set", ops.set), ("add", ops.add), ("remove", ops.remove)):
            for name in names:
                authority_ok = side == "request" and verb != "remove" and name.lower() in (":authority", "host")
                if not name or ((name.startswith(":") or name.lower() == "host") and not authority_ok):
                    yield f"{path}.{side}.{verb}", f"header {name!r} cannot be changed here"


def redirect(path: str, target: net.HTTPRedirect) -> Iterator[Finding]:
    if not (
        target.uri or target.prefix_rewrite or target.authority or target.scheme or target.port or target.derive_port
    ):
        yield path, "a redirect needs uri, prefixRewrite, authority, scheme or port"
    if target.scheme is not None and target.scheme not in ("http", "https"):
        yield f"{path}.scheme", f"redirect scheme {target.scheme!r} must be 'http' or 'https'"


def string_matches(path: str, match: net.HTTPMatchRequest) -> Iterator[Finding]:
    """An empty prefix or regex matches everything: Istio refuses it except for the uri prefix."""
    named = [("scheme", match.scheme), ("method", match.method), ("authority", match.authority)]
    named += [(f"headers.{k}", v) for k, v in match.headers.items()]
    named += [(f"queryParams.{k}", v) for k, v in match.query_params.items()]
    for name, string_match in [("uri", match.uri), *named]:
        if string_match is None:
            continue
        if string_match.regex == "":
            yield f"{path}.{name}.regex", "an empty regex; remove the match or write a pattern"
        if string_match.prefix == "" and name != "uri":
            yield f"{path}.{name}.prefix", "an empty prefix; remove the match or write a prefix"


def destination(path: str, dest: net.Destination) -> Iterator[Finding]:
    yield from check_destination_host(f"{path}.host", dest.host)
    if dest.subset is not None and not DNS1123_LABEL.match(dest.subset):
        yield f"{path}.subset", f"subset name {dest.subset!r} is not valid; expected a DNS label, e.g. 'v1'"


def retries(path: str, retry: net.HTTPRetry) -> Iterator[Finding]:
    if retry.attempts == 0:
        extra = [
            name
            for name, field in (
                ("perTryTimeout", retry.per_try_timeout),
                ("retryOn", retry.retry_on),
                ("retryRemoteLocalities", retry.retry_remote_localities),
            )
            if field is not None and field != ""
        ]
        if extra:
            yield (
                path,
                (
                    f"{', '.join(extra)} set while attempts is 0 (retries disabled); "
                    "set attempts, or remove the retry settings"
                ),
            )
    for policy in (retry.retry_on or "").split(",") if retry.retry_on else []:
        if policy not in RETRY_ON and not status_code(policy):
            yield (
                f"{path}.retryOn",
                (f"{policy!r} is not a retryOn policy; expected HTTP status codes or {', '.join(sorted(RETRY_ON))}"),
            )


def l4_match(path: str, match: net.L4MatchAttributes) -> Iterator[Finding]:
    if match.source_namespace is not None and not DNS1123_LABEL.match(match.source_namespace):
        yield f"{path}.sourceNamespace", f"{match.source_namespace!r} is not a namespace name"
    for i, name in enumerate(match.gateways):
        yield from gateway_name(f"{path}.gateways[{i}]", name)


def _sni_within(name: str, host: str) -> bool:
    """Is SNI `name` within VirtualService host `host`? A short host also covers its FQDNs (plait is lenient here)."""
    if host == "*" or host == name:
        return True
    if host.startswith("*"):
        return name.endswith(host[1:])
    return "." not in host and name.startswith(host + ".")


def sni_hosts(path: str, names: list[str], vs_hosts: list[str]) -> Iterator[Finding]:
    """Each SNI host must lie within one of the VirtualService's hosts."""
    for i, name in enumerate(names):
        if not any(_sni_within(name, host) for host in vs_hosts):
            yield (
                f"{path}[{i}]",
                (f"SNI host {name!r} is not within any of the VirtualService's hosts ({', '.join(vs_hosts)})"),
            )


# ---------------------------------------------------------------- DestinationRule


def destination_rule(dr: net.DestinationRuleSpec) -> Iterator[Finding]:
    if dr.traffic_policy is not None:
        yield from traffic_policy("trafficPolicy", dr.traffic_policy)
    for i, subset in enumerate(dr.subsets):
        if not DNS1123_LABEL.match(subset.name):
            yield f"subsets[{i}].name", f"subset name {subset.name!r} is not valid; expected a DNS label, e.g. 'v1'"
        if subset.traffic_policy is not None:
            yield from traffic_policy(f"subsets[{i}].trafficPolicy", subset.traffic_policy)
    if dr.workload_selector is not None:
        yield from selector("workloadSelector.matchLabels", dr.workload_selector.match_labels)
    yield from export_to("exportTo", dr.export_to)


def traffic_policy(path: str, policy: Any) -> Iterator[Finding]:
    """A TrafficPolicy or a port-level one: never empty; each part checked."""
    if not policy.model_fields_set - {"port"}:
        yield path, "a traffic policy needs at least one setting (remove it, or set e.g. loadBalancer)"
    if policy.connection_pool is not None:
        yield from connection_pool(f"{path}.connectionPool", policy.connection_pool)
    if policy.outlier_detection is not None:
        yield from outlier_detection(f"{path}.outlierDetection", policy.outlier_detection)
    if policy.load_balancer is not None and policy.load_balancer.consistent_hash is not None:
        yield from consistent_hash(f"{path}.loadBalancer.consistentHash", policy.load_balancer.consistent_hash)
    if policy.tls is not None:
        yield from client_tls(f"{path}.tls", policy.tls)
    for i, level in enumerate(getattr(policy, "port_level_settings", [])):
        yield from traffic_policy(f"{path}.portLevelSettings[{i}]", level)


def connection_pool(path: str, pool: net.ConnectionPoolSettings) -> Iterator[Finding]:
    if unset(pool):
        yield path, "a connection pool needs tcp or http settings"
    if pool.http is not None and pool.http.h2_upgrade_policy == "UPGRADE" and pool.http.use_client_protocol:
        yield f"{path}.http", "useClientProtocol must not be true when h2UpgradePolicy is UPGRADE"


def outlier_detection(path: str, outlier: net.OutlierDetection) -> Iterator[Finding]:
    if (outlier.consecutive_local_origin_failures or 0) > 0 and not outlier.split_external_local_origin_errors:
        yield f"{path}.consecutiveLocalOriginFailures", "needs splitExternalLocalOriginErrors: true"


def consistent_hash(path: str, lb: net.ConsistentHashLB) -> Iterator[Finding]:
    if lb.minimum_ring_size is not None and (lb.ring_hash is not None or lb.maglev is not None):
        yield path, "set only one of minimumRingSize and ringHash/maglev"
    if lb.maglev is not None:
        size = lb.maglev.table_size or 0
        if not (size and size < 5000011 and _is_prime(size)):
            yield f"{path}.maglev.tableSize", f"tableSize must be a prime number below 5000011 (got {size})"


def _is_prime(n: int) -> bool:
    return n > 1 and all(n % f for f in range(2, int(n**0.5) + 1))


def client_tls(path: str, tls: net.ClientTLSSettings) -> Iterator[Finding]:
    """Istio's ClientTLSSettings rules (insecureSkipVerify, credentialName exclusivity)."""
    if (
        tls.insecure_skip_verify
        and tls.mode == "SIMPLE"
        and (tls.ca_certificates or tls.credential_name or tls.subject_alt_names)
    ):
        yield path, "insecureSkipVerify cannot be combined with caCertificates, credentialName or subjectAltNames"
    if tls.insecure_skip_verify and tls.mode == "MUTUAL" and (tls.ca_certificates or tls.subject_alt_names):
        yield path, "insecureSkipVerify cannot be combined with caCertificates or subjectAltNames"
    if (
        tls.mode in ("SIMPLE", "MUTUAL")
        and tls.credential_name
        and (tls.client_certificate or tls.private_key or tls.ca_certificates)
    ):
        yield (
            path,
            (
                "credentialName cannot be combined with clientCertificate, privateKey or caCertificates "
                "(the credential holds them)"
            ),
        )


# ---------------------------------------------------------------- Gateway


def gateway(gw: net.GatewaySpec) -> Iterator[Finding]:
    yield from selector("selector", gw.selector)
    for i in duplicates([server.port.name for server in gw.servers]):
        yield (
            f"servers[{i}].port.name",
            (
                f"port name {gw.servers[i].port.name!r} is used by another server; "
                "port names must be unique in a Gateway"
            ),
        )
    for i, server in enumerate(gw.servers):
        yield from gateway_server(f"servers[{i}]", server)


def gateway_server(path: str, server: net.Server) -> Iterator[Finding]:
    port = server.port
    if not port.name:
        yield f"{path}.port.name", "a Gateway server port needs a name"
    yield from protocol_name(f"{path}.port.protocol", port.protocol)
    if port.target_port is not None:
        yield f"{path}.port.targetPort", "targetPort has no effect on Gateways; remove it"
    if server.bind and not server.bind.startswith("unix://") and not is_ip(server.bind):
        yield f"{path}.bind", f"bind {server.bind!r} is not an IP address"
    protocol = port.protocol.upper()
    if server.tls is not None and protocol not in ("HTTPS", "TLS"):
        tls = server.tls
        if protocol not in ("HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB") or (
            tls.mode not in (None, "PASSTHROUGH") or tls.ca_certificates or tls.private_key or tls.server_certificate
        ):
            yield f"{path}.tls", f"a {port.protocol} server cannot have TLS settings (only httpsRedirect on HTTP)"
    if server.tls is not None:
        yield from server_tls(f"{path}.tls", server.tls)


def server_tls(path: str, tls: net.ServerTLSSettings) -> Iterator[Finding]:
    for name in [tls.credential_name or "", *tls.credential_names]:
        if name.startswith("kubernetes-gateway://"):  # only a ReferenceGrant may open another namespace's Secret
            yield f"{path}.credentialName", "kubernetes-gateway:// names are made from Gateway API certificateRefs only"
    if tls.mode == "ISTIO_MUTUAL":
        for name, value in (
            ("serverCertificate", tls.server_certificate),
            ("privateKey", tls.private_key),
            ("caCertificates", tls.ca_certificates),
            ("credentialName", tls.credential_name),
            ("credentialNames", tls.credential_names),
        ):
            if value:
                yield f"{path}.{name}", f"ISTIO_MUTUAL uses the mesh's certificates; remove {name}"
        return
    sources = [bool(tls.server_certificate and tls.private_key), bool(tls.credential_name), bool(tls.credential_names)]
    if sum(sources) > 1:
        yield path, "set only one of credentialName, credentialNames, serverCertificate/privateKey"
    by_credential = tls.credential_name or tls.credential_names
    if tls.mode in ("MUTUAL", "OPTIONAL_MUTUAL") and not by_credential and not tls.ca_certificates:
        yield (
            f"{path}.caCertificates",
            (f"tls mode {tls.mode} needs caCertificates to verify clients (or a credentialName)"),
        )


# ---------------------------------------------------------------- ServiceEntry, WorkloadEntry


def service_entry(se: net.ServiceEntrySpec) -> Iterator[Finding]:
    for i, host in enumerate(se.hosts):
        if host == "*":
            yield f"hosts[{i}]", "'*' is not a ServiceEntry host; name the hosts, e.g. '*.example.com'"
    if se.workload_selector is not None:
        yield from selector("workloadSelector.labels", se.workload_selector.labels)
    if any("/" in a for a in se.addresses) and se.resolution not in ("NONE", "STATIC"):
        yield "addresses", f"CIDR addresses are allowed only with resolution NONE or STATIC (not {se.resolution})"
    yield from service_ports(se.ports)
    yield from endpoints(se)
    if (
        se.resolution != "NONE"
        and len(se.hosts) > 1
        and any(
            (p.protocol or "TCP").upper() not in ("HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-WEB", "HTTPS", "TLS")
            for p in se.ports
        )
    ):
        yield (
            "hosts",
            (
                "several hosts need HTTP or TLS ports (with plain TCP the hosts cannot be told apart), "
                "or resolution NONE"
            ),
        )
    yield from export_to("exportTo", se.export_to)


def service_ports(ports: list[net.ServicePort]) -> Iterator[Finding]:
    for i in duplicates([p.name for p in ports]):
        yield f"ports[{i}].name", f"port name {ports[i].name!r} is already defined"
    for i in duplicates([p.number for p in ports]):
        yield f"ports[{i}].number", f"port {ports[i].number} is already defined"
    for i, port in enumerate(ports):
        yield from port_name(f"ports[{i}].name", port.name)
        yield from protocol_name(f"ports[{i}].protocol", port.protocol)


def endpoints(se: net.ServiceEntrySpec) -> Iterator[Finding]:
    if se.resolution == "NONE" and se.endpoints:
        yield "endpoints", "resolution NONE takes no endpoints (traffic goes to the address the client asked for)"
    if se.resolution == "DNS_ROUND_ROBIN" and len(se.endpoints) > 1:
        yield "endpoints", "resolution DNS_ROUND_ROBIN takes at most one endpoint"
    names = {p.name for p in se.ports}
    for i, ep in enumerate(se.endpoints):
        path = f"endpoints[{i}]"
        yield from workload_entry(ep, path + ".", static=se.resolution == "STATIC")
        for name in ep.ports:
            if name not in names:
                yield f"{path}.ports.{name}", f"endpoint port {name!r} is not one of the ServiceEntry's port names"


def workload_entry(we: net.WorkloadEntrySpec, prefix: str = "", static: bool = False) -> Iterator[Finding]:
    address = we.address
    if not address and not we.network:
        yield f"{prefix}address", "address is required"
    elif address.startswith("unix://"):
        socket = address.removeprefix("unix://")
        if not socket.startswith("@") and not (socket.startswith("/") and not socket.endswith("/")):
            yield f"{prefix}address", f"{address!r}: a unix socket needs an absolute file path or an @abstract name"
        if we.ports:
            yield f"{prefix}ports", "a unix socket endpoint takes no ports"
    elif address and not is_ip(address):
        if static:
            yield f"{prefix}address", f"{address!r} is not an IP address (resolution STATIC)"
        elif not all(DNS1123_LABEL.match(label) for label in address.removesuffix(".").split(".")):
            yield f"{prefix}address", f"{address!r} is not an IP address or a DNS name"
    for name, number in we.ports.items():
        yield from port_name(f"{prefix}ports.{name}", name)
        yield from port_number(f"{prefix}ports.{name}", number)


# ---------------------------------------------------------------- Sidecar


def sidecar(spec: net.SidecarSpec) -> Iterator[Finding]:
    if spec.workload_selector is not None:
        yield from selector("workloadSelector.labels", spec.workload_selector.labels)
    portless = [i for i, listener in enumerate(spec.egress) if listener.port is None]
    if len(portless) > 1:
        yield f"egress[{portless[1]}]", "only one egress listener may have no port"
    elif portless and portless[0] != len(spec.egress) - 1:
        yield f"egress[{portless[0]}]", "the egress listener without a port must be the last one"
    ported = [(i, (listener.port.number, listener.bind)) for i, listener in enumerate(spec.egress) if listener.port]
    for k in duplicates([key for _, key in ported]):
        yield f"egress[{ported[k][0]}].port", "ports of egress listeners must be unique"
    for i, listener in enumerate(spec.egress):
        if listener.port is not None:
            yield from protocol_name(f"egress[{i}].port.protocol", listener.port.protocol)
    policy = spec.outbound_traffic_policy
    if policy is not None and policy.egress_proxy is not None:
        if policy.mode != "ALLOW_ANY":
            yield "outboundTrafficPolicy.egressProxy", "egressProxy is used only with mode ALLOW_ANY"
        if policy.egress_proxy.port is None:
            yield "outboundTrafficPolicy.egressProxy.port", "egressProxy needs a port"
