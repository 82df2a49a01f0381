"""Route matches: a VirtualService HTTPMatchRequest → Envoy's RouteMatch.

Paths, pseudo-headers, headers (``withoutHeaders`` inverted, a missing header then counting as
empty, as Istio), query parameters; ``@request.auth.claims.*`` names become dynamic-metadata
matchers on jwt_authn's verified payload, as Istio's JWT claim routing. Pure.
"""

from __future__ import annotations

from plait.api import networking as net
from plait.xds.translate.common import string_matcher
from plait.xds.translate.jwt import JWT_FILTER
from plait.xds.translate.jwt import PAYLOAD_KEY as JWT_PAYLOAD_KEY


def _header_matcher(name: str, match: net.StringMatch, invert: bool = False) -> dict:
    out: dict = {"name": name}
    if match.kind == "present":
        out["present_match"] = True
    else:
        out["string_match"] = string_matcher(match)
        if invert:  # as Istio: a request without the header does not carry the unwanted value
            out["treat_missing_header_as_empty"] = True
    if invert:
        out["invert_match"] = True
    return out


JWT_CLAIM_HEADER = "@request.auth.claims"


def jwt_claim_path(header: str) -> list[str] | None:
    """Istio's claim routing: ``@request.auth.claims.a.b`` or ``@request.auth.claims[a][b]`` →
    [``a``, ``b``]; None for a real header name."""
    if not header.lower().startswith(JWT_CLAIM_HEADER):
        return None
    rest = header[len(JWT_CLAIM_HEADER) :]
    if rest.startswith(".") and len(rest) > 1:
        return rest[1:].split(".")
    if rest.startswith("[") and rest.endswith("]") and len(rest) > 2:
        return rest[1:-1].split("][")
    return None


def _claim_matcher(claims: list[str], match: net.StringMatch, invert: bool = False) -> dict:
    """As Istio: a dynamic-metadata matcher on jwt_authn's verified payload, true when the claim is
    the string or a list holding it."""

    def value() -> dict:
        return {"present_match": True} if match.kind == "present" else {"string_match": string_matcher(match)}

    out: dict = {
        "filter": JWT_FILTER,
        "path": [{"key": key} for key in [JWT_PAYLOAD_KEY, *claims]],
        "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": value()}}, value()]}},
    }
    if invert:
        out["invert"] = True
    return out


def route_match(m: net.HTTPMatchRequest | None, gateway_semantics: bool = False) -> dict:
    """`gateway_semantics` (a VirtualService lowered from a Gateway API route, as Istio marks it): a
    prefix other than ``/`` matches whole path segments (Envoy's path_separated_prefix; a trailing ``/``
    is dropped, as Istio does: GRPCRoute's service match is the prefix ``/<service>/``)."""
    if m is None:
        return {"prefix": "/"}
    out: dict = {}
    if m.uri is None or m.uri.kind == "present":
        out["prefix"] = "/"
    elif m.uri.kind == "regex":
        out["safe_regex"] = {"regex": m.uri.value}
    elif m.uri.kind == "exact":
        out["path"] = m.uri.value
    elif gateway_semantics and m.uri.value != "/":
        out["path_separated_prefix"] = m.uri.value.removesuffix("/")
    else:
        out["prefix"] = m.uri.value
    if m.ignore_uri_case:
        out["case_sensitive"] = False
    headers = []
    for pseudo, value in ((":authority", m.authority), (":scheme", m.scheme), (":method", m.method)):
        if value is not None:
            headers.append(_header_matcher(pseudo, value))
    claims, plain, plain_without = [], {}, {}
    for headers_of, invert, plain_of in ((m.headers, False, plain), (m.without_headers, True, plain_without)):
        for name, value in sorted(headers_of.items()):
            path = jwt_claim_path(name)
            if path is None:
                plain_of[name] = value
            else:
                claims.append(_claim_matcher(path, value, invert))
    headers += [_header_matcher(name, value) for name, value in plain.items()]
    headers += [_header_matcher(name, value, invert=True) for name, value in plain_without.items()]
    if headers:
        out["headers"] = headers
    if claims:
        out["dynamic_metadata"] = claims
    if m.query_params:
        out["query_parameters"] = [
            {"name": k, "present_match": True}
            if v.kind == "present"
            else {"name": k, "string_match": string_matcher(v)}
            for k, v in sorted(m.query_params.items())
        ]
    return out
