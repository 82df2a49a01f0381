"""Authorization as a receiving proxy applies it: its jwt_authn and RBAC filters in order, then put in Istio's terms.

`check_http` runs an HTTP connection manager's filters as Envoy does — jwt_authn (401 on a bad
token, else the verified payload goes to dynamic metadata), then each RBAC filter (403 when one
denies) — and `check_tcp` a TCP chain's network RBAC filters (the connection is closed). Both
work on the generated configuration alone. `explain` then names what decided, from a
MeshSnapshot: the Envoy policy name ``ns[NS]-policy[NAME]-rule[I]`` gives the
AuthorizationPolicy and rule, and the rule is translated again field by field
(`plait.xds.translate.rbac.rule_clauses`) so each field's matcher can be evaluated on its own:
"from[0].source.principals matched spiffe://…". The verdict itself is always the one of the
generated filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from plait.api.resources import Resource
from plait.model.snapshot import MeshSnapshot
from plait.xds.simulate.jwt import Check, JwtOutcome, authenticate
from plait.xds.simulate.outcome import Authorization
from plait.xds.simulate.rbac import Peer, RbacVerdict, evaluate_rbac, permission_matches, principal_matches
from plait.xds.simulate.request import Request
from plait.xds.translate import jwt as jwt_translate
from plait.xds.translate import rbac as rbac_translate

JWT_FILTER = jwt_translate.JWT_FILTER
HTTP_RBAC = rbac_translate.RBAC_FILTER
NETWORK_RBAC = rbac_translate.NETWORK_RBAC_FILTER


def remote_ip(hcm: Mapping[str, Any], request: Request | None, source_ip: str | None) -> str | None:
    """Envoy's trusted client address: the peer itself with ``use_remote_address``, else the last
    X-Forwarded-For entry when there is one (no trusted hops)."""
    forwarded = request.header("x-forwarded-for") if request else None
    if hcm.get("use_remote_address") or not forwarded:
        return source_ip
    return forwarded.split(",")[-1].strip()


def _configs(filters: list[dict], *names: str) -> list[tuple[str, dict]]:
    return [(f.get("name", ""), f.get("typed_config", {})) for f in filters if f.get("name") in names]


def check_http(
    http_filters: list[dict], peer: Peer, now: float | None, *, proxy: str, where: str, role: str = "destination"
) -> Authorization:
    """Run the connection manager's jwt_authn and RBAC filters on the request, in their order."""
    auth = Authorization(proxy=proxy, where=where, peer=peer, role=role)
    for name, config in _configs(http_filters, JWT_FILTER, HTTP_RBAC):
        if name == JWT_FILTER:
            auth.jwt = authenticate(config, peer.request, now)
            peer = replace(peer, metadata={**peer.metadata, JWT_FILTER: auth.jwt.metadata})
            auth.peer = peer
            if auth.jwt.status:
                auth.status, auth.summary = auth.jwt.status, f"{auth.jwt.status} {auth.jwt.reason}"
                return auth
            continue
        verdict = evaluate_rbac(config.get("rules", {}), peer)
        auth.rbac.append(verdict)
        if verdict.denied:
            auth.status = 403
            auth.summary = f"403 RBAC: access denied (rbac_access_denied_matched_policy[{verdict.matched or 'none'}])"
            return auth
    auth.summary = "allowed"
    return auth


def check_tcp(
    network_filters: list[dict], peer: Peer, *, proxy: str, where: str, role: str = "destination"
) -> Authorization:
    """Run a TCP chain's network RBAC filters on the connection."""
    auth = Authorization(proxy=proxy, where=where, peer=peer, role=role)
    for _, config in _configs(network_filters, NETWORK_RBAC):
        verdict = evaluate_rbac(config.get("rules", {}), peer)
        auth.rbac.append(verdict)
        if verdict.denied:
            auth.refused, auth.summary = True, "the connection is closed by RBAC"
            return auth
    auth.summary = "allowed"
    return auth


def has_authz(filters: list[dict]) -> bool:
    return bool(_configs(filters, JWT_FILTER, HTTP_RBAC, NETWORK_RBAC))


# ------------------------------------------------------------------ in Istio's terms


def _rule(snapshot: MeshSnapshot, envoy_name: str) -> tuple[Resource, int] | None:
    parsed = rbac_translate.parse_policy_name(envoy_name)
    if parsed is None:
        return None
    namespace, name, index = parsed
    policy = snapshot.resources.get(("AuthorizationPolicy", namespace, name))
    return (policy, index) if policy is not None else None


def _rule_label(envoy_name: str) -> str:
    parsed = rbac_translate.parse_policy_name(envoy_name)
    return f"{parsed[0]}/{parsed[1]} rules[{parsed[2]}]" if parsed else envoy_name


def _claim(peer: Peer, path: list[str]) -> Any:
    value: Any = peer.metadata.get(JWT_FILTER, {}).get(jwt_translate.PAYLOAD_KEY)
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def observed(label: str, peer: Peer) -> str:
    """What the request or connection had for the field a clause label names."""
    key = label.split(" ", 1)[1] if label.startswith("when[") else label.rsplit(".", 1)[-1]
    key = key.removesuffix(" (notValues)")
    if key.startswith("not") and key[3:4].isupper():
        key = key[3].lower() + key[4:]
    request = peer.request
    principal = peer.principal or "no peer certificate (plaintext)"
    payload = peer.metadata.get(JWT_FILTER, {}).get(jwt_translate.PAYLOAD_KEY)
    simple = {
        "principals": principal,
        "namespaces": principal,
        "serviceAccounts": principal,
        "source.principal": principal,
        "source.namespace": principal,
        "source.serviceAccount": principal,
        "trustDomains": principal,
        "source.trustDomain": principal,
        "ipBlocks": peer.source_ip or "unknown",
        "source.ip": peer.source_ip or "unknown",
        "remoteIpBlocks": peer.remote_ip or "unknown",
        "remote.ip": peer.remote_ip or "unknown",
        "requestPrincipals": (f"{payload.get('iss', '')}/{payload.get('sub', '')}" if payload else "no verified token"),
        "ports": str(peer.dest_port),
        "destination.port": str(peer.dest_port),
        "destination.ip": peer.dest_ip or "unknown",
        "connection.sni": peer.sni or "no SNI",
        "hosts": request.authority if request else "",
        "methods": request.method if request else "",
        "paths": request.path if request else "",
    }
    simple["request.auth.principal"] = simple["requestPrincipals"]
    if key in simple:
        return simple[key]
    if key.startswith("request.headers["):
        value = request.header(key[len("request.headers[") : -1].lower()) if request else None
        return value if value is not None else "absent"
    claims = {"request.auth.audiences": ["aud"], "request.auth.presenter": ["azp"]}
    path = claims.get(key) or (rbac_translate.bracketed_names(key) if key.startswith("request.auth.claims[") else None)
    if path is not None:
        value = _claim(peer, path)
        return "absent" if value is None else str(value)
    return "?"


def clause_results(policy: Resource, index: int, peer: Peer, *, for_tcp: bool) -> list[tuple[str, bool]]:
    """(clause label, does it hold) for each field of one rule, evaluated as its Envoy matcher."""
    rule = policy.spec.rules[index]
    try:
        clauses = rbac_translate.rule_clauses(rule, policy.namespace, for_tcp=for_tcp, action=policy.spec.action)
    except ValueError:
        return []
    out = []
    for clause in clauses:
        check = principal_matches if clause.side == "principal" else permission_matches
        out.append((clause.label, check(clause.matcher, peer)))
    return out


def _matched_because(snapshot: MeshSnapshot, envoy_name: str, peer: Peer, for_tcp: bool) -> str:
    found = _rule(snapshot, envoy_name)
    if found is None:
        return ""
    results = clause_results(*found, peer, for_tcp=for_tcp)
    held = [f"{label} matched {observed(label, peer)}" for label, ok in results if ok]
    return f" ({'; '.join(held)})" if held else " (the rule has no conditions: it matches every request)"


def _misses(snapshot: MeshSnapshot, verdict: RbacVerdict, peer: Peer, for_tcp: bool) -> list[str]:
    """Why each policy of a filter did not match: its first failing fields."""
    lines = []
    for name in verdict.policies:
        found = _rule(snapshot, name)
        if found is None:
            continue
        policy, index = found
        if not policy.spec.rules:
            lines.append(f"{policy.namespace}/{policy.name} has no rules: it matches nothing")
            continue
        failed = [
            f"{label} did not match {observed(label, peer)}"
            for label, ok in clause_results(policy, index, peer, for_tcp=for_tcp)
            if not ok
        ]
        why = "; ".join(failed) or "each field holds, but never all of one from entry and one to entry together"
        lines.append(f"{_rule_label(name)}: {why}")
    return lines


def _dropped_rules(snapshot: MeshSnapshot, verdict: RbacVerdict) -> list[str]:
    """ALLOW rules left out of a TCP filter because they need HTTP."""
    names = {rbac_translate.parse_policy_name(n)[:2] for n in verdict.policies if rbac_translate.parse_policy_name(n)}
    lines = []
    for namespace, name in sorted(names):
        policy = snapshot.resources.get(("AuthorizationPolicy", namespace, name))
        for i in range(len(policy.spec.rules) if policy else 0):
            if rbac_translate.policy_name(namespace, name, i) not in verdict.policies:
                lines.append(f"{namespace}/{name} rules[{i}] is not used on TCP: it needs HTTP fields")
    return lines


def _in_force(verdict: RbacVerdict) -> str:
    names = dict.fromkeys(_rule_label(n).split(" ")[0] for n in verdict.policies)
    return ", ".join(names) or "none usable here"


def _explain_rbac(snapshot: MeshSnapshot, auth: Authorization, for_tcp: bool) -> None:
    """The filters ran AUDIT, DENY, ALLOW and stopped at the first denial: the last word is the decision."""
    peer = auth.peer
    auth.summary = "ALLOWED: no ALLOW policy applies to the workload and no DENY policy matched"
    for verdict in auth.rbac:
        if verdict.action == "LOG":
            if verdict.matched:
                auth.details.append(f"audited by {_rule_label(verdict.matched)}")
        elif verdict.action == "DENY" and verdict.matched:
            because = _matched_because(snapshot, verdict.matched, peer, for_tcp)
            auth.summary = f"DENIED by DENY policy {_rule_label(verdict.matched)}{because}"
        elif verdict.action == "DENY":
            auth.details.append(f"no DENY policy matched (DENY policies: {_in_force(verdict)})")
        elif verdict.matched:
            because = _matched_because(snapshot, verdict.matched, peer, for_tcp)
            auth.summary = f"ALLOWED by {_rule_label(verdict.matched)}{because}"
        else:
            auth.summary = f"DENIED: no ALLOW policy matched (policies in force: {_in_force(verdict)})"
            auth.details += _misses(snapshot, verdict, peer, for_tcp)
            if for_tcp:
                auth.details += _dropped_rules(snapshot, verdict)


def _provider_label(name: str) -> str:
    parsed = jwt_translate.parse_provider_name(name)
    return f"RequestAuthentication {parsed[0]}/{parsed[1]} jwtRules[{parsed[2]}]" if parsed else name


def _jwt_line(check: Check) -> str:
    token = check.token
    if token is None:
        return f"{_provider_label(check.provider)}: no token"
    what = "a malformed token" if token.malformed else f"token from issuer {token.issuer} ({token.principal})"
    verdict = (
        f"rejected: {check.error}"
        if check.error
        else ("accepted" if check.signature_checked else "accepted if its signature is good")
    )
    notes = f"; {'; '.join(check.notes)}" if check.notes else ""
    return f"{_provider_label(check.provider)}: {what} in the {token.where}, {verdict}{notes}"


def _explain_jwt(auth: Authorization, outcome: JwtOutcome) -> None:
    auth.jwt_lines = [_jwt_line(c) for c in outcome.checks]
    if outcome.status:
        auth.summary = f"UNAUTHENTICATED: {outcome.status} {outcome.reason}"
    elif all(c.missing for c in outcome.checks):
        providers = ", ".join(dict.fromkeys(_provider_label(c.provider).rsplit(" ", 1)[0] for c in outcome.checks))
        auth.jwt_lines = [
            f"no token: allowed by {providers} (allow missing: only an AuthorizationPolicy "
            "asking for requestPrincipals refuses a request without one)"
        ]


def explain(snapshot: MeshSnapshot, auth: Authorization) -> Authorization:
    """Fill `summary`, `details` and `jwt_lines` in Istio's terms (policy, rule, fields)."""
    for_tcp = auth.peer.request is None
    if auth.jwt is not None:
        _explain_jwt(auth, auth.jwt)
        if auth.jwt.status:
            return auth
    _explain_rbac(snapshot, auth, for_tcp)
    if auth.refused:
        auth.summary += ": the connection is closed"
    return auth
