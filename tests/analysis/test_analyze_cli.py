"""``plait analyze`` on files (--use-kube=false): istioctl's lines, formats, namespace selection and
exit codes; the cluster case is in test_analyze_cluster.py."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from plait.cli.main import app

runner = CliRunner()

MESH = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v9}}]
"""
OTHER_NAMESPACE = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: team}
spec:
  hosts: [ratings]
  gateways: [missing]
  http:
  - route: [{destination: {host: ratings.team.svc.cluster.local}}]
"""
VS_LINE = (
    "Error [IST0101] (VirtualService default/reviews {file}) Referenced host+subset in destinationrule not found: "
    '"reviews+v9"'
)


def test_files_only_prints_istioctls_lines_and_exits_79_on_errors(tmp_path):
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(MESH)
    result = runner.invoke(app, ["analyze", "--use-kube=false", "-f", str(mesh)])
    assert result.exit_code == 79, result.output
    assert result.stdout.splitlines() == [
        VS_LINE.format(file=mesh),
        f"Error [IST0173] (DestinationRule default/reviews {mesh}) The Subset v1 defined in the DestinationRule does "
        "not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
    ]
    assert "Analyzers found issues when analyzing all namespaces." in result.stderr


def test_thresholds_namespaces_and_formats(tmp_path):
    (tmp_path / "mesh.yaml").write_text(MESH)
    (tmp_path / "team.yaml").write_text(OTHER_NAMESPACE)
    base = ["analyze", "--use-kube=false", str(tmp_path)]  # a directory, read recursively

    result = runner.invoke(app, [*base, "-n", "team", "-o", "json"])
    assert result.exit_code == 79
    messages = json.loads(result.stdout)
    assert [(m["code"], m["origin"], m["message"]) for m in messages] == [
        ("IST0101", "VirtualService team/ratings", 'Referenced gateway not found: "missing"'),
        ("IST0101", "VirtualService team/ratings", 'Referenced host not found: "ratings.team.svc.cluster.local"'),
    ]
    assert messages[0]["level"] == "Error" and messages[0]["reference"] == str(tmp_path / "team.yaml")
    assert messages[0]["documentationUrl"].endswith("/ist0101/?ref=plait-analyze")

    result = runner.invoke(
        app, [*base, "-A", "-o", "yaml", "--failure-threshold", "Error", "--output-threshold", "Error"]
    )
    assert result.exit_code == 79
    assert {m["origin"] for m in yaml.safe_load(result.stdout)} == {
        "VirtualService default/reviews",
        "VirtualService team/ratings",
        "DestinationRule default/reviews",
    }


def test_no_issues_exits_0_and_says_so(tmp_path):
    fine = tmp_path / "fine.yaml"
    fine.write_text(MESH.replace("subset: v9", "subset: v1").split("---")[0])  # only the Service, named http
    result = runner.invoke(app, ["analyze", "--use-kube=false", str(fine)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "\u2714 No validation issues found when analyzing all namespaces." in result.stderr


def test_a_file_that_is_not_yaml_exits_65_and_errors_below_the_threshold_exit_0(tmp_path):
    (tmp_path / "broken.yaml").write_text("kind: [unclosed\n")
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: plain}\n")
    result = runner.invoke(app, ["analyze", "--use-kube=false", str(tmp_path)])
    assert result.exit_code == 65
    assert "broken.yaml" in result.stderr
    assert result.stdout.startswith("Info [IST0102] (Namespace plain ")


def test_usage_errors(tmp_path):
    result = runner.invoke(app, ["analyze", "--use-kube=false"])
    assert result.exit_code == 64 and "nothing to analyze" in result.stderr
    result = runner.invoke(app, ["analyze", "--use-kube=maybe", str(tmp_path)])
    assert result.exit_code == 2 and "expected true or false" in result.output
    result = runner.invoke(app, ["analyze", "--use-kube=false", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "no such file or directory" in result.stderr
