"""The application beside a sidecar, started only once its proxy is ready (holdApplicationUntilProxyStarts).

The app runs in its own session (so a terminal's Ctrl-C reaches it once,
through the agent) and gets SIGTERM if the agent dies. In explicit-proxy mode
its environment points HTTP clients at the sidecar (``HTTP_PROXY`` =
``http://IP:15001``) unless the caller already set a proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Mapping, Sequence

from plait.host.processes import die_with_parent
from plait.model import Proxy
from plait.model.proxy import EXPLICIT_PROXY_PORT

NO_PROXY = "localhost,127.0.0.1,::1"


def app_environment(proxy: Proxy, base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    if proxy.kind == "sidecar" and proxy.mode == "proxy" and not ({"HTTP_PROXY", "http_proxy"} & env.keys()):
        url = f"http://{proxy.ip}:{EXPLICIT_PROXY_PORT}"
        env.update(HTTP_PROXY=url, http_proxy=url)
        env.setdefault("NO_PROXY", env.get("no_proxy", NO_PROXY))
        env.setdefault("no_proxy", env["NO_PROXY"])
    return env


async def start_app(command: Sequence[str], env: Mapping[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGTERM),
    )


async def wait_for_app(app: asyncio.subprocess.Process, grace: float) -> None:
    """Give an app that was asked to stop `grace` seconds, then SIGKILL it."""
    try:
        await asyncio.wait_for(app.wait(), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            app.kill()
        await asyncio.wait_for(app.wait(), grace)
