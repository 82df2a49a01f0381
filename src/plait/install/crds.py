"""Istio's CustomResourceDefinitions, shipped with plait (the Base component; shared by revisions).

In: the packaged copy of Istio's ``crd-all.gen.yaml`` (data/, see data/NOTICE.md) and whether the API
server is old (Kubernetes < 1.25). Out: the CRD objects as dicts, for an old server without the CEL
rules (``x-kubernetes-validations``) and empty-string defaults it refuses; plait's validating
webhook checks those rules instead.
"""

from __future__ import annotations

import copy
import functools
import gzip
from pathlib import Path
from typing import Any

import yaml

CRD_FILE = Path(__file__).parent / "data" / "istio-1.30.3-crd-all.gen.yaml.gz"


@functools.cache
def _istio_crds() -> tuple[dict[str, Any], ...]:
    text = gzip.decompress(CRD_FILE.read_bytes()).decode()
    return tuple(d for d in yaml.safe_load_all(text) if d and d.get("kind") == "CustomResourceDefinition")


def for_old_api_server(node: Any) -> Any:
    """`node` without ``x-kubernetes-validations`` and ``default: ""`` anywhere (a copy)."""
    if isinstance(node, dict):
        return {
            key: for_old_api_server(value)
            for key, value in node.items()
            if key != "x-kubernetes-validations" and not (key == "default" and value == "")
        }
    if isinstance(node, list):
        return [for_old_api_server(item) for item in node]
    return node


def istio_crds(old_api_server: bool = False) -> list[dict[str, Any]]:
    """Istio's CRDs (fresh copies), made loadable by an old API server when asked."""
    crds = [copy.deepcopy(crd) for crd in _istio_crds()]
    return [for_old_api_server(crd) for crd in crds] if old_api_server else crds
