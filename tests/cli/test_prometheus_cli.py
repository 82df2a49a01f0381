"""The CLI around the local mesh's Prometheus, without a mesh: what `plait up` says when Prometheus is
not installed, `plait dashboard prometheus` from a mesh's state, and `plait stat`'s refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plait.cli import local
from plait.cli.main import app
from plait.runtime.local import State

runner = CliRunner()


def _state(tmp_path: Path, prometheus: str = "") -> Path:
    state_dir = tmp_path / ".plait"
    state_dir.mkdir()
    # this test process stands for the mesh's supervisor: alive
    State(mode="proxy", state_dir=str(state_dir), supervisor_pid=os.getpid(), prometheus=prometheus).save()
    return state_dir


def test_without_the_binary_up_says_how_to_install_it(monkeypatch, capsys) -> None:
    monkeypatch.setattr(local.shutil, "which", lambda name: None)
    assert local.prometheus_port_or_none(9090) is None
    assert "Prometheus is not installed: no metrics store (apt-get install prometheus to have one)" in (
        capsys.readouterr().out.replace("\n", " ")
    )


def test_port_zero_means_no_prometheus_and_a_port_means_one(monkeypatch) -> None:
    monkeypatch.setattr(local.shutil, "which", lambda name: "/usr/bin/prometheus")
    assert local.prometheus_port_or_none(0) is None
    assert local.prometheus_port_or_none(19090) == 19090


def test_dashboard_prints_the_url(tmp_path: Path) -> None:
    state_dir = _state(tmp_path, "http://127.0.0.1:9090")
    result = runner.invoke(app, ["dashboard", "prometheus", "--no-browser", "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "http://127.0.0.1:9090"


def test_dashboard_without_prometheus_says_how_to_get_one(tmp_path: Path) -> None:
    state_dir = _state(tmp_path)
    result = runner.invoke(app, ["dashboard", "prometheus", "--no-browser", "--state-dir", str(state_dir)])
    assert result.exit_code == 1
    assert "runs no Prometheus" in result.output and "apt-get install prometheus" in result.output


def test_dashboard_without_a_mesh(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dashboard", "prometheus", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no mesh running" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stat", "cronjob"], "unknown resource type 'cronjob': expected deploy, svc or po"),
        (["stat", "po", "--from", "deploy/web"], "--from works with deploy and svc"),
        (["stat", "deploy", "-t", "soon"], "--time-window"),
        (["edges", "svc"], "plait edges lists deploy or po edges"),
    ],
)
def test_stat_refuses_what_it_cannot_answer(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--state-dir", str(_state(tmp_path))])
    assert result.exit_code == 2, result.output
    assert message in result.output.replace("\n", " ")


def test_stat_without_a_mesh(tmp_path: Path) -> None:
    result = runner.invoke(app, ["stat", "deploy", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no mesh running" in result.output
