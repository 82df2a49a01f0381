"""`plait explain` and `plait demo bookinfo`, run as a user runs them."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from plait.cli.main import app

BOOKINFO = Path(__file__).parents[2] / "src" / "plait" / "demo" / "bookinfo"
runner = CliRunner()


def explain(*args: str, sample: str = "virtual-service-reviews-jason-v2-v3.yaml"):
    files = ["services.yaml", "networking/bookinfo-gateway.yaml", "networking/destination-rule-all.yaml",
             f"networking/{sample}"]
    return runner.invoke(app, ["explain", *[a for f in files for a in ("-f", str(BOOKINFO / f))], *args])


def test_explain_names_the_listener_route_cluster_and_endpoint() -> None:
    result = explain("--from", "productpage-v1", "--url", "http://reviews:9080/reviews/0", "-H", "end-user: jason")
    assert result.exit_code == 0, result.output
    for expected in ("0.0.0.0_9080", "reviews.default.svc.cluster.local:9080", "VirtualService default/reviews",
                     "http[0].match[0]", "outbound|9080|v2|reviews.default.svc.cluster.local",
                     "10.244.0.14:9080", "default/reviews-v2", "version=v2", "retries"):
        assert expected in result.output, expected


def test_explain_without_the_header_shows_the_skipped_rule_and_v3() -> None:
    result = explain("--from", "productpage-v1", "--url", "http://reviews:9080/reviews/0")
    assert result.exit_code == 0, result.output
    assert "outbound|9080|v3|reviews.default.svc.cluster.local" in result.output
    assert "skipped" in result.output and "end-user" in result.output


def test_explain_shows_weights_and_faults() -> None:
    split = explain("--from", "productpage-v1", "--url", "http://reviews:9080/",
                    sample="virtual-service-reviews-80-20.yaml")
    assert "outbound|9080|v1|reviews.default.svc.cluster.local  80%" in split.output
    assert "outbound|9080|v2|reviews.default.svc.cluster.local  20%" in split.output
    delay = explain("--from", "reviews-v2", "--url", "http://ratings:9080/ratings/0", "-H", "end-user: jason",
                    sample="virtual-service-ratings-test-delay.yaml")
    assert "delay 7s (100%)" in delay.output and "VirtualService default/ratings" in delay.output


def test_explain_a_gateway_request_that_matches_nothing() -> None:
    result = explain("--from", "istio-ingressgateway", "--url", "http://bookinfo.example.com/unknown")
    assert result.exit_code == 0, result.output
    assert "404 no route (NR)" in result.output and "path is not '/productpage'" in result.output


def test_explain_json() -> None:
    result = explain("--from", "productpage-v1", "--url", "http://reviews:9080/", "-o", "json", "--mode", "proxy")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["listener"] == "explicit_proxy" and data["virtual_service"] == "default/reviews"
    assert data["summary"] == "outbound|9080|v3|reviews.default.svc.cluster.local"
    assert data["clusters"][0]["endpoints"][0]["workload"] == "default/reviews-v3"


def test_unknown_workload_exits_1_and_lists_the_known_ones() -> None:
    result = explain("--from", "nobody", "--url", "http://reviews:9080/")
    assert result.exit_code == 1
    assert "no workload 'nobody'" in result.output and "default/productpage-v1" in result.output


def test_bad_url_and_bad_header_exit_1_with_a_reason() -> None:
    url = explain("--from", "productpage-v1", "--url", "http://reviews:port/")
    assert url.exit_code == 1 and "port" in url.output
    header = explain("--from", "productpage-v1", "--url", "http://reviews:9080/", "-H", "no-colon")
    assert header.exit_code == 1 and "name: value" in header.output


def test_demo_bookinfo_explains_every_task() -> None:
    started = time.monotonic()
    result = runner.invoke(app, ["demo", "bookinfo", "--explain"])
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    for expected in ("No VirtualService", "virtual-service-all-v1.yaml", "virtual-service-reviews-test-v2.yaml",
                     "virtual-service-reviews-jason-v2-v3.yaml", "virtual-service-reviews-80-20.yaml",
                     "virtual-service-ratings-test-delay.yaml", "virtual-service-ratings-test-abort.yaml",
                     "reviews v1, v2, v3", "reviews v1 80%, v2 20%", "delay 7s (100%)", "abort 500 (100%)",
                     "bookinfo http[0].match[0]", "404 no route (NR)"):
        assert expected in result.output, expected
    last = result.output.strip().splitlines()[-1]
    assert "plait explain" in last and "--from productpage-v1" in last and "end-user: jason" in last
    assert elapsed < 10, f"the demo took {elapsed:.1f}s"


def test_demo_tables_say_where_jason_lands() -> None:
    output = runner.invoke(app, ["demo", "bookinfo", "--explain"]).output
    jason_v2_v3 = output.split("virtual-service-reviews-jason-v2-v3.yaml", 1)[1].split("5. ", 1)[0]
    rows = [line for line in jason_v2_v3.splitlines() if line.startswith("productpage → reviews")]
    assert "reviews v3" in rows[0] and "jason" in rows[1] and "reviews v2" in rows[1]


def test_the_installed_command_runs_the_demo_and_its_hint() -> None:
    plait = Path(sys.executable).parent / "plait"
    repo = BOOKINFO.parents[3]
    demo = subprocess.run([str(plait), "demo", "bookinfo", "--explain"], capture_output=True, text=True, timeout=120,
                          check=False, cwd=repo)
    assert demo.returncode == 0, demo.stderr
    hint = demo.stdout.strip().splitlines()[-1].strip()
    assert hint.startswith("plait explain ")
    again = subprocess.run([str(plait), *shlex.split(hint)[1:]], capture_output=True, text=True, timeout=120,
                           check=False, cwd=repo)
    assert again.returncode == 0, again.stderr
    assert "outbound|9080|v2|reviews.default.svc.cluster.local" in again.stdout


def doc_examples() -> list[tuple[list[str], str]]:
    """(arguments, shown output) of each complete `$ plait explain` example in docs/explain.md."""
    doc = (BOOKINFO.parents[3] / "docs" / "explain.md").read_text()
    examples = []
    for block in doc.split("```\n$ plait explain ")[1:]:
        text = "plait explain " + block.split("```", 1)[0]
        if "…" in text:
            continue  # abridged
        command, _, shown = text.partition("\n")
        while command.endswith("\\"):
            more, _, shown = shown.partition("\n")
            command = command[:-1] + more
        args = shlex.split(command.replace("src/plait/demo/bookinfo", str(BOOKINFO)))[1:]
        examples.append((args, shown))
    return examples


def test_the_docs_show_real_output() -> None:
    examples = doc_examples()
    assert len(examples) == 2
    for args, shown in examples:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert [line.rstrip() for line in result.output.strip().splitlines()] == shown.strip().splitlines()
