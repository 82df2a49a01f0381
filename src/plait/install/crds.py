"""Istio's CustomResourceDefinitions, shipped with plait (the Base component; shared by revisions).

In: the packaged copy of Istio's ``crd-all.gen.yaml`` (data/, see data/NOTICE.md) and whether the API
server is old (Kubernetes < 1.25). Out: the CRD objects as dicts, for an old server without the CEL
rules (``x-kubernetes-validations``) and empty-string defaults it refuses; plait's validating
webhook checks those rules instead.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

CRD_FILE = Path(__file__).parent / "data" / "crd-all.gen.yaml"  # Istio 1.30.3; charts/base links to it


@functools.cache
def _istio_crds(old_api_server: bool) -> tuple[dict[str, Any], ...]:
    text = CRD_FILE.read_text()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the file is 0.9 MB
    crds = [d for d in yaml.load_all(text, Loader=loader) if d and d.get("kind") == "CustomResourceDefinition"]
    return tuple(for_old_api_server(crd) if old_api_server else crd for crd in crds)


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
    """Istio's CRDs, made loadable by an old API server when asked: fresh top-level mappings and metadata
    (callers may label them); the schemas are shared, read-only."""
    return [{**crd, "metadata": copy.deepcopy(crd["metadata"])} for crd in _istio_crds(old_api_server)]
