"""Prometheus' scrape configuration for a mesh, with Istio's conventions.

In: the proxies to scrape (`ScrapeTarget`: address, namespace, pod, the pod's labels), the control
plane's monitoring address, the scrape interval and where the target files live. Out: plain dicts:
``prometheus.yml`` (`prometheus_config`) and the ``file_sd`` target groups (`file_sd_groups`), which
the caller writes as YAML/JSON. Istio's prometheus addon names the jobs: ``envoy-stats`` for every
proxy's ``/stats/prometheus`` (15090 on sidecars) and ``pilot`` for the control plane's ``/metrics``
(15014); each series carries the target's ``namespace``, ``pod`` and the pod's labels (``app``,
``version`` …, as the addon's ``labelmap`` of Kubernetes pod labels), which Kiali and users expect.
Targets come from files (``file_sd``), so pods coming and going rewrite a file and Prometheus is
never restarted for it. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

ENVOY_STATS_JOB = "envoy-stats"
PILOT_JOB = "pilot"
ENVOY_STATS_FILE = "envoy-stats.json"
DEFAULT_SCRAPE_INTERVAL = "15s"  # Istio's addon default
DEFAULT_RETENTION = "6h"
DEFAULT_RETENTION_SIZE = "256MB"
_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True)
class ScrapeTarget:
    """One proxy's metrics endpoint and the labels its series get."""

    address: str  # host:port
    namespace: str
    pod: str
    labels: Mapping[str, str] = field(default_factory=dict)
    metrics_path: str = "/stats/prometheus"


def label_name(name: str) -> str:
    """A Kubernetes label key as Prometheus' ``labelmap`` of ``__meta_kubernetes_pod_label_*`` spells it:
    every character that is not a letter, digit or underscore becomes ``_``."""
    return _LABEL_NAME.sub("_", name)


def target_labels(target: ScrapeTarget) -> dict[str, str]:
    """The pod's own labels (renamed as a ``labelmap`` would), then ``namespace`` and ``pod``."""
    labels = {label_name(k): v for k, v in sorted(target.labels.items())}
    return {**labels, "namespace": target.namespace, "pod": target.pod}


def file_sd_groups(targets: Iterable[ScrapeTarget]) -> list[dict]:
    """``file_sd`` target groups: one per proxy, its path in ``__metrics_path__``, sorted by address."""
    return [
        {
            "targets": [t.address],
            "labels": {**target_labels(t), "__metrics_path__": t.metrics_path},
        }
        for t in sorted(targets, key=lambda t: t.address)
    ]


def prometheus_config(
    targets_dir: str, control_plane: str, scrape_interval: str = DEFAULT_SCRAPE_INTERVAL
) -> dict[str, object]:
    """``prometheus.yml``: the ``envoy-stats`` job from ``targets_dir/envoy-stats.json`` and the ``pilot``
    job on `control_plane` (``host:port`` of its ``/metrics``), both every `scrape_interval`."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": ENVOY_STATS_JOB,
                "metrics_path": "/stats/prometheus",
                "file_sd_configs": [{"files": [f"{targets_dir}/{ENVOY_STATS_FILE}"], "refresh_interval": "30s"}],
            },
            {
                "job_name": PILOT_JOB,
                "metrics_path": "/metrics",
                "static_configs": [
                    {"targets": [control_plane], "labels": {"namespace": "istio-system", "app": "istiod"}}
                ],
            },
        ],
    }


def prometheus_argv(
    binary: str,
    config_file: str,
    data_dir: str,
    listen: str,
    retention: str = DEFAULT_RETENTION,
    retention_size: str = DEFAULT_RETENTION_SIZE,
) -> list[str]:
    """Prometheus 2's command line: its config, its data with bounded retention (time and size), its address."""
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={retention}",
        f"--storage.tsdb.retention.size={retention_size}",
        f"--web.listen-address={listen}",
    ]
