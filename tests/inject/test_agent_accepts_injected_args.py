"""The injected istio-proxy command is one ``plait agent`` accepts: every flag exists and parses.

The kubelet expands ``$(VAR)`` from the container's environment; here the downward-API values
are filled in as it would, and the command line is parsed by the real CLI (without running it).
"""

from __future__ import annotations

import re
from pathlib import Path

import typer.main
import yaml

from plait.agent.app_probe import parse_app_probers
from plait.cli.main import app

TESTDATA = Path(__file__).parent / "testdata"
DOWNWARD = {
    "POD_NAME": "reviews-v1-7d4b9c-x2v9q",
    "POD_NAMESPACE": "bookinfo",
    "INSTANCE_IP": "10.244.0.7",
    "SERVICE_ACCOUNT": "bookinfo-reviews",
}


def expand(arg: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)


def parsed_agent(case: str, index: int = 0) -> dict:
    pod = list(yaml.safe_load_all((TESTDATA / f"{case}.golden.yaml").read_text()))[index]
    template = pod["spec"].get("template", pod)
    [proxy] = [c for c in template["spec"]["containers"] if c["name"] == "istio-proxy"]
    assert proxy["command"] == ["plait"] and proxy["args"][0] == "agent"
    env = {**DOWNWARD, **{e["name"]: e["value"] for e in proxy["env"] if "value" in e}}
    args = [expand(arg, env) for arg in proxy["args"][1:]]
    command = typer.main.get_command(app).commands["agent"]
    context = command.make_context("agent", args, default_map=None)
    return {**context.params, "_env": env}


def test_default_sidecar_flags() -> None:
    params = parsed_agent("01-plain-pod")
    assert (params["name"], params["namespace"], params["ip"]) == ("reviews-v1-7d4b9c-x2v9q", "bookinfo", "10.244.0.7")
    assert params["service_account"] == "bookinfo-reviews"
    assert params["mode"] == "capture"
    assert params["control_plane"] == "istiod.istio-system.svc:15012"
    assert str(params["token_file"]) == "/var/run/secrets/tokens/istio-token"
    assert str(params["root_cert"]) == "/var/run/secrets/istio/root-cert.pem"
    assert (params["status_port"], params["probe_port"]) == (15021, 15020)
    assert "app=productpage" in params["labels"] and "security.istio.io/tlsMode=istio" in params["labels"]


def test_probes_and_proxy_config_reach_the_agent() -> None:
    params = parsed_agent("06-probes")
    probers = parse_app_probers(params["_env"]["ISTIO_KUBE_APP_PROBERS"])  # what the agent will run
    assert sorted(probers) == [
        "/app-health/rpc/readyz",
        "/app-health/web/livez",
        "/app-health/web/prestopz",
        "/app-health/web/readyz",
        "/app-health/web/startupz",
    ]
    assert (probers["/app-health/web/livez"].scheme, probers["/app-health/web/livez"].port) == ("HTTPS", 8443)
    assert probers["/app-health/rpc/readyz"].service == "ready"
    held = parsed_agent("08-proxy-config")
    assert (held["concurrency"], held["drain_duration"]) == (4, 20.0)
    assert parsed_agent("05-log-level-status-port")["log_level"] == "debug"
    assert parsed_agent("12-interception-none")["mode"] == "proxy"
