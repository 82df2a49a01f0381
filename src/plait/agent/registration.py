"""Registering the agent's workload with the control plane, and keeping its readiness current.

With ``--register``, the agent PUTs its workload (name, namespace, address, labels,
ports, service account) to the control plane's HTTP API as not ready, marks it
ready when the proxy (and the app, if the agent runs one) is ready, re-sends it
every few seconds (so a restarted control plane learns it again), marks it not
ready as soon as draining starts (it leaves every EDS before Envoy stops), and
deletes it on exit. Errors are logged and retried; they never stop the agent.
With a token file (the agent has an identity) every request carries
``Authorization: Bearer TOKEN``, read from the file each time: the control
plane accepts workload registrations from a pod only with its token.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from plait.model import Proxy

log = logging.getLogger("plait.agent")
REFRESH_SECONDS = 2.0


@dataclass(frozen=True)
class Registration:
    api: str  # the control plane's HTTP API, e.g. http://127.0.0.1:15014
    proxy: Proxy
    address: str  # where peers reach this workload: the proxy's IP
    ports: dict[str, int]
    app_probe: str | None = None  # the app's readiness URL (its readinessProbe.httpGet), checked directly
    token_file: Path | None = None  # the pod's token, sent as Authorization: Bearer

    @property
    def url(self) -> str:
        return f"{self.api}/api/v1/workloads/{self.proxy.namespace}/{self.proxy.name}"

    def body(self, ready: bool) -> dict:
        return {
            "address": self.address,
            "labels": dict(self.proxy.labels),
            "ports": self.ports,
            "serviceAccount": self.proxy.service_account,
            "ready": ready,
        }

    def headers(self) -> dict[str, str]:
        """``Authorization: Bearer TOKEN`` with the token file's current content; none without one."""
        if self.token_file is None:
            return {}
        try:
            return {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}
        except OSError as exc:
            log.warning("cannot read the token file %s for the control plane API: %s", self.token_file, exc.strerror)
            return {}


async def keep_registered(reg: Registration, is_ready: Callable[[], Awaitable[bool]], stop: asyncio.Event) -> None:
    """PUT the workload with its current readiness until `stop`; then mark it not ready and delete it."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), trust_env=False) as session:
        last: bool | None = None
        while not stop.is_set():
            ready = await is_ready()
            if await _send(session, "PUT", reg.url, reg.body(ready), reg.headers()) and ready != last:
                log.info(
                    "registered %s/%s with the control plane as %s",
                    reg.proxy.namespace,
                    reg.proxy.name,
                    "ready" if ready else "not ready",
                )
                last = ready
            try:
                await asyncio.wait_for(stop.wait(), REFRESH_SECONDS if ready == last else 0.2)
            except TimeoutError:
                pass
        await _send(session, "PUT", reg.url + "/ready", {"ready": False}, reg.headers())


async def app_probe_ok(url: str) -> bool:
    """The app's own readiness check: a 2xx or 3xx answer within a second, as Kubernetes counts it."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1), trust_env=False) as session,
            session.get(url, allow_redirects=False) as resp,
        ):
            return 200 <= resp.status < 400
    except (aiohttp.ClientError, TimeoutError):
        return False


async def deregister(reg: Registration) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5), trust_env=False) as session:
        await _send(session, "DELETE", reg.url, None, reg.headers())


async def _send(
    session: aiohttp.ClientSession, method: str, url: str, body: dict | None, headers: dict[str, str]
) -> bool:
    try:
        async with session.request(
            method, url, data=json.dumps(body) if body is not None else None, headers=headers
        ) as resp:
            if resp.status >= 400 and resp.status != 404:
                log.warning("control plane refused %s %s: %s", method, url, (await resp.text())[:200])
            return resp.status < 400
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.debug("control plane API unreachable (%s %s): %s", method, url, exc)
        return False
