"""Loaded before any test module: importing plait first turns gRPC's fork handlers off for the test
process (see `plait`), before a test module's ``import grpc`` could load gRPC with them on."""

import plait  # noqa: F401
