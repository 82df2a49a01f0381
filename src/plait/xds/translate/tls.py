"""TLS transport sockets: DestinationRule client TLS, Istio's automatic mTLS, inbound mTLS, gateway servers.

Mesh certificates are Istio's SDS secrets: ``default`` (the proxy's key and
SPIFFE certificate) and ``ROOTCA`` (the trust bundle), served by the agent.
Clients verify the server's URI SAN against the SPIFFE ids of the service
accounts behind the destination; servers require a client certificate from the
mesh root. Nothing here needs anything beyond upstream Envoy.
"""

from __future__ import annotations

from plait.api import networking as net
from plait.model.proxy import TRUST_DOMAIN
from plait.model.services import Port, Service
from plait.xds.translate.common import TYPE, ads_secret, sds_secret

UPSTREAM_TLS = TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = TYPE + "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER = {"name": "envoy.transport_sockets.raw_buffer",
              "typed_config": {"@type": TYPE + "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}

# What mesh clients offer in ALPN: plait's (upstream Envoy) always send ISTIO_ALPN. Istio's sidecars
# replace it with istio-http/* when they carry HTTP (their istio.alpn filter), which lets a server tell
# HTTP from opaque TCP on a port of unknown protocol.
ISTIO_ALPN = ["istio-peer-exchange", "istio"]
MTLS_HTTP_ALPNS = ["istio-http/1.0", "istio-http/1.1", "istio-h2"]
ALL_MTLS_ALPNS = [*MTLS_HTTP_ALPNS, *ISTIO_ALPN]
# The server answers with HTTP protocols only: negotiating "istio-peer-exchange" would make an Istio
# client start its metadata exchange, which plait does not speak (Istio's DisableMxALPN behaviour).
SERVER_ALPN = ["h2", "http/1.1"]

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
            "validation_context_sds_secret_config": sds_secret("ROOTCA")},
        "alpn_protocols": ISTIO_ALPN,
    }
    return {"name": TLS_SOCKET, "typed_config": {"@type": UPSTREAM_TLS, "common_tls_context": context, "sni": sni}}


def auto_mtls_matches(sni: str, sans: list[str]) -> list[dict]:
    """Istio's auto mTLS: mutual TLS to endpoints labelled ``security.istio.io/tlsMode: istio`` (their
    metadata says so), plaintext to the others."""
    return [{"name": "tlsMode-istio", "match": ISTIO_TLS_MODE, "transport_socket": istio_mutual(sni, sans)},
            {"name": "tlsMode-disabled", "match": {}, "transport_socket": RAW_BUFFER}]


def client_tls(tls: net.ClientTLSSettings, svc: Service, port: Port, subset: str | None,
               sans: list[str]) -> dict | None:
    """A DestinationRule's ``tls``: None for DISABLE, else the upstream TLS socket it asks for."""
    if tls.mode == "DISABLE":
        return None
    if tls.mode == "ISTIO_MUTUAL":
        return istio_mutual(tls.sni or outbound_sni(port, subset, svc), tls.subject_alt_names or sans)
    context: dict = {}
    if tls.credential_name:
        if tls.mode == "MUTUAL":
            context["tls_certificate_sds_secret_configs"] = [ads_secret(tls.credential_name)]
        context["validation_context_sds_secret_config"] = ads_secret(f"{tls.credential_name}-cacert")
    else:
        if tls.mode == "MUTUAL":
            context["tls_certificates"] = [{"certificate_chain": {"filename": tls.client_certificate},
                                            "private_key": {"filename": tls.private_key}}]
        if tls.ca_certificates and not tls.insecure_skip_verify:
            validation: dict = {"trusted_ca": {"filename": tls.ca_certificates}}
            if tls.subject_alt_names:
                validation["match_typed_subject_alt_names"] = [
                    {"san_type": "DNS", "matcher": {"exact": san}} for san in tls.subject_alt_names]
            context["validation_context"] = validation
    tls_context: dict = {"@type": UPSTREAM_TLS, "common_tls_context": context}
    sni = tls.sni or (svc.hostname if not svc.hostname.startswith("*") else None)
    if sni:
        tls_context["sni"] = sni
    return {"name": TLS_SOCKET, "typed_config": tls_context}


def inbound_mtls() -> dict:
    """The server side of mesh mTLS on a sidecar's inbound chains: the proxy's certificate, a client
    certificate required and checked against the mesh root (its URI SAN is the peer's principal)."""
    context = {
        "tls_certificate_sds_secret_configs": [sds_secret("default")],
        "validation_context_sds_secret_config": sds_secret("ROOTCA"),
        "alpn_protocols": SERVER_ALPN,
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
    }
    return {"name": TLS_SOCKET, "typed_config": {"@type": DOWNSTREAM_TLS, "common_tls_context": context,
                                                 "require_client_certificate": True}}


def gateway_server_tls(tls: net.ServerTLSSettings) -> dict:
    """A Gateway server's ``tls`` (SIMPLE, MUTUAL, ISTIO_MUTUAL; files or credentialName)."""
    context: dict = {}
    if tls.mode == "ISTIO_MUTUAL":
        context = {"tls_certificate_sds_secret_configs": [sds_secret("default")],
                   "validation_context_sds_secret_config": sds_secret("ROOTCA")}
    elif tls.credential_name or tls.credential_names:
        names = tls.credential_names or [tls.credential_name]
        context["tls_certificate_sds_secret_configs"] = [ads_secret(n) for n in names]
        if tls.mode == "MUTUAL":
            context["validation_context_sds_secret_config"] = ads_secret(f"{names[0]}-cacert")
    else:
        context["tls_certificates"] = [{"certificate_chain": {"filename": tls.server_certificate},
                                        "private_key": {"filename": tls.private_key}}]
        if tls.mode == "MUTUAL" and tls.ca_certificates:
            context["validation_context"] = {"trusted_ca": {"filename": tls.ca_certificates}}
    if tls.min_protocol_version or tls.max_protocol_version:
        params: dict = {}
        if tls.min_protocol_version:
            params["tls_minimum_protocol_version"] = tls.min_protocol_version
        if tls.max_protocol_version:
            params["tls_maximum_protocol_version"] = tls.max_protocol_version
        context["tls_params"] = params
    context["alpn_protocols"] = ["h2", "http/1.1"]
    out: dict = {"@type": DOWNSTREAM_TLS, "common_tls_context": context}
    if tls.mode in ("MUTUAL", "ISTIO_MUTUAL"):
        out["require_client_certificate"] = True
    return {"name": TLS_SOCKET, "typed_config": out}
