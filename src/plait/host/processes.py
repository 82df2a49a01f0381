"""Child processes that cannot outlive the agent, and how to stop them by PID.

On Linux every child is started with ``PR_SET_PDEATHSIG``: if the agent dies,
even by SIGKILL, the kernel signals the child. (The signal follows the
thread that forked, so children are started from the event-loop thread, which
is the main thread under ``asyncio.run``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals) -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the kernel to send `sig` to the child when the agent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved before fork: the child only calls it
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig))
        if os.getppid() != parent:  # the agent died between fork and prctl
            os._exit(1)

    return preexec


def alive(pid: int) -> bool:
    """Is a process with this PID still there (not necessarily our child)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def describe_exit(returncode: int) -> str:
    """``exited with status 1`` or ``was killed by SIGKILL``."""
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with status {returncode}"


def exit_status(returncode: int) -> int:
    """A shell's view of a child's status: ``-SIG`` (killed by a signal) becomes 128+SIG."""
    return 128 - returncode if returncode < 0 else returncode


async def stop_process(process: asyncio.subprocess.Process, timeout: float) -> int:
    """SIGTERM, then SIGKILL if it is still there after `timeout` seconds; returns the exit code."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.wait_for(process.wait(), timeout)
    return process.returncode  # type: ignore[return-value]
