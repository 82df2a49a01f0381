"""The ``plait`` command (typer + rich). Commands parse arguments, call the library, and hand
results to small formatting functions; they hold no logic of their own.

Agents and the local mesh start processes while gRPC threads run; gRPC's fork handlers would only
log that they are skipped (we exec right after fork), so they are turned off here, before any command
module loads gRPC.
"""

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
