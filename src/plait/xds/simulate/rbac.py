"""Envoy's RBAC filter, evaluated: does a named policy match, and what does the filter then do.

Flows in: an RBAC ``rules`` block as plait generates it (action and named policies of
permissions and principals) and a `Peer` — what the filter can see of the connection and
request: the peer certificate's principal (mTLS only), the direct and the XFF-derived client
address, the destination address, the SNI, the request (absent on a TCP chain) and the dynamic
metadata earlier filters left (jwt_authn's verified payload). Flows out: `RbacVerdict`.

Envoy's rules, as followed here: a policy matches when any of its permissions and any of its
principals match; policies are tried in name order and the first match is the one Envoy
reports; ALLOW denies when no policy matches, DENY when one does, LOG never denies. A header
matcher on a missing header fails (unless it asks for absence); ``authenticated`` needs a peer
certificate; ``url_path`` sees the path without its query; a metadata matcher whose path is
missing fails. Pure.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from plait.xds.simulate.request import Request
from plait.xds.simulate.routes import full_match, header_mismatch, string_matches

_MISSING = object()


@dataclass(frozen=True)
class Peer:
    """What an RBAC filter knows when it runs."""

    dest_port: int
    principal: str | None = None  # the peer certificate's URI SAN; None without mutual TLS
    source_ip: str | None = None  # the connection's peer address (direct_remote_ip)
    remote_ip: str | None = None  # the client address after X-Forwarded-For (remote_ip)
    dest_ip: str | None = None
    sni: str | None = None
    request: Request | None = None  # None on a TCP (network filter) chain
    metadata: Mapping[str, Any] = field(default_factory=dict)  # dynamic metadata by filter name


@dataclass(frozen=True)
class RbacVerdict:
    action: str  # Envoy's: ALLOW, DENY or LOG
    matched: str | None  # the policy Envoy reports (first matching name), None if none matched
    denied: bool
    policies: tuple[str, ...] = ()  # every policy name in the filter


def _in_cidr(ip: str | None, cidr: Mapping[str, Any]) -> bool:
    if not ip:
        return False
    try:
        network = ipaddress.ip_network(f"{cidr['address_prefix']}/{cidr.get('prefix_len', 0)}", strict=False)
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return address.version == network.version and address in network


def _template_regex(template: str) -> str:
    """A uri_template path: ``*`` one path segment, ``**`` any rest of the path."""
    parts = re.split(r"(\*\*|\*)", template)
    return "".join({"**": ".*", "*": "[^/]+"}.get(p, re.escape(p)) for p in parts)


def _path(peer: Peer) -> str | None:
    return peer.request.path if peer.request else None


def _header(matcher: Mapping[str, Any], peer: Peer) -> bool:
    return peer.request is not None and header_mismatch(dict(matcher), peer.request) is None


def _lookup(peer: Peer, metadata: Mapping[str, Any]) -> Any:
    value: Any = peer.metadata.get(metadata.get("filter", ""), _MISSING)
    for segment in metadata.get("path", []):
        if not isinstance(value, Mapping) or segment.get("key") not in value:
            return _MISSING
        value = value[segment["key"]]
    return value


def value_matches(matcher: Mapping[str, Any], value: Any) -> bool:
    """Envoy's ValueMatcher on one metadata value."""
    if value is _MISSING:
        return False
    if "or_match" in matcher:
        return any(value_matches(m, value) for m in matcher["or_match"].get("value_matchers", []))
    if "list_match" in matcher:
        one_of = matcher["list_match"].get("one_of", {})
        return isinstance(value, list) and any(value_matches(one_of, item) for item in value)
    if "string_match" in matcher:
        return isinstance(value, str) and string_matches(matcher["string_match"], value)
    if "bool_match" in matcher:
        return isinstance(value, bool) and value == matcher["bool_match"]
    if "present_match" in matcher:
        return bool(matcher["present_match"])
    if "null_match" in matcher:
        return value is None
    if "double_match" in matcher:
        exact = matcher["double_match"].get("exact")
        return isinstance(value, int | float) and not isinstance(value, bool) and exact is not None and value == exact
    return False


def metadata_matches(metadata: Mapping[str, Any], peer: Peer) -> bool:
    matched = value_matches(metadata.get("value", {}), _lookup(peer, metadata))
    return matched != bool(metadata.get("invert"))


def permission_matches(permission: Mapping[str, Any], peer: Peer) -> bool:
    """One Envoy Permission (what is being accessed)."""
    if permission.get("any"):
        return True
    if "and_rules" in permission:
        return all(permission_matches(p, peer) for p in permission["and_rules"].get("rules", []))
    if "or_rules" in permission:
        return any(permission_matches(p, peer) for p in permission["or_rules"].get("rules", []))
    if "not_rule" in permission:
        return not permission_matches(permission["not_rule"], peer)
    if "header" in permission:
        return _header(permission["header"], peer)
    if "url_path" in permission:
        path = _path(peer)
        return path is not None and string_matches(permission["url_path"].get("path", {}), path)
    if "uri_template" in permission:
        path = _path(peer)
        template = permission["uri_template"].get("typed_config", {}).get("path_template", "")
        return path is not None and full_match(_template_regex(template), path)
    if "destination_port" in permission:
        return peer.dest_port == int(permission["destination_port"])
    if "destination_port_range" in permission:
        bounds = permission["destination_port_range"]
        return int(bounds.get("start", 0)) <= peer.dest_port < int(bounds.get("end", 0))
    if "destination_ip" in permission:
        return _in_cidr(peer.dest_ip, permission["destination_ip"])
    if "requested_server_name" in permission:
        return string_matches(permission["requested_server_name"], peer.sni or "")
    if "metadata" in permission:
        return metadata_matches(permission["metadata"], peer)
    return False


def principal_matches(principal: Mapping[str, Any], peer: Peer) -> bool:
    """One Envoy Principal (who is asking)."""
    if principal.get("any"):
        return True
    if "and_ids" in principal:
        return all(principal_matches(p, peer) for p in principal["and_ids"].get("ids", []))
    if "or_ids" in principal:
        return any(principal_matches(p, peer) for p in principal["or_ids"].get("ids", []))
    if "not_id" in principal:
        return not principal_matches(principal["not_id"], peer)
    if "authenticated" in principal:
        name = principal["authenticated"].get("principal_name")
        return peer.principal is not None and (name is None or string_matches(name, peer.principal))
    if "direct_remote_ip" in principal or "source_ip" in principal:
        return _in_cidr(peer.source_ip, principal.get("direct_remote_ip") or principal["source_ip"])
    if "remote_ip" in principal:
        return _in_cidr(peer.remote_ip, principal["remote_ip"])
    if "header" in principal:
        return _header(principal["header"], peer)
    if "url_path" in principal:
        path = _path(peer)
        return path is not None and string_matches(principal["url_path"].get("path", {}), path)
    if "metadata" in principal:
        return metadata_matches(principal["metadata"], peer)
    return False


def policy_matches(policy: Mapping[str, Any], peer: Peer) -> bool:
    return any(permission_matches(p, peer) for p in policy.get("permissions", [])) and any(
        principal_matches(p, peer) for p in policy.get("principals", [])
    )


def evaluate_rbac(rules: Mapping[str, Any], peer: Peer) -> RbacVerdict:
    """What one RBAC filter (its enforced ``rules``) does with the request or connection."""
    policies = rules.get("policies", {})
    action = rules.get("action", "ALLOW")
    matched = next((name for name in sorted(policies) if policy_matches(policies[name], peer)), None)
    denied = matched is None if action == "ALLOW" else (matched is not None and action == "DENY")
    return RbacVerdict(action, matched, denied, tuple(sorted(policies)))
