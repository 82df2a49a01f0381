"""Choosing the cluster: --kubeconfig, $KUBECONFIG, and what an unusable kubeconfig says."""

from __future__ import annotations

import asyncio

import pytest
from typer.testing import CliRunner

from plait.cli.main import app
from plait.sources.kubernetes import KubeConfigError, load_configuration

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: abc}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
"""


def test_the_flag_wins_over_the_environment(tmp_path, monkeypatch):
    given, other = tmp_path / "given", tmp_path / "other"
    given.write_text(KUBECONFIG)
    other.write_text(KUBECONFIG.replace("6443", "7443"))
    monkeypatch.setenv("KUBECONFIG", str(other))
    assert asyncio.run(load_configuration(str(given))).host == "https://127.0.0.1:6443"
    assert asyncio.run(load_configuration()).host == "https://127.0.0.1:7443"


def test_an_unusable_kubeconfig_is_named(tmp_path):
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(KubeConfigError, match=f"cannot use {broken}"):
        asyncio.run(load_configuration(str(broken)))


def test_the_cli_says_which_kubeconfig_it_cannot_use(tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "control-plane",
            "--kubeconfig",
            str(tmp_path / "missing"),
            "--state-dir",
            str(tmp_path / "state"),
            "--http-port",
            "0",
        ],
    )
    assert result.exit_code == 1
    assert f"Kubernetes: cannot use {tmp_path / 'missing'}" in " ".join(result.output.split())
