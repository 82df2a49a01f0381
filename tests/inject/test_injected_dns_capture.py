"""DNS capture (ISTIO_META_DNS_CAPTURE in proxyMetadata): istio-init gets ``--redirect-dns``, istio-proxy the env."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from plait.cli.main import app
from plait.inject import InjectSettings, inject
from plait.inject.mesh_config import apply_mesh_config

ENV = {"name": "ISTIO_META_DNS_CAPTURE", "value": "true"}


def injected(annotations: dict[str, str], settings: InjectSettings) -> tuple[dict, dict]:
    pod = {"metadata": {"name": "p", "annotations": annotations}, "spec": {"containers": [{"name": "a"}]}}
    out = inject(pod, settings)
    return out["spec"]["initContainers"][0], out["spec"]["containers"][-1]


def test_pod_annotation_turns_dns_capture_on() -> None:
    config = {"proxy.istio.io/config": 'proxyMetadata: {ISTIO_META_DNS_CAPTURE: "true"}'}
    init, proxy = injected(config, InjectSettings())
    assert init["args"][-1] == "--redirect-dns"
    assert ENV in proxy["env"]


def test_mesh_default_config_turns_it_on_and_a_pod_can_turn_it_off() -> None:
    mesh = {"defaultConfig": {"proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true"}}}
    settings = apply_mesh_config(InjectSettings(), mesh, "mesh.yaml")
    init, proxy = injected({}, settings)
    assert "--redirect-dns" in init["args"] and ENV in proxy["env"]
    off = {"proxy.istio.io/config": 'proxyMetadata: {ISTIO_META_DNS_CAPTURE: "false"}'}
    init, proxy = injected(off, settings)
    assert "--redirect-dns" not in init["args"]
    assert {"name": "ISTIO_META_DNS_CAPTURE", "value": "false"} in proxy["env"]


def test_off_by_default() -> None:
    init, proxy = injected({}, InjectSettings())
    assert "--redirect-dns" not in init["args"]
    assert not any(e["name"] == "ISTIO_META_DNS_CAPTURE" for e in proxy["env"])


@pytest.mark.parametrize(("value", "on"), [("true", True), ("1", True), ("false", False), ("", False)])
def test_plait_iptables_reads_the_env_as_istio_iptables_does(value: str, on: bool, tmp_path, monkeypatch) -> None:
    """`plait iptables` reads ISTIO_META_DNS_CAPTURE as istio-iptables does (the injected env works alone)."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.96.0.10\n")
    monkeypatch.setenv("ISTIO_META_DNS_CAPTURE", value)
    result = CliRunner().invoke(app, ["iptables", "-n", "--resolv-conf", str(resolv)])
    assert result.exit_code == 0, result.output
    assert ("--to-ports 15053" in result.stdout) is on
