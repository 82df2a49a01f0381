"""The Telemetry API's ``metrics`` for one proxy: which of Istio's standard metrics each side reports
and how their labels change.

In: the snapshot's Telemetry objects and a proxy. Out: per side (``CLIENT``: reporter=source, on a
sidecar's outbound listeners and on gateways; ``SERVER``: reporter=destination) a `MetricConfig` per
metric name (Prometheus's, without ``istio_``), for `plait.telemetry.metrics` to build its loggers with.

As Istio, the levels merge from the general to the specific: the root namespace's Telemetry (no
selector), then the proxy's namespace's, then those of its namespace whose ``selector`` picks it; within
a level, rules and overrides in order. A later ``disabled`` replaces an earlier one, a later
``tagOverrides`` entry replaces the earlier one for that label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from plait.api.resources import Resource
from plait.api.telemetry_metrics import tag_value_format
from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot

Side = Literal["CLIENT", "SERVER"]


@dataclass(frozen=True)
class MetricConfig:
    """One metric on one side: whether it is reported, and its label changes (label → Envoy's format
    string for an upserted value, None for a removed label)."""

    disabled: bool = False
    tags: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))

    def labels(self, tags: list[dict]) -> list[dict]:
        """The stats logger's `tags` (``name``, ``value_format``) with these changes: a removed label is
        left out, an upserted one takes its new value in place or is added at the end."""
        changed = [
            {"name": t["name"], "value_format": self.tags.get(t["name"], t["value_format"])}
            for t in tags
            if self.tags.get(t["name"], "") is not None
        ]
        present = {t["name"] for t in tags}
        added = [{"name": k, "value_format": v} for k, v in self.tags.items() if v is not None and k not in present]
        return changed + added


DEFAULT = MetricConfig()


def telemetry_levels(snapshot: MeshSnapshot, proxy: Proxy) -> tuple[list[Resource], list[Resource], list[Resource]]:
    """The Telemetry objects that apply to a proxy, most specific level first: those of its namespace
    whose selector picks it, its namespace's without a selector, the root namespace's without one."""
    own = [t for t in snapshot.telemetries if t.namespace == proxy.namespace]
    selecting = [
        t
        for t in own
        if t.spec.selector and all(proxy.labels.get(k) == v for k, v in t.spec.selector.match_labels.items())
    ]
    namespace_wide = [t for t in own if not t.spec.selector]
    root = [t for t in snapshot.telemetries if t.namespace == snapshot.root_namespace and not t.spec.selector]
    if proxy.namespace == snapshot.root_namespace:
        root = []  # its namespace-wide ones are the root's
    return selecting, namespace_wide, root


def metric_overrides(snapshot: MeshSnapshot, proxy: Proxy, side: Side) -> dict[str, MetricConfig]:
    """The overridden metrics of a proxy's side (a metric not named keeps `DEFAULT`)."""
    disabled: dict[str, bool] = {}
    tags: dict[str, dict[str, str | None]] = {}
    for level in reversed(telemetry_levels(snapshot, proxy)):
        for telemetry in level:
            for rule in telemetry.spec.metrics:
                for override in rule.overrides:
                    if side not in override.match.sides():
                        continue
                    for metric in override.match.metrics():
                        if override.disabled is not None:
                            disabled[metric] = override.disabled
                        for label, change in override.tag_overrides.items():
                            value = tag_value_format(change.value) if change.operation == "UPSERT" else None
                            tags.setdefault(metric, {})[label] = value
    return {
        metric: MetricConfig(disabled.get(metric, False), MappingProxyType(dict(tags.get(metric, {}))))
        for metric in {*disabled, *tags}
    }
