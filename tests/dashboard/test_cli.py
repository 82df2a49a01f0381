"""`plait dashboard` (and `plait dashboard kiali`, as istioctl's) from a local mesh's state, without a mesh:
the URL printed, the errors when there is no mesh or the mesh has no dashboard (`plait dashboard prometheus`
beside it: tests/cli/test_prometheus_cli.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from plait.cli import dashboard
from plait.cli.main import app
from plait.runtime.local import State

runner = CliRunner()


def _state(tmp_path: Path, dashboard: str, prometheus: str = "") -> Path:
    state_dir = tmp_path / ".plait"
    state_dir.mkdir()
    State(
        mode="proxy", state_dir=str(state_dir), supervisor_pid=os.getpid(), dashboard=dashboard, prometheus=prometheus
    ).save()
    return state_dir


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """The URLs `plait dashboard` would open in a browser."""
    urls: list[str] = []
    monkeypatch.setattr(dashboard, "open_in_browser", urls.append)
    return urls


@pytest.mark.parametrize("args", [["dashboard"], ["dashboard", "kiali"]])
@pytest.mark.parametrize("no_browser", ["--no-browser", "--browser=false", "--browser=0", "--browser=False"])
def test_prints_the_url(tmp_path: Path, args: list[str], no_browser: str, opened: list[str]) -> None:
    state_dir = _state(tmp_path, "http://127.0.0.1:20001")
    result = runner.invoke(app, [*args, no_browser, "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "http://127.0.0.1:20001"
    assert opened == []


@pytest.mark.parametrize("browser", [[], ["--browser"], ["--browser=true"], ["--browser=t"]])
def test_opens_it_in_a_browser(tmp_path: Path, browser: list[str], opened: list[str]) -> None:
    state_dir = _state(tmp_path, "http://127.0.0.1:20001")
    result = runner.invoke(app, ["dashboard", *browser, "--state-dir", str(state_dir)])
    assert result.exit_code == 0, result.output
    assert opened == ["http://127.0.0.1:20001"]


def test_prometheus_too(tmp_path: Path, opened: list[str]) -> None:
    state_dir = _state(tmp_path, "http://127.0.0.1:20001", prometheus="http://127.0.0.1:9090")
    result = runner.invoke(app, ["dashboard", "prometheus", "--browser=false", "--state-dir", str(state_dir)])
    assert (result.exit_code, result.output.strip(), opened) == (0, "http://127.0.0.1:9090", [])


def test_browser_takes_true_or_false(tmp_path: Path, opened: list[str]) -> None:
    result = runner.invoke(app, ["dashboard", "--browser=no", "--state-dir", str(_state(tmp_path, "http://x"))])
    assert result.exit_code == 2 and "Invalid value for --browser: 'no': expected true or false" in result.output
    assert opened == []


def test_only_options_before_a_double_dash_are_rewritten() -> None:
    assert dashboard.istio_bool_flags(["--browser=false", "--port=1", "--", "--browser=false"]) == [
        "--no-browser",
        "--port=1",
        "--",
        "--browser=false",
    ]


def test_a_mesh_from_an_older_plait_has_none(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dashboard", "--no-browser", "--state-dir", str(_state(tmp_path, ""))])
    assert result.exit_code == 1 and "without the dashboard: restart it" in result.output


def test_without_a_mesh(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    result = runner.invoke(app, ["dashboard", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no mesh running" in result.output
