"""The agent's pure rules: readiness from Envoy's stats, restart backoff, app environment, flags."""

from __future__ import annotations

import pytest
import typer

from plait.agent.admin import parse_stats
from plait.agent.app import app_environment
from plait.agent.bootstrap import proxy_for_mode
from plait.agent.readiness import Readiness, readiness_of
from plait.agent.supervisor import Backoff, envoy_argv
from plait.cli.agent import parse_labels
from plait.host.processes import describe_exit, exit_status

CONFIG = {"cluster_manager.cds.update_success": 1, "listener_manager.lds.update_success": 1}


def test_ready_once_live_with_clusters_and_listeners() -> None:
    assert readiness_of("LIVE", CONFIG) == Readiness(True, "ready")


@pytest.mark.parametrize("missing", ["cluster_manager.cds.update_success", "listener_manager.lds.update_success"])
def test_not_ready_without_a_first_cds_and_lds(missing: str) -> None:
    readiness = readiness_of("LIVE", {**CONFIG, missing: 0, "cluster_manager.cds.update_rejected": 2})
    assert not readiness.ready
    assert "config not received from the control plane" in readiness.reason
    assert "2 rejected" in readiness.reason


@pytest.mark.parametrize("state", ["PRE_INITIALIZING", "INITIALIZING", "DRAINING"])
def test_not_ready_unless_live(state: str) -> None:
    assert readiness_of(state, CONFIG) == Readiness(
        False, f"Envoy is not live ({state}): its config is still warming up"
    )


def test_parse_stats_keeps_integers_and_skips_histograms() -> None:
    text = "server.state: 0\ncluster_manager.cds.update_success: 3\nhttp.x.rq_time: P0(nan,1) P25(nan,2)\n"
    assert parse_stats(text) == {"server.state": 0, "cluster_manager.cds.update_success": 3}


def test_backoff_doubles_to_a_cap_and_starts_over_after_a_long_run() -> None:
    backoff = Backoff(initial=0.2, maximum=1.0, reset_after=10.0)
    assert [backoff.delay(ran_for=0.1) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff.delay(ran_for=60.0) == 0.2


def test_envoy_argv_disables_hot_restart_and_drains_like_istio() -> None:
    argv = envoy_argv(
        "/bin/envoy",
        "/state/envoy-bootstrap.json",
        concurrency=2,
        log_level="info",  # type: ignore[arg-type]
        drain_seconds=0.3,
    )
    assert "--disable-hot-restart" in argv
    assert argv[argv.index("--concurrency") + 1] == "2"
    assert argv[argv.index("--drain-time-s") + 1] == "1"  # whole seconds, at least one
    assert argv[argv.index("--drain-strategy") + 1] == "immediate"


def test_explicit_proxy_app_is_pointed_at_its_sidecar() -> None:
    proxy = proxy_for_mode("proxy", name="a", namespace="default", ip="127.0.10.1")
    env = app_environment(proxy, {"PATH": "/bin"})
    assert env["HTTP_PROXY"] == env["http_proxy"] == "http://127.0.10.1:15001"
    assert "localhost" in env["NO_PROXY"] and env["PATH"] == "/bin"


def test_a_proxy_the_caller_chose_is_kept() -> None:
    proxy = proxy_for_mode("proxy", name="a", namespace="default", ip="127.0.10.1")
    assert app_environment(proxy, {"http_proxy": "http://elsewhere:3128"}) == {"http_proxy": "http://elsewhere:3128"}


@pytest.mark.parametrize("mode", ["capture", "gateway"])
def test_other_modes_leave_the_environment_alone(mode: str) -> None:
    proxy = proxy_for_mode(mode, name="a", namespace="default", ip="127.0.10.1")  # type: ignore[arg-type]
    assert app_environment(proxy, {"PATH": "/bin"}) == {"PATH": "/bin"}


def test_exit_status_is_the_shells() -> None:
    assert (exit_status(0), exit_status(7), exit_status(-15), exit_status(-9)) == (0, 7, 143, 137)
    assert (describe_exit(7), describe_exit(-9)) == ("exited with status 7", "was killed by SIGKILL")


def test_labels_flag() -> None:
    assert parse_labels("app=reviews, version=v1") == {"app": "reviews", "version": "v1"}
    assert parse_labels("") == {}
    with pytest.raises(typer.BadParameter, match="KEY=VALUE"):
        parse_labels("app")
