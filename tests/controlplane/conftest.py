"""Tests here start agents (fork, then exec) while gRPC servers and channels of the test process run
(plait.testing.protocol_backends). gRPC's fork handlers, on unless turned off before gRPC is first
imported, run in the forked child and can abort it (an epoll error), so they are turned off here, as
`plait.cli` does for the command."""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
