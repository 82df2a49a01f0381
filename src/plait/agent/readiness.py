"""Is the proxy ready? Envoy is LIVE and has taken at least one CDS and one LDS update.

``/ready`` alone is not enough: it says Envoy finished initialising, and a
proxy that never reached its control plane must not count as ready (Istio's
agent checks the same counters). `readiness_of` is the pure rule;
`check_readiness` asks Envoy's admin API (``/ready``, then ``/stats``);
`wait_until_ready` polls it (hold-application). Envoy's ``server.state``
gauge is no substitute for ``/ready``: it is only refreshed at stats flushes
(every 5 s), and reads 0 (LIVE) before the first one.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from plait.agent.admin import AdminUnavailable, EnvoyAdmin

log = logging.getLogger("plait.agent")
CONFIG_STATS = [
    "cluster_manager.cds.update_success",
    "cluster_manager.cds.update_rejected",
    "listener_manager.lds.update_success",
    "listener_manager.lds.update_rejected",
]


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str  # for people: why not, or "ready"


def readiness_of(server_state: str, stats: dict[str, int]) -> Readiness:
    """From what ``/ready`` says (LIVE, PRE_INITIALIZING, …) and the CDS/LDS counters."""
    cds, lds = (stats.get(f"{p}.update_success", 0) for p in ("cluster_manager.cds", "listener_manager.lds"))
    if not (cds and lds):
        return Readiness(
            False,
            "config not received from the control plane: "
            f"cds updates: {cds} successful, {stats.get('cluster_manager.cds.update_rejected', 0)} "
            f"rejected; lds updates: {lds} successful, "
            f"{stats.get('listener_manager.lds.update_rejected', 0)} rejected",
        )
    if server_state != "LIVE":
        return Readiness(False, f"Envoy is not live ({server_state}): its config is still warming up")
    return Readiness(True, "ready")


async def check_readiness(admin: EnvoyAdmin) -> Readiness:
    try:
        _, body = await admin.get("/ready")
        return readiness_of(body.decode().strip(), await admin.stats(CONFIG_STATS))
    except AdminUnavailable as exc:
        return Readiness(False, f"Envoy admin API not answering ({exc})")


async def wait_until_ready(
    check: Callable[[], Awaitable[Readiness]], *, interval: float = 0.1, report_every: float = 5.0
) -> None:
    """Poll `check` until ready, saying why not every `report_every` seconds; cancel it to give up."""
    next_report = time.monotonic() + report_every
    while not (readiness := await check()).ready:
        if time.monotonic() >= next_report:
            log.info("waiting for the proxy to be ready: %s", readiness.reason)
            next_report += report_every
        await asyncio.sleep(interval)


def wait_for_ready_url(url: str, *, timeout: float, period: float = 0.5, request_timeout: float = 0.5) -> bool:
    """Poll `url` until it answers 200 (True) or `timeout` seconds pass (False): ``plait agent-wait``,
    Istio's ``pilot-agent wait``, run by the kubelet as istio-proxy's postStart hook to hold the app."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=request_timeout) as response:  # noqa: S310 (http only)
                if response.status == 200:
                    return True
        except (OSError, ValueError):
            pass  # not listening yet, or not ready (urllib raises HTTPError for 503)
        if time.monotonic() + period > deadline:
            return False
        time.sleep(period)
