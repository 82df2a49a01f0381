"""meshConfig.accessLogFile / accessLogEncoding / accessLogFormat: Istio's ConfigMap read and checked,
Istio's default formats, and where translation puts the file logger (a real Envoy writes it:
tests/telemetry/test_metrics_live.py)."""

from __future__ import annotations

import json

import pytest

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.telemetry import logs
from plait.xds.generator import generate

SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 10.0.0.3, labels: {app: reviews, version: v1}}
"""


def mesh_map(mesh: str, name: str = "istio", namespace: str = "istio-system") -> str:
    body = "\n".join(f"    {line}" for line in mesh.strip().splitlines())
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {namespace}}}\ndata:\n  mesh: |\n{body}\n"


def file_loggers(text: str) -> list[dict]:
    snapshot = MeshSnapshot(load_text(f"{text}\n---\n{SERVICES}").raise_for_errors())
    resources = generate(snapshot, Proxy.from_workload_entry(snapshot.workload("reviews-v1")))
    return [
        logger["typed_config"]
        for listener in resources.listeners.values()
        for chain in listener["filter_chains"]
        for f in chain["filters"]
        for logger in f["typed_config"].get("access_log", [])
        if logger["name"] == logs.FILE_LOGGER
    ]


def test_no_access_log_file_no_access_log() -> None:
    assert file_loggers(mesh_map("accessLogEncoding: TEXT")) == []
    assert file_loggers("") == []


def test_istios_default_text_format_on_every_chain() -> None:
    loggers = file_loggers(mesh_map("accessLogFile: /dev/stdout"))
    assert loggers and all(c["path"] == "/dev/stdout" for c in loggers)
    assert {c["log_format"]["text_format_source"]["inline_string"] for c in loggers} == {logs.ISTIO_TEXT_FORMAT}
    assert logs.ISTIO_TEXT_FORMAT.startswith('[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% ')
    assert logs.ISTIO_TEXT_FORMAT.endswith("%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n")


def test_a_text_format_of_ones_own_gets_istios_newline() -> None:
    [config, *_] = file_loggers(mesh_map("accessLogFile: /tmp/a.log\naccessLogFormat: '%RESPONSE_CODE% %DURATION%'"))
    assert config["log_format"]["text_format_source"]["inline_string"] == "%RESPONSE_CODE% %DURATION%\n"


def test_json_encoding_default_and_own_fields() -> None:
    [default, *_] = file_loggers(mesh_map("accessLogFile: /dev/stdout\naccessLogEncoding: JSON"))
    assert default["log_format"] == {"json_format": logs.ISTIO_JSON_FORMAT}
    own = json.dumps({"code": "%RESPONSE_CODE%", "who": "%DOWNSTREAM_PEER_URI_SAN%"})
    [config, *_] = file_loggers(
        mesh_map(f"accessLogFile: /dev/stdout\naccessLogEncoding: JSON\naccessLogFormat: '{own}'")
    )
    assert config["log_format"]["json_format"] == json.loads(own)


def test_only_the_root_namespaces_istio_config_map_is_the_mesh_config() -> None:
    assert file_loggers(mesh_map("accessLogFile: /dev/stdout", namespace="default")) == []
    assert file_loggers(mesh_map("accessLogFile: /dev/stdout", name="other")) == []


@pytest.mark.parametrize(
    ("mesh", "path", "expected"),
    [
        ("accessLogEncoding: XML", "data.mesh.accessLogEncoding", "'TEXT' or 'JSON'"),
        ("accessLogFile: [a]", "data.mesh.accessLogFile", "valid string"),
        ("accessLogEncoding: JSON\naccessLogFormat: 'not json'", "data.mesh.accessLogFormat", "JSON object"),
        (
            "accessLogEncoding: JSON\naccessLogFormat: '{\"a\": 1}'",
            "data.mesh.accessLogFormat",
            "JSON object of strings",
        ),
        ("[1, 2]", "data.mesh", "expected a MeshConfig"),
    ],
)
def test_a_bad_mesh_config_is_refused_naming_file_document_and_field(mesh: str, path: str, expected: str) -> None:
    result = load_text(mesh_map(mesh), "mesh.yaml")
    assert result.resources == []
    [problem] = result.problems
    assert (problem.file, problem.document, problem.kind, problem.name, problem.path) == (
        "mesh.yaml",
        0,
        "ConfigMap",
        "istio",
        path,
    )
    assert expected in problem.message, problem.message


def test_other_mesh_config_fields_are_accepted() -> None:
    text = mesh_map("accessLogFile: /dev/stdout\nenableTracing: true\ndefaultConfig: {concurrency: 2}")
    assert load_text(text).raise_for_errors()[0].spec.mesh_config().access_log_file == "/dev/stdout"


def telemetry(spec: str, name: str = "t", namespace: str = "istio-system") -> str:
    return f"apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {spec}\n"


def sides(*documents: str) -> dict[str, dict | None]:
    """The file logger of reviews-v1's client and server sides."""
    snapshot = MeshSnapshot(load_text("\n---\n".join([*documents, SERVICES])).raise_for_errors())
    proxy = Proxy.from_workload_entry(snapshot.workload("reviews-v1"))
    return {side: logs.proxy_access_log(snapshot, proxy, side) for side in ("CLIENT", "SERVER")}


def test_a_telemetry_turns_access_logs_on_with_a_cel_filter() -> None:
    found = sides(
        telemetry('{accessLogging: [{providers: [{name: envoy}], filter: {expression: "response.code >= 400"}}]}')
    )
    for logger in found.values():
        assert logger["typed_config"]["path"] == "/dev/stdout"  # Istio's built-in envoy provider
        assert logger["filter"]["extension_filter"]["typed_config"]["expression"] == "response.code >= 400"


def test_the_most_specific_telemetry_wins_and_modes_pick_a_side() -> None:
    root = telemetry("{accessLogging: [{disabled: true}]}")
    namespace = telemetry("{accessLogging: [{match: {mode: SERVER}}]}", namespace="default")
    workload = telemetry(
        "{selector: {matchLabels: {app: reviews}}, accessLogging: [{match: {mode: CLIENT}}]}", "w", "default"
    )
    assert sides(root) == {"CLIENT": None, "SERVER": None}
    found = sides(root, namespace)
    assert found["CLIENT"] is None and found["SERVER"] is not None
    found = sides(root, namespace, workload)
    assert found["CLIENT"] is not None and found["SERVER"] is None
    other = workload.replace("app: reviews", "app: ratings")
    assert sides(root, namespace, other)["SERVER"] is not None  # selects another workload: the namespace's applies


def test_a_disabled_telemetry_turns_the_mesh_config_log_off() -> None:
    found = sides(mesh_map("accessLogFile: /dev/stdout"), telemetry("{accessLogging: [{disabled: true}]}"))
    assert found == {"CLIENT": None, "SERVER": None}


@pytest.mark.parametrize(
    ("spec", "path", "expected"),
    [
        (
            "{accessLogging: [{providers: [{name: otel}]}]}",
            "spec.accessLogging[0].providers[0].name",
            "built-in 'envoy'",
        ),
        ("{metrics: [{reportingInterval: 5s}]}", "spec.metrics[0].reportingInterval", "not supported by plait yet"),
        ("{accessLogging: [{filter: {}}]}", "spec.accessLogging[0].filter.expression", "required field is missing"),
    ],
)
def test_telemetry_fields_plait_does_not_act_on_say_so(spec: str, path: str, expected: str) -> None:
    [problem] = load_text(telemetry(spec), "telemetry.yaml").problems
    assert (problem.kind, problem.path) == ("Telemetry", path)
    assert expected in problem.message, problem.message
