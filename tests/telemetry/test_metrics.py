"""The pure parts of Istio's standard metrics: label values, where each label comes from, the
Prometheus rename, and the translator's placement of the loggers (checked by Envoy itself)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from plait.agent.bootstrap import BootstrapSettings, build_bootstrap, proxy_for_mode
from plait.api import load_paths
from plait.model import MeshSnapshot, Proxy
from plait.model.services import Endpoint
from plait.telemetry import metrics
from plait.telemetry.prometheus import istio_exposition, prometheus_cluster, prometheus_listener
from plait.testing.backends import FixedHttpServer
from plait.testing.envoy import run_envoy
from plait.testing.live import free_port
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


OWN = {field: f"<own {field}>" for field in metrics.ENVIRONMENT}


def istio_labels(stat: dict) -> dict[str, str]:
    """Istio's labels of a stat's series as the exposition spells them out: label → what fills it."""
    return dict(metrics.expand([(t["name"], t["value_format"]) for t in stat["stat"]["tags"]], OWN))


def test_envoy_holds_nine_labels_and_the_exposition_spells_out_exactly_istios() -> None:
    tags = {
        "source": metrics.source_tags(),
        "destination": metrics.destination_tags(mtls=True),
        "plaintext": metrics.destination_tags(mtls=False, http=False),
    }
    for kind, made in tags.items():
        for logger in metrics.http_access_logs(made):
            for stat in [*logger["typed_config"]["counters"], *logger["typed_config"]["histograms"]]:
                assert len(stat["stat"]["tags"]) == 9, kind
                assert sorted(istio_labels(stat)) == sorted(metrics.HTTP_LABELS), kind
        for logger in metrics.tcp_access_logs(made):
            for stat in logger["typed_config"]["counters"]:
                assert len(stat["stat"]["tags"]) == 7, kind
                assert sorted(istio_labels(stat)) == sorted(metrics.TCP_LABELS), kind
    assert len(metrics.HTTP_LABELS) == 25 and "response_code" not in metrics.TCP_LABELS


def test_each_side_is_filled_from_where_istio_fills_it() -> None:
    [source] = metrics.http_access_logs(metrics.source_tags())[0]["typed_config"]["counters"]
    client = istio_labels(source)
    assert client["source_workload"] == "<own workload>" and client["destination_cluster"] == "<own cluster>"
    assert client["destination_workload"] == "%UPSTREAM_METADATA(istio:workload)%"
    assert client["destination_service_namespace"] == "%CLUSTER_METADATA(istio:service_namespace)%"
    assert client["destination_principal"] == "%UPSTREAM_PEER_URI_SAN%"
    [destination] = metrics.http_access_logs(metrics.destination_tags(mtls=True))[0]["typed_config"]["counters"]
    server = istio_labels(destination)
    assert server["destination_app"] == "<own app>" and server["source_principal"] == "%DOWNSTREAM_PEER_URI_SAN%"
    # the caller's fields are the peer header's, in the order its sidecar stamps them
    assert server["source_workload"] == f"%REQ({metrics.PEER_HEADER}):{metrics.PEER_HEADER_MAX}%"
    stamped = metrics.peer_value().split(metrics.GROUP_SEPARATOR)
    assert len(stamped) == len(metrics.SOURCE_GROUP_LABELS)
    assert stamped[metrics.SOURCE_GROUP_LABELS.index("source_app")] == "%ENVIRONMENT(PLAIT_APP)%"
    assert stamped[metrics.SOURCE_GROUP_LABELS.index("destination_service")] == "%CLUSTER_METADATA(istio:service)%"


def test_no_label_comes_from_the_request_but_a_verified_callers_identity() -> None:
    """Only the destination side of a mutual-TLS chain reads request headers, and only the peer header."""
    plaintext = metrics.destination_tags(mtls=False)
    mtls = metrics.destination_tags(mtls=True)
    source = metrics.source_tags()
    assert not any("%REQ(" in v for v in [*plaintext.values(), *source.values()])
    read = {v for v in mtls.values() if "%REQ(" in v}
    assert read == {f"%REQ({metrics.PEER_HEADER}):{metrics.PEER_HEADER_MAX}%"}  # cut: bounded cardinality
    unknown = dict(metrics.expand(list(plaintext.items()), OWN))
    assert unknown["source_workload"] == unknown["destination_service"] == unknown["source_principal"] == "unknown"
    assert plaintext["connection_security_policy"] == "none" and mtls["connection_security_policy"] == "mutual_tls"
    assert source["connection_security_policy"] == "unknown"  # as Istio's client side


def test_the_peer_filter_overwrites_every_header_the_server_reads() -> None:
    peer = metrics.peer_identity_filter()
    assert metrics.is_peer_identity_filter(peer)
    set_headers = {m["append"]["header"]["key"] for m in peer["typed_config"]["mutations"]["request_mutations"]}
    actions = {m["append"]["append_action"] for m in peer["typed_config"]["mutations"]["request_mutations"]}
    read = {v[len("%REQ(") :].split(")")[0] for v in metrics.destination_tags(mtls=True).values() if "%REQ(" in v}
    assert read == set_headers == {metrics.PEER_HEADER} and actions == {"OVERWRITE_IF_EXISTS_OR_ADD"}


def test_an_override_wins_over_a_spelled_out_label_and_a_removed_one_stays_out() -> None:
    held = [
        ("reporter", "destination"),
        ("source_peer", "a;b"),
        ("destination_version", "stable"),
        ("removed_labels", "source_app,destination_app"),
    ]
    labels = dict(metrics.expand(held, OWN))
    assert labels["destination_version"] == "stable" and list(labels)[-1] == "destination_version"
    assert "source_app" not in labels and "destination_app" not in labels and "removed_labels" not in labels
    assert (labels["source_workload"], labels["source_workload_namespace"], labels["source_version"]) == ("a", "b", "")


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
envoy_istio_requests_total{reporter="source",destination_peer="reviews-v1;default;;v1",grpc_response_status="",response_flags="-"} 3
# TYPE envoy_cluster_upstream_rq counter
envoy_cluster_upstream_rq{cluster_name="",response_code="200"} 3
envoy_istio_request_duration_milliseconds_bucket{reporter="source",source_principal="",le="0.5"} 0
"""
CLIENT = {
    "workload": "productpage-v1",
    "workload_namespace": "default",
    "app": "productpage",
    "version": "v1",
    "canonical_service": "productpage",
    "canonical_revision": "v1",
    "cluster": "Kubernetes",
}


def test_prometheus_names_are_istios_groups_are_spelled_out_and_unknown_values_say_so() -> None:
    own = "".join(f'source_{k}="{v}",' for k, v in CLIENT.items())
    destination = 'destination_workload="reviews-v1",destination_workload_namespace="default",'
    unknown = ("canonical_service", "canonical_revision", "service", "service_name", "service_namespace")
    rest = "".join(f'destination_{k}="unknown",' for k in unknown)
    assert istio_exposition(EXPOSITION, CLIENT).splitlines() == [
        "# TYPE istio_requests_total counter",
        f'istio_requests_total{{reporter="source",{own}destination_cluster="Kubernetes",{destination}'
        f'destination_app="unknown",destination_version="v1",{rest}grpc_response_status="",response_flags="-"}} 3',
        "# TYPE envoy_cluster_upstream_rq counter",
        'envoy_cluster_upstream_rq{cluster_name="",response_code="200"} 3',  # Envoy's own stats stay as they are
        'istio_request_duration_milliseconds_bucket{reporter="source",source_principal="unknown",le="0.5"} 0',
    ]


# What the Lua filter and the Python rule must agree on: escapes, braces and separators in values,
# overrides and removed labels, missing fields, lines without labels.
TRICKY = "".join(
    line + "\n"
    for line in (
        r"# HELP envoy_istio_requests_total a help text naming envoy_istio_requests_total",
        r"# TYPE envoy_istio_requests_total counter",
        r'envoy_istio_requests_total{reporter="destination",source_peer="x;y",source_principal="",'
        r'request_path="/a{b};c\"d\\",destination_version="stable",removed_labels="source_app"} 7',
        r'envoy_istio_requests_total{reporter="source",destination_peer="",response_flags="-"} 1',
        r'envoy_istio_request_bytes_bucket{reporter="source",destination_peer="w;n;a;v;cs;cr;s;sn;sns;extra",le="+Inf"} 2',
        r"envoy_istio_no_labels 5",
        r'envoy_cluster_x{name="envoy_istio_y"} 1',
        r"",
    )
)


def test_envoys_lua_and_the_agents_python_spell_out_alike() -> None:
    own = {**CLIENT, "app": 'say "hi"\\ there', "version": "semi;colon"}
    port = free_port()
    with FixedHttpServer(TRICKY, "text/plain; version=0.0.4") as admin:  # as Envoy's admin API answers
        bootstrap = {
            "static_resources": {
                "clusters": [prometheus_cluster(admin.port)],
                "listeners": [prometheus_listener("127.0.0.1", port, own)],
            }
        }
        with run_envoy(bootstrap):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats/prometheus", timeout=10) as answer:
                by_envoy = answer.read().decode()
    assert by_envoy == istio_exposition(TRICKY, own)
    assert 'source_workload="x"' in by_envoy and "source_app" not in by_envoy.split("\n")[2]


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
