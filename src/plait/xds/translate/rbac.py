"""AuthorizationPolicy → Envoy RBAC filters, as Istio builds them.

Flows in: the AuthorizationPolicies that apply to a proxy (`MeshSnapshot.policies_for`: root
namespace, its namespace, selector matching its labels). Flows out: HTTP filters for an
inbound (or gateway) connection manager — jwt_authn first (`plait.xds.translate.jwt`), then
one RBAC filter per action in Istio's order: AUDIT (Envoy action LOG, never denies), DENY,
ALLOW — and the same RBAC filters as network filters for TCP chains. Pure: no I/O.

Each rule of a policy becomes one Envoy policy named ``ns[NS]-policy[NAME]-rule[I]``; Envoy
reports that name when it denies (``rbac_access_denied_matched_policy[...]`` in the response
details) and in per-rule stats. Within a rule: one principal per ``from`` entry and one
permission per ``to`` entry (Envoy ORs them), each the AND of its fields plus the ``when``
conditions of its kind; the values of one field are ORed, ``not*`` values are a NOT of their
OR. An ALLOW policy without rules matches nothing (deny all); ``rules: [{}]`` matches all.

Wildcards and identities as Istio: ``x*`` prefix, ``*x`` suffix, ``*`` "present" (regex
``.+``); principals are the peer certificate's URI SAN ``spiffe://`` + value; namespaces the
regex ``.*/ns/NS/.*``; serviceAccounts ``ns/sa``; trustDomains the prefix ``spiffe://TD/``;
ipBlocks the direct peer address, remoteIpBlocks the client address after X-Forwarded-For;
requestPrincipals ``iss/sub`` (cut at the last ``/``) and ``request.auth.*`` the JWT payload
jwt_authn leaves in dynamic metadata.

TCP chains see no HTTP: a field only HTTP has (hosts, methods, paths, requestPrincipals,
``request.headers``, ``request.auth.*``) makes an ALLOW rule unusable, so the rule is left out
(it can never allow); in a DENY or AUDIT rule only that condition is left out, so the rule
denies more, never less — Istio's fail-closed choice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from plait.api.resources import Resource
from plait.api.security import Rule
from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot
from plait.xds.translate import jwt
from plait.xds.translate.common import typed

RBAC_FILTER = "envoy.filters.http.rbac"
NETWORK_RBAC_FILTER = "envoy.filters.network.rbac"
HTTP_RBAC_TYPE = "envoy.extensions.filters.http.rbac.v3.RBAC"
NETWORK_RBAC_TYPE = "envoy.extensions.filters.network.rbac.v3.RBAC"
# Istio's action → Envoy's, in the order the filters run.
ENVOY_ACTIONS = {"AUDIT": "LOG", "DENY": "DENY", "ALLOW": "ALLOW"}
# Counters per filter and per rule: http.<hcm>.rbac.allow.denied, http.<hcm>.rbac.deny.policy.<name>.denied, …
STAT_PREFIXES = {"AUDIT": "audit", "DENY": "deny", "ALLOW": "allow"}
TCP_STAT_PREFIX = "tcp."  # Istio's network RBAC stat prefix; plait's: tcp.allow.rbac.denied, …
SPIFFE = "spiffe://"

_POLICY_NAME = re.compile(r"^ns\[(.*)\]-policy\[(.*)\]-rule\[(\d+)\]$")
_GO_REGEX_SPECIAL = set("\\.+*?()|[]{}^$")


class HttpOnly(ValueError):
    """A condition a TCP (network) RBAC filter cannot evaluate."""


def policy_name(namespace: str, name: str, index: int) -> str:
    return f"ns[{namespace}]-policy[{name}]-rule[{index}]"


def match_never() -> dict:
    """The policy of an AuthorizationPolicy without rules: no request matches it."""
    return {"permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}


def parse_policy_name(text: str) -> tuple[str, str, int] | None:
    """``ns[default]-policy[deny-all]-rule[1]`` → (``default``, ``deny-all``, 1)."""
    found = _POLICY_NAME.match(text)
    return (found.group(1), found.group(2), int(found.group(3))) if found else None


# ------------------------------------------------------------------ matchers for one value


def quote_meta(text: str) -> str:
    """Escape regex metacharacters as Go's regexp.QuoteMeta (Istio's regexes stay byte-identical)."""
    return "".join("\\" + c if c in _GO_REGEX_SPECIAL else c for c in text)


def any_value() -> dict:
    """Istio's ``*``: any non-empty value."""
    return {"safe_regex": {"regex": ".+"}}


def string_matcher(value: str, prefix: str = "") -> dict:
    """Istio's value syntax: ``*`` any non-empty, ``*x`` suffix, ``x*`` prefix, else exact; `prefix` is
    put in front (``spiffe://``)."""
    if value == "*":
        return any_value()
    if value.startswith("*"):
        if not prefix:
            return {"suffix": value[1:]}
        return {"safe_regex": {"regex": prefix + ".*" + quote_meta(value[1:])}}
    if value.endswith("*"):
        return {"prefix": prefix + value[:-1]}
    return {"exact": prefix + value}


def header_matcher(name: str, value: str, ignore_case: bool = False) -> dict:
    """``*`` is presence; ``*x``/``x*`` suffix/prefix; else exact (Istio's HeaderMatcher and HostMatcher)."""
    if value == "*":
        return {"name": name, "present_match": True}
    if value.startswith("*"):
        match: dict = {"suffix": value[1:]}
    elif value.endswith("*"):
        match = {"prefix": value[:-1]}
    else:
        match = {"exact": value}
    if ignore_case:
        match["ignore_case"] = True
    return {"name": name, "string_match": match}


def cidr(text: str) -> dict:
    address, _, length = text.partition("/")
    return {"address_prefix": address, "prefix_len": int(length) if length else (128 if ":" in address else 32)}


def _authenticated(matcher: dict) -> dict:
    return {"authenticated": {"principal_name": matcher}}


def _namespace(value: str, _: str) -> dict:
    pattern = ".*".join(quote_meta(part) for part in value.split("*"))
    return _authenticated({"safe_regex": {"regex": f".*/ns/{pattern}/.*"}})


def _service_account(value: str, policy_namespace: str) -> dict:
    namespace, slash, account = value.partition("/")
    if not slash:
        namespace, account = policy_namespace, value
    regex = f"spiffe://.+/ns/{quote_meta(namespace)}/(.+/|)sa/{quote_meta(account)}(/.+)?"
    return _authenticated({"safe_regex": {"regex": regex}})


def _trust_domain(value: str, _: str) -> dict:
    """The peer's SPIFFE trust domain: ``*`` any, else exact or one ``*`` within the domain name."""
    if value == "*":
        return _authenticated({"prefix": SPIFFE})
    if "*" not in value:
        return _authenticated({"prefix": f"{SPIFFE}{value}/"})
    before, _, after = value.partition("*")
    return _authenticated({"safe_regex": {"regex": f"spiffe://{quote_meta(before)}[^/]*{quote_meta(after)}/.*"}})


def _path(value: str) -> dict:
    if "{*}" in value or "{**}" in value:
        template = value.replace("{**}", "**").replace("{*}", "*")
        return {
            "uri_template": {
                "name": "uri-template",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
                    "path_template": template,
                },
            }
        }
    return {"url_path": {"path": string_matcher(value)}}


def _payload(path: list[str], value: dict) -> dict:
    """A dynamic metadata matcher on the JWT payload jwt_authn verified."""
    return {"filter": jwt.JWT_FILTER, "path": [{"key": k} for k in (jwt.PAYLOAD_KEY, *path)], "value": value}


def _one_or_any_of(matchers: list[dict]) -> dict:
    return matchers[0] if len(matchers) == 1 else {"or_match": {"value_matchers": matchers}}


def _claim(path: list[str], values: list[str]) -> dict:
    """A claim that may be a string or a list of strings (``aud``, ``groups``): either form matches."""

    def strings() -> dict:
        return _one_or_any_of([{"string_match": string_matcher(v)} for v in values])

    return {
        "metadata": _payload(path, {"or_match": {"value_matchers": [{"list_match": {"one_of": strings()}}, strings()]}})
    }


def _request_principal(value: str) -> dict:
    """``iss/sub`` (split at the last ``/``, issuers are URLs) as two payload matchers."""
    issuer, slash, subject = value.rpartition("/")
    if not slash:
        issuer, subject = value, ""
    if value == "*":
        iss, sub = any_value(), any_value()
    elif value.startswith("*"):
        if slash:
            iss, sub = (any_value() if issuer == "*" else {"suffix": issuer[1:]}), {"exact": subject}
        else:
            iss, sub = any_value(), {"suffix": value[1:]}
    elif value.endswith("*"):
        if slash:
            iss, sub = {"exact": issuer}, (any_value() if subject == "*" else {"prefix": subject[:-1]})
        else:
            iss, sub = {"prefix": value[:-1]}, any_value()
    else:
        iss, sub = {"exact": issuer}, {"exact": subject}
    return {
        "and_ids": {
            "ids": [
                {"metadata": _payload(["iss"], {"string_match": iss})},
                {"metadata": _payload(["sub"], {"string_match": sub})},
            ]
        }
    }


def _request_principals(values: list[str], _: str) -> dict:
    ids = [_request_principal(v) for v in values]
    return ids[0] if len(ids) == 1 else {"or_ids": {"ids": ids}}


def bracketed_names(key: str) -> list[str]:
    """``request.auth.claims[a][b]`` → [``a``, ``b``]; ``request.headers[x-token]`` → [``x-token``]."""
    rest = key[key.index("[") :]
    nested = re.fullmatch(r"(\[[^\[\]]+\])+", rest)
    return re.findall(r"\[([^\[\]]+)\]", rest) if nested else [rest[1:-1]]


def envoy_filter_target(key: str) -> tuple[str, str]:
    """``experimental.envoy.filters.a.b[c]`` → (``envoy.filters.a.b``, ``c``)."""
    name, bracket, rest = key.removeprefix("experimental.").partition("[")
    if not bracket or not rest.endswith("]") or len(rest) < 2:
        raise ValueError(f"{key}: expected experimental.envoy.filters.<filter>[<key>]")
    return name, rest[:-1]


def _envoy_filter(key: str, values: list[str]) -> dict:
    """Another filter's dynamic metadata; a value ``[v]`` matches v in a list."""
    name, path = envoy_filter_target(key)
    matchers = [
        {"list_match": {"one_of": {"string_match": string_matcher(v[1:-1])}}}
        if v.startswith("[") and v.endswith("]")
        else {"string_match": string_matcher(v)}
        for v in values
    ]
    return {"metadata": {"filter": name, "path": [{"key": path}], "value": _one_or_any_of(matchers)}}


# ------------------------------------------------------------------ Istio attributes


@dataclass(frozen=True)
class Attribute:
    """How one Istio attribute becomes Envoy matchers: on the principal or the permission side,
    HTTP only or not, and per value (ORed) or over all values at once."""

    side: str  # "principal" | "permission"
    http_only: bool
    per_value: Callable[[str, str], dict] | None = None  # (value, policy namespace) → one matcher
    all_values: Callable[[list[str], str], dict] | None = None  # (values, policy namespace) → one matcher


ATTRIBUTES = {
    "source.principal": Attribute("principal", False, lambda v, _: _authenticated(string_matcher(v, SPIFFE))),
    "request.auth.principal": Attribute("principal", True, all_values=_request_principals),
    "source.serviceAccount": Attribute("principal", False, _service_account),
    "source.namespace": Attribute("principal", False, _namespace),
    "source.trustDomain": Attribute("principal", False, _trust_domain),
    "remote.ip": Attribute("principal", False, lambda v, _: {"remote_ip": cidr(v)}),
    "source.ip": Attribute("principal", False, lambda v, _: {"direct_remote_ip": cidr(v)}),
    "request.auth.audiences": Attribute("principal", True, all_values=lambda vs, _: _claim(["aud"], vs)),
    "request.auth.presenter": Attribute("principal", True, all_values=lambda vs, _: _claim(["azp"], vs)),
    "host": Attribute("permission", True, lambda v, _: {"header": header_matcher(":authority", v, ignore_case=True)}),
    "method": Attribute("permission", True, lambda v, _: {"header": header_matcher(":method", v)}),
    "path": Attribute("permission", True, lambda v, _: _path(v)),
    "destination.port": Attribute("permission", False, lambda v, _: {"destination_port": int(v)}),
    "destination.ip": Attribute("permission", False, lambda v, _: {"destination_ip": cidr(v)}),
    "connection.sni": Attribute("permission", False, lambda v, _: {"requested_server_name": string_matcher(v)}),
}

# (API field, attribute), in the order Istio emits them.
SOURCE_FIELDS = (
    ("trustDomains", "source.trustDomain"),
    ("principals", "source.principal"),
    ("requestPrincipals", "request.auth.principal"),
    ("serviceAccounts", "source.serviceAccount"),
    ("namespaces", "source.namespace"),
    ("remoteIpBlocks", "remote.ip"),
    ("ipBlocks", "source.ip"),
)
OPERATION_FIELDS = (("hosts", "host"), ("methods", "method"), ("paths", "path"), ("ports", "destination.port"))


def attribute(key: str) -> Attribute:
    """The Attribute of a ``when`` key (bracketed keys carry their name)."""
    base = key.partition("[")[0]
    if base == "request.headers":
        header = bracketed_names(key)[0]
        return Attribute("principal", True, lambda v, _: {"header": header_matcher(header, v)})
    if base == "request.auth.claims":
        return Attribute("principal", True, all_values=lambda vs, _: _claim(bracketed_names(key), vs))
    if base.startswith("experimental.envoy.filters"):
        envoy_filter_target(key)  # checks the key's form
        return Attribute("permission", False, all_values=lambda vs, _: _envoy_filter(key, vs))
    if base not in ATTRIBUTES:
        raise ValueError(f"unknown attribute {key!r}")
    return ATTRIBUTES[base]


@dataclass(frozen=True)
class Clause:
    """One field of a rule as an Envoy matcher, labelled with where it is in the policy."""

    label: str  # "from[0].source.principals", "to[1].operation.notPaths", "when[2] source.ip"
    side: str  # "principal" | "permission"
    entry: int | None  # the from/to entry it belongs to; None for a `when` condition (all entries)
    matcher: dict


def _combine(attr: Attribute, values: list[str], namespace: str, negate: bool) -> dict:
    if attr.all_values is not None:
        matcher = attr.all_values(values, namespace)
    else:
        each = [attr.per_value(v, namespace) for v in values] if attr.per_value else []
        matcher = {"or_ids": {"ids": each}} if attr.side == "principal" else {"or_rules": {"rules": each}}
    if not negate:
        return matcher
    return {"not_id": matcher} if attr.side == "principal" else {"not_rule": matcher}


def _clauses(
    label: str,
    attr: Attribute,
    entry: int | None,
    values: list[str],
    not_values: list[str],
    namespace: str,
    *,
    for_tcp: bool,
    action: str,
    not_label: str,
) -> list[Clause]:
    out = []
    try:
        if for_tcp and attr.http_only and (values or not_values):
            raise HttpOnly(f"{label} is HTTP only")
        if values:
            out.append(Clause(label, attr.side, entry, _combine(attr, values, namespace, negate=False)))
        if not_values:
            out.append(Clause(not_label, attr.side, entry, _combine(attr, not_values, namespace, negate=True)))
    except ValueError:
        if action == "ALLOW":
            raise  # the rule cannot allow anything: it is left out
        return []  # a DENY or AUDIT rule without this condition matches more
    return out


def _not(field: str) -> str:
    return "not" + field[0].upper() + field[1:]


def rule_clauses(rule: Rule, namespace: str, *, for_tcp: bool, action: str) -> list[Clause]:
    """Every condition of a rule as an Envoy matcher, ``from`` and ``to`` fields first, then ``when``.
    Raises `HttpOnly` when an ALLOW rule cannot be evaluated on TCP; raises ValueError for a condition
    that cannot be translated (an ALLOW rule is then left out, a DENY rule loses the condition)."""
    out: list[Clause] = []
    options = {"for_tcp": for_tcp, "action": action}
    sides = (
        ("from[{}].source.", [e.source for e in rule.from_], SOURCE_FIELDS),
        ("to[{}].operation.", [e.operation for e in rule.to], OPERATION_FIELDS),
    )
    for prefix, entries, fields in sides:
        for i, entry in enumerate(entries):
            values, label = entry.model_dump(by_alias=True), prefix.format(i)
            for field, key in fields:
                out += _clauses(
                    label + field,
                    ATTRIBUTES[key],
                    i,
                    values[field],
                    values[_not(field)],
                    namespace,
                    not_label=label + _not(field),
                    **options,
                )
    for i, condition in enumerate(rule.when):
        try:
            attr = attribute(condition.key)
        except ValueError:
            if action == "ALLOW":
                raise
            continue
        label = f"when[{i}] {condition.key}"
        out += _clauses(
            label,
            attr,
            None,
            condition.values,
            condition.not_values,
            namespace,
            not_label=label + " (notValues)",
            **options,
        )
    return out


def rule_policy(rule: Rule, clauses: list[Clause]) -> dict:
    """Envoy's Policy: one principal per `from` entry, one permission per `to` entry, each an AND."""

    def side(kind: str, entries: int) -> list[list[dict]]:
        return [
            [c.matcher for c in clauses if c.side == kind and c.entry in (i, None)]
            for i in (range(entries) if entries else [None])
        ]

    principals = [{"and_ids": {"ids": ids or [{"any": True}]}} for ids in side("principal", len(rule.from_))]
    permissions = [{"and_rules": {"rules": rules or [{"any": True}]}} for rules in side("permission", len(rule.to))]
    return {"permissions": permissions, "principals": principals}


def rbac_rules(policies: list[Resource], action: str, *, for_tcp: bool) -> dict | None:
    """Envoy's RBAC (action + named policies) for the policies with Istio action `action`; None if none."""
    chosen = [p for p in policies if p.spec.action == action]
    if not chosen:
        return None
    named: dict[str, dict] = {}
    for policy in chosen:
        if not policy.spec.rules:
            named[policy_name(policy.namespace, policy.name, 0)] = match_never()
        for i, rule in enumerate(policy.spec.rules):
            try:
                clauses = rule_clauses(rule, policy.namespace, for_tcp=for_tcp, action=action)
            except ValueError:
                continue  # an ALLOW rule that cannot be evaluated here never allows
            named[policy_name(policy.namespace, policy.name, i)] = rule_policy(rule, clauses)
    return {"action": ENVOY_ACTIONS[action], "policies": named}


def _policies(snapshot: MeshSnapshot, proxy: Proxy) -> list[Resource]:
    return snapshot.policies_for(proxy, snapshot.authorization_policies)


def inbound_http_filters(snapshot: MeshSnapshot, proxy: Proxy, port: int) -> list[dict]:
    """HTTP filters (jwt_authn, then RBAC AUDIT, DENY, ALLOW) that go before the router of the HCM
    serving workload port `port` (a gateway: the port it listens on). The same for every port:
    port conditions are Envoy's ``destination_port`` matchers."""
    filters = [f for f in [jwt.jwt_authn_filter(snapshot, proxy)] if f]
    policies = _policies(snapshot, proxy)
    for action in ENVOY_ACTIONS:
        rules = rbac_rules(policies, action, for_tcp=False)
        if rules is not None:
            filters.append(
                typed(
                    RBAC_FILTER,
                    HTTP_RBAC_TYPE,
                    rules=rules,
                    rules_stat_prefix=STAT_PREFIXES[action],
                    track_per_rule_stats=True,
                )
            )
    return filters


def inbound_network_filters(snapshot: MeshSnapshot, proxy: Proxy, port: int) -> list[dict]:
    """Network RBAC filters (L4 rules only) that go before tcp_proxy on a TCP chain for `port`."""
    policies = _policies(snapshot, proxy)
    filters = []
    for action in ENVOY_ACTIONS:
        rules = rbac_rules(policies, action, for_tcp=True)
        if rules is not None:
            filters.append(
                typed(
                    NETWORK_RBAC_FILTER,
                    NETWORK_RBAC_TYPE,
                    rules=rules,
                    stat_prefix=f"{TCP_STAT_PREFIX}{STAT_PREFIXES[action]}.",
                )
            )
    return filters
