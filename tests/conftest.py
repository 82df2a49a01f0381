"""Loaded before any test module: importing plait first turns gRPC's fork handlers off for the test
process (see `plait`), before a test module's ``import grpc`` could load gRPC with them on.

It also holds one reference to gRPC's asyncio state for the whole session. grpc.aio shuts its
completion queue down when its last channel or server is freed, and that shutdown joins the poller
thread until every pending operation has completed; a call left pending by a test whose event loop
is gone never completes, so the garbage collector freeing the last channel hung the run (seen in
``gc.collect()`` of tests/xds/test_hub.py). The control plane and agents run one event loop for their
life and never get there."""

import plait  # noqa: F401


def pytest_configure(config) -> None:
    from grpc._cython import cygrpc

    cygrpc.init_grpc_aio()
