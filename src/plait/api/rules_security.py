"""Istio's cross-field rules for the security kinds (after pkg/config/validation), as findings.

Each public function takes a validated spec and yields ``(path inside spec, message)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from plait.api import security as sec
from plait.api.rules import Finding, empty_strings, selector

_CLAIM_HEADER = re.compile(r"^[-_A-Za-z0-9]+$")
_IDENTITY_FIELDS = ("principals", "not_principals", "namespaces", "not_namespaces")
_ACCOUNT_FIELDS = ("service_accounts", "not_service_accounts")


def peer_authentication(spec: sec.PeerAuthenticationSpec) -> Iterator[Finding]:
    if spec.selector is not None:
        yield from selector("selector.matchLabels", spec.selector.match_labels)
    if "port_level_mtls" in spec.model_fields_set and not spec.port_level_mtls:
        yield "portLevelMtls", "portLevelMtls, when present, needs at least one port"


def authorization_policy(spec: sec.AuthorizationPolicySpec) -> Iterator[Finding]:
    if spec.selector is not None:
        yield from selector("selector.matchLabels", spec.selector.match_labels)
    if spec.action in ("DENY", "CUSTOM") and not spec.rules:
        yield (
            "rules",
            (
                f"a {spec.action} policy without rules never matches; "
                "add an empty rule `rules: [{}]` to match every request"
            ),
        )
    for i, rule in enumerate(spec.rules):
        yield from _rule(f"rules[{i}]", rule)


def _rule(path: str, rule: sec.Rule) -> Iterator[Finding]:
    if "from_" in rule.model_fields_set and not rule.from_:
        yield f"{path}.from", "from, when present, needs at least one source"
    if "to" in rule.model_fields_set and not rule.to:
        yield f"{path}.to", "to, when present, needs at least one operation"
    for i, rule_from in enumerate(rule.from_):
        yield from _source(f"{path}.from[{i}].source", rule_from.source)
    for i, rule_to in enumerate(rule.to):
        yield from _operation(f"{path}.to[{i}].operation", rule_to.operation)


def _source(path: str, source: sec.Source) -> Iterator[Finding]:
    fields = type(source).model_fields
    if not any(getattr(source, name) for name in fields):
        yield path, "a source needs at least one field (principals, namespaces, ipBlocks, ...)"
    if any(getattr(source, f) for f in _IDENTITY_FIELDS) and any(getattr(source, f) for f in _ACCOUNT_FIELDS):
        yield path, "serviceAccounts cannot be combined with principals or namespaces (or their not* forms)"
    for name, field in fields.items():
        value = getattr(source, name)
        if isinstance(value, list):
            yield from empty_strings(f"{path}.{field.alias or name}", value)


def _operation(path: str, operation: sec.Operation) -> Iterator[Finding]:
    fields = type(operation).model_fields
    if not any(getattr(operation, name) for name in fields):
        yield path, "an operation needs at least one field (hosts, ports, methods, paths, ...)"
    for name, field in fields.items():
        value = getattr(operation, name)
        if isinstance(value, list):
            yield from empty_strings(f"{path}.{field.alias or name}", value)


def request_authentication(spec: sec.RequestAuthenticationSpec) -> Iterator[Finding]:
    if spec.selector is not None:
        yield from selector("selector.matchLabels", spec.selector.match_labels)
    for i, rule in enumerate(spec.jwt_rules):
        yield from empty_strings(f"jwtRules[{i}].audiences", rule.audiences)
        yield from empty_strings(f"jwtRules[{i}].fromParams", rule.from_params)
        yield from empty_strings(f"jwtRules[{i}].fromCookies", rule.from_cookies)
        for j, claim in enumerate(rule.output_claim_to_headers):
            if not _CLAIM_HEADER.match(claim.header):
                yield (
                    f"jwtRules[{i}].outputClaimToHeaders[{j}].header",
                    f"{claim.header!r} is not a header name (letters, digits, '-' and '_')",
                )
