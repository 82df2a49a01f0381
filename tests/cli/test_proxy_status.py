"""plait proxy-status names proxies as istioctl does (POD.NAMESPACE), shows the node id with -o wide,
and finds one proxy by any of its names. The control plane's /debug/syncz answer is given here; the
live tests (tests/controlplane/test_live.py) run the same command against a real control plane."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from plait.cli import proxies
from plait.cli.main import app

SIDECAR_ID = "sidecar~10.244.0.5~productpage-v1-0.default~default.svc.cluster.local"
GATEWAY_ID = "router~10.244.0.1~istio-ingressgateway.istio-system~istio-system.svc.cluster.local"


def status(proxy_id: str, name: str | None, namespace: str | None) -> dict:
    return {
        "proxy_id": proxy_id,
        "envoy_version": "1.40.0",
        "proxy_version": "0.1.0",
        "istiod": "istiod-7d4b9c-x2x5q",
        "types": {t: {"state": "SYNCED"} for t in proxies.TYPES},
        "proxy": {"kind": "sidecar", "name": name, "namespace": namespace},
    }


STATUSES = [
    status(SIDECAR_ID, "productpage-v1-0", "default"),
    status(GATEWAY_ID, "istio-ingressgateway", "istio-system"),
    status("sidecar~10.244.0.6~reviews-v1-0.shop~shop.svc.cluster.local", "reviews-v1-0", "shop"),
    status("sidecar~10.244.0.7~reviews-v1-0.other~other.svc.cluster.local", "reviews-v1-0", "other"),
]


@pytest.fixture(autouse=True)
def syncz(monkeypatch) -> None:
    monkeypatch.setattr(proxies, "_statuses", lambda urls: STATUSES)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_proxies_are_named_pod_dot_namespace() -> None:
    code, text = run("proxy-status")
    assert code == 0, text
    rows = [line.split() for line in text.splitlines()[1:]]
    assert [row[0] for row in rows] == [
        "istio-ingressgateway.istio-system",
        "productpage-v1-0.default",
        "reviews-v1-0.other",
        "reviews-v1-0.shop",
    ]
    assert all(row[1:5] == ["SYNCED"] * 4 for row in rows)
    assert text.split()[:7] == ["NAME", "CDS", "LDS", "EDS", "RDS", "ISTIOD", "VERSION"]
    assert all(row[5:] == ["istiod-7d4b9c-x2x5q", "0.1.0"] for row in rows)  # who serves it, its agent's version
    assert "~" not in text


def test_wide_output_adds_the_node_id() -> None:
    code, text = run("proxy-status", "-o", "wide")
    assert code == 0, text
    assert "NODE ID" in text.splitlines()[0]
    line = next(line for line in text.splitlines() if line.strip().startswith("productpage-v1-0.default"))
    assert line.split()[-1] == SIDECAR_ID


@pytest.mark.parametrize("name", ["productpage-v1-0.default", "productpage-v1-0", SIDECAR_ID, "productpage"])
def test_one_proxy_is_found_by_any_of_its_names(name: str) -> None:
    assert proxies.find_proxy(STATUSES, name)["proxy_id"] == SIDECAR_ID


def test_an_ambiguous_name_lists_the_candidates() -> None:
    code, text = run("proxy-status", "reviews-v1-0")
    assert code == 1
    assert "more than one proxy matches 'reviews-v1-0': reviews-v1-0.shop, reviews-v1-0.other" in text
    assert proxies.find_proxy(STATUSES, "reviews-v1-0.shop")["proxy"]["namespace"] == "shop"


def test_an_unknown_name_lists_the_known_proxies() -> None:
    code, text = run("proxy-config", "cluster", "ratings-v1-0.default")
    assert code == 1
    assert "no proxy matches 'ratings-v1-0.default'; known: productpage-v1-0.default" in text


def test_a_node_without_pod_name_is_shown_by_its_id() -> None:
    assert proxies.proxy_name({"proxy_id": "sidecar~1.2.3.4~x~y", "proxy": {}}) == "sidecar~1.2.3.4~x~y"


def test_unknown_output_is_refused() -> None:
    assert run("proxy-status", "-o", "json")[0] == 2
