"""The test session keeps gRPC's asyncio state up (tests/conftest.py): a call left pending by a closed
event loop no longer hangs the garbage collector. Run in a pytest of its own, with that conftest as
its only plugin, so a regression fails here (timeout) instead of hanging the whole run."""

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

LEAKY_TEST = """
import asyncio, gc, grpc

def test_a_pending_call_from_a_closed_loop_is_collected():
    kept = {}

    async def leave_a_call_pending():
        server = grpc.aio.server()
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        kept["objects"] = (server, channel, channel.stream_stream("/plait.Test/Hold")())
        await asyncio.sleep(0.2)

    asyncio.run(leave_a_call_pending())
    kept.clear()
    gc.collect()
"""


def test_gc_of_a_channel_whose_loop_is_gone_does_not_hang_the_session(tmp_path):
    (tmp_path / "test_leaky.py").write_text(LEAKY_TEST)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest", "test_leaky.py"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr
