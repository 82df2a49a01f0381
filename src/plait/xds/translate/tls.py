"""TLS transport sockets: DestinationRule client TLS, Istio's automatic mTLS, inbound mTLS, gateway servers.

Mesh certificates are Istio's SDS secrets: ``default`` (the proxy's key and
SPIFFE certificate) and ``ROOTCA`` (the trust bundle), served by the agent.
Clients verify the server's URI SAN against the SPIFFE ids of the service
accounts behind the destination; servers require a client certificate from the
mesh root. Nothing here needs anything beyond upstream Envoy.

TLS origination (DestinationRule ``SIMPLE``/``MUTUAL``) always verifies the
server, as Istio's VERIFY_CERTIFICATE_AT_CLIENT: against ``caCertificates``, or
the OS trust bundle without one; ``insecureSkipVerify: true`` is the only way
off. Without ``sni`` the cluster asks Envoy for Istio's auto SNI (the request's
host) and, without ``subjectAltNames`` either, auto SAN validation (the
server's certificate must name that host).
"""

from __future__ import annotations

import ipaddress

from plait.api import networking as net
from plait.api.resources import Resource
from plait.model.proxy import TRUST_DOMAIN, Proxy
from plait.model.services import Port, Service
from plait.xds.translate.common import TYPE, ads_secret, sds_secret

UPSTREAM_TLS = TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER = {
    "name": "envoy.transport_sockets.raw_buffer",
    "typed_config": {"@type": TYPE + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"},
}

# What mesh clients offer in ALPN: plait's (upstream Envoy) always send ISTIO_ALPN. Istio's sidecars
# replace it with istio-http/* when they carry HTTP (their istio.alpn filter), which lets a server tell
# HTTP from opaque TCP on a port of unknown protocol.
ISTIO_ALPN = ["istio-peer-exchange", "istio"]
MTLS_HTTP_ALPNS = ["istio-http/1.0", "istio-http/1.1", "istio-h2"]
ALL_MTLS_ALPNS = [*MTLS_HTTP_ALPNS, *ISTIO_ALPN]
# The server answers with HTTP protocols only: negotiating "istio-peer-exchange" would make an Istio
# client start its metadata exchange, which plait does not speak (Istio's DisableMxALPN behaviour).
SERVER_ALPN = ["h2", "http/1.1"]

# The OS trust bundle (Debian's ca-certificates), which Istio calls "system" roots.
SYSTEM_TRUST_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

TRANSPORT_SOCKET_MATCH_KEY = "envoy.transport_socket_match"  # endpoint metadata auto mTLS matches on
ISTIO_TLS_MODE = {"tlsMode": "istio"}


def outbound_sni(port: Port, subset: str | None, svc: Service) -> str:
    """Istio's SNI for mesh mTLS: ``outbound_.9080_.v1_.reviews.default.svc.cluster.local``."""
    return f"outbound_.{port.number}_.{subset or ''}_.{svc.hostname}"


def _spiffe_matchers(sans: list[str]) -> list[dict]:
    if sans:
        return [{"san_type": "URI", "matcher": {"exact": san}} for san in sans]
    # No service account is known for the destination (no endpoints yet): accept any identity the
    # mesh's root vouches for in our trust domain rather than none.
    return [{"san_type": "URI", "matcher": {"prefix": f"spiffe://{TRUST_DOMAIN}/"}}]


def istio_mutual(sni: str, sans: list[str]) -> dict:
    """An upstream socket presenting the proxy's mesh certificate and checking the server's SPIFFE id."""
    context = {
        "tls_certificate_sds_secret_configs": [sds_secret("default")],
        "combined_validation_context": {
            "default_validation_context": {"match_typed_subject_alt_names": _spiffe_matchers(sans)},
            "validation_context_sds_secret_config": sds_secret("ROOTCA"),
        },
        "alpn_protocols": ISTIO_ALPN,
    }
    return {"name": TLS_SOCKET, "typed_config": {"@type": UPSTREAM_TLS, "common_tls_context": context, "sni": sni}}


def auto_mtls_matches(sni: str, sans: list[str]) -> list[dict]:
    """Istio's auto mTLS: mutual TLS to endpoints labelled ``security.istio.io/tlsMode: istio`` (their
    metadata says so), plaintext to the others."""
    return [
        {"name": "tlsMode-istio", "match": ISTIO_TLS_MODE, "transport_socket": istio_mutual(sni, sans)},
        {"name": "tlsMode-disabled", "match": {}, "transport_socket": RAW_BUFFER},
    ]


def san_matchers(sans: list[str]) -> list[dict]:
    """Exact SAN matchers. Istio matches each name against any SAN type; the typed form names the one
    the value can be: a URI (``spiffe://…``), an IP address, else a DNS name."""

    def san_type(san: str) -> str:
        if "://" in san:
            return "URI"
        return "IP_ADDRESS" if _is_ip(san) else "DNS"

    return [{"san_type": san_type(san), "matcher": {"exact": san}} for san in sans]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _server_validation(tls: net.ClientTLSSettings) -> dict:
    """What the client checks of the server: the CA (the OS bundle without ``caCertificates``), the
    ``subjectAltNames``, the ``caCrl``."""
    validation: dict = {"trusted_ca": {"filename": tls.ca_certificates or SYSTEM_TRUST_BUNDLE}}
    if tls.subject_alt_names:
        validation["match_typed_subject_alt_names"] = san_matchers(tls.subject_alt_names)
    if tls.ca_crl:
        validation["crl"] = {"filename": tls.ca_crl}
    return validation


def _credential_context(tls: net.ClientTLSSettings) -> dict:
    """``credentialName``: the client certificate (MUTUAL) and the CA (``<name>-cacert``) over SDS."""
    context: dict = {}
    if tls.mode == "MUTUAL":
        context["tls_certificate_sds_secret_configs"] = [ads_secret(tls.credential_name or "")]
    if not tls.insecure_skip_verify:
        default: dict = {}
        if tls.subject_alt_names:
            default["match_typed_subject_alt_names"] = san_matchers(tls.subject_alt_names)
        context["combined_validation_context"] = {
            "default_validation_context": default,
            "validation_context_sds_secret_config": ads_secret(f"{tls.credential_name}-cacert"),
        }
    return context


def client_tls(
    tls: net.ClientTLSSettings, svc: Service, port: Port, subset: str | None, sans: list[str]
) -> dict | None:
    """A DestinationRule's ``tls``: None for DISABLE, else the upstream TLS socket it asks for."""
    if tls.mode == "DISABLE":
        return None
    if tls.mode == "ISTIO_MUTUAL":
        return istio_mutual(tls.sni or outbound_sni(port, subset, svc), tls.subject_alt_names or sans)
    if not tls.subject_alt_names and svc.subject_alt_names:  # Istio: a ServiceEntry's, for its hosts
        tls = tls.model_copy(update={"subject_alt_names": list(svc.subject_alt_names)})
    if tls.credential_name:
        context = _credential_context(tls)
    else:
        context = {}
        if tls.mode == "MUTUAL":
            context["tls_certificates"] = [
                {
                    "certificate_chain": {"filename": tls.client_certificate},
                    "private_key": {"filename": tls.private_key},
                }
            ]
        if not tls.insecure_skip_verify:
            context["validation_context"] = _server_validation(tls)
    if port.protocol.is_http2:
        context["alpn_protocols"] = ["h2"]
    tls_context: dict = {"@type": UPSTREAM_TLS, "common_tls_context": context}
    if tls.sni:
        tls_context["sni"] = tls.sni
    return {"name": TLS_SOCKET, "typed_config": tls_context}


def sidecar_credential_scope(
    policy: net.TrafficPolicy | None, proxy: Proxy, rule: Resource
) -> net.TrafficPolicy | None:
    """Istio hands a sidecar a DestinationRule's ``credentialName`` (SIMPLE/MUTUAL) only when the rule
    has a workloadSelector naming it; from a rule without one, Istio builds no TLS at all for sidecars
    (gateways keep it), so the credential reaches no workload the rule did not name."""
    tls = policy.tls if policy else None
    if (
        policy is None
        or tls is None
        or not tls.credential_name
        or tls.mode not in ("SIMPLE", "MUTUAL")
        or proxy.kind != "sidecar"
        or rule.spec.workload_selector
    ):
        return policy
    return policy.model_copy(update={"tls": net.ClientTLSSettings(mode="DISABLE")})


def auto_sni_options(tls: net.ClientTLSSettings | None) -> dict:
    """Istio's auto SNI / auto SAN validation for TLS origination, as ``upstream_http_protocol_options``:
    without ``sni`` the SNI is the request's host; without ``sni`` and ``subjectAltNames`` (and unless
    ``insecureSkipVerify``) the server's certificate must be valid for that host. Empty otherwise."""
    if tls is None or tls.mode not in ("SIMPLE", "MUTUAL") or tls.sni:
        return {}
    options = {"auto_sni": True}
    if not tls.subject_alt_names and not tls.insecure_skip_verify:
        options["auto_san_validation"] = True
    return options


def inbound_mtls() -> dict:
    """The server side of mesh mTLS on a sidecar's inbound chains: the proxy's certificate, a client
    certificate required and checked against the mesh root (its URI SAN is the peer's principal)."""
    context = {
        "tls_certificate_sds_secret_configs": [sds_secret("default")],
        "validation_context_sds_secret_config": sds_secret("ROOTCA"),
        "alpn_protocols": SERVER_ALPN,
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
    }
    return {
        "name": TLS_SOCKET,
        "typed_config": {"@type": DOWNSTREAM_TLS, "common_tls_context": context, "require_client_certificate": True},
    }


# Istio's ServerTLSSettings.TLSProtocol → Envoy's TlsParameters.TlsProtocol (TLS_AUTO: Envoy's default).
TLS_PROTOCOLS = {
    "TLS_AUTO": "TLS_AUTO",
    "TLSV1_0": "TLSv1_0",
    "TLSV1_1": "TLSv1_1",
    "TLSV1_2": "TLSv1_2",
    "TLSV1_3": "TLSv1_3",
}
CLIENT_VALIDATING_MODES = ("MUTUAL", "OPTIONAL_MUTUAL")


def _tls_params(tls: net.ServerTLSSettings) -> dict:
    """``minProtocolVersion``, ``maxProtocolVersion``, ``cipherSuites`` (Istio applies them to SIMPLE,
    MUTUAL and OPTIONAL_MUTUAL servers)."""
    params: dict = {}
    for field, key in (
        (tls.min_protocol_version, "tls_minimum_protocol_version"),
        (tls.max_protocol_version, "tls_maximum_protocol_version"),
    ):
        if field and field != "TLS_AUTO":
            params[key] = TLS_PROTOCOLS.get(field, field)
    if tls.cipher_suites:
        params["cipher_suites"] = list(tls.cipher_suites)
    return params


def _client_checks(tls: net.ServerTLSSettings) -> dict:
    """What a MUTUAL / OPTIONAL_MUTUAL server checks of the client beyond its CA: ``subjectAltNames``,
    ``verifyCertificateSpki``, ``verifyCertificateHash``, ``caCrl``; ``insecureSkipVerify`` accepts an
    untrusted chain (the other checks still apply)."""
    checks: dict = {}
    if tls.subject_alt_names:
        checks["match_typed_subject_alt_names"] = san_matchers(tls.subject_alt_names)
    if tls.verify_certificate_spki:
        checks["verify_certificate_spki"] = list(tls.verify_certificate_spki)
    if tls.verify_certificate_hash:
        checks["verify_certificate_hash"] = list(tls.verify_certificate_hash)
    if tls.ca_crl:
        checks["crl"] = {"filename": tls.ca_crl}
    if tls.insecure_skip_verify:
        checks["trust_chain_verification"] = "ACCEPT_UNTRUSTED"
    return checks


def _server_credentials(tls: net.ServerTLSSettings) -> dict:
    """The server's certificates and, for MUTUAL / OPTIONAL_MUTUAL, how it validates clients: over ADS
    for ``credentialName(s)`` (CA ``caCertCredentialName`` or ``<first name>-cacert``), else files
    (``serverCertificate``/``privateKey`` or each of ``tlsCertificates``; CA ``caCertificates``)."""
    validates = tls.mode in CLIENT_VALIDATING_MODES
    if tls.credential_name or tls.credential_names:
        names = tls.credential_names or [tls.credential_name or ""]
        context: dict = {"tls_certificate_sds_secret_configs": [ads_secret(n) for n in names]}
        if validates:
            context["combined_validation_context"] = {
                "default_validation_context": _client_checks(tls),
                "validation_context_sds_secret_config": ads_secret(tls.ca_cert_credential_name or f"{names[0]}-cacert"),
            }
        return context
    pairs = [(c.server_certificate, c.private_key) for c in tls.tls_certificates] or [
        (tls.server_certificate, tls.private_key)
    ]
    context = {
        "tls_certificates": [
            {"certificate_chain": {"filename": cert}, "private_key": {"filename": key}} for cert, key in pairs
        ]
    }
    if validates and tls.ca_certificates:
        context["validation_context"] = {"trusted_ca": {"filename": tls.ca_certificates}, **_client_checks(tls)}
    return context


def _istio_mutual_server(tls: net.ServerTLSSettings) -> dict:
    """ISTIO_MUTUAL: the mesh certificate, clients from the mesh root; as Istio, ``subjectAltNames``,
    ``caCrl`` and ``insecureSkipVerify`` apply (the pins do not)."""
    checks = {
        k: v for k, v in _client_checks(tls).items() if k not in ("verify_certificate_spki", "verify_certificate_hash")
    }
    context: dict = {"tls_certificate_sds_secret_configs": [sds_secret("default")]}
    if checks:
        context["combined_validation_context"] = {
            "default_validation_context": checks,
            "validation_context_sds_secret_config": sds_secret("ROOTCA"),
        }
    else:
        context["validation_context_sds_secret_config"] = sds_secret("ROOTCA")
    return context


def gateway_server_tls(tls: net.ServerTLSSettings) -> dict:
    """A Gateway server's ``tls`` (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, ISTIO_MUTUAL; files or credentialName)."""
    if tls.mode == "ISTIO_MUTUAL":
        context = _istio_mutual_server(tls)
    else:
        context = _server_credentials(tls)
        params = _tls_params(tls)
        if params:
            context["tls_params"] = params
    context["alpn_protocols"] = ["h2", "http/1.1"]
    out: dict = {"@type": DOWNSTREAM_TLS, "common_tls_context": context}
    if tls.mode in ("MUTUAL", "ISTIO_MUTUAL"):
        out["require_client_certificate"] = True
    return {"name": TLS_SOCKET, "typed_config": out}
