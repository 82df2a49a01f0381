"""SDS secrets the control plane serves over ADS: the TLS credentials a ``credentialName`` names.

A listener (Gateway server ``tls.credentialName``) or a cluster (DestinationRule ``tls.credentialName``)
refers to ``NAME`` (certificate and key) and ``NAME-cacert`` (the CA that verifies peers) with an SDS
config of ``{"ads": {}}``. Each name is looked up as a `Secret` in the proxy's own namespace (where
Istio looks for a gateway's credentials): ``NAME-cacert`` comes from the CA key of Secret ``NAME``, or
else from a Secret called ``NAME-cacert``. Only the secrets a proxy refers to are generated for it, so a
sidecar never receives a gateway's key. A name with no Secret yields nothing: the publisher's consistency
check then refuses the push, naming what is missing.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator

from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot

CA_SUFFIX = "-cacert"
KUBERNETES_PREFIX = "kubernetes://"  # Istio accepts credentialName: kubernetes://NAME too
# What Istio's gateway controller writes for a certificateRef to another namespace (checked against
# ReferenceGrants when the Gateway API was lowered): kubernetes-gateway://NAMESPACE/NAME.
KUBERNETES_GATEWAY_PREFIX = "kubernetes-gateway://"
REDACTED = "[redacted]"


def ads_secret_names(node: object) -> Iterator[str]:
    """Names of the secrets a resource asks for over ADS (``sds_config: {ads: {}}``), at any depth."""
    if isinstance(node, list):
        for item in node:
            yield from ads_secret_names(item)
    elif isinstance(node, dict):
        if isinstance(node.get("sds_config"), dict) and "ads" in node["sds_config"] and "name" in node:
            yield node["name"]
        for value in node.values():
            if isinstance(value, (dict, list)):
                yield from ads_secret_names(value)


def ca_secret_names(node: object) -> Iterator[str]:
    """Names a resource asks for as a validation context (a CA bundle: ``NAME-cacert``, or a Gateway's
    ``caCertCredentialName``), at any depth."""
    if isinstance(node, list):
        for item in node:
            yield from ca_secret_names(item)
    elif isinstance(node, dict):
        config = node.get("validation_context_sds_secret_config")
        if isinstance(config, dict) and "ads" in config.get("sds_config", {}):
            yield config["name"]
        for value in node.values():
            if isinstance(value, (dict, list)):
                yield from ca_secret_names(value)


def _inline(data: bytes) -> dict:
    return {"inline_bytes": base64.b64encode(data).decode()}


def _secret_object(snapshot: MeshSnapshot, namespace: str, name: str):
    if name.startswith(KUBERNETES_GATEWAY_PREFIX):  # a Gateway API certificateRef its ReferenceGrant allowed
        namespace, _, name = name.removeprefix(KUBERNETES_GATEWAY_PREFIX).partition("/")
    found = snapshot.resources.get(("Secret", namespace, name.removeprefix(KUBERNETES_PREFIX)))
    return found.spec if found is not None else None


def credential_secret(snapshot: MeshSnapshot, proxy: Proxy, name: str, *, as_ca: bool = False) -> dict | None:
    """The Envoy Secret named `name` for this proxy, or None when no Secret provides it. A CA bundle
    (`as_ca`, or a ``NAME-cacert`` name) comes from the CA key of Secret NAME or of a Secret of that name."""
    if as_ca or name.endswith(CA_SUFFIX):
        sources = (name.removesuffix(CA_SUFFIX), name) if name.endswith(CA_SUFFIX) else (name,)
        for source in sources:
            spec = _secret_object(snapshot, proxy.namespace, source)
            ca = spec.ca_certificate() if spec is not None else None
            if ca:
                return {"name": name, "validation_context": {"trusted_ca": _inline(ca)}}
        return None
    spec = _secret_object(snapshot, proxy.namespace, name)
    pair = spec.certificate_and_key() if spec is not None else None
    if pair is None:
        return None
    return {"name": name, "tls_certificate": {"certificate_chain": _inline(pair[0]), "private_key": _inline(pair[1])}}


def credential_secrets(snapshot: MeshSnapshot, proxy: Proxy, referrers: Iterable[dict]) -> list[dict]:
    """The secrets the given listeners and clusters refer to over ADS, those that exist."""
    referrers = list(referrers)
    names = sorted({n for resource in referrers for n in ads_secret_names(resource)})
    cas = {n for resource in referrers for n in ca_secret_names(resource)}
    return [s for s in (credential_secret(snapshot, proxy, n, as_ca=n in cas) for n in names) if s is not None]


def redacted(secret: dict) -> dict:
    """A secret fit to show: private keys replaced by a marker (certificates are public)."""
    out = dict(secret)
    if "tls_certificate" in out:
        out["tls_certificate"] = {**out["tls_certificate"], "private_key": {"inline_string": REDACTED}}
    return out
