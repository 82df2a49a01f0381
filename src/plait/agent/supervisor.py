"""Envoy under supervision: started, its log passed through, restarted with backoff, stopped.

`EnvoySupervisor.start()` starts Envoy and a task that waits for it; when it
exits unexpectedly the task restarts it after a backoff that doubles from
0.2 s up to 10 s and starts over once an Envoy has run for 10 s. Each line
Envoy writes comes out on the agent's stderr prefixed ``[envoy]``. The current
PID is in ``pid_file`` (replaced atomically on every start) and in the log.
`stop()` ends supervision and stops that PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from plait.host.processes import describe_exit, die_with_parent, stop_process

log = logging.getLogger("plait.agent")
LOG_LINE_LIMIT = 1 << 20


def envoy_argv(
    envoy: str,
    bootstrap_path: Path,
    *,
    concurrency: int,
    log_level: str,
    drain_seconds: float,
    proxy_uid: int | None = None,
) -> list[str]:
    """Envoy's command line: no hot restart (many Envoys share a host), Istio's drain settings.

    With `proxy_uid` (capture mode) Envoy runs as that user, whose connections iptables leaves
    alone, and gets its bootstrap inline (that user may not be able to read the state directory).
    """
    config = ["--config-yaml", bootstrap_path.read_text()] if proxy_uid is not None else ["-c", str(bootstrap_path)]
    argv = [
        envoy,
        *config,
        "--disable-hot-restart",
        "--concurrency",
        str(concurrency),
        "--log-level",
        log_level,
        "--drain-time-s",
        str(max(1, math.ceil(drain_seconds))),
        "--drain-strategy",
        "immediate",
    ]
    if proxy_uid is None:
        return argv
    return ["setpriv", f"--reuid={proxy_uid}", f"--regid={proxy_uid}", "--clear-groups", *argv]


@dataclass
class Backoff:
    """Delay before a restart: doubles after each quick failure, starts over after a long run."""

    initial: float = 0.2
    maximum: float = 10.0
    reset_after: float = 10.0
    _next: float = 0.0

    def delay(self, ran_for: float) -> float:
        if ran_for >= self.reset_after or not self._next:
            self._next = self.initial
        current = self._next
        self._next = min(current * 2, self.maximum)
        return current


class EnvoySupervisor:
    def __init__(
        self,
        argv: list[str],
        *,
        pid_file: Path,
        output: TextIO | None = None,
        backoff: Backoff | None = None,
        env: Mapping[str, str] | None = None,
    ):
        self.argv = argv
        self.env = {**os.environ, **env} if env else None  # None: the agent's own environment
        self.pid_file = pid_file
        self._output = output or sys.stderr
        self._backoff = backoff or Backoff()
        self._process: asyncio.subprocess.Process | None = None
        self._pump: asyncio.Task | None = None
        self._watch: asyncio.Task | None = None
        self._started_at = 0.0

    async def start(self) -> None:
        """Start Envoy (an OSError if it cannot be executed) and keep it running until `stop`."""
        await self._spawn()
        self._watch = asyncio.create_task(self._keep_running(), name="envoy-supervisor")

    async def stop(self, timeout: float = 5.0) -> None:
        if self._watch:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._process:
            code = await stop_process(self._process, timeout)
            log.info("Envoy (pid %d) stopped: it %s", self._process.pid, describe_exit(code))
        if self._pump:
            await asyncio.wait_for(self._pump, timeout)
        self.pid_file.unlink(missing_ok=True)

    async def _spawn(self) -> None:
        read_end, write_end = os.pipe()
        # Envoy running as the proxy user may open /dev/stdout again (meshConfig.accessLogFile), as it
        # can a container's stdout: a pipe is its creator's, mode 0600, unless opened up
        os.fchmod(write_end, 0o666)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_end,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=die_with_parent(signal.SIGKILL),
                start_new_session=True,
                env=self.env,
            )  # a terminal's Ctrl-C reaches the agent, which drains first
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._started_at = time.monotonic()
        output = asyncio.StreamReader(limit=LOG_LINE_LIMIT)
        protocol = asyncio.StreamReaderProtocol(output)
        await asyncio.get_running_loop().connect_read_pipe(lambda: protocol, os.fdopen(read_end, "rb", buffering=0))
        self._pump = asyncio.create_task(self._pass_log_through(output))
        temporary = self.pid_file.with_suffix(".tmp")
        temporary.write_text(f"{self._process.pid}\n")
        os.replace(temporary, self.pid_file)
        log.info("Envoy started (pid %d): %s", self._process.pid, " ".join(self.argv))

    async def _pass_log_through(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self._output.write("[envoy] " + line.decode(errors="replace").rstrip("\n") + "\n")
            self._output.flush()

    async def _keep_running(self) -> None:
        while True:
            process = self._process
            code = await process.wait()
            delay = self._backoff.delay(time.monotonic() - self._started_at)
            log.warning("Envoy (pid %d) %s; restarting in %.1fs", process.pid, describe_exit(code), delay)
            while True:
                await asyncio.sleep(delay)
                try:
                    await self._spawn()
                    break
                except OSError as exc:
                    delay = self._backoff.delay(0.0)
                    log.error("cannot start Envoy (%s); trying again in %.1fs", exc, delay)
