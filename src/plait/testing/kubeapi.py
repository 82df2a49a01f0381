"""Test helpers that talk to a (test) Kubernetes API server: a client from a kubeconfig, namespaces,
service accounts and their tokens as the kubelet would mount them (projected, audience
``istio-ca``, bound to a pod) or as old clusters did (a legacy token Secret)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException


async def api_client(kubeconfig: str) -> client.ApiClient:
    """A client for the cluster `kubeconfig` names (close it with ``await api.close()``)."""
    configuration = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return client.ApiClient(configuration)


async def ensure_namespace(api: client.ApiClient, name: str, labels: dict[str, str] | None = None) -> None:
    try:
        await client.CoreV1Api(api).create_namespace({"metadata": {"name": name, "labels": labels or {}}})
    except ApiException as error:
        if error.status != 409:
            raise


async def pod_token(
    api: client.ApiClient,
    namespace: str,
    service_account: str,
    *,
    audiences=("istio-ca",),
    pod: str | None = None,
    seconds: int = 3600,
) -> str:
    """A token from the TokenRequest API for `service_account` (created if missing), as the kubelet
    projects it into a pod: for `audiences`, bound to `pod` (created, never run) if given."""
    core = client.CoreV1Api(api)
    await ensure_namespace(api, namespace)
    try:
        await core.create_namespaced_service_account(namespace, {"metadata": {"name": service_account}})
    except ApiException as error:
        if error.status != 409:
            raise
    spec: dict = {"expirationSeconds": seconds}
    if audiences:
        spec["audiences"] = list(audiences)
    if pod:
        created = await core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": pod},
                "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "app:1"}]},
            },
        )
        spec["boundObjectRef"] = {"kind": "Pod", "apiVersion": "v1", "name": pod, "uid": created.metadata.uid}
    request = await core.create_namespaced_service_account_token(service_account, namespace, {"spec": spec})
    return request.status.token


async def legacy_token(api: client.ApiClient, namespace: str, service_account: str, signing_key: Path) -> str:
    """A pre-1.22 service-account token (no audience; a Secret of type
    kubernetes.io/service-account-token holds it), signed with the API server's key as the token
    controller would; `service_account` must exist."""
    core = client.CoreV1Api(api)
    account = await core.read_namespaced_service_account(service_account, namespace)
    secret = f"{service_account}-token-legacy"
    prefix = "kubernetes.io/serviceaccount/"
    claims = {
        "iss": "kubernetes/serviceaccount",
        f"{prefix}namespace": namespace,
        f"{prefix}secret.name": secret,
        f"{prefix}service-account.name": service_account,
        f"{prefix}service-account.uid": account.metadata.uid,
        "sub": f"system:serviceaccount:{namespace}:{service_account}",
    }
    key = serialization.load_pem_private_key(signing_key.read_bytes(), password=None)
    signing_input = _b64(json.dumps({"alg": "RS256"}).encode()) + "." + _b64(json.dumps(claims).encode())
    token = signing_input + "." + _b64(key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()))
    await core.create_namespaced_secret(
        namespace,
        {
            "metadata": {
                "name": secret,
                "annotations": {
                    "kubernetes.io/service-account.name": service_account,
                    "kubernetes.io/service-account.uid": account.metadata.uid,
                },
            },
            "type": "kubernetes.io/service-account-token",
            "data": {"token": base64.b64encode(token.encode()).decode()},
        },
    )
    return token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
