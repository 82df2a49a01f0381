"""Reaching a pod's port from outside the cluster through the Kubernetes API, as istioctl does
(``kubectl port-forward`` without kubectl): how ``plait proxy-status`` reaches istiod's HTTP API
(15014) and ``proxy-config`` a sidecar's Envoy admin (15000) on Kubernetes.

In: a kubeconfig (None: ``$KUBECONFIG``, else ``~/.kube/config``, else in-cluster), a namespace, a pod
(`ready_pods` lists those of a label selector) and a port. Out: ``127.0.0.1:PORT`` on
this machine for as long as the `PortForward` is open; every connection made to it is one stream of
the pod's ``portforward`` subresource (a websocket of the ``v4.channel.k8s.io`` protocol: channel 0
carries the data, channel 1 the kubelet's errors, each starting with the port as two bytes). The
connection arrives on the pod's own loopback, so the control plane's API answers it as a local caller;
who may forward is the cluster's RBAC (``create`` on ``pods/portforward``). Runs its own event loop
in a thread, so that the CLI's blocking HTTP clients can use it.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

import aiohttp
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.stream import WsApiClient

from plait.sources.kube_objects import KubeConfigError
from plait.sources.kubernetes import load_configuration

DATA, ERROR = 0, 1
CHUNK = 64 * 1024


class ForwardError(RuntimeError):
    """No pod to forward to, or the API server refused; the message says which and what to do."""


def _ready(pod: client.V1Pod) -> bool:
    """Running, ready and not on its way out (a terminating pod may still say ready)."""
    conditions = (pod.status and pod.status.conditions) or []
    return (
        pod.metadata.deletion_timestamp is None
        and pod.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in conditions)
    )


def ready_pods(kubeconfig: str | None, namespace: str, selector: str) -> list[str]:
    """The names of the running, ready pods with labels `selector` in `namespace` (ForwardError if none)."""

    async def listed() -> list[str]:
        try:
            configuration = await load_configuration(kubeconfig)
        except KubeConfigError as error:
            raise ForwardError(str(error)) from None
        async with client.ApiClient(configuration) as api:
            return await _ready_pods(api, namespace, selector)

    return asyncio.run(listed())


async def _ready_pods(api: client.ApiClient, namespace: str, selector: str) -> list[str]:
    try:
        pods = await client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector)
    except ApiException as error:
        raise ForwardError(f"cannot list pods in namespace {namespace}: {error.status} {error.reason}") from None
    except (aiohttp.ClientError, OSError, TimeoutError) as error:
        raise ForwardError(f"cannot reach the Kubernetes API server at {api.configuration.host}: {error}") from None
    ready = sorted(p.metadata.name for p in pods.items if _ready(p))
    if not ready:
        raise ForwardError(
            f"no ready pod with labels {selector} in namespace {namespace}; is plait installed "
            f"('plait install'), and in that namespace (-i/--istio-namespace)?"
        )
    return ready


class PortForward:
    """``with PortForward(kubeconfig, namespace, port, pod=NAME) as address:`` — `address`
    (``127.0.0.1:N``, N = `local_port` or a free one) reaches `port` of the pod."""

    def __init__(self, kubeconfig: str | None, namespace: str, port: int, *, pod: str, local_port: int = 0):
        self.kubeconfig, self.namespace, self.port, self.pod = kubeconfig, namespace, port, pod
        self.local_port = local_port  # 0: any free port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._api: WsApiClient | None = None
        self._server: asyncio.Server | None = None

    def __enter__(self) -> str:
        self._thread.start()
        try:
            return asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=60)
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    async def _open(self) -> str:
        try:
            configuration = await load_configuration(self.kubeconfig)
        except KubeConfigError as error:
            raise ForwardError(str(error)) from None
        self._api = WsApiClient(configuration)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.local_port)
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._api is not None:
            await self._api.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._api is not None
        try:
            stream = await client.CoreV1Api(self._api).connect_get_namespaced_pod_portforward(
                self.pod, self.namespace, ports=str(self.port), _preload_content=False
            )
            async with stream as ws:
                upstream = asyncio.create_task(_to_pod(reader, ws))
                try:
                    await _from_pod(ws, writer)
                finally:
                    upstream.cancel()
                    await asyncio.gather(upstream, return_exceptions=True)
        except Exception:  # noqa: BLE001 - a failed stream closes its connection; the caller sees it closed
            pass
        finally:
            writer.close()


async def _to_pod(reader: asyncio.StreamReader, ws) -> None:
    while chunk := await reader.read(CHUNK):
        await ws.send_bytes(bytes([DATA]) + chunk)


async def _from_pod(ws, writer: asyncio.StreamWriter) -> None:
    """Channel 0's bytes to the local connection, after each channel's two-byte port header."""
    header = {DATA: 2, ERROR: 2}
    async for message in ws:
        data = message.data if isinstance(message.data, bytes) else str(message.data).encode()
        if not data:
            continue
        channel, payload = data[0], data[1:]
        skip = min(header.get(channel, 0), len(payload))
        header[channel] = header.get(channel, 0) - skip
        payload = payload[skip:]
        if channel == DATA and payload:
            writer.write(payload)
            await writer.drain()
        elif channel == ERROR and payload:
            raise ForwardError(payload.decode(errors="replace"))
