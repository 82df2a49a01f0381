"""The watch → state reducer (`plait.sources.kube_watch`) and the object mapping, driven by scripted
lists and watch events as the API server sends them (JSON dicts), without a cluster."""

from __future__ import annotations

from plait.model import MeshSnapshot
from plait.model.services import READY_ANNOTATION
from plait.sources.kube_objects import ENDPOINTS_OF_LABEL, WATCHED_TYPES, locality, pod_workload, slice_endpoints
from plait.sources.kube_watch import ClusterView, Delta, Restart


def meta(name: str, namespace: str | None = "default", rv: str = "1", **extra) -> dict:
    out = {"name": name, "resourceVersion": rv, "uid": f"uid-{name}", **extra}
    if namespace is not None:
        out["namespace"] = namespace
    return out


def service(name: str, rv: str = "1", selector: dict | None = None, ports: list | None = None) -> dict:
    spec = {
        "ports": ports or [{"name": "http", "port": 9080, "targetPort": 9080, "protocol": "TCP"}],
        "clusterIP": "10.0.0.10",
        "type": "ClusterIP",
    }
    if selector is not None:
        spec["selector"] = selector
    return {"metadata": meta(name, rv=rv), "spec": spec, "status": {"loadBalancer": {}}}


def pod(
    name: str,
    ip: str | None = None,
    rv: str = "1",
    labels: dict | None = None,
    ready: bool | None = None,
    sa: str = "bookinfo-reviews",
) -> dict:
    status: dict = {"phase": "Running" if ip else "Pending"}
    if ip:
        status["podIP"] = ip
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {
        "metadata": meta(name, rv=rv, labels=labels or {"app": "reviews", "version": "v1"}),
        "spec": {
            "serviceAccountName": sa,
            "containers": [{"name": "app", "ports": [{"name": "http", "containerPort": 9080}]}],
        },
        "status": status,
    }


def endpoint_slice(
    name: str, service_name: str, endpoints: list[tuple[str, str | None, bool | None]], rv: str = "1", port: int = 9080
) -> dict:
    """endpoints: (address, pod name or None, ready or None for unset)."""
    eps = []
    for address, pod_name, ready in endpoints:
        ep: dict = {"addresses": [address]}
        if ready is not None:
            ep["conditions"] = {"ready": ready}
        if pod_name:
            ep["targetRef"] = {"kind": "Pod", "namespace": "default", "name": pod_name}
        eps.append(ep)
    return {
        "apiVersion": "discovery.k8s.io/v1beta1",
        "kind": "EndpointSlice",
        "addressType": "IPv4",
        "metadata": meta(name, rv=rv, labels={"kubernetes.io/service-name": service_name}),
        "endpoints": eps,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    }


def virtual_service(name: str, rv: str = "1", timeout: str = "5s") -> dict:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": meta(name, rv=rv, annotations={"kubectl.kubernetes.io/last-applied-configuration": "{}"}),
        "spec": {"hosts": ["reviews"], "http": [{"timeout": timeout, "route": [{"destination": {"host": "reviews"}}]}]},
    }


def listed(view: ClusterView, **by_kind: list[dict]) -> None:
    """Every type listed once (empty unless given)."""
    for kind in view.collections:
        view.on_list(kind, by_kind.get(kind, []), "100")


def event(kind: str, obj: dict) -> dict:
    return {"type": kind, "object": obj}


def test_synced_only_after_every_type_was_listed():
    view = ClusterView()
    assert not view.synced
    view.on_list("Service", [], "1")
    assert not view.synced
    listed(view)
    assert view.synced


def test_pods_services_and_slices_become_the_registry():
    view = ClusterView()
    listed(
        view,
        Service=[service("reviews", selector={"app": "reviews"})],
        Pod=[pod("reviews-v1-abc", "10.1.0.5", ready=True)],
        EndpointSlice=[endpoint_slice("reviews-x1", "reviews", [("10.1.0.5", "reviews-v1-abc", True)])],
    )
    resources = view.resources()
    we = resources[("WorkloadEntry", "default", "reviews-v1-abc")]
    assert (we.spec.address, dict(we.spec.labels), we.spec.service_account, dict(we.spec.ports)) == (
        "10.1.0.5",
        {"app": "reviews", "version": "v1", "service.istio.io/workload-name": "reviews-v1-abc"},  # no owner: the pod
        "bookinfo-reviews",
        {"http": 9080},
    )
    assert READY_ANNOTATION not in we.meta.annotations
    svc = MeshSnapshot(resources).services["reviews.default.svc.cluster.local"]
    assert [(e.address, e.port, e.workload, e.ready) for e in svc.endpoints[9080]] == [
        ("10.1.0.5", 9080, "default/reviews-v1-abc", True)
    ]


def test_a_slice_gives_readiness_and_the_address_of_a_pod_without_status():
    """API-only clusters (and pods just scheduled) have no podIP: the EndpointSlice has the address."""
    slices = [endpoint_slice("reviews-x1", "reviews", [("10.1.0.7", "p1", None), ("10.1.0.8", "p2", False)])]
    by_pod = {e.pod: e for e in slice_endpoints(slices[0])}
    ready = pod_workload(pod("p1"), [by_pod["p1"]])
    not_ready = pod_workload(pod("p2"), [by_pod["p2"]])
    assert (ready.spec.address, READY_ANNOTATION in ready.meta.annotations) == ("10.1.0.7", False)
    assert (not_ready.spec.address, not_ready.meta.annotations[READY_ANNOTATION]) == ("10.1.0.8", "false")
    assert pod_workload(pod("p3")) is None  # no address anywhere: not a workload yet


def test_without_a_slice_the_pod_ready_condition_decides_and_terminating_pods_are_not_ready():
    assert READY_ANNOTATION not in pod_workload(pod("a", "10.1.0.1", ready=True)).meta.annotations
    assert pod_workload(pod("b", "10.1.0.2", ready=False)).meta.annotations[READY_ANNOTATION] == "false"
    terminating = pod("c", "10.1.0.3", ready=True)
    terminating["metadata"]["deletionTimestamp"] = "2026-12-06T21:00:00Z"
    assert pod_workload(terminating).meta.annotations[READY_ANNOTATION] == "false"
    finished = pod("d", "10.1.0.4", ready=False)
    finished["status"]["phase"] = "Succeeded"
    assert pod_workload(finished) is None


def test_not_ready_endpoints_stay_out_of_eds():
    view = ClusterView()
    listed(
        view,
        Service=[service("reviews", selector={"app": "reviews"})],
        Pod=[pod("p1", "10.1.0.5"), pod("p2", "10.1.0.6")],
        EndpointSlice=[endpoint_slice("s", "reviews", [("10.1.0.5", "p1", True), ("10.1.0.6", "p2", False)])],
    )
    svc = MeshSnapshot(view.resources()).services["reviews.default.svc.cluster.local"]
    assert {e.address: e.ready for e in svc.endpoints[9080]} == {"10.1.0.5": True, "10.1.0.6": False}


def test_a_service_without_selector_takes_its_endpoints_and_target_ports_from_its_slices():
    view = ClusterView()
    listed(
        view,
        Service=[service("legacy", ports=[{"name": "http", "port": 80, "targetPort": 80}])],
        EndpointSlice=[
            endpoint_slice("legacy-1", "legacy", [("192.0.2.10", None, None), ("192.0.2.11", None, False)], port=8080)
        ],
    )
    resources = view.resources()
    assert resources[("Service", "default", "legacy")].spec.selector == {ENDPOINTS_OF_LABEL: "legacy"}
    svc = MeshSnapshot(resources).services["legacy.default.svc.cluster.local"]
    assert sorted((e.address, e.port, e.ready) for e in svc.endpoints[80]) == [
        ("192.0.2.10", 8080, True),
        ("192.0.2.11", 8080, False),
    ]


def test_events_add_modify_delete_and_report_the_changed_objects():
    view = ClusterView()
    listed(view)
    delta = view.on_event("VirtualService", event("ADDED", virtual_service("reviews", rv="101")))
    assert delta == Delta(changed={("VirtualService", "default", "reviews")})
    vs = view.resources()[("VirtualService", "default", "reviews")]
    assert vs.api_version == "networking.istio.io/v1" and vs.spec.http[0].timeout is not None
    assert "kubectl.kubernetes.io/last-applied-configuration" not in vs.meta.annotations
    # the same resourceVersion again (a relist or a replayed event) changes nothing
    assert view.on_event("VirtualService", event("MODIFIED", virtual_service("reviews", rv="101"))).changed == set()
    view.on_event("VirtualService", event("MODIFIED", virtual_service("reviews", rv="102", timeout="7s")))
    assert view.resources()[("VirtualService", "default", "reviews")].spec.http[0].timeout == "7s"
    delta = view.on_event("VirtualService", event("DELETED", virtual_service("reviews", rv="103")))
    assert delta.changed == {("VirtualService", "default", "reviews")}
    assert ("VirtualService", "default", "reviews") not in view.resources()
    assert view.collections["VirtualService"].resource_version == "103"


def test_bookmarks_move_the_resume_point_and_change_nothing():
    view = ClusterView()
    listed(view)
    bookmark = {
        "type": "BOOKMARK",
        "object": {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "555"}},
    }
    assert view.on_event("Pod", bookmark) == Delta()
    assert view.collections["Pod"].resource_version == "555"


def test_410_gone_asks_for_a_relist_and_the_relist_drops_what_vanished_meanwhile():
    view = ClusterView()
    listed(view, VirtualService=[virtual_service("a"), virtual_service("b")])
    gone = {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "code": 410,
            "reason": "Expired",
            "message": "too old resource version: 5 (90)",
        },
    }
    outcome = view.on_event("VirtualService", gone)
    assert isinstance(outcome, Restart) and outcome.relist and "too old" in outcome.reason
    delta = view.on_list("VirtualService", [virtual_service("a"), virtual_service("c", rv="95")], "96")
    assert delta.changed == {("VirtualService", "default", "b"), ("VirtualService", "default", "c")}
    assert {k[2] for k in view.resources() if k[0] == "VirtualService"} == {"a", "c"}
    assert view.collections["VirtualService"].resource_version == "96"


def test_other_watch_errors_resume_without_relisting():
    view = ClusterView()
    listed(view)
    outcome = view.on_event(
        "Pod", {"type": "ERROR", "object": {"code": 500, "reason": "InternalError", "message": "x"}}
    )
    assert outcome == Restart(relist=False, reason="InternalError (500): x")


def test_an_invalid_object_is_left_out_with_plait_validates_message_and_its_last_good_version_stays():
    view = ClusterView()
    listed(view, VirtualService=[virtual_service("reviews", rv="1")])
    delta = view.on_event("VirtualService", event("MODIFIED", virtual_service("reviews", rv="2", timeout="soon")))
    assert [str(p) for p in delta.problems] == [str(p) for p in view.problems]
    (problem,) = view.problems
    assert (problem.file, problem.kind, problem.namespace, problem.name, problem.path) == (
        "kubernetes",
        "VirtualService",
        "default",
        "reviews",
        "spec.http[0].timeout",
    )
    assert str(problem).startswith("error: kubernetes, VirtualService default/reviews: field spec.http[0].timeout:")
    kept = view.resources()[("VirtualService", "default", "reviews")]
    assert kept.spec.http[0].timeout == "5s"  # the last good version
    # a new invalid object is simply absent; the rest stays
    view.on_event("VirtualService", event("ADDED", virtual_service("other", rv="3", timeout="never")))
    assert ("VirtualService", "default", "other") not in view.resources()
    assert {p.name for p in view.problems} == {"reviews", "other"}
    # fixing or deleting an object clears its problems
    view.on_event("VirtualService", event("MODIFIED", virtual_service("reviews", rv="4", timeout="9s")))
    view.on_event("VirtualService", event("DELETED", virtual_service("other", rv="5", timeout="never")))
    assert view.problems == []
    assert view.resources()[("VirtualService", "default", "reviews")].spec.http[0].timeout == "9s"


def test_a_missing_crd_counts_as_listed_and_its_objects_go_when_it_is_removed():
    view = ClusterView()
    listed(
        view,
        Gateway=[
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "Gateway",
                "metadata": meta("gw"),
                "spec": {"servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]},
            }
        ],
    )
    assert ("Gateway", "default", "gw") in view.resources()
    assert view.forget("Gateway").changed == {("Gateway", "default", "gw")}
    assert ("Gateway", "default", "gw") not in view.resources() and view.synced


def test_namespace_labels_are_kept_but_not_part_of_the_mesh():
    view = ClusterView()
    listed(view, Namespace=[{"metadata": meta("shop", namespace=None, labels={"istio-injection": "enabled"})}])
    assert view.namespace_labels("shop") == {"istio-injection": "enabled"}
    assert view.namespace_labels("other") == {}
    assert all(k[0] != "Namespace" for k in view.resources())


def test_unchanged_pods_are_not_converted_again():
    view = ClusterView()
    listed(view, Pod=[pod("p1", "10.1.0.1", ready=True)])
    first = view.resources()[("WorkloadEntry", "default", "p1")]
    view.on_event("Pod", event("ADDED", pod("p2", "10.1.0.2", rv="2", ready=True)))
    assert view.resources()[("WorkloadEntry", "default", "p1")] is first


def test_every_kind_is_watched_at_its_api_path_newest_version_first():
    paths = {t.kind: [t.path(v) for v in t.versions] for t in WATCHED_TYPES}
    assert paths["Pod"] == ["/api/v1/pods"]
    assert paths["EndpointSlice"] == [
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/apis/discovery.k8s.io/v1beta1/endpointslices",
    ]
    assert paths["Gateway"] == [f"/apis/networking.istio.io/{v}/gateways" for v in ("v1", "v1beta1", "v1alpha3")]
    assert paths["ServiceEntry"][0] == "/apis/networking.istio.io/v1/serviceentries"
    assert paths["AuthorizationPolicy"] == [
        f"/apis/security.istio.io/{v}/authorizationpolicies" for v in ("v1", "v1beta1")
    ]
    assert paths["Telemetry"] == [f"/apis/telemetry.istio.io/{v}/telemetries" for v in ("v1", "v1alpha1")]
    assert paths["KubernetesGateway"] == [f"/apis/gateway.networking.k8s.io/{v}/gateways" for v in ("v1", "v1beta1")]
    assert paths["ReferenceGrant"][0] == "/apis/gateway.networking.k8s.io/v1beta1/referencegrants"
    assert paths["GRPCRoute"] == [f"/apis/gateway.networking.k8s.io/{v}/grpcroutes" for v in ("v1", "v1alpha2")]
    assert paths["TCPRoute"] == [f"/apis/gateway.networking.k8s.io/{v}/tcproutes" for v in ("v1", "v1alpha2")]
    assert paths["TLSRoute"] == [
        f"/apis/gateway.networking.k8s.io/{v}/tlsroutes" for v in ("v1", "v1alpha3", "v1alpha2")
    ]
    assert set(paths) == {
        "Namespace",
        "Node",
        "Service",
        "Pod",
        "EndpointSlice",
        "VirtualService",
        "DestinationRule",
        "ServiceEntry",
        "Gateway",
        "Sidecar",
        "WorkloadEntry",
        "PeerAuthentication",
        "AuthorizationPolicy",
        "Telemetry",
        "GatewayClass",
        "KubernetesGateway",
        "HTTPRoute",
        "GRPCRoute",
        "TCPRoute",
        "TLSRoute",
        "ReferenceGrant",
        "RequestAuthentication",
    }


def test_locality_comes_from_the_pods_label_else_from_its_nodes_topology_labels():
    assert (
        locality({"istio-locality": "us-west.zone1.sub1"}, {"topology.kubernetes.io/region": "eu"})
        == "us-west/zone1/sub1"
    )
    assert locality({}, {"topology.kubernetes.io/region": "eu", "topology.kubernetes.io/zone": "eu-a"}) == "eu/eu-a"
    assert locality({}, {}) is None
    view = ClusterView()
    scheduled = pod("p1", "10.1.0.1", ready=True)
    scheduled["spec"]["nodeName"] = "n1"
    node = {
        "metadata": meta(
            "n1", namespace=None, labels={"topology.kubernetes.io/region": "eu", "topology.kubernetes.io/zone": "eu-a"}
        )
    }
    listed(view, Pod=[scheduled], Node=[node])
    assert view.resources()[("WorkloadEntry", "default", "p1")].spec.locality == "eu/eu-a"
    # a node's heartbeat (a new resourceVersion, same labels) is no change; a new zone is
    heartbeat = {**node, "metadata": {**node["metadata"], "resourceVersion": "2"}, "status": {"conditions": []}}
    assert view.on_event("Node", event("MODIFIED", heartbeat)).changed == set()
    moved = {
        **node,
        "metadata": {
            **node["metadata"],
            "resourceVersion": "3",
            "labels": {"topology.kubernetes.io/region": "eu", "topology.kubernetes.io/zone": "eu-b"},
        },
    }
    assert view.on_event("Node", event("MODIFIED", moved)).changed == {("Node", "", "n1")}
    assert view.resources()[("WorkloadEntry", "default", "p1")].spec.locality == "eu/eu-b"


def test_managed_fields_are_not_kept():
    view = ClusterView()
    heavy = pod("p1", "10.1.0.1", ready=True)
    heavy["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    listed(view, Pod=[heavy])
    view.on_event("Pod", event("MODIFIED", {**heavy, "metadata": {**heavy["metadata"], "resourceVersion": "2"}}))
    assert "managedFields" not in view.collections["Pod"].objects[("default", "p1")]["metadata"]
    assert "managedFields" in heavy["metadata"]  # the caller's object is left alone
