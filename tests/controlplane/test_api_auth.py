"""Access to the control plane's HTTP API (15014), for real: the API served on 127.0.0.1 and on
127.0.0.2, pod tokens from `plait.ca.tokens`, requests sent from a source address that is not the host's (127.0.0.3, or a proxy-mode
pod's 127.1.x.y) and from the host (127.0.0.1). Without a token only /ready, /metrics and /version
answer; the admin token opens everything; a pod's token registers only workloads of its own
namespace and service account."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from plait.ca.tokens import TokenIssuer
from plait.client import Http
from plait.controlplane.api import Api, admin_token_path, load_or_create_admin_token
from plait.controlplane.mesh import MeshState
from plait.model import MeshSnapshot
from plait.sources.files import FileStore
from plait.sources.workloads import WorkloadRegistry, parse_workload
from plait.xds.hub import XdsHub

ADMIN = "admin-token-0123456789abcdef"
VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec: {hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}
"""


TOKENS = TokenIssuer(b"k" * 32)
REVIEWS = TOKENS.issue("default", "reviews", "reviews-v1-abc")
RATINGS = TOKENS.issue("default", "ratings", "ratings-v1-abc")
FORGED = TokenIssuer(b"x" * 32).issue("default", "reviews", "reviews-v1-abc")


def workload(service_account: str, address: str = "127.0.0.3") -> dict:
    return {
        "address": address,
        "labels": {"app": "reviews"},
        "ports": {"http": 9080},
        "serviceAccount": service_account,
        "ready": True,
    }


class Served:
    """The API on 127.0.0.1 and 127.0.0.2; requests from any loopback source address."""

    def __init__(self, api: Api, urls: dict[str, str]):
        self.api, self.urls = api, urls

    async def call(
        self,
        method: str,
        path: str,
        *,
        source: str = "127.0.0.3",
        token: str | None = None,
        body: str | dict | None = None,
        server: str = "127.0.0.2",
    ) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        data = json.dumps(body) if isinstance(body, dict) else body
        connector = aiohttp.TCPConnector(local_addr=(source, 0))
        async with (
            aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session,
            session.request(method, self.urls[server] + path, data=data, headers=headers) as resp,
        ):
            return resp.status, await resp.text()

    @property
    def registered(self) -> set[str]:
        return {f"{ns}/{name}" for _, ns, name in self.api.state.registry.workloads}


@contextlib.asynccontextmanager
async def served(tmp_path, **access) -> AsyncIterator[Served]:
    store = FileStore(tmp_path)
    store.load()
    hub = XdsHub(MeshSnapshot([]))
    state = MeshState(store, WorkloadRegistry(), on_snapshot=lambda snapshot, changed: hub.update(snapshot, changed))
    state.rebuild()
    api = Api(state, hub, hub.metrics, **access)
    api.serving = True
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    try:
        for host in ("127.0.0.1", "127.0.0.2"):
            await web.TCPSite(runner, host, 0).start()
        yield Served(api, {host: f"http://{host}:{port}" for host, port in runner.addresses})
    finally:
        await runner.cleanup()


def run(test, tmp_path, **access) -> None:
    async def main() -> None:
        async with served(tmp_path, **access) as api:
            await test(api)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_without_a_token_only_readiness_metrics_and_version_answer(tmp_path) -> None:
    async def test(api: Served) -> None:
        for path in ("/ready", "/metrics", "/version"):
            assert (await api.call("GET", path))[0] == 200, path
        for method, path in (
            ("GET", "/debug/syncz"),
            ("GET", "/debug/config_dump?proxy=x"),
            ("GET", "/api/v1/config"),
            ("GET", "/api/v1/workloads"),
            ("GET", "/no/such/page"),
        ):
            status, text = await api.call(method, path)
            assert status == 401, (path, text)
            assert "run the CLI on the control plane's host" in json.loads(text)["error"]
            assert "PLAIT_API_TOKEN" in text and "127.0.0.3" in text
        status, _ = await api.call("POST", "/api/v1/config", body=VS)
        assert status == 401
        assert not api.api.state.store.resources  # nothing was applied

    run(test, tmp_path, admin_token=ADMIN, token_verifier=TOKENS.verify)


def test_the_admin_token_opens_everything_and_a_wrong_one_nothing(tmp_path) -> None:
    async def test(api: Served) -> None:
        assert (await api.call("GET", "/debug/syncz", token=ADMIN)) == (200, "[]")
        assert (await api.call("POST", "/api/v1/config", token=ADMIN, body=VS))[0] == 200
        assert ("VirtualService", "default", "reviews") in api.api.state.store.resources
        assert (await api.call("PUT", "/api/v1/workloads/default/reviews-v1", token=ADMIN, body=workload("reviews")))[
            0
        ] == 200
        for wrong in (ADMIN[:-1], ADMIN + "x", REVIEWS):  # a pod's token is no admin token
            status, text = await api.call("GET", "/api/v1/config", token=wrong)
            assert status == 401 and "not it" in text

    run(test, tmp_path, admin_token=ADMIN, token_verifier=TOKENS.verify)


def test_a_pod_token_registers_only_its_own_namespace_and_service_account(tmp_path) -> None:
    async def test(api: Served) -> None:
        status, _ = await api.call(
            "PUT", "/api/v1/workloads/default/reviews-v1", token=REVIEWS, body=workload("reviews")
        )
        assert status == 200 and api.registered == {"default/reviews-v1"}
        assert (
            await api.call("PUT", "/api/v1/workloads/default/reviews-v1/ready", token=REVIEWS, body={"ready": False})
        )[0] == 200

        status, text = await api.call(
            "PUT", "/api/v1/workloads/default/productpage", token=REVIEWS, body=workload("productpage")
        )
        assert status == 403 and "service account 'reviews', not 'productpage'" in text
        status, text = await api.call(
            "PUT", "/api/v1/workloads/other/reviews-v1", token=REVIEWS, body=workload("reviews")
        )
        assert status == 403 and "namespace 'default', not 'other'" in text
        assert api.registered == {"default/reviews-v1"}

        # a workload registered under another service account cannot be taken over, readied or removed
        assert (await api.call("PUT", "/api/v1/workloads/default/ratings-v1", token=RATINGS, body=workload("ratings")))[
            0
        ] == 200
        for method, path, body in (
            ("PUT", "/api/v1/workloads/default/ratings-v1", workload("reviews")),
            ("PUT", "/api/v1/workloads/default/ratings-v1/ready", {"ready": False}),
            ("DELETE", "/api/v1/workloads/default/ratings-v1", None),
        ):
            status, text = await api.call(method, path, token=REVIEWS, body=body)
            assert status == 403 and "'reviews', not 'ratings'" in text, (method, path)
        assert api.api.state.registry.workloads[("WorkloadEntry", "default", "ratings-v1")].ready

        assert (await api.call("DELETE", "/api/v1/workloads/default/reviews-v1", token=REVIEWS))[0] == 200
        assert api.registered == {"default/ratings-v1"}

    run(test, tmp_path, admin_token=ADMIN, token_verifier=TOKENS.verify)


def test_a_pod_token_opens_nothing_but_registration_and_a_bad_one_nothing(tmp_path) -> None:
    async def test(api: Served) -> None:
        for method, path in (("GET", "/debug/syncz"), ("GET", "/api/v1/workloads"), ("POST", "/api/v1/config")):
            assert (await api.call(method, path, token=REVIEWS, body=VS))[0] == 401, path
        status, text = await api.call(
            "PUT", "/api/v1/workloads/default/reviews-v1", token=FORGED, body=workload("reviews")
        )
        assert status == 401 and "not valid (bad signature" in text
        status, text = await api.call("PUT", "/api/v1/workloads/default/reviews-v1", body=workload("reviews"))
        assert status == 401 and "pod's token" in text
        assert not api.registered

    run(test, tmp_path, admin_token=ADMIN, token_verifier=TOKENS.verify)


def test_without_a_verifier_pod_tokens_are_refused(tmp_path) -> None:
    async def test(api: Served) -> None:
        status, text = await api.call(
            "PUT", "/api/v1/workloads/default/reviews-v1", token=REVIEWS, body=workload("reviews")
        )
        assert status == 401 and "no token verifier" in text
        assert (await api.call("PUT", "/api/v1/workloads/default/reviews-v1", token=ADMIN, body=workload("reviews")))[
            0
        ] == 200

    run(test, tmp_path, admin_token=ADMIN)


def test_the_host_needs_no_token_but_a_proxy_mode_pod_address_is_not_the_host(tmp_path) -> None:
    async def test(api: Served) -> None:
        for server in ("127.0.0.1", "127.0.0.2"):
            assert (await api.call("GET", "/debug/syncz", source="127.0.0.1", server=server))[0] == 200
            assert (await api.call("POST", "/api/v1/config", source="127.0.0.1", server=server, body=VS))[0] == 200
            assert (
                await api.call(
                    "PUT",
                    "/api/v1/workloads/default/productpage",
                    source="127.0.0.1",
                    server=server,
                    body=workload("productpage"),
                )
            )[0] == 200
        for pod in ("127.1.0.5", "127.0.0.3"):
            assert (await api.call("GET", "/debug/syncz", source=pod, server="127.0.0.1"))[0] == 401, pod

    run(test, tmp_path, admin_token=ADMIN, token_verifier=TOKENS.verify)


def test_a_pod_registers_only_the_address_it_calls_from(tmp_path) -> None:
    async def test(api: Served) -> None:
        status, text = await api.call(
            "PUT",
            "/api/v1/workloads/default/reviews-v1",
            token=REVIEWS,
            source="127.0.0.3",
            body=workload("reviews", address="127.0.0.9"),
        )
        assert status == 403 and "calls from 127.0.0.3 but registers address 127.0.0.9" in text
        assert api.registered == set()
        status, _ = await api.call(
            "PUT",
            "/api/v1/workloads/default/reviews-v1",
            token=REVIEWS,
            source="127.0.0.9",
            body=workload("reviews", address="127.0.0.9"),
        )
        assert status == 200 and api.registered == {"default/reviews-v1"}

    run(test, tmp_path, admin_token=ADMIN, token_verifier=TOKENS.verify)


def test_without_an_admin_token_the_api_is_open_as_before(tmp_path) -> None:
    async def test(api: Served) -> None:
        assert (await api.call("GET", "/debug/syncz"))[0] == 200
        assert (await api.call("POST", "/api/v1/config", body=VS))[0] == 200
        assert (await api.call("PUT", "/api/v1/workloads/default/x", body=workload("anyone")))[0] == 200

    run(test, tmp_path)


def test_the_cli_client_sends_plait_api_token_to_the_control_plane_only(monkeypatch) -> None:
    monkeypatch.setenv("PLAIT_API_TOKEN", ADMIN + "\n")
    assert Http("http://127.0.0.2:15014").headers(None, "")["Authorization"] == f"Bearer {ADMIN}"
    assert "Authorization" not in Http("http://127.0.0.1:15000", what="the Envoy admin API").headers(None, "")
    monkeypatch.delenv("PLAIT_API_TOKEN")
    assert "Authorization" not in Http("http://127.0.0.2:15014").headers(None, "")


def test_the_admin_token_file_is_owner_only_and_kept_across_restarts(tmp_path) -> None:
    path = admin_token_path(tmp_path / "control-plane")
    token = load_or_create_admin_token(path)
    assert len(token) >= 40 and path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert load_or_create_admin_token(path) == token


def test_mesh_state_settles_only_once_a_change_is_in_the_snapshot(tmp_path) -> None:
    """/debug/syncz waits on `settled()`, so a workload registered before it asks is in what proxies
    were sent (`plait up -d` relies on this to not call a mesh ready a debounce interval too early)."""

    async def test() -> None:
        store = FileStore(tmp_path)
        store.load()
        state = MeshState(store, WorkloadRegistry(), debounce=0.2)
        state.rebuild()
        task = asyncio.create_task(state.run())
        try:
            state.registry.register(parse_workload({"name": "w", "namespace": "default", "address": "10.0.0.1"}))
            state.changed()
            assert state.snapshot.workload("default/w") is None  # still debouncing
            await asyncio.wait_for(state.settled(), 2)
            assert state.snapshot.workload("default/w") is not None
        finally:
            task.cancel()

    asyncio.run(test())
