"""The workload's certificate: a key made here, a CSR to the CA, renewal at half life.

Flows in: the identity to ask for (``spiffe://TD/ns/NS/sa/SA``), the CA's
address and the root that verifies its TLS certificate, the pod's token file
(read again before every request, so a rotated token is picked up), and the
lifetime to ask for. Flows out: the current `Certificate` (chain without the
root, private key, root) and a call to every subscriber (the SDS server) each
time a new one arrives.

`CertificateManager` owns that state. `first_certificate()` asks until the CA
answers: a CA that cannot be reached is asked again after 0.5 s, doubling up
to 30 s; a refusal (or an unreadable token) raises `CertificateError`, which
the agent reports and exits on. `keep_renewed()` then sleeps until half the
certificate's life has passed (`rotation_delay`), asks for a new certificate
with a new key, and on any failure keeps the current one and tries again
with the same backoff. The private key is generated in this process by
`plait.ca.client.new_key_and_csr` and is only ever held in memory: the CA
sees the CSR, Envoy gets the key over SDS, nothing writes it to disk.

What may block: nothing; the CA call is asynchronous and has a timeout.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from plait.ca.client import (
    CaUnavailable,
    CertificateRefused,
    new_key_and_csr,
    request_certificate,
)

log = logging.getLogger("plait.agent")

MIN_ROTATION_DELAY = 1.0  # seconds: however short the lifetime, never ask the CA more often than this
RETRY_FIRST, RETRY_MAX = 0.5, 30.0
Clock = Callable[[], datetime.datetime]
RequestCertificate = Callable[..., Awaitable[list[bytes]]]


class CertificateError(Exception):
    """No certificate for this identity: the CA refused it, or the token cannot be read."""


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rotation_delay(not_before: datetime.datetime, not_after: datetime.datetime, now: datetime.datetime) -> float:
    """Seconds from `now` until half the lifetime [not_before, not_after] has passed; at least
    `MIN_ROTATION_DELAY`, so that a tiny or already half-spent lifetime cannot make the agent spin."""
    half_life = not_before + (not_after - not_before) / 2
    return max(MIN_ROTATION_DELAY, (half_life - now).total_seconds())


def retry_delays() -> Iterator[float]:
    """0.5 s, 1 s, 2 s, … up to 30 s, then 30 s for ever."""
    delay = RETRY_FIRST
    while True:
        yield delay
        delay = min(delay * 2, RETRY_MAX)


@dataclass(frozen=True)
class Certificate:
    """A workload certificate as SDS serves it (`plait.agent.sds.SecretMaterial`)."""

    chain_pem: bytes  # the leaf, then any intermediates; never the root
    key_pem: bytes
    root_pem: bytes
    identity: str  # the leaf's URI SAN
    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime
    received_at: datetime.datetime  # when the agent asked for it

    @property
    def renew_from(self) -> datetime.datetime:
        """Where its lifetime starts for renewal: when it was asked for, as Istio's agent counts,
        not the notBefore the CA backdates to allow for clock skew."""
        return max(self.not_before, self.received_at)


def certificate_from(
    chain: list[bytes],
    key_pem: bytes,
    trust_anchor: bytes,
    asked_at: datetime.datetime,
) -> Certificate:
    """A `Certificate` from the CA's answer (PEM, leaf first). A self-signed last certificate is the
    root (Istio's CA sends the root last); without one the trust anchor is the root."""
    certs = [x509.load_pem_x509_certificate(pem) for pem in chain]
    if not certs:
        raise CertificateError("the CA answered with an empty certificate chain")
    has_root = len(certs) > 1 and certs[-1].subject == certs[-1].issuer
    leaf_and_intermediates = chain[:-1] if has_root else chain
    leaf = certs[0]
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return Certificate(
        chain_pem=b"".join(_pem_block(p) for p in leaf_and_intermediates),
        key_pem=key_pem,
        root_pem=_pem_block(chain[-1]) if has_root else trust_anchor,
        identity=uris[0] if len(uris) == 1 else "",
        serial=leaf.serial_number,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        received_at=asked_at,
    )


def _pem_block(pem: bytes) -> bytes:
    return pem.strip() + b"\n"


class CertificateManager:
    """The current certificate for one identity, renewed at half life; see the module docstring."""

    def __init__(
        self,
        identity: str,
        ca_address: str,
        root_pem: bytes,
        token_file: Path,
        ttl_seconds: int,
        *,
        clock: Clock = utc_now,
        request: RequestCertificate = request_certificate,
    ):
        self.identity, self.ca_address, self.root_pem = identity, ca_address, root_pem
        self.token_file, self.ttl_seconds = token_file, ttl_seconds
        self.current: Certificate | None = None
        self.problem = f"asking the CA at {ca_address}"  # why there is no certificate (yet), for readiness
        self._clock, self._request = clock, request
        self._subscribers: list[Callable[[Certificate], None]] = []

    def subscribe(self, callback: Callable[[Certificate], None]) -> None:
        """Call `callback` with every new certificate (and now with the current one, if any)."""
        self._subscribers.append(callback)
        if self.current is not None:
            callback(self.current)

    async def first_certificate(self) -> Certificate:
        """Ask until the CA answers; raises CertificateError if it refuses or the token is unreadable."""
        delays = retry_delays()
        while True:
            try:
                return await self._renew()
            except CaUnavailable as exc:
                self.problem = f"the CA at {self.ca_address} is unavailable: {exc}"
                delay = next(delays)
                log.warning("%s; asking again in %.1fs", self.problem, delay)
                await asyncio.sleep(delay)

    async def keep_renewed(self) -> None:
        """Renew at half life for ever (cancel to stop); failures keep the current certificate."""
        while True:
            current = self.current
            assert current is not None, "first_certificate() comes first"
            await asyncio.sleep(rotation_delay(current.renew_from, current.not_after, self._clock()))
            for delay in retry_delays():
                try:
                    await self._renew()
                    break
                except (CaUnavailable, CertificateError) as exc:
                    log.error(
                        "renewing the certificate for %s failed: %s; the current one (valid until %s) "
                        "stays; trying again in %.1fs",
                        self.identity,
                        exc,
                        f"{current.not_after:%Y-%m-%d %H:%M:%S} UTC",
                        delay,
                    )
                    await asyncio.sleep(delay)

    async def _renew(self) -> Certificate:
        key_pem, csr_pem = new_key_and_csr(self.identity)
        token = self._read_token()
        asked_at, started = self._clock(), time.monotonic()
        try:
            chain = await self._request(
                self.ca_address, root_pem=self.root_pem, token=token, csr_pem=csr_pem, ttl_seconds=self.ttl_seconds
            )
        except CertificateRefused as exc:
            self.problem = f"the CA refused {self.identity}: {exc}"
            raise CertificateError(self.problem) from None
        certificate = certificate_from(chain, key_pem, self.root_pem, asked_at)
        if certificate.identity != self.identity:
            self.problem = (
                f"the CA issued a certificate for {certificate.identity or 'no single URI SAN'}, not {self.identity}"
            )
            raise CertificateError(self.problem)
        self.current, self.problem = certificate, ""
        log.info(
            "certificate for %s: serial %x, valid until %s UTC (took %.0f ms); renewal in %.0fs",
            self.identity,
            certificate.serial,
            f"{certificate.not_after:%Y-%m-%d %H:%M:%S}",
            (time.monotonic() - started) * 1000,
            rotation_delay(certificate.renew_from, certificate.not_after, self._clock()),
        )
        for callback in self._subscribers:
            callback(certificate)
        return certificate

    def _read_token(self) -> str:
        try:
            return read_token(self.token_file)
        except CertificateError as exc:
            self.problem = str(exc)
            raise


def read_token(path: Path) -> str:
    """The pod's token, from its file (re-read each time: the runtime may rotate it)."""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise CertificateError(f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise CertificateError(f"the token file {path} is empty")
    return token
