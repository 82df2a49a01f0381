"""Kubernetes manifests mean what Kubernetes says: ``$(VAR)`` expansion (the kubelet's rules), env
``valueFrom.fieldRef``, and the errors for what the local mesh cannot give. Pure: no processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from plait.runtime.addresses import Addresses
from plait.runtime.expansion import expand
from plait.runtime.local import pods_for
from plait.runtime.manifests import load_manifests

VARIABLES = {"A": "a", "EMPTY": "", "REF": "$(A)"}


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("$(A)", "a"),
        ("--bind=$(A):80", "--bind=a:80"),
        ("$(A)$(A)", "aa"),
        ("x$(EMPTY)y", "xy"),
        ("$(UNKNOWN)", "$(UNKNOWN)"),  # undefined: kept literally
        ("$$(A)", "$(A)"),  # escaped
        ("$$$(A)", "$a"),  # an escaped $, then a reference
        ("$$", "$"),
        ("$$$", "$$"),
        ("$A", "$A"),  # shell syntax passes through
        ("${A}", "${A}"),
        ("$", "$"),
        ("a$", "a$"),
        ("$(A", "$(A"),  # unclosed
        ("$()", "$()"),
        ("$(REF)", "$(A)"),  # one pass: a value is not expanded again
        ("$(A$(A))", "$(A$(A))"),  # the name runs to the first ')'
    ],
)
def test_expansion_follows_the_kubelet(text: str, expanded: str) -> None:
    assert expand(text, VARIABLES) == expanded


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web, version: v2}}
    spec:
      serviceAccountName: web-sa
      containers:
      - name: web
        command: ["server", "--bind", "$(BIND_ADDRESS)", "--port=$(PORT)"]
        args: ["--name", "$(MY_NAME)", "--greeting", "$(GREETING)", "$$(MY_NAME)", "$(NOT_SET)"]
        ports: [{containerPort: 9080}]
        env:
        - {name: MY_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: MY_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
        - {name: MY_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
        - {name: MY_SA, valueFrom: {fieldRef: {apiVersion: v1, fieldPath: spec.serviceAccountName}}}
        - {name: MY_VERSION, valueFrom: {fieldRef: {fieldPath: "metadata.labels['version']"}}}
        - {name: GREETING, value: "hello $(MY_NAME) in $(MY_NS), later $(LATER)"}
        - {name: LATER, value: "late"}
"""


def load(tmp_path: Path, text: str):
    (tmp_path / "app.yaml").write_text(text)
    return load_manifests([tmp_path / "app.yaml"])


def test_command_and_args_expand_from_the_container_environment(tmp_path: Path) -> None:
    manifests = load(tmp_path, DEPLOYMENT)
    assert manifests.errors == []
    [pod] = pods_for(manifests.deployments[0], Addresses("proxy"), "proxy")
    assert pod.command == [
        "server",
        "--bind",
        pod.app_ip,
        "--port=9080",
        "--name",
        "web-0",
        "--greeting",
        "hello web-0 in shop, later $(LATER)",
        "$(MY_NAME)",
        "$(NOT_SET)",
    ]
    assert (pod.env["MY_IP"], pod.env["MY_SA"], pod.env["MY_VERSION"]) == (pod.app_ip, "web-sa", "v2")
    assert pod.env["BIND_ADDRESS"] == pod.app_ip and pod.env["POD_NAME"] == "web-0"


def test_capture_mode_pod_ip_is_the_pods_own_address(tmp_path: Path) -> None:
    [pod] = pods_for(load(tmp_path, DEPLOYMENT).deployments[0], Addresses("capture"), "capture")
    assert pod.env["MY_IP"] == pod.ip
    assert pod.command[:3] == ["server", "--bind", "0.0.0.0"]


@pytest.mark.parametrize(
    ("env", "path", "message"),
    [
        (
            "{name: X, valueFrom: {secretKeyRef: {name: s, key: k}}}",
            "env[0].valueFrom",
            "valueFrom.secretKeyRef is not supported by plait's local mesh yet",
        ),
        (
            "{name: X, valueFrom: {configMapKeyRef: {name: c, key: k}}}",
            "env[0].valueFrom",
            "valueFrom.configMapKeyRef is not supported",
        ),
        (
            "{name: X, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}",
            "env[0].valueFrom.fieldRef.fieldPath",
            "'spec.nodeName' is not a field a local pod has",
        ),
        (
            "{name: X, value: v, valueFrom: {fieldRef: {fieldPath: metadata.name}}}",
            "env[0]",
            "may not have both 'value' and 'valueFrom'",
        ),
    ],
)
def test_env_the_local_mesh_cannot_fill_is_refused_with_its_path(
    tmp_path: Path, env: str, path: str, message: str
) -> None:
    manifests = load(
        tmp_path,
        f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  template:
    spec:
      containers:
      - {{name: web, command: [server], env: [{env}]}}
""",
    )
    [problem] = manifests.errors
    assert problem.path == f"spec.template.spec.containers[0].{path}"
    assert message in problem.message and problem.name == "web" and problem.file.endswith("app.yaml")
    assert manifests.deployments == []
