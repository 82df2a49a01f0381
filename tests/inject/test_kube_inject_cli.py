"""``plait kube-inject``: the same builder over a file or stdin; errors name the file and the document."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from plait.cli.main import app
from plait.inject import InjectSettings, kube_inject

TESTDATA = Path(__file__).parent / "testdata"
runner = CliRunner()


def test_prints_the_same_documents_as_the_builder() -> None:
    source = TESTDATA / "02-deployment.input.yaml"
    result = runner.invoke(app, ["kube-inject", "-f", str(source)])
    assert result.exit_code == 0, result.output
    expected = kube_inject(yaml.safe_load_all(source.read_text()), InjectSettings()).documents
    assert list(yaml.safe_load_all(result.stdout)) == expected


def test_reads_stdin_writes_a_file_and_names_skipped_workloads(tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    source = (TESTDATA / "09-opt-out.input.yaml").read_text()
    result = runner.invoke(app, ["kube-inject", "-f", "-", "-o", str(out)], input=source)
    assert result.exit_code == 0, result.output
    assert list(yaml.safe_load_all(out.read_text())) == list(yaml.safe_load_all(source))
    assert "Pod host-network (document 3): the pod uses the host's network" in result.stderr


def test_flags_reach_the_sidecar() -> None:
    result = runner.invoke(
        app,
        [
            "kube-inject",
            "-f",
            str(TESTDATA / "01-plain-pod.input.yaml"),
            "--revision",
            "canary",
            "--image",
            "reg/proxy:2",
            "--log-level",
            "debug",
            "--hold-application-until-proxy-starts",
        ],
    )
    assert result.exit_code == 0, result.output
    [pod] = yaml.safe_load_all(result.stdout)
    proxy = pod["spec"]["containers"][0]
    assert proxy["name"] == "istio-proxy" and proxy["image"] == "reg/proxy:2"
    assert proxy["lifecycle"] == {"postStart": {"exec": {"command": ["plait", "agent-wait"]}}}
    args = proxy["args"]
    assert args[args.index("--control-plane") + 1] == "istiod-canary.istio-system.svc:15012"
    assert args[args.index("--log-level") + 1] == "debug"
    assert '"revision":"canary"' in pod["metadata"]["annotations"]["sidecar.istio.io/status"]


def test_bad_annotation_names_file_document_and_object(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        "kind: Service\nmetadata: {name: s}\n---\napiVersion: apps/v1\nkind: Deployment\n"
        "metadata: {name: web, namespace: shop}\nspec:\n  template:\n    metadata:\n"
        "      annotations: {sidecar.istio.io/logLevel: loud}\n"
        "    spec: {containers: [{name: web, image: 'web:1'}]}\n"
    )
    result = runner.invoke(app, ["kube-inject", "-f", str(manifest)])
    assert result.exit_code == 1
    assert (
        f"error: {manifest}: document 2: Deployment shop/web: annotation sidecar.istio.io/logLevel: "
        "'loud' is not one of"
    ) in result.stderr
    assert result.stdout == ""


def test_unreadable_and_invalid_yaml_are_named(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["kube-inject", "-f", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 1 and f"{tmp_path / 'nope.yaml'}: cannot read" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [Pod\n")
    invalid = runner.invoke(app, ["kube-inject", "-f", str(broken)])
    assert invalid.exit_code == 1 and f"{broken}: not valid YAML" in invalid.stderr


def test_mesh_config_file_sets_the_mesh_defaults(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n"
        "  mesh: |\n    trustDomain: example.org\n    enableTracing: false\n    defaultConfig:\n"
        "      discoveryAddress: istiod.mesh.svc:15012\n      holdApplicationUntilProxyStarts: true\n"
        "      concurrency: 3\n      proxyMetadata: {ISTIO_META_DNS_CAPTURE: 'true'}\n"
        "      tracing: {sampling: 1}\n"
    )
    result = runner.invoke(
        app, ["kube-inject", "-f", str(TESTDATA / "01-plain-pod.input.yaml"), "--meshConfigFile", str(mesh)]
    )
    assert result.exit_code == 0, result.output
    [pod] = yaml.safe_load_all(result.stdout)
    proxy = pod["spec"]["containers"][0]  # held: first
    args = proxy["args"]
    assert args[args.index("--control-plane") + 1] == "istiod.mesh.svc:15012"
    assert args[args.index("--trust-domain") + 1] == "example.org"
    assert args[args.index("--concurrency") + 1] == "3"
    assert {"name": "ISTIO_META_DNS_CAPTURE", "value": "true"} in proxy["env"]


def test_bad_mesh_config_names_the_file_and_field(tmp_path: Path) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text("defaultConfig:\n  holdApplicationUntilProxyStart: true\n")
    result = runner.invoke(
        app, ["kube-inject", "-f", str(TESTDATA / "01-plain-pod.input.yaml"), "--meshConfigFile", str(mesh)]
    )
    assert result.exit_code == 1
    assert f"{mesh}: defaultConfig: unknown ProxyConfig field 'holdApplicationUntilProxyStart'" in result.stderr
