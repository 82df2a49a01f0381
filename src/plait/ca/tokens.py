"""Pod tokens: how a pod of the local mesh proves who it is to the CA and to the ADS server.

A token has the shape of a Kubernetes service-account token (a compact JWT), so the same
checks can later take real ones: ``iss`` "plait/local", ``sub``
"system:serviceaccount:NS:SA", ``aud`` ["istio-ca"], ``iat``, ``exp`` and the claim
``kubernetes.io: {namespace, serviceaccount: {name}, pod: {name}}``. It is signed HS256 with
a 32-byte key kept at `token_key_path(state_dir)` (0600), shared by the runtime that hands
tokens to pods and the control plane that checks them; whoever comes first creates it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from plait.ca.authority import ca_dir_of, load_or_create_secret

ISSUER = "plait/local"
AUDIENCE = "istio-ca"
DEFAULT_TTL = 365 * 86400
KEY_BYTES = 32
_HEADER = {"alg": "HS256", "typ": "JWT"}
_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")  # Kubernetes namespace / service account / pod names


class InvalidToken(Exception):
    """The token cannot be trusted; the message says why."""


class AuthenticatorUnavailable(Exception):
    """Whether the token is good cannot be known now (the API server did not answer): try later."""


@dataclass(frozen=True)
class TokenIdentity:
    namespace: str
    service_account: str
    pod: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service_account}" + (f" (pod {self.pod})" if self.pod else "")


class Authenticator(Protocol):
    """Who a bearer token speaks for: the CA's and the TLS xDS port's check of callers. Local mode
    verifies plait's own pod tokens (`TokenIssuer`); on Kubernetes the API server reviews the
    pod's service-account token (`plait.ca.kubeauth.TokenReviewAuthenticator`)."""

    async def authenticate(self, token: str) -> TokenIdentity:
        """The caller's identity; InvalidToken if the token is not good, AuthenticatorUnavailable if
        that cannot be decided now."""
        ...


def token_key_path(state_dir: Path) -> Path:
    return ca_dir_of(state_dir) / "token-signing.key"


def bearer_token(metadata: Mapping[str, str]) -> str | None:
    """The token of gRPC metadata ``authorization: Bearer <token>``, or None."""
    scheme, _, token = (metadata.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenIssuer:
    """Issues and verifies pod tokens with one HMAC key."""

    def __init__(self, key: bytes):
        if len(key) < KEY_BYTES:
            raise ValueError(f"a token signing key needs at least {KEY_BYTES} bytes")
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path) -> TokenIssuer:
        """The key at `path`, created (random, 0600, in a 0700 directory) if absent. Safe when
        the runtime and the control plane both call it at once: one file wins, both read it."""
        return cls(load_or_create_secret(Path(path), lambda: os.urandom(KEY_BYTES)))

    def issue(
        self,
        namespace: str,
        service_account: str,
        pod: str,
        ttl_seconds: int = DEFAULT_TTL,
        *,
        now: float | None = None,
    ) -> str:
        for what, value in (("namespace", namespace), ("service account", service_account), ("pod", pod)):
            if not _NAME.fullmatch(value):
                raise ValueError(f"{what} {value!r} is not a Kubernetes name (lower case, digits, '-', '.')")
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": ISSUER,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
            "aud": [AUDIENCE],
            "iat": issued,
            "exp": issued + int(ttl_seconds),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": service_account},
                "pod": {"name": pod},
            },
        }
        signing_input = _b64(json.dumps(_HEADER).encode()) + "." + _b64(json.dumps(claims).encode())
        return signing_input + "." + _b64(self._mac(signing_input))

    def verify(self, token: str, now: float | None = None) -> TokenIdentity:
        """Who the token speaks for; InvalidToken if it is malformed, not signed with this key,
        expired, or not meant for the CA."""
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidToken("not a JWT (expected header.payload.signature)")
        try:
            header, claims, signature = (_unb64(parts[0]), _unb64(parts[1]), _unb64(parts[2]))
            header, claims = json.loads(header), json.loads(claims)
        except (binascii.Error, ValueError):
            raise InvalidToken("not a JWT (bad base64url or JSON)") from None
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            raise InvalidToken("unsupported JWT algorithm; plait pod tokens are HS256")
        if not hmac.compare_digest(signature, self._mac(f"{parts[0]}.{parts[1]}")):
            raise InvalidToken("bad signature (not issued by this mesh, or altered)")
        return _identity(claims, time.time() if now is None else now)

    async def authenticate(self, token: str) -> TokenIdentity:
        """`verify` at the current time (the `Authenticator` protocol)."""
        return self.verify(token)

    def _mac(self, signing_input: str) -> bytes:
        return hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest()


def _identity(claims: object, now: float) -> TokenIdentity:
    if not isinstance(claims, dict):
        raise InvalidToken("the JWT payload is not an object")
    audiences = claims.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else audiences or []
    if AUDIENCE not in audiences:
        raise InvalidToken(f"wrong audience {claims.get('aud')!r}; expected {AUDIENCE!r}")
    if claims.get("iss") != ISSUER:
        raise InvalidToken(f"wrong issuer {claims.get('iss')!r}; expected {ISSUER!r}")
    exp = claims.get("exp")
    if not isinstance(exp, int):
        raise InvalidToken("no expiry (exp)")
    if now >= exp:
        raise InvalidToken(f"expired {int(now - exp)}s ago")
    try:
        k8s = claims["kubernetes.io"]
        identity = TokenIdentity(k8s["namespace"], k8s["serviceaccount"]["name"], k8s["pod"]["name"])
    except (KeyError, TypeError):
        raise InvalidToken("no kubernetes.io claim with namespace, serviceaccount and pod") from None
    if claims.get("sub") != f"system:serviceaccount:{identity.namespace}:{identity.service_account}":
        raise InvalidToken("sub does not match the kubernetes.io claim")
    return identity
