"""Istio's Prometheus scrape annotations on an injected pod, and metrics merging (Istio's
``meshConfig.enablePrometheusMerge``, on by default, and the pod's ``prometheus.istio.io/merge-metrics``).

In: the pod's annotations, the mesh-wide setting and the agent's status port (15020). Out: the
annotations to set and the ``ISTIO_PROMETHEUS_ANNOTATIONS`` value for the istio-proxy container
(or None). With merging, as Istio's injector: a pod that Prometheus may scrape (no
``prometheus.io/scrape`` or a true one) gets annotations pointing at the agent's
``:15020/stats/prometheus``, and the app's own ``prometheus.io/scrape|path|port`` move to
``ISTIO_PROMETHEUS_ANNOTATIONS`` (JSON), whence the agent scrapes and merges the app's metrics
(`plait.agent.merged_metrics`); a pod already pointing at 15020 (injected before) is left as it is.
Without merging: Envoy's ``:15090/stats/prometheus`` for a pod without annotations of its own; a
pod with some keeps them as they are, and so does one with ``prometheus.io/scrape: "false"``.
Pure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from plait.inject.settings import PROMETHEUS_ANNOTATIONS, InjectError

SCRAPE = "prometheus.io/scrape"
PORT = "prometheus.io/port"
PATH = "prometheus.io/path"
MERGE_METRICS = "prometheus.istio.io/merge-metrics"
MERGED_PATH = "/stats/prometheus"
_TRUE = ("1", "t", "T", "true", "TRUE", "True")  # Go's strconv.ParseBool, as Istio reads these
_FALSE = ("0", "f", "F", "false", "FALSE", "False")


def _bool(value: str) -> bool | None:
    return True if value in _TRUE else False if value in _FALSE else None


def merge_enabled(annotations: Mapping[str, str], mesh_default: bool) -> bool:
    """The pod's ``prometheus.istio.io/merge-metrics`` if it has one, else the mesh's setting."""
    if MERGE_METRICS not in annotations:
        return mesh_default
    found = _bool(annotations[MERGE_METRICS])
    if found is None:
        raise InjectError(f"annotation {MERGE_METRICS}: expected true or false, got {annotations[MERGE_METRICS]!r}")
    return found


def scrape_annotations(
    annotations: Mapping[str, str], *, merge: bool, status_port: int
) -> tuple[dict[str, str], str | None]:
    """(the annotations the pod ends up with, ISTIO_PROMETHEUS_ANNOTATIONS or None)."""
    out = dict(annotations)
    own = any(key in annotations for key in (SCRAPE, PORT, PATH))
    if _bool(annotations.get(SCRAPE, "true")) is False or (own and not (merge and status_port)):
        return out, None  # not to be scraped, or the app's own endpoint: left as the pod says
    if not (merge and status_port):
        return {**out, **PROMETHEUS_ANNOTATIONS}, None  # Envoy's own endpoint
    target = str(status_port)
    if annotations.get(PORT) == target:
        return out, None  # already merged (injected again): the app's were moved before
    app = {"scrape": annotations.get(SCRAPE, ""), "path": annotations.get(PATH, ""), "port": annotations.get(PORT, "")}
    env = json.dumps(app, separators=(",", ":")) if any(app.values()) else None
    out.update({SCRAPE: "true", PORT: target, PATH: MERGED_PATH})
    return out, env
