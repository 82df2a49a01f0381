"""`plait dashboard` (and `plait dashboard kiali`, as istioctl's) from a local mesh's state, without a mesh:
the URL printed, the errors when there is no mesh or the mesh has no dashboard (`plait dashboard prometheus`
beside it: tests/cli/test_prometheus_cli.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plait.cli.main import app
from plait.runtime.local import State

runner = CliRunner()


def _state(tmp_path: Path, dashboard: str) -> Path:
    state_dir = tmp_path / ".plait"
    state_dir.mkdir()
    State(mode="proxy", state_dir=str(state_dir), supervisor_pid=os.getpid(), dashboard=dashboard).save()
    return state_dir


@pytest.mark.parametrize("args", [["dashboard"], ["dashboard", "kiali"]])
def test_prints_the_url(tmp_path: Path, args: list[str]) -> None:
    state_dir = _state(tmp_path, "http://127.0.0.1:20001")
    result = runner.invoke(app, [*args, "--no-browser", "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "http://127.0.0.1:20001"


def test_a_mesh_from_an_older_plait_has_none(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dashboard", "--no-browser", "--state-dir", str(_state(tmp_path, ""))])
    assert result.exit_code == 1 and "without the dashboard: restart it" in result.output


def test_without_a_mesh(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    result = runner.invoke(app, ["dashboard", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no mesh running" in result.output
