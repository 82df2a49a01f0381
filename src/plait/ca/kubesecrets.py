"""The CA's key and certificates on Kubernetes: from Secrets in the control plane's namespace, so
every replica signs with the same CA and a restart keeps it. As istiod, in this order:

1. Secret ``cacerts`` (Istio's plug-in CA: ``ca-cert.pem``, ``ca-key.pem``, ``root-cert.pem``,
   ``cert-chain.pem``): your intermediate under your root. A Secret with some of the signing
   files but not all is an error (Istio: "incomplete signing CA bundle"); one with none of them
   (e.g. only ``root-cert.pem``) is not a signing CA and is passed over.
2. Secret ``istio-ca-secret`` (type ``istio.io/ca-root``: ``ca-cert.pem``, ``ca-key.pem``): the
   self-signed root a control plane generated earlier.
3. Neither: a new self-signed root is generated and stored as ``istio-ca-secret``. When two
   replicas start at once, one create wins (409 for the other), and the loser reads the winner's.

The Secret's files are written to ``<state dir>/ca/<secret name>/`` (directory 0700, files
0600) and loaded with exactly the checks of ``--cacerts DIR`` (`plait.ca.authority`): the key
matches ca-cert, ca-cert is a CA, the chain leads to root-cert. Read once at start: a changed
Secret takes effect when the control plane restarts (istiod also reloads a mounted ``cacerts``).
RBAC: secrets in its namespace (get, create).
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from plait.ca.authority import (
    PLUGIN_FILES,
    CaError,
    CertificateAuthority,
    generate_root,
    key_pem,
    load_or_create,
    make_private_dir,
    pem,
    write_file,
)
from plait.model.proxy import TRUST_DOMAIN

log = logging.getLogger(__name__)

PLUGIN_SECRET = "cacerts"
SELF_SIGNED_SECRET = "istio-ca-secret"
SELF_SIGNED_TYPE = "istio.io/ca-root"
SIGNING_FILES = ("ca-cert.pem", "ca-key.pem")


async def load_cluster_ca(
    api: client.ApiClient, ca_dir: Path, *, namespace: str = "istio-system", trust_domain: str = TRUST_DOMAIN
) -> tuple[CertificateAuthority, str]:
    """(the CA, which Secret it came from). CaError if a Secret holds an unusable CA or the API
    server refuses to read or create them (no RBAC, no such namespace)."""
    try:
        return await _load_cluster_ca(client.CoreV1Api(api), ca_dir, namespace, trust_domain)
    except ApiException as error:
        if error.status is not None and error.status >= 500:
            raise  # the API server is not ready: the caller waits and tries again
        hint = {
            403: f"; the control plane needs get and create on secrets in namespace {namespace}",
            404: f"; does namespace {namespace} exist?",
        }.get(error.status, "")
        raise CaError(
            f"cannot read or create the CA's Secrets in namespace {namespace}: {error.status} {error.reason}{hint}"
        ) from None


async def _load_cluster_ca(
    core: client.CoreV1Api, ca_dir: Path, namespace: str, trust_domain: str
) -> tuple[CertificateAuthority, str]:
    plugin = await _read(core, namespace, PLUGIN_SECRET)
    if plugin is not None:
        if all(plugin.get(name) for name in SIGNING_FILES):
            return _load(plugin, ca_dir, namespace, PLUGIN_SECRET), f"Secret {namespace}/{PLUGIN_SECRET} (plug-in CA)"
        present = sorted(n for n in SIGNING_FILES if plugin.get(n))
        if present:
            raise CaError(
                f"Secret {namespace}/{PLUGIN_SECRET} has {', '.join(present)} but not "
                f"{', '.join(n for n in SIGNING_FILES if n not in present)}; a plug-in CA needs "
                f"{', '.join(PLUGIN_FILES)}"
            )
        log.info(
            "Secret %s/%s holds no signing CA (no %s); using %s",
            namespace,
            PLUGIN_SECRET,
            " or ".join(SIGNING_FILES),
            SELF_SIGNED_SECRET,
        )
    for _ in range(3):
        own = await _read(core, namespace, SELF_SIGNED_SECRET)
        if own is not None:
            return _load(own, ca_dir, namespace, SELF_SIGNED_SECRET), f"Secret {namespace}/{SELF_SIGNED_SECRET}"
        key, cert = generate_root(trust_domain)
        files = {"ca-cert.pem": pem(cert), "ca-key.pem": key_pem(key), "root-cert.pem": pem(cert)}
        try:
            await core.create_namespaced_secret(namespace, self_signed_secret(namespace, files))
        except ApiException as error:
            if error.status == 409:  # another replica stored its root first: use that one
                continue
            raise
        log.info("generated a self-signed root CA and stored it in Secret %s/%s", namespace, SELF_SIGNED_SECRET)
        return _load(files, ca_dir, namespace, SELF_SIGNED_SECRET), f"Secret {namespace}/{SELF_SIGNED_SECRET} (new)"
    raise CaError(f"Secret {namespace}/{SELF_SIGNED_SECRET} keeps being created and deleted; try again")


def self_signed_secret(namespace: str, files: dict[str, bytes]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": SELF_SIGNED_TYPE,
        "metadata": {"name": SELF_SIGNED_SECRET, "namespace": namespace},
        "data": {name: base64.b64encode(data).decode() for name, data in files.items()},
    }


async def _read(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, bytes] | None:
    """The Secret's data, decoded; None if there is no such Secret."""
    try:
        secret = await core.read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def _load(files: dict[str, bytes], ca_dir: Path, namespace: str, name: str) -> CertificateAuthority:
    """Write the CA files of a Secret into a private directory and load them as ``--cacerts``."""
    directory = Path(ca_dir) / name
    make_private_dir(directory)
    files = dict(files)
    if "root-cert.pem" not in files:  # a self-signed CA is its own root
        files["root-cert.pem"] = files.get("ca-cert.pem", b"")
    for file in PLUGIN_FILES:
        if files.get(file):
            write_file(directory / file, files[file])
        else:
            (directory / file).unlink(missing_ok=True)
    try:
        return load_or_create(ca_dir, cacerts_dir=directory)
    except CaError as error:
        raise CaError(f"Secret {namespace}/{name} (copied to {directory}): {error}") from None
