"""Where istiod's dashboard reads its figures: the Prometheus addon when it is installed, else the proxies'
own stats, found through istiod's own Prometheus HTTP service discovery over loopback (the dashboard runs in
istiod's process; /api/v1/prometheus/targets needs no token)."""

from __future__ import annotations

import pytest

from plait.install.manifests import istiod_deployment
from plait.install.operator import resolve


def dashboard_args(*sets: str) -> list[str]:
    settings = resolve(sets=list(sets), image="registry.test/plait/proxy:7").settings
    args = istiod_deployment(settings)["spec"]["template"]["spec"]["containers"][0]["args"]
    return [a for i, a in enumerate(args) if a.startswith("--dashboard") or args[i - 1].startswith("--dashboard")]


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        ((), ["--dashboard-port", "20001", "--dashboard-targets", "http://127.0.0.1:15014/api/v1/prometheus/targets"]),
        (
            ("addons.prometheus=true",),
            ["--dashboard-port", "20001", "--dashboard-prometheus", "http://prometheus.istio-system.svc:9090"],
        ),
    ],
)
def test_the_dashboard_reads_the_addon_or_else_the_proxies(sets: tuple[str, ...], expected: list[str]) -> None:
    assert dashboard_args(*sets) == expected
