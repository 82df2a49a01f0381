"""Envoy's jwt_authn filter, evaluated: which token it finds, whether it would accept it, what it leaves behind.

Flows in: a jwt_authn filter config as plait generates it, a Request, and `now` (seconds since
the epoch, or None: expiry is then not checked — the simulation has no clock of its own).
Flows out: `JwtOutcome` — 401 with Envoy's reason, or the request goes on with the verified
payload in dynamic metadata (``envoy.filters.http.jwt_authn`` → ``payload``) for RBAC.

Envoy's rules, as followed here: each provider looks for its token where it is told
(``from_headers`` with a value prefix, ``from_params``, ``from_cookies``; by default the
``Authorization: Bearer`` header and the ``access_token`` parameter); a found token must have
the provider's issuer, must not be expired or not yet valid (60 s of clock skew), must carry
one of its audiences if it lists any, and must be signed by one of its keys. Requirements
combine providers with ``requires_any`` / ``requires_all``; ``allow_missing`` accepts a request
whose providers found no token at all, never one with a bad token. Signatures are checked
against inline keys (RS*, PS*, ES*); keys behind a jwksUri are Envoy's to fetch, so such a
token is decoded but its signature is not checked here (the outcome says so).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from plait.xds.simulate.request import Request

CLOCK_SKEW = 60  # Envoy's default clock_skew_seconds
DEFAULT_LOCATIONS = (("header", "authorization", "Bearer "), ("param", "access_token", ""))
_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_CURVES = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1}


@dataclass(frozen=True)
class Token:
    raw: str
    where: str  # "header authorization", "query parameter access_token", "cookie session"
    header: Mapping[str, Any] = field(default_factory=dict)
    payload: Mapping[str, Any] = field(default_factory=dict)
    malformed: bool = False

    @property
    def issuer(self) -> str:
        return str(self.payload.get("iss", ""))

    @property
    def principal(self) -> str:
        """Istio's request principal: ``iss/sub``."""
        return f"{self.issuer}/{self.payload.get('sub', '')}"


@dataclass
class Check:
    """One provider's verdict on the request."""

    provider: str
    token: Token | None
    error: str | None = None  # Envoy's 401 text; None when the token is accepted (or absent)
    notes: list[str] = field(default_factory=list)
    signature_checked: bool = False  # False for keys behind a jwksUri: only Envoy fetches them

    @property
    def missing(self) -> bool:
        return self.token is None

    @property
    def ok(self) -> bool:
        return self.token is not None and self.error is None


@dataclass
class JwtOutcome:
    status: int | None  # 401 when Envoy rejects the request
    reason: str
    checks: list[Check]
    metadata: dict[str, Any]  # dynamic metadata for the filters after it


def _b64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode(raw: str, where: str) -> Token:
    """Split and decode a compact JWS without verifying it."""
    parts = raw.split(".")
    try:
        if len(parts) != 3:
            raise ValueError
        header, payload = json.loads(_b64(parts[0])), json.loads(_b64(parts[1]))
        if not isinstance(header, dict) or not isinstance(payload, dict):
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return Token(raw, where, malformed=True)
    return Token(raw, where, header, payload)


def _cookies(request: Request) -> dict[str, str]:
    jar: dict[str, str] = {}
    for part in (request.header("cookie") or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            jar.setdefault(name, value)
    return jar


def _params(request: Request) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in filter(None, request.query.split("&")):
        name, _, value = part.partition("=")
        params.setdefault(unquote(name), unquote(value))
    return params


def locations(provider: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(kind, name, value prefix) where the provider looks for its token, in Envoy's order."""
    found = [("header", h["name"].lower(), h.get("value_prefix", "")) for h in provider.get("from_headers", [])]
    found += [("param", p, "") for p in provider.get("from_params", [])]
    found += [("cookie", c, "") for c in provider.get("from_cookies", [])]
    return found or list(DEFAULT_LOCATIONS)


def extract(provider: Mapping[str, Any], request: Request) -> Token | None:
    """The first token the provider finds in the request."""
    params, cookies = _params(request), _cookies(request)
    for kind, name, prefix in locations(provider):
        if kind == "header":
            value = request.header(name)
            if value is None or not value.startswith(prefix):
                continue
            raw, where = value[len(prefix) :].strip(), f"header {name}"
        elif kind == "param":
            raw, where = params.get(name, ""), f"query parameter {name}"
        else:
            raw, where = cookies.get(name, ""), f"cookie {name}"
        if raw:
            return decode(raw, where)
    return None


def _jwk_key(jwk: Mapping[str, Any]):
    if jwk.get("kty") == "RSA":
        n, e = (int.from_bytes(_b64(jwk[k]), "big") for k in ("n", "e"))
        return rsa.RSAPublicNumbers(e, n).public_key()
    if jwk.get("kty") == "EC" and jwk.get("crv") in _CURVES:
        x, y = (int.from_bytes(_b64(jwk[k]), "big") for k in ("x", "y"))
        return ec.EllipticCurvePublicNumbers(x, y, _CURVES[jwk["crv"]]()).public_key()
    return None


def _signature_valid(token: Token, jwk: Mapping[str, Any]) -> bool:
    alg = str(token.header.get("alg", ""))
    digest = _HASHES.get(alg[2:])
    key = _jwk_key(jwk)
    if digest is None or key is None:
        return False
    head, body, sig = token.raw.split(".")
    message, signature = f"{head}.{body}".encode(), _b64(sig)
    try:
        if alg.startswith("RS") and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), digest())
        elif alg.startswith("PS") and isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PSS(padding.MGF1(digest()), digest.digest_size), digest())
        elif alg.startswith("ES") and isinstance(key, ec.EllipticCurvePublicKey):
            half = len(signature) // 2
            der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
            key.verify(der, message, ec.ECDSA(digest()))
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _check_signature(provider: Mapping[str, Any], token: Token, check: Check) -> None:
    if "remote_jwks" in provider:
        uri = provider["remote_jwks"].get("http_uri", {}).get("uri", "")
        check.notes.append(f"its signature is not checked here: Envoy verifies it against the keys at {uri}")
        return
    try:
        keys = json.loads(provider.get("local_jwks", {}).get("inline_string", "")).get("keys", [])
    except (ValueError, AttributeError):
        keys = []
    kid = token.header.get("kid")
    candidates = [k for k in keys if kid is None or k.get("kid") in (None, kid)]
    check.signature_checked = True
    if any(_signature_valid(token, k) for k in candidates):
        check.notes.append(f"signature ({token.header.get('alg')}) verified against the inline jwks")
    else:
        check.error = "Jwt verification fails"


def _audiences(payload: Mapping[str, Any]) -> list[str]:
    aud = payload.get("aud", [])
    return [aud] if isinstance(aud, str) else [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def verify(name: str, provider: Mapping[str, Any], request: Request, now: float | None) -> Check:
    """One provider: find its token and check it in Envoy's order (form, issuer, time, audience, signature)."""
    token = extract(provider, request)
    check = Check(name, token)
    if token is None:
        return check
    payload = token.payload
    if token.malformed:
        check.error = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    elif provider.get("issuer") and token.issuer != provider["issuer"]:
        check.error = "Jwt issuer is not configured"
    elif now is not None and isinstance(payload.get("exp"), int | float) and payload["exp"] + CLOCK_SKEW < now:
        check.error = "Jwt is expired"
    elif now is not None and isinstance(payload.get("nbf"), int | float) and payload["nbf"] - CLOCK_SKEW > now:
        check.error = "Jwt not yet valid"
    elif provider.get("audiences") and not set(provider["audiences"]) & set(_audiences(payload)):
        check.error = "Audiences in Jwt are not allowed"
    else:
        if now is None:
            check.notes.append("expiry not checked (no clock given)")
        _check_signature(provider, token, check)
    return check


@dataclass
class _Result:
    ok: bool
    checks: list[Check]
    error: str | None = None


def _requirement(
    req: Mapping[str, Any], providers: Mapping[str, Any], request: Request, now: float | None, cache: dict[str, Check]
) -> _Result:
    if "provider_name" in req:
        name = req["provider_name"]
        if name not in cache:
            cache[name] = verify(name, providers.get(name, {}), request, now)
        check = cache[name]
        return _Result(check.ok, [check], None if check.ok else (check.error or "Jwt is missing"))
    if "requires_all" in req:
        results = [_requirement(r, providers, request, now, cache) for r in req["requires_all"].get("requirements", [])]
        failed = next((r for r in results if not r.ok), None)
        return _Result(failed is None, [c for r in results for c in r.checks], failed.error if failed else None)
    if "requires_any" in req:
        return _any(req["requires_any"].get("requirements", []), providers, request, now, cache)
    return _Result(True, [])  # allow_missing alone, or an empty requirement: nothing to verify


def _any(
    reqs: list, providers: Mapping[str, Any], request: Request, now: float | None, cache: dict[str, Check]
) -> _Result:
    allow_missing = any("allow_missing" in r for r in reqs)
    allow_failed = any("allow_missing_or_failed" in r for r in reqs)
    results = [
        _requirement(r, providers, request, now, cache)
        for r in reqs
        if "allow_missing" not in r and "allow_missing_or_failed" not in r
    ]
    checks = [c for r in results for c in r.checks]
    if any(r.ok for r in results) or allow_failed:
        return _Result(True, checks)
    bad = [c for c in checks if not c.missing]
    if allow_missing and not bad:
        return _Result(True, checks)
    errors = [r.error for r in results if r.error]
    return _Result(False, checks, (bad[0].error if bad else None) or (errors[0] if errors else "Jwt is missing"))


def _normalized(payload: Mapping[str, Any], provider: Mapping[str, Any]) -> dict[str, Any]:
    spaced = provider.get("normalize_payload_in_metadata", {}).get("space_delimited_claims", [])
    return {k: (v.split() if k in spaced and isinstance(v, str) else v) for k, v in payload.items()}


def authenticate(config: Mapping[str, Any], request: Request, now: float | None) -> JwtOutcome:
    """What the jwt_authn filter does with the request."""
    providers = config.get("providers", {})
    rule = next(
        (r for r in config.get("rules", []) if request.path.startswith(r.get("match", {}).get("prefix", "/"))), None
    )
    if rule is None or "requires" not in rule:
        return JwtOutcome(None, "no requirement applies to this path", [], {})
    cache: dict[str, Check] = {}
    result = _requirement(rule["requires"], providers, request, now, cache)
    checks = list(cache.values())
    metadata: dict[str, Any] = {}
    for check in checks:
        provider = providers.get(check.provider, {})
        if check.ok and check.token and "payload_in_metadata" in provider:
            metadata[provider["payload_in_metadata"]] = _normalized(check.token.payload, provider)
    if not result.ok:
        return JwtOutcome(401, result.error or "Jwt verification fails", checks, metadata)
    accepted = [c for c in checks if c.ok]
    reason = (
        f"token from issuer {accepted[0].token.issuer} accepted"
        if accepted and accepted[0].token
        else "no token: the requirement allows a request without one"
    )
    return JwtOutcome(None, reason, checks, metadata)


def routing_metadata(config: Mapping[str, Any], outcome: JwtOutcome) -> dict[str, Any]:
    """The part of jwt_authn's metadata that route matching sees: Envoy picks the route before the
    filter runs and picks it again only if the provider that wrote the payload has
    ``clear_route_cache`` (Istio sets it on gateways, not on sidecars)."""
    providers = config.get("providers", {})
    clears = any(check.ok and providers.get(check.provider, {}).get("clear_route_cache") for check in outcome.checks)
    return dict(outcome.metadata) if clears else {}
