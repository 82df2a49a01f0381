"""The agent's Envoy bootstrap: goldens, the pieces Istio's form requires, and real Envoy's verdict.

Goldens are tests/agent/testdata/bootstrap-CASE.golden.json; regenerate with
``REFRESH_GOLDEN=1 pytest tests/agent/test_agent_bootstrap.py`` and review the diff.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from pathlib import Path

import pytest

from plait import __version__
from plait.agent.bootstrap import (
    BootstrapSettings,
    build_bootstrap,
    node_metadata,
    parse_control_plane,
    proxy_for_mode,
    xds_cluster,
)
from plait.model import Proxy
from plait.xds.static import envoy_validate

TESTDATA = Path(__file__).parent / "testdata"

CASES = {
    "capture-sotw": BootstrapSettings(
        proxy=proxy_for_mode(
            "capture",
            name="reviews-v1",
            namespace="default",
            ip="127.0.10.1",
            labels={"app": "reviews", "version": "v1"},
            service_account="bookinfo-reviews",
        ),
        control_plane="127.0.0.1:15010",
        admin_port=15000,
        xds="sotw",
        sds_socket="/run/plait/reviews/sds.sock",
    ),
    "proxy-delta": BootstrapSettings(
        proxy=proxy_for_mode(
            "proxy",
            name="productpage-v1",
            namespace="shop",
            ip="127.0.10.2",
            labels={"app": "productpage"},
            app_address="127.0.10.2",
        ),
        control_plane="controlplane.local:15010",
        admin_port=15100,
        xds="delta",
        sds_socket="/run/plait/pp/sds.sock",
    ),
    "gateway-sotw": BootstrapSettings(
        proxy=proxy_for_mode(
            "gateway",
            name="ingressgateway",
            namespace="istio-system",
            ip="127.0.20.1",
            labels={"istio": "ingressgateway"},
        ),
        control_plane="[::1]:15010",
        admin_port=15200,
        xds="sotw",
        sds_socket="/run/plait/gw/sds.sock",
    ),
}


def canonical(bootstrap: dict) -> str:
    """JSON with the plait version replaced, so that a release does not change the goldens."""
    bootstrap = copy.deepcopy(bootstrap)
    assert bootstrap["node"]["metadata"]["ISTIO_VERSION"] == __version__
    bootstrap["node"]["metadata"]["ISTIO_VERSION"] = "<plait version>"
    return json.dumps(bootstrap, indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("case", CASES)
def test_golden(case: str) -> None:
    actual = canonical(build_bootstrap(CASES[case]))
    golden = TESTDATA / f"bootstrap-{case}.golden.json"
    if os.environ.get("REFRESH_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(actual)
    assert golden.exists(), f"{golden.name} missing; run with REFRESH_GOLDEN=1 and review it"
    if actual != golden.read_text():
        diff = "".join(
            difflib.unified_diff(golden.read_text().splitlines(True), actual.splitlines(True), golden.name, "generated")
        )
        pytest.fail(f"bootstrap {case} changed (REFRESH_GOLDEN=1 to accept):\n{diff}")


@pytest.mark.parametrize("case", CASES)
def test_real_envoy_accepts_it(case: str) -> None:
    verdict = envoy_validate(build_bootstrap(CASES[case]))
    assert verdict.ok, verdict.output


def test_node_is_istios_form_for_a_capture_sidecar() -> None:
    node = build_bootstrap(CASES["capture-sotw"])["node"]
    assert node["id"] == "sidecar~127.0.10.1~reviews-v1.default~default.svc.cluster.local"
    assert node["cluster"] == "reviews.default"  # Istio's service cluster: the app, not the pod
    assert node["metadata"] == {
        "NAMESPACE": "default",
        "LABELS": {"app": "reviews", "version": "v1"},
        "SERVICE_ACCOUNT": "bookinfo-reviews",
        "WORKLOAD_NAME": "reviews-v1",
        "INTERCEPTION_MODE": "REDIRECT",
        "PLAIT_MODE": "capture",
        "ISTIO_VERSION": __version__,
        "APP_ADDRESS": "127.0.0.1",
        "ADMIN_ADDRESS": "127.0.0.1:15000",
    }


def test_explicit_proxy_sidecar_intercepts_nothing() -> None:
    metadata = build_bootstrap(CASES["proxy-delta"])["node"]["metadata"]
    assert (metadata["INTERCEPTION_MODE"], metadata["PLAIT_MODE"], metadata["APP_ADDRESS"]) == (
        "NONE",
        "proxy",
        "127.0.10.2",
    )


def test_gateway_is_a_router() -> None:
    node = build_bootstrap(CASES["gateway-sotw"])["node"]
    assert node["id"] == "router~127.0.20.1~ingressgateway.istio-system~istio-system.svc.cluster.local"
    assert node["metadata"]["LABELS"] == {"istio": "ingressgateway"}


@pytest.mark.parametrize("case", CASES)
def test_control_plane_rebuilds_the_same_proxy_from_the_node(case: str) -> None:
    """What the hub does with a node (contract: Proxy.from_node_id with the metadata) gives back the proxy."""
    settings = CASES[case]
    node = build_bootstrap(settings)["node"]
    metadata = node["metadata"]
    rebuilt = Proxy.from_node_id(
        node["id"],
        labels=metadata["LABELS"],
        mode=metadata["PLAIT_MODE"],
        service_account=metadata["SERVICE_ACCOUNT"],
        app_address=metadata["APP_ADDRESS"],
    )
    assert rebuilt == settings.proxy


def test_everything_comes_over_one_ads_stream_without_a_fetch_timeout() -> None:
    dynamic = build_bootstrap(CASES["capture-sotw"])["dynamic_resources"]
    assert dynamic["ads_config"]["api_type"] == "GRPC"
    assert dynamic["ads_config"]["set_node_on_first_message_only"] is True
    assert dynamic["ads_config"]["transport_api_version"] == "V3"
    assert dynamic["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"] == "xds-grpc"
    for source in ("cds_config", "lds_config"):
        assert dynamic[source] == {"ads": {}, "initial_fetch_timeout": "0s", "resource_api_version": "V3"}
    assert build_bootstrap(CASES["proxy-delta"])["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"


def test_xds_cluster_is_http2_with_keepalive_static_for_an_ip_dns_for_a_name() -> None:
    by_ip = xds_cluster("127.0.0.1:15010")
    assert by_ip["type"] == "STATIC"
    assert by_ip["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
        "explicit_http_config"
    ] == {"http2_protocol_options": {}}
    assert by_ip["upstream_connection_options"]["tcp_keepalive"]["keepalive_time"] > 0
    by_name = xds_cluster("istiod.istio-system:15012")
    assert (by_name["type"], by_name["dns_lookup_family"]) == ("STRICT_DNS", "V4_PREFERRED")
    address = by_name["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address == {"socket_address": {"address": "istiod.istio-system", "port_value": 15012}}
    assert xds_cluster("[::1]:15010")["type"] == "STATIC"


def test_sds_cluster_is_http2_on_the_unix_socket() -> None:
    clusters = {c["name"]: c for c in build_bootstrap(CASES["capture-sotw"])["static_resources"]["clusters"]}
    sds = clusters["sds-grpc"]
    assert sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "pipe": {"path": "/run/plait/reviews/sds.sock"}
    }
    assert "http2_protocol_options" in json.dumps(sds["typed_extension_protocol_options"])


def test_admin_listens_on_loopback_and_connections_are_not_capped() -> None:
    bootstrap = build_bootstrap(CASES["gateway-sotw"])
    assert bootstrap["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15200}
    monitor = bootstrap["overload_manager"]["resource_monitors"][0]
    assert monitor["name"] == "envoy.resource_monitors.global_downstream_max_connections"
    assert monitor["typed_config"]["max_active_downstream_connections"] == 2147483647
    assert [layer["name"] for layer in bootstrap["layered_runtime"]["layers"]] == [
        "global config",
        "plait-tap",
        "admin",
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:15010", ("127.0.0.1", 15010)),
        ("istiod:15012", ("istiod", 15012)),
        ("[::1]:15010", ("::1", 15010)),
        ("localhost", ("localhost", 15010)),
        ("127.0.0.2", ("127.0.0.2", 15010)),
        ("::1", ("::1", 15010)),
        ("http://cp.local:15014", ("cp.local", 15010)),
    ],
)
def test_parse_control_plane(text: str, expected: tuple[str, int]) -> None:
    assert parse_control_plane(text) == expected


@pytest.mark.parametrize("text", ["", ":15010", "istiod:http", "istiod:0", "istiod:70000", "http://:15014"])
def test_parse_control_plane_says_what_it_expected(text: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        parse_control_plane(text)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="capture, proxy or gateway"):
        proxy_for_mode("ambient", name="a", namespace="default", ip="127.0.0.1")  # type: ignore[arg-type]


def test_metadata_labels_are_a_plain_copy() -> None:
    proxy = proxy_for_mode("capture", name="a", namespace="default", ip="127.0.0.1", labels={"app": "a"})
    assert json.dumps(node_metadata(proxy)["LABELS"]) == '{"app": "a"}'
