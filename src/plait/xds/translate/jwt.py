"""RequestAuthentication → Envoy's jwt_authn HTTP filter, and the clusters it fetches remote keys through.

Istio's semantics, in upstream Envoy: every jwtRule of the RequestAuthentications that apply to
a proxy becomes one provider; the requirement is "any provider, or no token at all" (Envoy's
``allow_missing``), so a valid token passes, an invalid, expired or badly signed one gets 401,
and a request without a token goes on unauthenticated (an AuthorizationPolicy asking for
``requestPrincipals`` then denies it). With several providers the requirement is Istio's
``any(P1, P2, …, all(any(P1, missing), any(P2, missing), …))``, so providers may share a
token location. Each provider writes the verified payload to dynamic metadata under the
filter's name and key ``payload``; the RBAC filters match ``request.auth.*`` there, and on
gateways (which clear the route cache once it is written) VirtualService routes match
``@request.auth.claims`` there too.

A ``jwksUri`` is fetched by Envoy itself (``remote_jwks``) through the cluster
``outbound|PORT||HOST``: the mesh's own cluster when the host is a service the proxy sees,
else one `jwks_clusters` adds (DNS, or STATIC for an IP; https verified against the OS trust
bundle and the host name). Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from plait.api.resources import Resource
from plait.api.security import JwtRule
from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot
from plait.xds.translate.common import cluster_name, duration, socket_address, typed
from plait.xds.translate.tls import SYSTEM_TRUST_BUNDLE, UPSTREAM_TLS

JWT_FILTER = "envoy.filters.http.jwt_authn"
JWT_TYPE = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
PAYLOAD_KEY = "payload"  # dynamic metadata key of the verified payload, as Istio
SPACE_DELIMITED_CLAIMS = ["permission", "scope"]  # Istio's default: "a b" becomes ["a", "b"] in metadata
DEFAULT_FETCH_TIMEOUT = "5s"
JWKS_CACHE_DURATION = "300s"
JWKS_CONNECT_TIMEOUT = "10s"


def provider_name(namespace: str, name: str, index: int) -> str:
    """``ns[default]-requestauthentication[jwt-example]-rule[0]``: names the policy and its jwtRule."""
    return f"ns[{namespace}]-requestauthentication[{name}]-rule[{index}]"


def parse_provider_name(text: str) -> tuple[str, str, int] | None:
    """``ns[default]-requestauthentication[jwt-example]-rule[0]`` → (``default``, ``jwt-example``, 0)."""
    found = re.match(r"^ns\[(.*)\]-requestauthentication\[(.*)\]-rule\[(\d+)\]$", text)
    return (found.group(1), found.group(2), int(found.group(3))) if found else None


def jwt_rules(snapshot: MeshSnapshot, proxy: Proxy) -> list[tuple[str, Resource, JwtRule]]:
    """(provider name, RequestAuthentication, jwtRule) for every rule that applies to the proxy."""
    return [
        (provider_name(ra.namespace, ra.name, i), ra, rule)
        for ra in snapshot.policies_for(proxy, snapshot.request_authentications)
        for i, rule in enumerate(ra.spec.jwt_rules)
    ]


def jwks_address(uri: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a jwksUri; the port defaults to the scheme's."""
    parts = urlsplit(uri)
    return parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def jwks_cluster_name(uri: str) -> str:
    """Istio's name for the cluster a jwksUri is fetched through: ``outbound|443||auth.example.com``."""
    _, host, port = jwks_address(uri)
    return cluster_name("outbound", port, None, host)


def _key_source(rule: JwtRule) -> dict:
    if rule.jwks:
        return {"local_jwks": {"inline_string": rule.jwks}}
    return {
        "remote_jwks": {
            "http_uri": {
                "uri": rule.jwks_uri,
                "cluster": jwks_cluster_name(rule.jwks_uri or ""),
                "timeout": duration(rule.timeout or DEFAULT_FETCH_TIMEOUT),
            },
            "cache_duration": JWKS_CACHE_DURATION,
        }
    }


def _provider(rule: JwtRule, clear_route_cache: bool) -> dict:
    """One jwtRule as a provider. `clear_route_cache` (gateways, as Istio): the route is chosen again
    once the payload is in metadata, so VirtualService matches on ``@request.auth.claims`` see it."""
    provider: dict = {"issuer": rule.issuer}
    if rule.audiences:
        provider["audiences"] = list(rule.audiences)
    provider.update(_key_source(rule))
    if rule.from_headers:
        provider["from_headers"] = [
            {"name": h.name, **({"value_prefix": h.prefix} if h.prefix else {})} for h in rule.from_headers
        ]
    if rule.from_params:
        provider["from_params"] = list(rule.from_params)
    if rule.from_cookies:
        provider["from_cookies"] = list(rule.from_cookies)
    if rule.forward_original_token:
        provider["forward"] = True
    if rule.output_payload_to_header:
        provider["forward_payload_header"] = rule.output_payload_to_header
    if rule.output_claim_to_headers:
        provider["claim_to_headers"] = [
            {"header_name": c.header, "claim_name": c.claim} for c in rule.output_claim_to_headers
        ]
    provider["payload_in_metadata"] = PAYLOAD_KEY
    provider["normalize_payload_in_metadata"] = {"space_delimited_claims": space_delimited_claims(rule)}
    if clear_route_cache:
        provider["clear_route_cache"] = True
    return provider


def space_delimited_claims(rule: JwtRule) -> list[str]:
    """Claims whose "a b" value becomes ["a", "b"]: Istio's defaults plus the rule's, sorted."""
    if rule.space_delimited_claims is None:
        return list(SPACE_DELIMITED_CLAIMS)
    return sorted(set(rule.space_delimited_claims) | set(SPACE_DELIMITED_CLAIMS))


def _requirement(names: list[str]) -> dict:
    """A token, if present, must be valid for some provider; a missing token is let through."""

    def token_or_missing(name: str) -> dict:
        return {"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}}

    if len(names) == 1:
        return token_or_missing(names[0])
    each = {"requires_all": {"requirements": [token_or_missing(n) for n in names]}}
    return {"requires_any": {"requirements": [{"provider_name": n} for n in names] + [each]}}


def jwt_authn_filter(snapshot: MeshSnapshot, proxy: Proxy) -> dict | None:
    """The jwt_authn HTTP filter for the proxy's RequestAuthentications, or None when none applies."""
    rules = jwt_rules(snapshot, proxy)
    if not rules:
        return None
    providers = {name: _provider(rule, clear_route_cache=proxy.kind != "sidecar") for name, _, rule in rules}
    return typed(
        JWT_FILTER,
        JWT_TYPE,
        providers=providers,
        rules=[{"match": {"prefix": "/"}, "requires": _requirement(list(providers))}],
        bypass_cors_preflight=True,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _jwks_cluster(name: str, scheme: str, host: str, port: int) -> dict:
    literal = _is_ip(host)
    cluster: dict = {
        "name": name,
        "type": "STATIC" if literal else "STRICT_DNS",
        "connect_timeout": JWKS_CONNECT_TIMEOUT,
    }
    if not literal:
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    cluster["load_assignment"] = {
        "cluster_name": name,
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}],
    }
    if scheme == "https":
        validation = {
            "trusted_ca": {"filename": SYSTEM_TRUST_BUNDLE},
            "match_typed_subject_alt_names": [
                {"san_type": "IP_ADDRESS" if literal else "DNS", "matcher": {"exact": host}}
            ],
        }
        context: dict = {"@type": UPSTREAM_TLS, "common_tls_context": {"validation_context": validation}}
        if not literal:
            context["sni"] = host
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": context}
    return cluster


def jwks_clusters(snapshot: MeshSnapshot, proxy: Proxy) -> list[dict]:
    """Clusters that jwt_authn fetches remote JWKS (jwksUri) through, except those the mesh already
    gives the proxy (a jwksUri on a service it sees uses that service's outbound cluster)."""
    mesh = {cluster_name("outbound", p.number, None, s.hostname) for s in snapshot.services_for(proxy) for p in s.ports}
    clusters: dict[str, dict] = {}
    for _, _, rule in jwt_rules(snapshot, proxy):
        if not rule.jwks_uri:
            continue
        scheme, host, port = jwks_address(rule.jwks_uri)
        name = cluster_name("outbound", port, None, host)
        if name not in mesh and name not in clusters:
            clusters[name] = _jwks_cluster(name, scheme, host, port)
    return list(clusters.values())
