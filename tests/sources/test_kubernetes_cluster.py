"""The control plane reading a real Kubernetes API server (kube-testenv, API-only mode).

Objects are made with kubectl as a user would (no controllers run in API-only mode, so the tests
write the EndpointSlices a controller would). A simulated Envoy (`plait.testing.ads_client`)
watches what the control plane serves: clusters, endpoints and routes follow kubectl apply and
delete; an invalid VirtualService is left out with plait validate's message while the rest is
served; with the API server stopped the control plane keeps serving, and a change made after it
returns arrives without restarting anything; a resourceVersion compacted meanwhile (410 Gone)
makes the watch relist; read-only RBAC suffices; and a real Envoy (run by `plait agent`) routes
its requests by the VirtualService kubectl applied.
"""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
import yaml

from plait.client import ClientError
from plait.model.proxy import EXPLICIT_PROXY_PORT, Proxy
from plait.sources.kubernetes import READER_RULES, KubernetesSource, connect
from plait.testing.ads_client import AdsClient, make_node
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.http import http_request
from plait.testing.kube import KubeTestenv, require_testenv
from plait.testing.live import AgentProcess, ControlPlaneProcess, wait_until

CONVERGE = 30.0  # seconds; a change shows within the debounce interval, an outage within the backoff
REVIEWS = "reviews.shop.svc.cluster.local"
PRODUCTPAGE = Proxy(
    kind="sidecar",
    ip="10.1.0.2",
    name="productpage-v1",
    namespace="shop",
    labels={"app": "productpage", "version": "v1"},
    service_account="bookinfo-productpage",
)


@pytest.fixture(scope="module")
def cluster():
    env = KubeTestenv(require_testenv(), prefix=os.environ.get("PLAIT_KUBE_DIR_PREFIX", "plait-kube-")).start()
    try:
        env.load_crds()
        yield env
    finally:
        env.remove()


def pod(name: str, app: str, version: str, sa: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app, "version": version}},
        "spec": {
            "serviceAccountName": sa,
            "containers": [{"name": app, "image": f"{app}:1", "ports": [{"name": "http", "containerPort": 9080}]}],
        },
    }


def service(name: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 9080}]},
    }


def endpoint_slice(service_name: str, endpoints: list[tuple[str, str, bool]]) -> dict:
    """What the EndpointSlice controller would write for (address, pod, ready) endpoints."""
    return {
        "apiVersion": "discovery.k8s.io/v1beta1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-abcde",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
        "endpoints": [
            {
                "addresses": [address],
                "conditions": {"ready": ready},
                "targetRef": {"kind": "Pod", "namespace": "shop", "name": pod_name},
            }
            for address, pod_name, ready in endpoints
        ],
    }


def virtual_service(subset: str, timeout: str = "5s") -> dict:
    return {
        "apiVersion": "networking.istio.io/v1beta1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"timeout": timeout, "route": [{"destination": {"host": "reviews", "subset": subset}}]}],
        },
    }


def bookinfo_part() -> list[dict]:
    subsets = [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}},
        },
        service("reviews"),
        service("productpage"),
        pod("reviews-v1", "reviews", "v1", "bookinfo-reviews"),
        pod("reviews-v2", "reviews", "v2", "bookinfo-reviews"),
        pod("productpage-v1", "productpage", "v1", "bookinfo-productpage"),
        endpoint_slice("reviews", [("10.1.0.5", "reviews-v1", True), ("10.1.0.6", "reviews-v2", True)]),
        endpoint_slice("productpage", [("10.1.0.2", "productpage-v1", True)]),
        {
            "apiVersion": "networking.istio.io/v1beta1",
            "kind": "DestinationRule",
            "metadata": {"name": "reviews", "namespace": "shop"},
            "spec": {"host": "reviews", "subsets": subsets},
        },
        virtual_service("v1"),
    ]


def dump(*docs: dict) -> str:
    return yaml.safe_dump_all(docs)


def eds_addresses(client: AdsClient, cluster_name: str) -> set[str]:
    assignment = client.decoded("eds").get(cluster_name)
    if assignment is None:
        return set()
    return {lb.endpoint.address.socket_address.address for group in assignment.endpoints for lb in group.lb_endpoints}


def route_text(client: AdsClient) -> str:
    return str(client.decoded("rds").get("9080", ""))


def test_the_control_plane_serves_the_cluster_follows_it_and_outlives_the_api_server(cluster, tmp_path):
    cluster.apply(dump(*bookinfo_part()))
    with ControlPlaneProcess(tmp_path / "unused", tmp_path, extra_args=["--kubeconfig", cluster.kubeconfig]) as cp:
        asyncio.run(_follow_the_cluster(cluster, cp))
        log = cp.log_path.read_text()
    assert "unreachable" in log and "is back" in log


async def _follow_the_cluster(cluster: KubeTestenv, cp: ControlPlaneProcess) -> None:
    async def kubectl_apply(*docs: dict) -> None:
        await asyncio.to_thread(cluster.apply, dump(*docs))

    async with AdsClient(cp.address, make_node(PRODUCTPAGE)) as client:
        # what the cluster holds: Services, EndpointSlices + Pods, DestinationRule subsets, VirtualService
        await client.wait_for(
            lambda c: (
                eds_addresses(c, f"outbound|9080||{REVIEWS}") == {"10.1.0.5", "10.1.0.6"}
                and f"outbound|9080|v1|{REVIEWS}" in route_text(c)
            ),
            CONVERGE,
        )
        assert eds_addresses(client, f"outbound|9080|v2|{REVIEWS}") == {"10.1.0.6"}
        assert f"outbound|9080|v2|{REVIEWS}" in client.held["cds"]

        # updates propagate: the route, and an endpoint that stops being ready leaves EDS
        await kubectl_apply(virtual_service("v2"))
        await client.wait_for(lambda c: f"outbound|9080|v2|{REVIEWS}" in route_text(c), CONVERGE)
        await kubectl_apply(
            endpoint_slice("reviews", [("10.1.0.5", "reviews-v1", True), ("10.1.0.6", "reviews-v2", False)])
        )
        await client.wait_for(lambda c: eds_addresses(c, f"outbound|9080||{REVIEWS}") == {"10.1.0.5"}, CONVERGE)

        # an invalid VirtualService (the CRD's schema lets it through on 1.20) is left out, the last good
        # version stays, the problem is logged and listed, and the rest of the cluster is still served
        await kubectl_apply(virtual_service("v1", timeout="soon"))
        await kubectl_apply(service("ratings"), endpoint_slice("ratings", [("10.1.0.9", "ratings-v1", True)]))
        await client.wait_for(lambda c: "outbound|9080||ratings.shop.svc.cluster.local" in c.held["cds"], CONVERGE)
        problems = cp.api.get("/api/v1/config")["problems"]
        assert [(p["kind"], p["namespace"], p["name"], p["path"]) for p in problems] == [
            ("VirtualService", "shop", "reviews", "spec.http[0].timeout")
        ]
        assert "error: kubernetes, VirtualService shop/reviews: field spec.http[0].timeout:" in cp.log_path.read_text()
        assert f"outbound|9080|v2|{REVIEWS}" in route_text(client)
        assert "plait_config_problems 1.0" in cp.api.get("/metrics")

        # the API server goes away: the control plane keeps serving (a new stream gets the same config)
        await asyncio.to_thread(cluster.stop)
        held = {short: set(client.held[short]) for short in ("cds", "eds", "lds", "rds")}
        await client.reconnect()
        await client.wait_synced(CONVERGE)
        assert {short: set(client.held[short]) for short in ("cds", "eds", "lds", "rds")} == held
        assert cp.api.get("/ready") == "ready\n"
        await until(lambda: "plait_kubernetes_api_reachable 0.0" in cp.api.get("/metrics"))

        # it comes back (same address, same data): a change made now arrives, nothing restarted
        await asyncio.to_thread(cluster.start)
        await kubectl_apply(virtual_service("v1", timeout="3s"))
        await client.wait_for(lambda c: f"outbound|9080|v1|{REVIEWS}" in route_text(c), CONVERGE)
        assert cp.api.get("/api/v1/config")["problems"] == []

        # deletes propagate
        await asyncio.to_thread(cluster.kubectl, "delete", "-n", "shop", "service", "ratings")
        await client.wait_for(lambda c: "outbound|9080||ratings.shop.svc.cluster.local" not in c.held["cds"], CONVERGE)


def test_a_watch_whose_resource_version_was_compacted_relists(cluster, caplog):
    """The API server restarts while etcd's revision has moved on: resuming from the old
    resourceVersion is refused (410 Gone), the source lists again and misses nothing."""
    caplog.set_level(logging.INFO, logger="plait.sources.kubernetes")

    async def scenario() -> None:
        api = await connect(cluster.kubeconfig)
        source = KubernetesSource(api, backoff=(0.1, 1.0))
        task = asyncio.create_task(source.run())
        try:
            await asyncio.wait_for(source.wait_synced(), CONVERGE)
            await asyncio.to_thread(
                cluster.apply,
                dump(
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "relist"}},
                    {
                        "apiVersion": "networking.istio.io/v1beta1",
                        "kind": "Gateway",
                        "metadata": {"name": "before", "namespace": "relist"},
                        "spec": {
                            "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}]
                        },
                    },
                ),
            )
            await until(lambda: ("Gateway", "relist", "before") in source.resources)
            relists = source.relists
            await asyncio.to_thread(cluster.bump_etcd_revision)
            await asyncio.to_thread(cluster.stop)
            await asyncio.to_thread(cluster.start)
            await asyncio.to_thread(cluster.kubectl, "delete", "-n", "relist", "gateways.networking.istio.io", "before")
            await until(lambda: ("Gateway", "relist", "before") not in source.resources)
            assert source.relists > relists
            gone = [r.getMessage() for r in caplog.records if "gateways" in r.getMessage() and "410" in r.getMessage()]
            assert gone, "the watch of gateways was not refused with 410 Gone"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await api.close()

    asyncio.run(scenario())


async def until(predicate, timeout: float = CONVERGE) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


def test_kubectl_is_how_config_changes_and_the_http_api_says_so(cluster, tmp_path):
    with ControlPlaneProcess(tmp_path / "unused", tmp_path, extra_args=["--kubeconfig", cluster.kubeconfig]) as cp:
        with pytest.raises(ClientError) as refused:
            cp.apply(dump(virtual_service("v1")))
    assert refused.value.status == 400
    assert "change it with kubectl" in refused.value.problems[0]["message"]


def test_with_only_its_rbac_the_control_plane_reads_everything_and_a_kind_it_may_not_list_is_left_aside(
    cluster, caplog
):
    """Read-only RBAC suffices; without the right to list nodes it starts all the same (no localities)."""
    caplog.set_level(logging.WARNING, logger="plait.sources.kubernetes")
    no_nodes = [dict(rule, resources=[r for r in rule["resources"] if r != "nodes"]) for rule in READER_RULES]
    cluster.apply(
        dump(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": "plait-reader"},
                "rules": no_nodes,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "plait-reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "plait-reader"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "plait-reader"}],
            },
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "rbac"}},
            {
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": {"name": "r", "namespace": "rbac"},
                "spec": {"host": "r"},
            },
        )
    )
    kubeconfig = cluster.user_kubeconfig("plait-reader")

    async def scenario() -> None:
        api = await connect(kubeconfig)
        source = KubernetesSource(api, rediscover=0.5)
        task = asyncio.create_task(source.run())
        try:
            await asyncio.wait_for(source.wait_synced(), CONVERGE)
            assert ("DestinationRule", "rbac", "r") in source.resources
            assert source.view.collections["Node"].objects == {}
            # granted later: read without a restart
            await asyncio.to_thread(
                cluster.apply,
                dump(
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "ClusterRole",
                        "metadata": {"name": "plait-reader"},
                        "rules": list(READER_RULES),
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/region": "eu"}},
                    },
                ),
            )
            await until(lambda: ("", "n1") in source.view.collections["Node"].objects)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await api.close()

    asyncio.run(scenario())
    assert any("may not list nodes" in r.getMessage() for r in caplog.records)


def test_a_real_envoy_routes_by_what_kubectl_applied(cluster, tmp_path):
    """`plait agent` runs Envoy for a client pod of the cluster; its requests to reviews land where
    the cluster's VirtualService says, and move when kubectl applies another one."""
    with (
        loopback_subnet() as net,
        HttpBackend("reviews-v1", f"{net}.11", 8080),
        HttpBackend("reviews-v2", f"{net}.12", 8080),
    ):
        subsets = [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]
        cluster.apply(
            dump(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "traffic"}},
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "reviews", "namespace": "traffic"},
                    "spec": {
                        "selector": {"app": "reviews"},
                        "ports": [{"name": "http", "port": 9080, "targetPort": 8080}],
                    },
                },
                *(
                    {
                        **pod(f"reviews-{v}", "reviews", v, "bookinfo-reviews"),
                        "metadata": {
                            "name": f"reviews-{v}",
                            "namespace": "traffic",
                            "labels": {"app": "reviews", "version": v},
                        },
                    }
                    for v in ("v1", "v2")
                ),
                {
                    **endpoint_slice("reviews", [(f"{net}.11", "reviews-v1", True), (f"{net}.12", "reviews-v2", True)]),
                    "metadata": {
                        "name": "reviews-x",
                        "namespace": "traffic",
                        "labels": {"kubernetes.io/service-name": "reviews"},
                    },
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                },
                {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "DestinationRule",
                    "metadata": {"name": "reviews", "namespace": "traffic"},
                    "spec": {"host": "reviews", "subsets": subsets},
                },
                {**virtual_service("v1"), "metadata": {"name": "reviews", "namespace": "traffic"}},
            )
        )
        with ControlPlaneProcess(tmp_path / "unused", tmp_path, extra_args=["--kubeconfig", cluster.kubeconfig]) as cp:
            client = AgentProcess(
                cp, tmp_path, mode="proxy", name="client", namespace="traffic", ip=f"{net}.1", labels={"app": "client"}
            )
            client.start()
            try:

                def landing() -> set[str]:
                    replies = [
                        http_request(f"{net}.1", EXPLICIT_PROXY_PORT, "http://reviews:9080/", timeout=5)
                        for _ in range(10)
                    ]
                    return {r.backend for r in replies if r.status == 200}

                wait_until(lambda: landing() == {"reviews-v1"}, CONVERGE, "requests to land on reviews-v1")
                cluster.apply(dump({**virtual_service("v2"), "metadata": {"name": "reviews", "namespace": "traffic"}}))
                wait_until(lambda: landing() == {"reviews-v2"}, CONVERGE, "requests to move to reviews-v2")
            finally:
                client.stop()
