"""Istio's configuration API as typed objects (flows in: YAML text; flows out: Resources or Problems).

`loader` parses YAML documents into `Resource`s whose `spec` is a strict pydantic
model of the kind (`networking`, `resources`); `checks` looks across objects.
Pure apart from `loader.load_paths`, which reads files. Nothing here blocks or
holds state; a load with any error yields no resources (nothing half-applied).
"""

from plait.api.errors import ConfigError, Problem
from plait.api.loader import LoadResult, load_paths, load_text
from plait.api.resources import Resource

__all__ = ["ConfigError", "LoadResult", "Problem", "Resource", "load_paths", "load_text"]
