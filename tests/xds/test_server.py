"""The ADS server end to end over real gRPC on 127.0.0.1: with the in-process ADS client
(`plait.testing.ads_client`), and with one real Envoy (SotW and delta) started on a small
bootstrap of its own that points its xds-grpc cluster at the server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from pathlib import Path

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import json_format

from plait.api import load_paths
from plait.model import MeshSnapshot, Proxy
from plait.testing.ads_client import AdsClient, make_node
from plait.testing.backends import loopback_subnet
from plait.testing.envoy import run_envoy
from plait.xds.generator import generate
from plait.xds.hub import XdsHub
from plait.xds.protocol import NACKED, SYNCED
from plait.xds.publish import TYPES
from plait.xds.server import Inbox, boxed, read_requests, serve_ads

BOOKINFO = Path(__file__).parents[2] / "src/plait/demo/bookinfo"
TIMEOUT = 20.0
V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
INVALID = "plait-test-invalid"


def bookinfo(*files: str) -> MeshSnapshot:
    paths = [
        BOOKINFO / "services.yaml",
        BOOKINFO / "networking/destination-rule-all.yaml",
        *(BOOKINFO / "networking" / f for f in files),
    ]
    return MeshSnapshot(load_paths(paths).raise_for_errors())


def with_file(snapshot: MeshSnapshot, name: str):
    added = load_paths([BOOKINFO / "networking" / name]).raise_for_errors()
    return snapshot.with_changes(upserts=added), [r.key for r in added]


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 90))


async def eventually(check, timeout: float = TIMEOUT):
    """Poll `check()` (sync) until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while not (result := check()):
            await asyncio.sleep(0.05)
    return result


@contextlib.asynccontextmanager
async def ads_server(hub: XdsHub):
    server = await serve_ads(hub, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.bound_port}"
    finally:
        await server.stop(0.5)


def all_states(hub: XdsHub, state: str = SYNCED) -> bool:
    statuses = hub.statuses()
    return bool(statuses) and all(t.state == state for s in statuses for t in s.types.values())


def productpage(snapshot: MeshSnapshot, **changes) -> Proxy:
    return dataclasses.replace(Proxy.from_workload_entry(snapshot.workload("productpage-v1")), **changes)


# ------------------------------------------------------------------ with the in-process client


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_clients_sync_and_converge_after_a_change(delta):
    async def scenario():
        snapshot = bookinfo()
        hub = XdsHub(snapshot)
        proxy = productpage(snapshot)
        async with ads_server(hub) as target, AdsClient(target, make_node(proxy), delta=delta) as client:
            await client.wait_synced(TIMEOUT)
            want = generate(snapshot, proxy)
            assert {s: set(client.held[s]) for s in TYPES} == {s: set(want.of_type(s)) for s in TYPES}
            await eventually(lambda: all_states(hub))
            assert hub.statuses()[0].stream == ("delta" if delta else "sotw")

            hub.update(*with_file(snapshot, "virtual-service-all-v1.yaml"))

            def routes_to_v1(c: AdsClient) -> bool:
                return V1 in str(c.decoded("rds")["9080"])

            await client.wait_for(routes_to_v1, TIMEOUT)
            await eventually(lambda: all_states(hub) and hub.last_update.finished)
            assert list(hub.last_update.acked) == [proxy.id]

    run(scenario())


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_a_nack_is_recorded_and_the_client_keeps_its_last_good_config(delta):
    def reject(short, name, resource):
        return "ratings clusters are not welcome" if short == "cds" and "ratings" in name else None

    async def scenario():
        snapshot = bookinfo()
        hub = XdsHub(snapshot)
        async with (
            ads_server(hub) as target,
            AdsClient(target, make_node(productpage(snapshot)), delta=delta, reject=reject) as client,
        ):
            status = await eventually(lambda: [s for s in hub.statuses() if s.types["cds"].state == NACKED])
            message = status[0].types["cds"].nack_message
            assert message.startswith("outbound|9080||ratings.default.svc.cluster.local: ratings clusters are not")
            assert client.held["cds"] == {} and client.nacks[0] == ("cds", message)
            assert client.versions.get("cds") is None  # nothing accepted
            assert hub.metrics.get_sample_value("plait_xds_nacks_total", {"type": "cds"}) >= 1

    run(scenario())


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_reconnect_resyncs_and_a_closed_stream_leaves_the_hub(delta):
    async def scenario():
        snapshot = bookinfo()
        hub = XdsHub(snapshot)
        async with ads_server(hub) as target:
            client = await AdsClient(target, make_node(productpage(snapshot)), delta=delta).start()
            await client.wait_synced(TIMEOUT)
            held = {s: set(client.held[s]) for s in TYPES}
            await client.reconnect()
            await client.wait_synced(TIMEOUT)
            await eventually(lambda: len(hub.statuses()) == 1 and all_states(hub))
            assert {s: set(client.held[s]) for s in TYPES} == held
            await client.close()
            await eventually(lambda: hub.statuses() == [])
            assert hub.metrics.get_sample_value("plait_xds_connected_proxies") == 0

    run(scenario())


def test_a_stream_without_a_node_is_refused():
    async def scenario():
        hub = XdsHub(bookinfo())
        async with ads_server(hub) as target, grpc.aio.insecure_channel(target) as channel:
            call = channel.stream_stream(
                "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
                request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
                response_deserializer=discovery_pb2.DiscoveryResponse.FromString,
            )()
            await call.write(discovery_pb2.DiscoveryRequest(type_url="type.googleapis.com/x"))
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await call.read()
            assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert hub.statuses() == []

    run(scenario())


def test_the_reader_takes_each_request_out_of_the_box_grpc_handed_over():
    """gRPC keeps the last object it handed over until the next request: the stream's reader empties
    each box, so what gRPC keeps is an empty box, not the request."""
    parse = boxed(discovery_pb2.DiscoveryRequest.FromString)
    wire = [discovery_pb2.DiscoveryRequest(type_url=f"t{i}").SerializeToString() for i in range(3)]
    handed = [parse(data) for data in wire]

    async def requests():
        for box in handed:
            yield box

    async def scenario():
        inbox = Inbox()
        await read_requests(requests(), inbox, closed := object())
        return [await inbox.get() for _ in range(4)], closed

    got, closed = run(scenario())
    assert [r.type_url for r in got[:3]] == ["t0", "t1", "t2"] and got[3] is closed
    assert [box.message for box in handed] == [None, None, None]


def test_an_inbox_gives_items_in_arrival_order_and_wakes_its_waiting_reader():
    async def scenario():
        inbox = Inbox()
        waiting = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        assert not waiting.done()
        inbox.put("first")
        inbox.put("second")
        assert await waiting == "first"
        assert await inbox.get() == "second"
        late = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)
        inbox.put("third")
        return await late

    assert run(scenario()) == "third"


def test_stopping_the_server_ends_streams_and_empties_the_hub():
    async def scenario():
        snapshot = bookinfo()
        hub = XdsHub(snapshot)
        server = await serve_ads(hub, "127.0.0.1", 0)
        with pytest.raises(OSError):  # the port is taken: say so, do not share it
            await serve_ads(hub, "127.0.0.1", server.bound_port)
        client = await AdsClient(f"127.0.0.1:{server.bound_port}", make_node(productpage(snapshot))).start()
        try:
            await client.wait_synced(TIMEOUT)
            await server.stop(0.5)
            with pytest.raises(ConnectionError):
                await client.wait_for(lambda c: False, TIMEOUT)
            assert hub.statuses() == [] and client.synced  # what it holds, it keeps
        finally:
            await client.close()

    run(scenario())


# ------------------------------------------------------------------ with a real Envoy


def envoy_bootstrap(proxy: Proxy, ads_port: int, api_type: str) -> dict:
    node = make_node(proxy)
    h2 = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }
    address = {"socket_address": {"address": "127.0.0.1", "port_value": ads_port}}
    return {
        "node": {"id": node.id, "cluster": node.cluster, "metadata": json_format.MessageToDict(node.metadata)},
        "dynamic_resources": {
            "ads_config": {
                "api_type": api_type,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "typed_extension_protocol_options": h2,
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
                    },
                }
            ]
        },
    }


class EnvoyView:
    """What a running Envoy reports in /config_dump, read off the event loop."""

    def __init__(self, envoy):
        self.envoy = envoy

    async def dump(self) -> dict:
        text = await asyncio.to_thread(self.envoy.admin, "/config_dump")
        return {c["@type"].rsplit(".", 1)[-1]: c for c in json.loads(text)["configs"]}

    async def clusters(self) -> set[str]:
        dump = (await self.dump())["ClustersConfigDump"]
        return {c["cluster"]["name"] for c in dump.get("dynamic_active_clusters", [])}

    async def listeners(self) -> set[str]:
        dump = (await self.dump())["ListenersConfigDump"]
        return {item["name"] for item in dump.get("dynamic_listeners", []) if "active_state" in item}

    async def routes(self) -> str:
        return json.dumps((await self.dump())["RoutesConfigDump"].get("dynamic_route_configs", []))


async def _await(check):
    """Poll an async `check()` until truthy."""
    async with asyncio.timeout(TIMEOUT):
        while not (result := await check()):
            await asyncio.sleep(0.1)
    return result


@pytest.mark.parametrize("api_type", ["GRPC", "DELTA_GRPC"])
def test_real_envoy_syncs_converges_and_keeps_its_config_on_a_nack(api_type):
    inject = {"on": False}

    def mutate(proxy, resources):
        if inject["on"]:  # Envoy requires connect_timeout > 0; json_format does not mind
            resources.clusters[INVALID] = {"name": INVALID, "type": "STATIC", "connect_timeout": "-1s"}
        return resources

    async def scenario(subnet: str):
        snapshot = bookinfo()
        hub = XdsHub(snapshot, mutate=mutate)
        proxy = productpage(snapshot, mode="proxy", ip=f"{subnet}.1")
        want = generate(snapshot, proxy)
        async with ads_server(hub) as target:
            bootstrap = envoy_bootstrap(proxy, int(target.rsplit(":", 1)[1]), api_type)
            stack = contextlib.ExitStack()  # closing it leaves run_envoy, which stops that Envoy by its PID
            try:
                envoy = EnvoyView(await asyncio.to_thread(stack.enter_context, run_envoy(bootstrap, listeners=[])))
                await _envoy_scenario(hub, envoy, want, api_type, inject)
            finally:
                await asyncio.to_thread(stack.close)

    with loopback_subnet() as subnet:
        run(scenario(subnet))


async def _envoy_scenario(hub: XdsHub, envoy: EnvoyView, want, api_type: str, inject: dict) -> None:
    assert await envoy.clusters() == set(want.clusters)
    assert await envoy.listeners() == set(want.listeners)
    (status,) = await eventually(lambda: all_states(hub) and hub.statuses())
    assert status.envoy_version.startswith("1.") and status.stream == ("delta" if api_type == "DELTA_GRPC" else "sotw")

    assert not await _contains(envoy, V1)
    hub.update(*with_file(hub.snapshot, "virtual-service-all-v1.yaml"))
    await _await(lambda: _contains(envoy, V1))
    await eventually(lambda: all_states(hub))

    inject["on"] = True
    hub.update(hub.snapshot, None)
    (nacked,) = await eventually(lambda: [s for s in hub.statuses() if s.types["cds"].state == NACKED])
    assert "positive duration" in nacked.types["cds"].nack_message  # Envoy's words, not a format
    assert INVALID not in await envoy.clusters()
    assert await envoy.clusters() == set(want.clusters) and await _contains(envoy, V1)

    inject["on"] = False
    hub.update(hub.snapshot, None)
    await eventually(lambda: all_states(hub))


async def _contains(envoy: EnvoyView, text: str) -> bool:
    return text in await envoy.routes()
