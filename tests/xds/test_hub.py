"""The hub without a network: what each proxy is given (exactly what the generator makes for it),
which proxies share it, which are regenerated for which change, errors, convergence and metrics."""

from __future__ import annotations

import dataclasses
import gc
import random
import tracemalloc
import weakref
from pathlib import Path

import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from plait.api import load_paths, load_text
from plait.model import MeshSnapshot, Proxy
from plait.testing.ads_client import make_node
from plait.testing.synthetic import MeshShape, gateway_proxy, load_one, mesh_resources, virtual_service_yaml
from plait.xds.generator import generate
from plait.xds.hub import XdsHub, proxy_from_node
from plait.xds.protocol import NACKED, STALE, SYNCED
from plait.xds.publish import TYPES, Publisher
from plait.xds.resources import TYPE_URLS

TESTDATA = Path(__file__).parent / "testdata"
BOOKINFO = Path(__file__).parents[2] / "src/plait/demo/bookinfo"
SHAPE = MeshShape(services=24, namespaces=4, endpoints_per_service=2, routed_every=4)


class FakeEnvoy:
    """Drives one hub connection as a state-of-the-world Envoy would, subscribing to every name."""

    def __init__(self, hub: XdsHub, proxy: Proxy, *, delta: bool = False):
        self.wakes = 0
        self.conn = hub.connect(make_node(proxy), delta=delta, wake=self._wake)
        self.names: dict[str, list[str]] = {}

    def _wake(self) -> None:
        self.wakes += 1

    def request(self, short: str, response=None, error: str | None = None):
        return discovery_pb2.DiscoveryRequest(
            type_url=TYPE_URLS[short],
            resource_names=self.names[short],
            response_nonce=response.nonce if response else "",
            version_info=response.payload.version if response else "",
            error_detail=status_pb2.Status(code=3, message=error) if error else None,
        )

    def answer(self, responses, error: str | None = None) -> None:
        for response in responses:
            self.conn.receive(self.request(response.type, response, error))

    def sync(self) -> None:
        published = self.conn.stream.published
        for short in TYPES:
            self.names[short] = [] if short in ("cds", "lds") else sorted(published.types[short].resources)
            self.answer(self.conn.receive(self.request(short)))

    def pushes(self):
        return self.conn.take_pushes()


def sidecar(name: str, namespace: str, *, hosts: str = "./*") -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  egress:
  - hosts: ["{hosts}", "istio-system/*"]
"""


def synthetic(scoped: bool) -> MeshSnapshot:
    resources = mesh_resources(SHAPE)
    if scoped:
        resources += load_text("---\n".join(sidecar("default", f"mesh-{i}") for i in range(4))).raise_for_errors()
    return MeshSnapshot(resources)


def workload_proxy(snapshot: MeshSnapshot, index: int, endpoint: int = 0, **changes) -> Proxy:
    we = snapshot.workload(f"{SHAPE.namespace(index)}/{SHAPE.workload_name(index, endpoint)}")
    return dataclasses.replace(Proxy.from_workload_entry(we), **changes)


def synced(hub: XdsHub, proxies) -> list[FakeEnvoy]:
    envoys = [FakeEnvoy(hub, p) for p in proxies]
    for envoy in envoys:
        envoy.sync()
    return envoys


# ------------------------------------------------------------------ what a proxy gets


def _testdata_cases():
    for path in sorted(TESTDATA.glob("*.input.yaml")):
        snapshot = MeshSnapshot(load_text(path.read_text(), path.name).raise_for_errors())
        yield path.name, snapshot
    services = load_paths([BOOKINFO / "services.yaml", BOOKINFO / "networking/bookinfo-gateway.yaml"])
    yield "bookinfo", MeshSnapshot(services.raise_for_errors())


@pytest.mark.parametrize("mode", ["capture", "proxy"])
def test_every_proxy_gets_exactly_what_the_generator_makes_for_it(mode):
    """Sharing must never change a proxy's resources: all testdata workloads, all at once."""
    publisher = Publisher()
    for case, snapshot in _testdata_cases():
        hub = XdsHub(snapshot)
        for we in snapshot.workload_entries:
            proxy = Proxy.from_workload_entry(we, mode=mode)
            got = hub.connect(make_node(proxy), delta=False, wake=lambda: None).stream.published
            want = publisher.publish(generate(snapshot, proxy))
            assert {s: m.version for s, m in got.types.items()} == {s: m.version for s, m in want.types.items()}, (
                f"{case}: {proxy.id}"
            )


def test_alike_proxies_share_resources_and_others_do_not():
    snapshot = MeshSnapshot(load_paths([BOOKINFO / "services.yaml"]).raise_for_errors())
    hub = XdsHub(snapshot)

    def published(workload: str, **changes):
        proxy = dataclasses.replace(Proxy.from_workload_entry(snapshot.workload(workload)), **changes)
        return hub.connect(make_node(proxy), delta=False, wake=lambda: None).stream.published

    assert published("reviews-v1") is published("ratings-v1")  # same namespace, same inbound port 9080
    assert published("reviews-v1") is not published("reviews-v1", mode="proxy", ip="127.0.0.2")
    assert published("reviews-v1", mode="proxy", ip="127.0.0.2") is not published(
        "reviews-v1", mode="proxy", ip="127.0.0.3"
    )
    assert published("reviews-v1", app_address="127.0.0.9") is not published("reviews-v1")


def test_labels_split_groups_only_when_a_selector_reads_them():
    snapshot = synthetic(scoped=False)
    hub = XdsHub(snapshot)
    a, b = synced(hub, [workload_proxy(snapshot, 0), workload_proxy(snapshot, 4)])  # mesh-0, other labels
    assert a.conn.stream.published is b.conn.stream.published
    selecting = load_one(
        sidecar("for-svc-0000", "mesh-0").replace("spec:\n", "spec:\n  workloadSelector: {labels: {app: svc-0000}}\n")
    )
    hub.update(snapshot.with_changes(upserts=[selecting]), [selecting.key])
    assert [r.type for r in a.pushes()] == ["cds", "rds"]  # scoped to its namespace now
    assert b.pushes() == []
    assert a.conn.stream.published is not b.conn.stream.published


def test_proxy_from_node_reads_istio_metadata():
    proxy = Proxy(
        kind="sidecar",
        ip="10.0.0.5",
        name="web-1",
        namespace="shop",
        labels={"app": "web"},
        mode="proxy",
        service_account="web-sa",
        app_address="127.0.0.7",
    )
    assert proxy_from_node(make_node(proxy)) == dataclasses.replace(proxy, labels=dict(proxy.labels))
    with pytest.raises(ValueError):
        proxy_from_node(base_pb2.Node(id="not-istio"))


# ------------------------------------------------------------------ which proxies a change reaches


def _change_svc(snapshot: MeshSnapshot, index: int, weight: int):
    vs = load_one(virtual_service_yaml(SHAPE, index, v1_weight=weight))
    return snapshot.with_changes(upserts=[vs]), [vs.key]


def test_with_sidecar_scoping_a_change_reaches_only_the_namespace_that_sees_it():
    snapshot = synthetic(scoped=True)
    hub = XdsHub(snapshot)
    envoys = synced(hub, [workload_proxy(snapshot, i) for i in range(4)])  # one per namespace mesh-0..3
    new, keys = _change_svc(snapshot, 4, 50)  # svc-0004 lives in mesh-0
    hub.update(new, keys)
    assert hub.last_update.regenerated == 1
    pushed = [[(r.type, r.names) for r in e.pushes()] for e in envoys]
    assert pushed == [[("rds", ["8080"])], [], [], []]
    assert [e.wakes for e in envoys] == [1, 0, 0, 0]


def test_without_scoping_a_route_change_reaches_every_proxy_but_only_routes_are_rebuilt():
    snapshot = synthetic(scoped=False)
    hub = XdsHub(snapshot)
    envoys = synced(hub, [workload_proxy(snapshot, i) for i in range(4)])
    before = [e.conn.stream.published for e in envoys]
    hub.update(*_change_svc(snapshot, 4, 50))
    for envoy, old in zip(envoys, before):
        assert [r.type for r in envoy.pushes()] == ["rds"]
        new = envoy.conn.stream.published
        assert all(new.types[s] is old.types[s] for s in ("cds", "eds", "lds"))


def test_an_endpoint_change_pushes_endpoints_only_and_a_no_op_pushes_nothing():
    snapshot = synthetic(scoped=False)
    hub = XdsHub(snapshot)
    envoys = synced(hub, [workload_proxy(snapshot, i) for i in range(4)])
    we = snapshot.workload(f"{SHAPE.namespace(5)}/{SHAPE.workload_name(5, 1)}")
    moved = dataclasses.replace(we, spec=we.spec.model_copy(update={"address": "10.200.0.1"}))
    hub.update(snapshot.with_changes(upserts=[moved]), [we.key])
    assert [[(r.type, r.names) for r in e.pushes()] for e in envoys] == [
        [("eds", ["outbound|8080||svc-0005.mesh-1.svc.cluster.local"])]
    ] * 4
    hub.update(hub.snapshot, None)  # "unknown change": everything regenerated, nothing differs
    assert hub.last_update.regenerated == 4 and all(e.pushes() == [] for e in envoys)


# ------------------------------------------------------------------ errors


def test_a_failing_generation_keeps_the_last_good_resources_and_is_reported():
    snapshot = synthetic(scoped=False)
    fail = {"on": False}

    def mutate(proxy, resources):
        if fail["on"]:
            raise RuntimeError("broken translation")
        return resources

    hub = XdsHub(snapshot, mutate=mutate)
    (envoy,) = synced(hub, [workload_proxy(snapshot, 0)])
    good = envoy.conn.stream.published
    fail["on"] = True
    hub.update(*_change_svc(snapshot, 4, 50))
    assert envoy.conn.stream.published is good and envoy.pushes() == []
    (status,) = hub.statuses()
    assert status.errors == ("generation failed: RuntimeError: broken translation",)
    fail["on"] = False
    hub.update(*_change_svc(hub.snapshot, 4, 40))
    assert [r.type for r in envoy.pushes()] == ["rds"] and hub.statuses()[0].errors == ()


def test_an_unconvertible_resource_is_left_out_with_an_error_and_the_rest_is_sent():
    snapshot = synthetic(scoped=False)

    def mutate(proxy, resources):
        resources.clusters["bad"] = {"name": "bad", "type": "NO_SUCH_TYPE"}
        return resources

    hub = XdsHub(snapshot, mutate=mutate)
    (envoy,) = synced(hub, [workload_proxy(snapshot, 0)])
    assert "bad" not in envoy.conn.stream.held("cds")
    assert "outbound|8080||svc-0001.mesh-1.svc.cluster.local" in envoy.conn.stream.held("cds")
    assert any(e.startswith("cds bad:") for e in hub.statuses()[0].errors)


def test_a_config_with_a_dangling_reference_is_refused_and_the_last_good_one_stays():
    """Consistency is an error: a credentialName no Secret provides refuses the gateway's push (the
    sidecars, which do not name it, carry on); the Secret's return ends the refusal."""
    snapshot = MeshSnapshot(load_text((TESTDATA / "07-gateway-tls.input.yaml").read_text()).raise_for_errors())
    secret = ("Secret", "istio-system", "admin-cert")
    hub = XdsHub(snapshot)
    gateway, store = synced(
        hub,
        [Proxy.from_workload_entry(snapshot.workload(n)) for n in ("istio-system/istio-ingressgateway", "web/store-1")],
    )
    good = gateway.conn.stream.published
    assert sorted(good.types["sds"].resources) == ["admin-cert", "admin-cert-cacert"]
    assert store.conn.stream.published.types["sds"].resources == {}  # a sidecar never gets the gateway's key
    dumped = {s["name"]: s for s in hub.config_dump(gateway.conn.proxy_id)["sds"]}
    assert dumped["admin-cert"]["tls_certificate"]["private_key"] == {"inline_string": "[redacted]"}
    assert "certificate_chain" in dumped["admin-cert"]["tls_certificate"]
    hub.update(snapshot.with_changes(deletes=[secret]), [secret])
    assert gateway.pushes() == [] and gateway.conn.stream.published is good
    status = next(s for s in hub.statuses() if s.proxy.kind == "router")
    assert status.refused == (
        "lds 0.0.0.0_443 refers to secret admin-cert, which nothing serves (credentialName admin-cert: no Secret "
        "with that name in the proxy's namespace holds it)",
        "lds 0.0.0.0_443 refers to secret admin-cert-cacert, which nothing serves (credentialName admin-cert: no "
        "Secret with that name in the proxy's namespace holds it)",
    )
    assert status.to_dict()["refused"] == list(status.refused)
    sample = hub.metrics.get_sample_value
    assert sample("plait_xds_refused_proxies") == 1 and sample("plait_xds_refused_generations_total") == 1
    hub.update(snapshot, [secret])  # the Secret is back: nothing new to send, and no longer refused
    assert gateway.pushes() == [] and sample("plait_xds_refused_proxies") == 0
    assert all(s.refused == () for s in hub.statuses())


def test_a_new_proxy_whose_first_config_is_inconsistent_gets_nothing():
    snapshot = MeshSnapshot(load_text((TESTDATA / "07-gateway-tls.input.yaml").read_text()).raise_for_errors())
    snapshot = snapshot.with_changes(deletes=[("Secret", "istio-system", "admin-cert")])
    hub = XdsHub(snapshot)
    conn = hub.connect(
        make_node(Proxy.from_workload_entry(snapshot.workload("istio-system/istio-ingressgateway"))),
        delta=False,
        wake=lambda: None,
    )
    assert (
        conn.stream.published is None and conn.receive(discovery_pb2.DiscoveryRequest(type_url=TYPE_URLS["cds"])) == []
    )
    assert hub.statuses()[0].refused


def test_a_route_to_an_unknown_destination_stays_consistent_on_the_routes_only_path():
    """Istio sends such a route to a cluster that does not exist (Envoy: 503); plait generates that
    cluster empty. A routes-only update cannot add clusters, so it falls back to a full generation."""
    snapshot = synthetic(scoped=False)
    hub = XdsHub(snapshot)
    (envoy,) = synced(hub, [workload_proxy(snapshot, 0)])
    vs = load_one(
        virtual_service_yaml(SHAPE, 4).replace(
            f"{{host: {SHAPE.service_name(4)}, subset: v2}}", "{host: nowhere.example.com}", 1
        )
    )
    hub.update(snapshot.with_changes(upserts=[vs]), [vs.key])
    assert hub.statuses()[0].refused == ()
    assert [r.type for r in envoy.pushes()] == ["cds", "rds"]
    empty = envoy.conn.stream.published.types["cds"].resources["outbound|8080||nowhere.example.com"].to_dict()
    assert empty["type"] == "STATIC" and "load_assignment" not in empty
    assert hub.metrics.get_sample_value("plait_xds_generations_total", {"kind": "full"}) == 2


ROUTE_PATCH = """apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: vhost-header, namespace: mesh-0}
spec:
  configPatches:
  - applyTo: VIRTUAL_HOST
    match: {context: SIDECAR_OUTBOUND}
    patch: {operation: MERGE, value: {response_headers_to_add: [{header: {key: x-patched, value: "yes"}}]}}
"""


@pytest.mark.parametrize("patched", [False, True], ids=["spliced", "envoyfilter"])
def test_a_routes_only_change_makes_only_the_changed_virtual_hosts_unless_an_envoyfilter_patches_routes(patched):
    """Only the changed service's virtual hosts are generated and spliced into the route configurations
    (`virtual_hosts`); with an EnvoyFilter patching routes, whole route configurations are made and
    patched (`routes`). Either way the proxy holds what a fresh generation gives."""
    snapshot = synthetic(scoped=False)
    if patched:
        snapshot = snapshot.with_changes(upserts=[load_one(ROUTE_PATCH)])
    hub = XdsHub(snapshot)
    (envoy,) = synced(hub, [workload_proxy(snapshot, 0)])
    conversions = hub._publisher.vhost_conversions
    new, keys = _change_svc(snapshot, 4, 50)
    hub.update(new, keys)
    assert [r.type for r in envoy.pushes()] == ["rds"]
    kind = "routes" if patched else "virtual_hosts"
    assert hub.metrics.get_sample_value("plait_xds_generations_total", {"kind": kind}) == 1
    assert hub._publisher.vhost_conversions == conversions + 1  # the changed virtual host alone is converted
    fresh = Publisher().publish(generate(new, envoy.conn.proxy))
    assert _versions(envoy.conn.stream.published) == _versions(fresh)
    vhost = next(
        v
        for v in envoy.conn.stream.published.types["rds"].resources["8080"].to_dict()["virtual_hosts"]
        if v["name"] == f"{SHAPE.hostname(4)}:8080"
    )
    assert ("response_headers_to_add" in vhost) is patched


def test_a_mutate_hook_keeps_sharing_and_routes_only_updates():
    """The test hook edits generated resources; grouping and the routes-only path stay as in production."""
    snapshot = synthetic(scoped=False)
    seen = []

    def mutate(proxy, resources):
        seen.append(sorted(resources.of_type("rds")))
        return resources

    hub = XdsHub(snapshot, mutate=mutate)
    envoys = synced(hub, [workload_proxy(snapshot, 0), workload_proxy(snapshot, 0, ip="10.99.0.1")])
    assert envoys[0].conn.stream.published is envoys[1].conn.stream.published  # one group
    assert len(seen) == 1
    hub.update(*_change_svc(snapshot, 4, 50))
    assert [[r.type for r in e.pushes()] for e in envoys] == [["rds"], ["rds"]]
    assert hub.metrics.get_sample_value("plait_xds_generations_total", {"kind": "routes"}) == 1
    assert len(seen) == 2 and seen[-1] == ["8080"]


# ------------------------------------------------------------------ status, convergence, metrics


def test_statuses_config_dump_convergence_and_metrics():
    snapshot = synthetic(scoped=False)
    hub = XdsHub(snapshot)
    envoys = synced(hub, [workload_proxy(snapshot, i) for i in range(2)])
    (status, _) = hub.statuses()
    assert {s: t.state for s, t in status.types.items()} == dict.fromkeys(TYPES, SYNCED)
    assert status.stream == "sotw" and status.envoy_version == "1.40.0"
    assert status.to_dict()["proxy"]["namespace"] == "mesh-0"
    dump = hub.config_dump(status.proxy_id)
    assert {c["name"] for c in dump["cds"]} == set(envoys[0].conn.stream.published.types["cds"].resources)
    assert hub.config_dump("sidecar~1.2.3.4~nobody.none~none.svc.cluster.local") is None

    hub.update(*_change_svc(snapshot, 4, 50))
    record = hub.last_update
    assert record.finished is None and len(record.waiting) == 2
    # assigned, not yet sent (the streams' tasks have not run): not SYNCED, or a readiness check could pass early
    assert {t.state for s in hub.statuses() for t in s.types.values()} == {STALE}
    envoys[0].answer(envoys[0].pushes())
    assert {t.state for t in hub.statuses()[0].types.values()} == {SYNCED}
    pushes = envoys[1].pushes()
    assert record.finished is None
    envoys[1].answer(pushes, error="no thanks")
    assert record.finished is not None and set(record.acked) == {e.conn.proxy_id for e in envoys}
    assert hub.statuses()[1].types["rds"].state == NACKED
    assert hub.statuses()[1].types["rds"].nack_message == "no thanks"
    sample = hub.metrics.get_sample_value
    assert sample("plait_xds_convergence_seconds_count") == 1
    assert sample("plait_xds_nacks_total", {"type": "rds"}) == 1
    assert sample("plait_xds_pushes_total", {"type": "rds"}) == 4
    assert sample("plait_xds_connected_proxies") == 2 and sample("plait_xds_push_seconds_count") == 1
    hub.disconnect(envoys[0].conn)
    assert sample("plait_xds_connected_proxies") == 1 and len(hub.statuses()) == 1


def test_a_disconnect_ends_the_wait_for_that_proxy():
    snapshot = synthetic(scoped=False)
    hub = XdsHub(snapshot)
    (envoy,) = synced(hub, [workload_proxy(snapshot, 0)])
    hub.update(*_change_svc(snapshot, 4, 50))
    envoy.pushes()
    hub.disconnect(envoy.conn)
    assert hub.last_update.finished is not None and hub.last_update.acked == {}


def test_an_answered_update_is_not_kept_once_a_newer_one_is_made():
    """Each update records who answered it, per proxy: only the newest and those still awaited live on."""
    snapshot = synthetic(scoped=False)
    hub = XdsHub(snapshot)
    (envoy,) = synced(hub, [workload_proxy(snapshot, 0)])
    changed, keys = _change_svc(snapshot, 4, 50)
    hub.update(changed, keys)
    answered = weakref.ref(hub.last_update)
    envoy.answer(envoy.pushes())
    assert answered().finished is not None
    hub.update(*_change_svc(changed, 4, 60))
    gc.collect()
    assert answered() is None and hub.last_update.waiting == {envoy.conn.id}


def test_per_proxy_memory_is_small_beyond_the_shared_resources():
    snapshot = MeshSnapshot(mesh_resources(MeshShape(services=200, endpoints_per_service=2)))
    hub = XdsHub(snapshot)
    proxies = [
        Proxy(kind="sidecar", ip=f"10.128.0.{i + 1}", name=f"svc-{i:04d}-0", namespace="mesh-0")
        for i in range(0, 200, 4)
    ]
    synced(hub, proxies[:1])  # the shared part: generated and published once
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        envoys = synced(hub, proxies[1:])
        gc.collect()
        per_proxy = (tracemalloc.get_traced_memory()[0] - start) / len(envoys)
    finally:
        tracemalloc.stop()
    assert all(e.conn.stream.published is envoys[0].conn.stream.published for e in envoys)
    assert per_proxy < 20_000, f"{per_proxy:.0f} bytes per proxy"


# ------------------------------------------------------------------ change impact and grouping vs a fresh generation

EDIT_KINDS = (
    "weights",
    "vs-delete",
    "vs-source-labels",
    "dr-policy",
    "dr-delete",
    "we-move",
    "we-add",
    "we-delete",
    "svc-port",
    "svc-add",
    "sidecar",
    "sidecar-delete",
    "gateway-vs",
    "authz",
    "gateway-tls",
    "secret",
    "secret-delete",
)
CERT, KEY = ((TESTDATA / "certs" / n).read_text() for n in ("cert.pem", "key.pem"))


def _gateway_with_credential() -> str:
    return """apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}
  - {port: {number: 443, name: https, protocol: HTTPS}, hosts: ["*"], tls: {mode: SIMPLE, credentialName: gw-cred}}
"""


def _edit(rng, snapshot: MeshSnapshot, step: int) -> tuple[list, list]:
    """One random edit of the synthetic mesh: (objects upserted, keys deleted)."""
    index = rng.randrange(SHAPE.services) if step else 0
    name, namespace = SHAPE.service_name(index), SHAPE.namespace(index)
    kind = rng.choice(EDIT_KINDS) if step else "weights"  # the first one takes the routes-only path
    if kind == "weights":
        return [load_one(virtual_service_yaml(SHAPE, index, v1_weight=rng.randrange(0, 101)))], []
    if kind == "vs-delete":
        return [], [("VirtualService", namespace, name)]
    if kind == "vs-source-labels":
        text = virtual_service_yaml(SHAPE, index).replace(
            "- headers: {end-user: {exact: jason}}", f"- sourceLabels: {{app: {SHAPE.service_name(rng.randrange(4))}}}"
        )
        return [load_one(text)], []
    if kind == "dr-policy":
        policy = rng.choice(["ROUND_ROBIN", "RANDOM", "LEAST_REQUEST"])
        return [
            load_one(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  host: {name}
  trafficPolicy: {{loadBalancer: {{simple: {policy}}}}}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]
""")
        ], []
    if kind == "dr-delete":
        return [], [("DestinationRule", namespace, name)]
    if kind in ("we-move", "we-add"):
        endpoint = rng.randrange(SHAPE.endpoints_per_service) if kind == "we-move" else 10 + step
        return [
            load_one(f"""apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {SHAPE.workload_name(index, endpoint)}, namespace: {namespace}}}
spec: {{address: 10.200.{step}.{rng.randrange(1, 250)}, labels: {{app: {name}, version: v{rng.randrange(1, 3)}}},
        ports: {{http: 8080}}}}
""")
        ], []
    if kind == "we-delete":
        return [], [("WorkloadEntry", namespace, SHAPE.workload_name(index, SHAPE.endpoints_per_service - 1))]
    if kind in ("svc-port", "svc-add"):
        svc = name if kind == "svc-port" else f"extra-{step}"
        return [
            load_one(f"""apiVersion: v1
kind: Service
metadata: {{name: {svc}, namespace: {namespace}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 8080}}, {{name: http-admin, port: {9000 + rng.randrange(3)}}}]
""")
        ], []
    if kind == "sidecar":
        return [load_one(sidecar("default", namespace, hosts=rng.choice(["./*", "*/*"])))], []
    if kind == "sidecar-delete":
        return [], [("Sidecar", namespace, "default")]
    if kind == "gateway-tls":
        return [load_one(_gateway_with_credential())], []
    if kind == "secret":
        return [
            load_one(
                yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "type": "kubernetes.io/tls",
                        "metadata": {"name": "gw-cred", "namespace": "istio-system"},
                        "stringData": {"tls.crt": CERT, "tls.key": KEY},
                    }
                )
            )
        ], []
    if kind == "secret-delete":
        return [], [("Secret", "istio-system", "gw-cred")]
    if kind == "gateway-vs":
        return [
            load_one(f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ingress, namespace: istio-system}}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/ingress]
  http: [{{route: [{{destination: {{host: {SHAPE.hostname(index)}, port: {{number: 8080}}}}}}]}}]
""")
        ], []
    return [
        load_one(f"""apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: only-{step % 3}, namespace: {namespace}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  rules: [{{to: [{{operation: {{methods: [GET]}}}}]}}]
""")
    ], []


def _versions(published) -> dict[str, dict[str, str]]:
    return {s: {n: r.version for n, r in m.resources.items()} for s, m in published.types.items()}


def test_after_random_edits_every_proxy_holds_what_a_fresh_generation_gives():
    """Property test (fixed seed): change impact, proxy grouping and the routes-only path, checked after
    every one of many random edits against generating each proxy's resources from scratch."""
    rng = random.Random(11)
    snapshot = synthetic(scoped=False)
    proxies = [workload_proxy(snapshot, i, e) for i in range(6) for e in (0, 1)]  # alike pairs share groups
    proxies += [workload_proxy(snapshot, 2, mode="proxy", ip="10.250.0.2"), gateway_proxy(snapshot)]
    hub = XdsHub(snapshot)
    envoys = synced(hub, proxies)
    publisher = Publisher()
    kinds_seen, refusals = set(), 0
    for step in range(60):
        upserts, deletes = _edit(rng, hub.snapshot, step)
        kinds_seen |= {r.kind for r in upserts} | {k[0] for k in deletes}
        new = hub.snapshot.with_changes(upserts=upserts, deletes=deletes)
        hub.update(new, [r.key for r in upserts] + deletes)
        for envoy in envoys:
            envoy.answer(envoy.pushes())
            proxy = envoy.conn.proxy
            fresh = publisher.publish(generate(new, proxy))
            status = next(s for s in hub.statuses() if s.proxy_id == envoy.conn.proxy_id)
            assert status.refused == fresh.inconsistencies, (step, proxy.id)
            if fresh.inconsistencies:  # refused: the proxy keeps its last good config
                refusals += 1
                continue
            held = envoy.conn.stream.published
            diff = {s: sorted(set(_versions(held)[s].items()) ^ set(_versions(fresh)[s].items())) for s in TYPES}
            assert _versions(held) == _versions(fresh), f"step {step} ({upserts or deletes}): {proxy.id}: {diff}"
        assert all(s.errors == () for s in hub.statuses())
    assert len(hub._groups) < len(proxies)  # sharing was in play
    assert kinds_seen >= {"VirtualService", "DestinationRule", "WorkloadEntry", "Service", "Sidecar", "Secret"}
    assert refusals  # a credential went missing at some point (and came back: the last steps compared)
    generations = {
        k: hub.metrics.get_sample_value("plait_xds_generations_total", {"kind": k}) for k in ("full", "virtual_hosts")
    }
    assert generations["virtual_hosts"] and generations["full"]  # both update paths were exercised (this seed)
