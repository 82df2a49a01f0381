"""The pure parts of Istio's standard metrics: label values, where each label comes from, the
Prometheus rename, and the translator's placement of the loggers (checked by Envoy itself)."""

from __future__ import annotations

from pathlib import Path

import pytest

from plait.agent.bootstrap import BootstrapSettings, build_bootstrap, proxy_for_mode
from plait.api import load_paths
from plait.model import MeshSnapshot, Proxy
from plait.model.services import Endpoint
from plait.telemetry import metrics
from plait.telemetry.prometheus import istio_exposition
from plait.xds.generator import generate
from plait.xds.static import envoy_validate

BOOKINFO = Path(__file__).parents[2] / "src" / "plait" / "demo" / "bookinfo"


def test_workload_labels_follow_istios_fallbacks() -> None:
    assert metrics.workload_identity("reviews-v2", "default", {"app": "reviews", "version": "v2"}) == {
        "workload": "reviews-v2",
        "workload_namespace": "default",
        "app": "reviews",
        "version": "v2",
        "canonical_service": "reviews",
        "canonical_revision": "v2",
    }
    labelled = {
        metrics.CANONICAL_NAME_LABEL: "shop",
        metrics.CANONICAL_REVISION_LABEL: "2024",
        metrics.WORKLOAD_NAME_LABEL: "shop-api",
        "app.kubernetes.io/name": "ignored",
    }
    assert metrics.workload_identity("shop-api-7d9f-x2", "shop", labelled) == {
        "workload": "shop-api",
        "workload_namespace": "shop",
        "app": "unknown",
        "version": "unknown",
        "canonical_service": "shop",
        "canonical_revision": "2024",
    }
    bare = metrics.workload_identity("db", "data", {"app.kubernetes.io/version": "15"})
    assert (bare["canonical_service"], bare["canonical_revision"]) == ("db", "15")
    assert metrics.workload_identity("x", "y", {})["canonical_revision"] == "latest"


def test_an_endpoint_without_a_workload_is_unknown() -> None:
    external = metrics.endpoint_metadata(Endpoint("203.0.113.7", 443))
    assert (external["workload"], external["workload_namespace"]) == ("unknown", "unknown")
    mesh = metrics.endpoint_metadata(Endpoint("10.0.0.3", 9080, {"app": "reviews"}, workload="default/reviews-v1"))
    assert (mesh["workload"], mesh["workload_namespace"], mesh["app"]) == ("reviews-v1", "default", "reviews")


def test_every_metric_has_exactly_istios_labels() -> None:
    for logger in metrics.http_access_logs(metrics.source_tags()):
        config = logger["typed_config"]
        for stat in [*config["counters"], *config["histograms"]]:
            assert [t["name"] for t in stat["stat"]["tags"]] == list(metrics.HTTP_LABELS)
    for logger in metrics.tcp_access_logs(metrics.destination_tags(mtls=False, http=False)):
        for stat in logger["typed_config"]["counters"]:
            assert [t["name"] for t in stat["stat"]["tags"]] == list(metrics.TCP_LABELS)
    assert len(metrics.HTTP_LABELS) == 25 and "response_code" not in metrics.TCP_LABELS


def test_no_label_comes_from_the_request_but_a_verified_callers_identity() -> None:
    """Only the destination side of a mutual-TLS chain reads request headers, and only the peer headers."""
    plaintext = metrics.destination_tags(mtls=False)
    mtls = metrics.destination_tags(mtls=True)
    source = metrics.source_tags()
    assert not any("%REQ(" in v for v in [*plaintext.values(), *source.values()])
    read = {v for v in mtls.values() if "%REQ(" in v}
    assert read and all(v.startswith(f"%REQ({metrics.PEER_HEADER_PREFIX}") for v in read)
    assert all(v.endswith(f"):{metrics.PEER_HEADER_MAX}%") for v in read)  # cut: bounded cardinality
    assert plaintext["source_workload"] == plaintext["source_principal"] == "unknown"
    assert plaintext["connection_security_policy"] == "none" and mtls["connection_security_policy"] == "mutual_tls"
    assert source["connection_security_policy"] == "unknown"  # as Istio's client side


def test_the_peer_filter_overwrites_every_header_the_server_reads() -> None:
    peer = metrics.peer_identity_filter()
    assert metrics.is_peer_identity_filter(peer)
    set_headers = {m["append"]["header"]["key"] for m in peer["typed_config"]["mutations"]["request_mutations"]}
    actions = {m["append"]["append_action"] for m in peer["typed_config"]["mutations"]["request_mutations"]}
    read = {v[len("%REQ(") :].split(")")[0] for v in metrics.destination_tags(mtls=True).values() if "%REQ(" in v}
    assert read == set_headers and actions == {"OVERWRITE_IF_EXISTS_OR_ADD"}


def test_the_agent_gives_envoy_the_proxys_own_labels() -> None:
    proxy = Proxy(kind="sidecar", ip="10.0.0.1", name="ratings-v1", labels={"app": "ratings", "version": "v1"})
    env = metrics.proxy_environment(proxy)
    assert env == {
        "ISTIO_META_WORKLOAD_NAME": "ratings-v1",
        "POD_NAMESPACE": "default",
        "PLAIT_APP": "ratings",
        "PLAIT_VERSION": "v1",
        "CANONICAL_SERVICE": "ratings",
        "CANONICAL_REVISION": "v1",
        "ISTIO_META_CLUSTER_ID": "Kubernetes",
    }
    assert set(env) == set(metrics.ENVIRONMENT.values())


EXPOSITION = """# TYPE envoy_istio_requests_total counter
envoy_istio_requests_total{reporter="source",destination_workload="",grpc_response_status="",response_flags="-"} 3
# TYPE envoy_cluster_upstream_rq counter
envoy_cluster_upstream_rq{cluster_name="",response_code="200"} 3
envoy_istio_request_duration_milliseconds_bucket{reporter="source",source_principal="",le="0.5"} 0
"""


def test_prometheus_names_are_istios_and_unknown_values_say_so() -> None:
    assert istio_exposition(EXPOSITION).splitlines() == [
        "# TYPE istio_requests_total counter",
        'istio_requests_total{reporter="source",destination_workload="unknown",grpc_response_status="",'
        'response_flags="-"} 3',
        "# TYPE envoy_cluster_upstream_rq counter",
        'envoy_cluster_upstream_rq{cluster_name="",response_code="200"} 3',  # Envoy's own stats stay as they are
        'istio_request_duration_milliseconds_bucket{reporter="source",source_principal="unknown",le="0.5"} 0',
    ]


@pytest.fixture(scope="module")
def bookinfo() -> MeshSnapshot:
    return MeshSnapshot(
        load_paths([BOOKINFO / "services.yaml", BOOKINFO / "networking" / "bookinfo-gateway.yaml"]).raise_for_errors()
    )


def loggers_of(listener: dict) -> list[tuple[str, str]]:
    """(filter, reporter) for every logger on the listener's filters."""
    out = []
    for chain in listener["filter_chains"]:
        for f in chain["filters"]:
            for logger in f["typed_config"].get("access_log", []):
                if logger["name"] != "envoy.access_loggers.stats":
                    continue  # the tap logger (plait.telemetry.tap)
                tags = logger["typed_config"]["counters"][0]["stat"]["tags"]
                reporter = next(t["value_format"] for t in tags if t["name"] == "reporter")
                out.append((f["name"].rsplit(".", 1)[1], reporter))
    return out


def test_sidecars_report_source_outbound_and_destination_inbound(bookinfo: MeshSnapshot) -> None:
    proxy = Proxy.from_workload_entry(bookinfo.workload("reviews-v1"))
    resources = generate(bookinfo, proxy)
    assert set(loggers_of(resources.listeners["0.0.0.0_9080"])) == {("http_connection_manager", "source")}
    assert set(loggers_of(resources.listeners["virtualOutbound"])) == {("tcp_proxy", "source")}
    assert {r for _, r in loggers_of(resources.listeners["virtualInbound"])} == {"destination"}
    cluster = resources.clusters["outbound|9080||ratings.default.svc.cluster.local"]
    assert cluster["metadata"]["filter_metadata"]["istio"] == {
        "service": "ratings.default.svc.cluster.local",
        "service_name": "ratings",
        "service_namespace": "default",
    }
    assert resources.clusters["PassthroughCluster"]["metadata"]["filter_metadata"]["istio"]["service_name"] == (
        "PassthroughCluster"
    )


def test_gateways_report_source_only(bookinfo: MeshSnapshot) -> None:
    gateway = next(we for we in bookinfo.workload_entries if we.spec.labels.get("istio") == "ingressgateway")
    resources = generate(bookinfo, Proxy.from_workload_entry(gateway))
    reporters = {r for listener in resources.listeners.values() for _, r in loggers_of(listener)}
    assert reporters == {"source"}


@pytest.mark.parametrize("mode", ["capture", "proxy", "gateway"])
def test_the_bootstrap_with_a_prometheus_port_is_valid_for_envoy(mode: str) -> None:
    proxy = proxy_for_mode(mode, name="p", namespace="default", ip="127.0.0.1")  # type: ignore[arg-type]
    bootstrap = build_bootstrap(BootstrapSettings(proxy=proxy, prometheus_port=15090))
    [listener] = bootstrap["static_resources"]["listeners"]
    address = listener["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == ("0.0.0.0" if mode == "capture" else "127.0.0.1", 15090)
    verdict = envoy_validate(bootstrap)
    assert verdict.ok, verdict.output
    assert "listeners" not in build_bootstrap(BootstrapSettings(proxy=proxy))["static_resources"]
