"""plait proxy-config reads a real Envoy's admin API and prints istioctl-style tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from plait.api import load_paths
from plait.cli.main import app
from plait.model import MeshSnapshot, Proxy
from plait.testing.envoy import run_envoy
from plait.xds.generator import generate
from plait.xds.static import static_bootstrap

TESTDATA = Path(__file__).parents[1] / "xds" / "testdata"


@pytest.fixture(scope="module")
def envoy(tmp_path_factory):
    snapshot = MeshSnapshot(load_paths([TESTDATA / "02-bookinfo-jason.input.yaml"]).raise_for_errors())
    proxy = Proxy.from_workload_entry(snapshot.workload("productpage-v1"), mode="capture")
    with run_envoy(static_bootstrap(generate(snapshot, proxy)), workdir=tmp_path_factory.mktemp("envoy")) as e:
        yield e


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_clusters_table(envoy) -> None:
    text = run("proxy-config", "cluster", "productpage", "--admin", envoy.admin_address)
    assert "SERVICE FQDN" in text
    line = next(l for l in text.splitlines() if "reviews.default.svc.cluster.local" in l and " v2 " in l)
    assert "9080" in line and "outbound" in line


def test_listeners_table_shows_chains_and_destinations(envoy) -> None:
    text = run("proxy-config", "listener", "productpage", "--admin", envoy.admin_address)
    assert "virtualOutbound" in text and "15001" in text
    assert "Cluster: PassthroughCluster" in text
    assert "Inline Route: 9080" in text  # the static bootstrap inlines RDS


def test_endpoints_table_and_yaml_output(envoy) -> None:
    text = run("proxy-config", "endpoint", "productpage", "--admin", envoy.admin_address)
    assert "10.244.0.13:9080" in text and "outbound|9080|v1|reviews.default.svc.cluster.local" in text
    assert "name: outbound|9080||details.default.svc.cluster.local" in run(
        "proxy-config", "cluster", "productpage", "--admin", envoy.admin_address, "-o", "yaml")


def test_unknown_kind_is_refused() -> None:
    result = CliRunner().invoke(app, ["proxy-config", "secrets", "x", "--admin", "127.0.0.1:1"])
    assert result.exit_code == 2 and "KIND is one of" in result.output
