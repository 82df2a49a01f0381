"""plait: a service mesh whose control plane is Python and whose data plane is Envoy.

plait starts processes (fork, then exec) while gRPC threads run. gRPC's fork handlers, on unless
turned off before gRPC first loads, run in the forked child and can abort it there (an epoll error
on a descriptor the child does not have), so importing plait turns them off for the whole process:
the command, the tests and the benchmarks.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
