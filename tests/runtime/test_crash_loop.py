"""Which pods `plait up` reports as crash-looping, and what it shows of them. Pure: no processes."""

from __future__ import annotations

from pathlib import Path

from plait.cli.local import crash_report
from plait.runtime.local import CRASH_LOOP_RESTARTS, LOG_TAIL_LINES, Pod, crash_looping, log_tail


def pod(name: str, restarts: int, log: str = "") -> Pod:
    return Pod(
        name=name,
        namespace="default",
        deployment=name,
        labels={},
        service_account="default",
        ip="127.1.0.2",
        app_ip="127.2.0.2",
        admin_port=1,
        status_port=2,
        command=["app"],
        env={},
        ports={},
        restarts=restarts,
        log=log,
    )


def test_only_pods_restarted_often_and_not_ready_are_crash_looping() -> None:
    pods = [
        pod("fresh", 0),
        pod("flaky", CRASH_LOOP_RESTARTS - 1),
        pod("looping", CRASH_LOOP_RESTARTS),
        pod("recovered", CRASH_LOOP_RESTARTS + 2),
    ]
    assert [p.name for p in crash_looping(pods, ready={"default/recovered"})] == ["looping"]


def test_the_report_names_the_pod_its_restarts_and_the_end_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "web-0.log"
    lines = [f"[agent] line {i}" for i in range(40)] + ["[envoy] noise", "Traceback: no database", ""]
    log.write_text("\n".join(lines))
    tail = log_tail(str(log))
    assert len(tail) == LOG_TAIL_LINES and tail[-1] == "Traceback: no database"
    assert not any(line.startswith("[envoy]") for line in tail)
    report = crash_report(pod("web-0", 4, str(log)))
    assert report.startswith("pod default/web-0 keeps crashing: restarted 4 times without becoming ready")
    assert "  | Traceback: no database" in report and str(log) in report


def test_a_missing_log_is_said_to_be_empty() -> None:
    assert "(its log is empty)" in crash_report(pod("web-0", 3, "/nonexistent/web-0.log"))
