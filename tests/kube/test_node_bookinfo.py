"""Bookinfo on a real Kubernetes node with plait installed in it, as Istio's getting-started runs it.

``plait install`` (session fixture) puts istiod and the ingress gateway in istio-system; ``plait
demo bookinfo --kube`` applies Istio's own ``samples/bookinfo/platform/kube/bookinfo.yaml`` (images
substituted by name only) in a namespace labelled ``istio-injection=enabled`` with Istio's
bookinfo-gateway (the `bookinfo` fixture, in conftest.py); the control plane's injection webhook adds
the sidecars. Then Istio's tasks: request routing (virtual-service-reviews-jason-v2-v3.yaml), STRICT mutual TLS, and
the validating webhook refusing an invalid VirtualService.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from plait.demo.bookinfo.apps.view import ProductPageView
from plait.install.bookinfo import ISTIO_BOOKINFO, deployments
from plait.testing.kubenode import BOOKINFO_HUB, BOOKINFO_NAMESPACE, BOOKINFO_TAG, MeshNode, RequestLoop, eventually

SAMPLES = Path(__file__).resolve().parents[2] / "src/plait/demo/bookinfo/networking"
NAMESPACE = BOOKINFO_NAMESPACE
DEPLOYMENTS = deployments(ISTIO_BOOKINFO.read_text())


def test_every_bookinfo_pod_runs_with_its_sidecar_after_istio_init(bookinfo):
    pods = json.loads(bookinfo.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json"))["items"]
    assert len(pods) == len(DEPLOYMENTS)
    for pod in pods:
        name = pod["metadata"]["name"]
        containers = pod["status"]["containerStatuses"]
        assert sorted(c["name"] for c in containers) == sorted([pod["metadata"]["labels"]["app"], "istio-proxy"]), name
        assert all(c["ready"] for c in containers), name
        [init] = pod["status"]["initContainerStatuses"]
        assert init["name"] == "istio-init"
        assert init["state"]["terminated"]["exitCode"] == 0, name
        assert "sidecar.istio.io/status" in pod["metadata"]["annotations"], name  # the injection webhook's


def test_a_pod_that_opts_out_and_a_pod_of_an_unlabelled_namespace_are_left_alone(bookinfo):
    image = f"{BOOKINFO_HUB}/examples-bookinfo-details-v1:{BOOKINFO_TAG}"
    bookinfo.kubectl("create", "namespace", "plain")
    eventually(lambda: bookinfo.kubectl("get", "serviceaccount", "default", "-n", "plain"), timeout=30)
    try:
        for name, namespace, labels in (
            ("opted-out", NAMESPACE, ["--labels", "sidecar.istio.io/inject=false"]),
            ("unlabelled", "plain", []),
        ):
            bookinfo.kubectl(
                "run",
                name,
                "-n",
                namespace,
                f"--image={image}",
                "--restart=Never",
                *labels,
                "--command",
                "--",
                "sleep",
                "1d",
            )
            pod = json.loads(bookinfo.kubectl("get", "pod", name, "-n", namespace, "-o", "json"))
            assert [c["name"] for c in pod["spec"]["containers"]] == [name], pod["spec"]
            assert not pod["spec"].get("initContainers") and "sidecar.istio.io/status" not in pod["metadata"].get(
                "annotations", {}
            )
    finally:
        bookinfo.kubectl("delete", "pod", "opted-out", "-n", NAMESPACE, "--grace-period=0", "--force", "--wait=true")
        bookinfo.kubectl("delete", "namespace", "plain", "--wait=false")


def every_proxy_synced(node: MeshNode) -> None:
    """``plait proxy-status`` from outside the cluster (KUBECONFIG set: it port-forwards to the istiod
    pod, as istioctl does) lists every Bookinfo sidecar and the gateway, CDS and LDS SYNCED, EDS and
    RDS SYNCED or not used; waits until it does."""
    pods = node.kubectl("get", "pods", "-n", NAMESPACE, "-o", "jsonpath={.items[*].metadata.name}").split()
    gateway = node.kubectl(
        "get", "pods", "-n", "istio-system", "-l", "istio=ingressgateway", "-o", "jsonpath={.items[*].metadata.name}"
    ).split()
    assert len(gateway) == 1 and len(pods) == len(DEPLOYMENTS)
    expected = {f"{pod}.{NAMESPACE}" for pod in pods} | {f"{pod}.istio-system" for pod in gateway}

    def all_synced() -> None:
        done = node.plait("proxy-status")
        assert done.returncode == 0, done.stdout + done.stderr
        rows = {line.split()[0]: line.split()[1:5] for line in done.stdout.splitlines()[1:] if line.strip()}
        assert expected <= set(rows), done.stdout
        for proxy in expected:
            assert rows[proxy][:2] == ["SYNCED", "SYNCED"], done.stdout
            assert all(state in ("SYNCED", "NOT SENT") for state in rows[proxy]), done.stdout

    eventually(all_synced, timeout=60)


def test_proxy_status_lists_every_sidecar_and_the_gateway_synced(bookinfo):
    every_proxy_synced(bookinfo)


def test_proxy_status_and_proxy_config_of_one_pod_from_outside_the_cluster(bookinfo):
    """``plait proxy-status POD`` compares what istiod sent with what the pod's Envoy holds, and
    ``plait proxy-config`` reads that Envoy: both port-forward to the pod's admin port (15000). Its
    Envoy holds its own service's cluster, not those of services it never called (automatic scoping);
    ``proxy-config scope`` asks istiod why."""
    pod = bookinfo.kubectl(
        "get", "pods", "-n", NAMESPACE, "-l", "app=ratings", "-o", "jsonpath={.items[0].metadata.name}"
    )
    diff = eventually(lambda: _succeeded(bookinfo.plait("proxy-status", f"{pod}.{NAMESPACE}")), timeout=60)
    assert diff.splitlines()[-1] == "Envoy holds what the control plane sent.", diff
    clusters = _succeeded(bookinfo.plait("proxy-config", "cluster", f"{pod}.{NAMESPACE}"))
    held = [line.split()[:4] for line in clusters.splitlines()]
    assert ["ratings.bookinfo.svc.cluster.local", "9080", "-", "outbound"] in held, clusters
    assert not any(row[0] == "reviews.bookinfo.svc.cluster.local" for row in held), clusters  # ratings calls nobody
    scope = _succeeded(bookinfo.plait("proxy-config", "scope", f"{pod}.{NAMESPACE}"))  # asks istiod, port-forwarded
    assert scope.startswith("scoped: sent ") and re.search(r"ratings\.bookinfo\.svc\.cluster\.local +serves it", scope)
    missing = bookinfo.plait("proxy-status", "-i", "no-such-namespace")
    assert missing.returncode == 1
    assert "no ready pod with labels app=istiod in namespace no-such-namespace" in missing.stderr


def _succeeded(done) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_product_page_through_the_ingress_gateway_shows_reviews(bookinfo):
    page = eventually(lambda: _with_reviews(bookinfo.product_page()), timeout=60)
    assert page.details and not page.details_error
    assert len(page.reviews) == 2


def test_every_sidecar_serves_istios_metrics_and_says_where(bookinfo):
    """Injected pods carry Istio's ``prometheus.io/*`` annotations pointing at the agent's merged metrics
    (15020, meshConfig.enablePrometheusMerge's default); Istio's productpage's own (its app's /metrics) move
    to ISTIO_PROMETHEUS_ANNOTATIONS. After page loads, the productpage pod's merged endpoint counts what
    its sidecar served with ``reporter="destination"``, the ingress gateway as its caller over mutual TLS."""
    for _ in range(5):
        bookinfo.product_page()
    pods = {
        pod["metadata"]["labels"]["app"]: pod
        for pod in json.loads(bookinfo.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json"))["items"]
    }
    details = pods["details"]["metadata"]["annotations"]
    assert (details["prometheus.io/port"], details["prometheus.io/path"]) == ("15020", "/stats/prometheus")
    assert pods["productpage"]["metadata"]["annotations"]["prometheus.io/port"] == "15020"
    proxy = next(c for c in pods["productpage"]["spec"]["containers"] if c["name"] == "istio-proxy")
    moved = next(e["value"] for e in proxy["env"] if e["name"] == "ISTIO_PROMETHEUS_ANNOTATIONS")
    assert json.loads(moved) == {"scrape": "true", "path": "/metrics", "port": "9080"}  # the app's own
    url = f"http://{pods['productpage']['status']['podIP']}:15020/stats/prometheus"

    def served() -> list[str]:
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        lines = [
            line
            for line in text.splitlines()
            if line.startswith("istio_requests_total{") and 'reporter="destination"' in line
        ]
        assert any('destination_app="productpage"' in line and 'response_code="200"' in line for line in lines), text[
            -3000:
        ]
        return lines

    lines = eventually(served, timeout=30)
    assert all('connection_security_policy="mutual_tls"' in line for line in lines), lines


def _with_reviews(page: ProductPageView) -> ProductPageView:
    assert page.reviews and not page.reviews_error, page
    return page


def test_reviews_jason_v2_v3_moves_jason_to_v2_and_everyone_else_to_v3(bookinfo):
    """Istio's request-routing task: all traffic on v1, then jason on v2 (black stars), everyone else on v3."""
    bookinfo.apply((SAMPLES / "destination-rule-all.yaml").read_text(), NAMESPACE)
    bookinfo.apply((SAMPLES / "virtual-service-all-v1.yaml").read_text(), NAMESPACE)
    eventually(lambda: _versions(bookinfo, None, {"v1"}), timeout=60)
    bookinfo.apply((SAMPLES / "virtual-service-reviews-jason-v2-v3.yaml").read_text(), NAMESPACE)
    try:
        eventually(lambda: _versions(bookinfo, "jason", {"v2"}), timeout=60)
        _versions(bookinfo, None, {"v3"})
    finally:
        bookinfo.kubectl("delete", "virtualservice", "--all", "-n", NAMESPACE)
        bookinfo.kubectl("delete", "destinationrule", "--all", "-n", NAMESPACE)
        bookinfo.apply((SAMPLES / "bookinfo-gateway.yaml").read_text(), NAMESPACE)


def _versions(node: MeshNode, user: str | None, expected: set[str]) -> None:
    """Ten page loads as `user` all show reviews of the `expected` versions."""
    seen = {node.product_page(user).reviews_version for _ in range(10)}
    assert seen == expected, f"{user or 'anonymous'} saw reviews {seen}, expected {expected}"


OUTSIDE_CALL = (
    "import urllib.request; "
    "print(urllib.request.urlopen('http://productpage.bookinfo:9080/productpage', timeout=5).status)"
)


def test_strict_mtls_keeps_the_page_working_and_refuses_plaintext_from_outside_the_mesh(bookinfo):
    bookinfo.kubectl("create", "namespace", "outside")
    eventually(lambda: bookinfo.kubectl("get", "serviceaccount", "default", "-n", "outside"), timeout=30)
    image = f"{BOOKINFO_HUB}/examples-bookinfo-details-v1:{BOOKINFO_TAG}"
    bookinfo.kubectl(
        "run", "client", "-n", "outside", f"--image={image}", "--restart=Never", "--command", "--", "sleep", "1d"
    )
    bookinfo.kubectl("wait", "--for=condition=Ready", "pod/client", "-n", "outside", "--timeout=120s")
    outside = ("exec", "-n", "outside", "client", "--", "python3", "-c", OUTSIDE_CALL)
    assert eventually(lambda: bookinfo.kubectl(*outside), timeout=30).strip() == "200"  # PERMISSIVE: plaintext in
    strict = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": NAMESPACE},
        "spec": {"mtls": {"mode": "STRICT"}},
    }
    bookinfo.apply(json.dumps(strict))
    try:

        def refused() -> str:  # an AssertionError until the push has reached the sidecars (eventually retries)
            try:
                reply = bookinfo.kubectl(*outside)
            except RuntimeError as failed:
                return str(failed)
            raise AssertionError(f"plaintext from outside the mesh still answered: {reply!r}")

        error = eventually(refused, timeout=60)
        assert "Connection reset" in error or "RemoteDisconnected" in error or "timed out" in error, error
        page = bookinfo.product_page()
        assert page.reviews and not page.reviews_error and page.details and not page.details_error
    finally:
        bookinfo.kubectl("delete", "peerauthentication", "default", "-n", NAMESPACE)
        bookinfo.kubectl("delete", "namespace", "outside", "--wait=false")


INVALID = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-bad
spec:
  hosts: [reviews]
  http:
  - timeout: 5 seconds
    route:
    - destination: {host: reviews}
"""


def test_kubectl_apply_of_an_invalid_virtual_service_fails_with_plaits_message_and_stores_nothing(bookinfo):
    with pytest.raises(RuntimeError) as refused:
        bookinfo.apply(INVALID, NAMESPACE)
    message = str(refused.value)
    assert "configuration is invalid: VirtualService bookinfo/reviews-bad: spec.http[0].timeout" in message
    assert "'5 seconds' is not a duration" in message
    assert bookinfo.kubectl("get", "virtualservices", "-n", NAMESPACE, "-o", "name").split() == [
        "virtualservice.networking.istio.io/bookinfo"
    ]


def test_plait_install_reports_each_part_as_istioctl_does(mesh_node):
    assert mesh_node.install_output.splitlines() == [
        "✔ Istio core installed",
        "✔ Istiod installed",
        "✔ Ingress gateways installed",
        "✔ Addons installed",  # --set addons.prometheus=true, as istioctl 1.6 printed it
        "✔ Installation complete",
    ]


def test_demo_bookinfo_kube_found_plait_installed_and_says_how_to_open_the_page(bookinfo):
    lines = bookinfo.demo_output.splitlines()
    assert lines[0] == "plait is installed (namespace istio-system)"
    assert "✔ every Bookinfo pod is ready" in lines
    assert "kubectl port-forward -n istio-system svc/istio-ingressgateway 8080:80" in lines
    labels = json.loads(bookinfo.kubectl("get", "namespace", NAMESPACE, "-o", "json"))["metadata"]["labels"]
    assert labels["istio-injection"] == "enabled"
    images = bookinfo.kubectl("get", "pods", "-n", NAMESPACE, "-o", "jsonpath={.items[*].spec.containers[*].image}")
    assert not any(image.startswith("docker.io/istio/") for image in images.split())
    assert len(DEPLOYMENTS) == 6


def test_the_ingress_gateway_is_the_one_plait_install_made(bookinfo):
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(bookinfo.ingress_url("/no-such-route"), timeout=10)
    assert missing.value.code == 404


def test_killing_the_control_plane_pod_under_load_fails_no_request_and_the_new_pod_resyncs_every_proxy(bookinfo):
    old = bookinfo.kubectl("get", "pods", "-n", "istio-system", "-l", "app=istiod", "-o", "name").split()
    loop = RequestLoop(bookinfo.ingress_url("/productpage"))
    loop.start()
    try:
        eventually(lambda: loop.served(20), timeout=30, interval=0.2)
        bookinfo.kubectl("delete", "-n", "istio-system", *old, "--wait=true")
        bookinfo.kubectl("rollout", "status", "deployment/istiod", "-n", "istio-system", "--timeout=120s")
        served_before = loop.ok
        every_proxy_synced(bookinfo)  # as the new pod sees them
        eventually(lambda: loop.served(served_before + 20), timeout=30, interval=0.2)
    finally:
        loop.stop()
    new = bookinfo.kubectl("get", "pods", "-n", "istio-system", "-l", "app=istiod", "-o", "name").split()
    assert len(new) == 1 and new != old
    loop.assert_none_failed()


def prometheus_query(bookinfo: MeshNode, query: str) -> list[dict]:
    """An instant PromQL query to the addon's Prometheus (its pod IP: the node's host reaches pods)."""
    address = bookinfo.kubectl(
        "get", "pods", "-n", "istio-system", "-l", "app=prometheus", "-o", "jsonpath={.items[0].status.podIP}"
    )
    url = f"http://{address}:9090/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_the_prometheus_addon_scrapes_istios_metrics_and_kialis_graph_query_finds_bookinfos_edges(bookinfo):
    """``plait install --set addons.prometheus=true`` (session fixture): Prometheus in istio-system scrapes
    every pod by Istio's annotations (sidecars' merged 15020, which also carries productpage's own metrics);
    after page loads, Kiali's graph query (requests by source workload and destination service,
    reporter=destination) returns Bookinfo's edges from the gateway's workload on, secured by mutual TLS."""
    kiali = (
        f'sum(rate(istio_requests_total{{reporter="destination",destination_workload_namespace="{NAMESPACE}"}}[5m])) '
        "by (source_workload, destination_service_name, destination_workload, connection_security_policy)"
    )

    def edges() -> set[tuple[str, str, str]]:
        for _ in range(3):
            bookinfo.product_page()
        found = {
            (
                r["metric"]["source_workload"],
                r["metric"]["destination_workload"],
                r["metric"]["connection_security_policy"],
            )
            for r in prometheus_query(bookinfo, kiali)
        }
        expected = {("istio-ingressgateway", "productpage-v1"), ("productpage-v1", "details-v1")}
        expected |= {("reviews-v2", "ratings-v1"), ("reviews-v3", "ratings-v1")}
        expected |= {("productpage-v1", f"reviews-{v}") for v in ("v1", "v2", "v3")}
        assert expected <= {(src, dst) for src, dst, _ in found}, found
        return found

    found = eventually(edges, timeout=120, interval=5)
    assert {security for _, _, security in found} == {"mutual_tls"}, found

    def scraped() -> None:  # the last scrape of each succeeded (one may time out on a loaded machine: the next counts)
        targets = prometheus_query(bookinfo, 'up{job="kubernetes-pods"}')
        up = {(t["metric"].get("namespace"), t["metric"].get("app")) for t in targets if t["value"][1] == "1"}
        assert {("istio-system", "istiod"), ("istio-system", "istio-ingressgateway"), (NAMESPACE, "ratings")} <= up, up

    eventually(scraped, timeout=60, interval=5)


def test_a_telemetry_object_applied_with_kubectl_filters_the_access_log(bookinfo):
    """Telemetry (telemetry.istio.io) is read from the cluster: a root-namespace Telemetry turning Envoy's
    access log on only for ``response.code >= 400`` makes a 404 from productpage appear in its sidecar's
    istio-proxy log, and the page's 200s do not; read with ``plait logs POD -c istio-proxy`` (pods/log, as
    kubectl logs)."""
    telemetry = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: errors-only, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
"""
    bookinfo.apply(telemetry)
    try:
        pod = bookinfo.kubectl(
            "get", "pods", "-n", NAMESPACE, "-l", "app=productpage", "-o", "jsonpath={.items[0].metadata.name}"
        )

        def logged_404() -> str:
            bookinfo.product_page()
            request = urllib.request.Request(bookinfo.ingress_url("/api/v1/products/0/reviews-missing"))
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(request, timeout=10)
            shown = bookinfo.plait("logs", pod, "-c", "istio-proxy", "-n", NAMESPACE, "--tail", "400")
            assert shown.returncode == 0, shown.stderr
            assert '" 404 ' in shown.stdout, shown.stdout[-2000:]
            return shown.stdout

        log = eventually(logged_404, timeout=60, interval=2)
        codes = re.findall(r'"[A-Z]+ \S+ HTTP/[\d.]+" (\d{3}) ', log)
        assert codes and set(codes) == {"404"}, codes
    finally:
        bookinfo.kubectl("delete", "telemetry", "errors-only", "-n", "istio-system")


def test_plait_dashboard_prometheus_forwards_to_the_addon_as_istioctl_does(bookinfo):
    """``plait dashboard prometheus`` with KUBECONFIG: the addon's pod through a port-forward, its URL printed,
    until stopped."""
    with bookinfo.dashboard("prometheus") as url:
        with urllib.request.urlopen(url + "/api/v1/query?query=up", timeout=10) as response:
            assert json.loads(response.read())["status"] == "success"


def test_plait_dashboard_forwards_to_istiods_dashboard_whose_graph_has_bookinfos_edges(bookinfo):
    """``plait dashboard`` (istioctl dashboard kiali's habit): istiod's dashboard on 20001, port-forwarded; its
    graph API, reading the addon's Prometheus, has productpage's calls to details and reviews."""
    with bookinfo.dashboard() as url:

        def graph() -> dict:
            bookinfo.product_page()
            with urllib.request.urlopen(
                url + f"/api/graph?namespace={NAMESPACE}&window=5m&type=workload", timeout=20
            ) as r:
                found = json.loads(r.read())
            names = {n["id"]: n["name"] for n in found["nodes"]}
            pairs = {(names[e["source"]], names[e["target"]]) for e in found["edges"]}
            assert {("productpage-v1", "details-v1"), ("productpage-v1", "reviews-v2")} <= pairs, pairs
            assert found["source"] == "prometheus"
            return found

        eventually(graph, timeout=90, interval=5)
        with urllib.request.urlopen(url + "/", timeout=10) as page:
            assert page.status == 200 and "<html" in page.read().decode().lower()


def test_a_sampled_request_is_traced_through_istiods_collector_and_plait_traces_reads_it(bookinfo):
    """Istio's default ``zipkin.istio-system:9411`` is istiod's collector (the Service ``zipkin`` install
    makes): a page load under a sampled B3 trace of our own gives spans of the gateway and Bookinfo's
    sidecars sharing its id, and ``plait traces TRACE_ID -o json`` (port-forwarded to istiod) returns them."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    request = urllib.request.Request(bookinfo.ingress_url("/productpage"))
    for name, value in (("x-b3-traceid", trace_id), ("x-b3-spanid", span_id), ("x-b3-sampled", "1")):
        request.add_header(name, value)
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200

    def spans() -> list[dict]:
        shown = bookinfo.plait("traces", trace_id, "-o", "json")
        assert shown.returncode == 0, shown.stderr
        found = json.loads(shown.stdout)
        services = {s["localEndpoint"]["serviceName"] for s in found}
        assert {"istio-ingressgateway.istio-system", f"productpage.{NAMESPACE}", f"details.{NAMESPACE}"} <= services, (
            services
        )
        return found

    found = eventually(spans, timeout=60, interval=3)
    assert {s["traceId"] for s in found} == {trace_id}
