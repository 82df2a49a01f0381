"""Follow a kind of Kubernetes object: list, then watch from the list's resourceVersion; list again
when the watch ends (every few minutes: a resync), on 410 Gone, or after an error (the API server
away: after a short wait). For reconcilers that look at the current state on every event, so a
missed event costs at most one resync."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from kubernetes_asyncio import watch
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

WATCH_SECONDS = 300  # each watch is listed again after this long (a resync)
RETRY_SECONDS = 2.0


async def follow(list_func: Callable[..., Awaitable], on_event: Callable[[str, object], None], **kwargs) -> None:
    """Until cancelled: call ``on_event(type, object)`` for every listed object (type ADDED) and
    every watch event (ADDED, MODIFIED, DELETED). `kwargs` go to both the list and the watch
    (e.g. ``field_selector``)."""
    what = getattr(list_func, "__name__", "objects")
    while True:
        try:
            listing = await list_func(**kwargs)
            for item in listing.items:
                on_event("ADDED", item)
            async with watch.Watch() as stream:
                async for event in stream.stream(
                    list_func,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=WATCH_SECONDS,
                    **kwargs,
                ):
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        on_event(event["type"], event["object"])
        except ApiException as error:
            if error.status != 410:
                log.warning("%s: watch failed: %s %s; listing again", what, error.status, error.reason)
                await asyncio.sleep(RETRY_SECONDS)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            log.warning("%s: the API server is away (%s); listing again", what, error or type(error).__name__)
            await asyncio.sleep(RETRY_SECONDS)
