"""The control plane's once-per-cluster duties on a real API server (kube-testenv, API-only mode):
leader election over a Lease (plait.controlplane.kubelease), the root certificate in every
namespace (plait.controlplane.rootcert) written by the leader only, and the validating webhook
(plait.controlplane.webhook) called by the API server on `kubectl apply`."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509 import verification
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from plait.ca.authority import pem
from plait.ca.client import new_key_and_csr, request_certificate
from plait.controlplane.app import Settings, api_server_away, run
from plait.controlplane.kubeidentity import CLUSTER_RULES, NAMESPACE_RULES, ClusterIdentity, ClusterSettings
from plait.controlplane.kubelease import LeaseElection
from plait.controlplane.leader import ElectionConfig
from plait.controlplane.rootcert import CONFIGMAP, ROOT_CERT_KEY, publish_root_cert
from plait.controlplane.webhook import serve_webhook, tls_context, validating_webhook_configuration
from plait.testing.kube import KubeTestenv, require_testenv
from plait.testing.kubeapi import api_client, ensure_namespace, pod_token
from plait.testing.live import free_port

TIMEOUT = 90
FAST = ElectionConfig(lease_duration=3, renew_deadline=2, retry_period=0.5)
ROOT_A = "-----BEGIN CERTIFICATE-----\nroot of a\n-----END CERTIFICATE-----\n"
ROOT_B = "-----BEGIN CERTIFICATE-----\nroot of b\n-----END CERTIFICATE-----\n"


@pytest.fixture(scope="module")
def cluster():
    env = KubeTestenv(require_testenv(), prefix="plait-kube-identity-").start()
    try:
        yield env
    finally:
        env.remove()


def on_cluster(cluster: KubeTestenv, test, *, timeout: float = TIMEOUT) -> None:
    """Run `test(api)` against the cluster; a hang fails after `timeout` seconds instead of blocking CI."""

    async def run():
        api = await api_client(cluster.kubeconfig)
        try:
            await test(api)
        finally:
            await api.close()

    asyncio.run(asyncio.wait_for(run(), timeout))


async def eventually(condition: Callable, what: str, timeout: float = 30.0):
    """Poll `condition` (sync or async) until it returns something true; fail saying `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


class Replica:
    """One control-plane replica taking part in the election; its job notes when it runs."""

    def __init__(
        self, api, identity: str, running: dict[str, int], namespace: str, *, release: bool = False, jobs=None
    ):
        self.identity = identity
        self.election = LeaseElection(
            api, namespace=namespace, name="plait-leader", identity=identity, config=FAST, release_on_stop=release
        )

        async def job():
            running[identity] = running.get(identity, 0) + 1
            try:
                await asyncio.Event().wait()
            finally:
                running[identity] -= 1

        self.task = asyncio.create_task(self.election.run([job, *(jobs or [])]))

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def watch_leaders(
    replicas: list[Replica], running: dict[str, int], seen: list[set[str]], stop: asyncio.Event
) -> None:
    """Sample who leads and whose job runs, every 50 ms."""
    while not stop.is_set():
        leaders = {r.identity for r in replicas if r.election.leading}
        jobs = {name for name, n in running.items() if n}
        seen.append(leaders | jobs)
        await asyncio.sleep(0.05)


def test_one_leader_and_a_takeover_when_it_dies(cluster):
    async def test(api):
        await ensure_namespace(api, "lease-1")
        running: dict[str, int] = {}
        a = Replica(api, "cp-a", running, "lease-1")
        b = Replica(api, "cp-b", running, "lease-1")
        first = await eventually(lambda: [r for r in (a, b) if r.election.leading], "a leader")
        (leader,) = first
        standby = b if leader is a else a
        seen: list[set[str]] = []
        sampling = asyncio.Event()
        sampler = asyncio.create_task(watch_leaders([a, b], running, seen, sampling))
        await asyncio.sleep(4 * FAST.lease_duration / 3)  # the leader renews; the standby waits
        assert standby.election.elector.holder == leader.identity and not standby.election.leading
        killed_at = time.monotonic()
        await leader.stop()  # a crash: no release
        await eventually(lambda: standby.election.leading, "the standby takes over", timeout=30)
        took = time.monotonic() - killed_at
        await eventually(lambda: running.get(standby.identity) == 1, "the new leader's job runs")
        sampling.set()
        await sampler
        assert all(len(s) <= 1 for s in seen), "two leaders (or jobs of two replicas) at once"
        assert running.get(leader.identity, 0) == 0
        # the standby may take over only after the lease had gone unrenewed for a whole lease duration
        assert took >= FAST.lease_duration - FAST.retry_period
        lease = await client.CoordinationV1Api(api).read_namespaced_lease("plait-leader", "lease-1")
        assert lease.spec.holder_identity == standby.identity and lease.spec.lease_duration_seconds == 3
        assert lease.spec.lease_transitions == 1
        await standby.stop()

    on_cluster(cluster, test)


def test_a_graceful_stop_hands_the_lease_over(cluster):
    async def test(api):
        await ensure_namespace(api, "lease-2")
        running: dict[str, int] = {}
        a = Replica(api, "cp-a", running, "lease-2", release=True)
        await eventually(lambda: a.election.leading, "a leads")
        b = Replica(api, "cp-b", running, "lease-2", release=True)
        await eventually(lambda: b.election.elector.holder == "cp-a", "b sees a leading")
        await a.stop()
        lease = await client.CoordinationV1Api(api).read_namespaced_lease("plait-leader", "lease-2")
        assert lease.spec.holder_identity in ("", None, "cp-b") and running.get("cp-a") == 0
        await eventually(lambda: b.election.leading and running.get("cp-b") == 1, "b leads and runs its job")
        await b.stop()
        lease = await client.CoordinationV1Api(api).read_namespaced_lease("plait-leader", "lease-2")
        assert lease.spec.holder_identity in ("", None) and lease.spec.lease_duration_seconds == 1

    on_cluster(cluster, test)


# ------------------------------------------------------------------ the root certificate, by the leader


async def root_in(api, namespace: str) -> str | None:
    try:
        cm = await client.CoreV1Api(api).read_namespaced_config_map(CONFIGMAP, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return (cm.data or {}).get(ROOT_CERT_KEY)


def test_the_leader_publishes_the_root_in_every_namespace_and_keeps_it_there(cluster):
    async def test(api):
        core = client.CoreV1Api(api)
        await ensure_namespace(api, "istio-system")
        await ensure_namespace(api, "shop")
        await ensure_namespace(api, "kube-public")
        running: dict[str, int] = {}

        def publisher(root):
            async def job():
                await publish_root_cert(api, root)

            return job

        a = Replica(api, "cp-a", running, "istio-system", jobs=[publisher(ROOT_A)])
        await eventually(lambda: a.election.leading, "a leads")
        b = Replica(api, "cp-b", running, "istio-system", jobs=[publisher(ROOT_B)])  # never leads while a lives
        for namespace in ("default", "kube-system", "istio-system", "shop"):
            await eventually(lambda ns=namespace: _is(root_in(api, ns), ROOT_A), f"the root in {namespace}")
        cm = await core.read_namespaced_config_map(CONFIGMAP, "shop")
        assert cm.metadata.labels == {"istio.io/config": "true"}
        assert await root_in(api, "kube-public") is None  # skipped, as by istiod

        await ensure_namespace(api, "new-team")
        await eventually(lambda: _is(root_in(api, "new-team"), ROOT_A), "the root in a new namespace")

        cm.data = {ROOT_CERT_KEY: "edited by a user", "notes": "mine"}
        await core.replace_namespaced_config_map(CONFIGMAP, "shop", cm)
        restored = await eventually(lambda: _restored(core, "shop"), "the edited root restored")
        assert restored.data == {ROOT_CERT_KEY: ROOT_A, "notes": "mine"}

        await core.delete_namespaced_config_map(CONFIGMAP, "new-team")
        await eventually(lambda: _is(root_in(api, "new-team"), ROOT_A), "the deleted ConfigMap recreated")
        assert not b.election.leading and running.get("cp-b", 0) == 0

        await a.stop()  # crash of the leader: b takes over and publishes its own root
        await eventually(lambda: _is(root_in(api, "shop"), ROOT_B), "the new leader's root", timeout=30)
        await b.stop()

    on_cluster(cluster, test)


async def _is(value, expected) -> bool:
    return (await value) == expected


async def _restored(core, namespace):
    cm = await core.read_namespaced_config_map(CONFIGMAP, namespace)
    return cm if cm.data.get(ROOT_CERT_KEY) == ROOT_A else None


# ------------------------------------------------------------------ the validating webhook

INVALID_VS = """
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
    timeout: 5 seconds
"""
VALID_VS = INVALID_VS.replace("5 seconds", "5s")
INVALID_AP = """
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings, namespace: shop}
spec:
  action: ALLOW
  rules:
  - from:
    - source: {}
"""
WASM_PLUGIN = """
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: mesh-default, namespace: shop}
spec:
  url: oci://registry.test/filters/auth:1
"""


@pytest.fixture(scope="module")
def istio_crds(cluster):
    cluster.load_crds()
    cluster.kubectl("apply", "-f", "-", stdin="apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")


def kubectl_apply(cluster: KubeTestenv, text: str, *extra: str) -> tuple[bool, str]:
    try:
        return True, cluster.kubectl("apply", "--validate=false", *extra, "-f", "-", stdin=text)
    except RuntimeError as error:
        return False, str(error)


def test_kubectl_apply_of_invalid_istio_config_is_refused_with_plaits_message(cluster, istio_crds, tmp_path):
    env = cluster.env
    port = free_port()
    context = tls_context(
        Path(env["KUBE_TESTENV_WEBHOOK_CERT"]).read_bytes(),
        Path(env["KUBE_TESTENV_WEBHOOK_KEY"]).read_bytes(),
        tmp_path / "tls",
    )
    configuration = validating_webhook_configuration(
        Path(env["KUBE_TESTENV_CA"]).read_bytes(), url=f"https://127.0.0.1:{port}/validate", name="istio-validator-test"
    )

    async def test(api):
        runner = await serve_webhook(context, "127.0.0.1", port)
        try:
            await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", stdin=yaml.safe_dump(configuration))

            async def denied():  # the API server picks the configuration up shortly after it is stored
                ok, _ = await asyncio.to_thread(kubectl_apply, cluster, INVALID_VS, "--dry-run=server")
                return not ok

            await eventually(denied, "the webhook is called")

            ok, message = await asyncio.to_thread(kubectl_apply, cluster, INVALID_VS)
            assert not ok
            assert (
                'admission webhook "validation.istio.io" denied the request: configuration is invalid: '
                "VirtualService shop/reviews: spec.http[0].timeout: '5 seconds' is not a duration"
            ) in message
            assert "not found" in await asyncio.to_thread(_get_error, cluster, "virtualservice", "reviews")

            ok, message = await asyncio.to_thread(kubectl_apply, cluster, INVALID_AP)  # the CRD's schema lets it in
            assert (
                not ok
                and (
                    "AuthorizationPolicy shop/ratings: spec.rules[0].from[0].source: a source needs at least one field"
                )
                in message
            )

            ok, message = await asyncio.to_thread(kubectl_apply, cluster, VALID_VS)
            assert ok, message
            stored = yaml.safe_load(
                await asyncio.to_thread(cluster.kubectl, "get", "-n", "shop", "virtualservice", "reviews", "-o", "yaml")
            )
            assert stored["spec"]["http"][0]["timeout"] == "5s"
            ok, message = await asyncio.to_thread(kubectl_apply, cluster, INVALID_VS)  # an UPDATE is checked too
            assert not ok and "is not a duration" in message

            ok, message = await asyncio.to_thread(kubectl_apply, cluster, WASM_PLUGIN)  # a kind plait does not read
            assert ok, message
        finally:
            await runner.cleanup()
        # no control plane answers: Istio config cannot be written unchecked (failurePolicy Fail) …
        ok, message = await asyncio.to_thread(kubectl_apply, cluster, VALID_VS.replace("5s", "6s"))
        assert not ok and "failed calling webhook" in message
        # … but other kinds are never sent to it
        ok, message = await asyncio.to_thread(kubectl_apply, cluster, WASM_PLUGIN.replace("mesh-default", "other"))
        assert ok, message
        await asyncio.to_thread(cluster.kubectl, "delete", "validatingwebhookconfiguration", "istio-validator-test")

    on_cluster(cluster, test)
    assert base64.b64decode(configuration["webhooks"][0]["clientConfig"]["caBundle"]).startswith(b"-----BEGIN")


def _get_error(cluster: KubeTestenv, kind: str, name: str) -> str:
    try:
        return cluster.kubectl("get", "-n", "shop", kind, name)
    except RuntimeError as error:
        return str(error)


# ------------------------------------------------------------------ all of it in the control plane


def test_the_control_plane_on_a_cluster_does_all_of_it(cluster, istio_crds, tmp_path):
    """`plait control-plane` against the cluster: its CA from istio-ca-secret, a pod's certificate
    through TokenReview over TLS, the root in every namespace, the Lease, and the webhook whose
    caBundle the leader sets to the mesh's root, so that the API server calls it."""
    webhook_port = free_port()
    settings = Settings(
        config_dir=tmp_path / "mesh",
        host="127.0.0.1",
        xds_port=free_port(),
        http_port=free_port(),
        ca_port=free_port(),
        state_dir=tmp_path / "state",
        kubernetes=True,
        kubeconfig=cluster.kubeconfig,
        cluster=ClusterSettings(
            namespace="istio-system",
            identity="istiod-0",
            election=FAST,
            webhook_port=webhook_port,
            webhook_configuration="istio-validator-plait",
        ),
    )
    (tmp_path / "mesh").mkdir()
    configuration = validating_webhook_configuration(
        b"not yet the mesh's root", url=f"https://localhost:{webhook_port}/validate", name="istio-validator-plait"
    )

    async def test(api):
        core = client.CoreV1Api(api)
        await ensure_namespace(api, "istio-system")
        await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", stdin=yaml.safe_dump(configuration))
        token = await pod_token(api, "shop", "bookinfo-reviews", pod="reviews-v1-0")
        stop = asyncio.Event()
        control_plane = asyncio.create_task(run(settings, stop=stop))
        try:
            secret = await eventually(lambda: _secret(core, "istio-ca-secret"), "the CA's Secret")
            root = base64.b64decode(secret.data["root-cert.pem"])
            await eventually(lambda: _is(root_in(api, "shop"), root.decode()), "the root in namespace shop")
            lease = await client.CoordinationV1Api(api).read_namespaced_lease("plait-leader", "istio-system")
            assert lease.spec.holder_identity == "istiod-0"

            async def denied():
                ok, _ = await asyncio.to_thread(kubectl_apply, cluster, INVALID_VS, "--dry-run=server")
                return not ok

            await eventually(denied, "the API server calls the webhook, trusting the root as caBundle")
            ok, message = await asyncio.to_thread(kubectl_apply, cluster, INVALID_VS, "--dry-run=server")
            assert "VirtualService shop/reviews: spec.http[0].timeout: '5 seconds' is not a duration" in message

            identity = "spiffe://cluster.local/ns/shop/sa/bookinfo-reviews"
            _, csr = new_key_and_csr(identity)
            chain = await request_certificate(
                f"127.0.0.1:{settings.ca_port}", root_pem=root, token=token, csr_pem=csr, ttl_seconds=3600, timeout=20
            )
            assert leaf_identity(chain, root) == identity
        finally:
            stop.set()
            await control_plane
        lease = await client.CoordinationV1Api(api).read_namespaced_lease("plait-leader", "istio-system")
        assert lease.spec.holder_identity in ("", None)  # handed over on the way out

    on_cluster(cluster, test)


def leaf_identity(chain: list[bytes], root_pem: bytes) -> str:
    """The URI SAN of the chain's leaf, once the chain is verified up to `root_pem`."""
    root = x509.load_pem_x509_certificate(root_pem)
    certs = [x509.load_pem_x509_certificate(c) for c in chain]
    verifier = verification.PolicyBuilder().store(verification.Store([root])).build_client_verifier()
    result = verifier.verify(certs[0], certs[1:])
    (uri,) = [n.value for n in result.subjects if isinstance(n, x509.UniformResourceIdentifier)]
    return uri


async def _secret(core, name: str):
    try:
        return await core.read_namespaced_secret(name, "istio-system")
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_a_failing_leaders_job_is_started_again(cluster):
    async def test(api):
        await ensure_namespace(api, "lease-3")
        starts = []

        async def flaky():
            starts.append(time.monotonic())
            if len(starts) == 1:
                raise RuntimeError("first start fails")
            await asyncio.Event().wait()

        election = LeaseElection(api, namespace="lease-3", identity="cp-a", config=FAST)
        task = asyncio.create_task(election.run([flaky]))
        await eventually(lambda: len(starts) == 2, "the job started again")
        assert starts[1] - starts[0] >= FAST.retry_period and election.leading
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    on_cluster(cluster, test)


def test_the_control_planes_namespace_is_created_when_missing(cluster, tmp_path):
    """Run from outside the cluster, for development: its Secrets and Lease need the namespace."""

    async def test(api):
        settings = ClusterSettings(namespace="plait-dev", identity="laptop", election=FAST)
        identity = await ClusterIdentity.open(api, tmp_path / "state", settings)
        namespace = await client.CoreV1Api(api).read_namespace("plait-dev")
        assert namespace.metadata.name == "plait-dev"
        secret = await client.CoreV1Api(api).read_namespaced_secret("istio-ca-secret", "plait-dev")
        assert base64.b64decode(secret.data["root-cert.pem"]) == pem(identity.authority.root)

    on_cluster(cluster, test)


def test_the_rbac_rules_given_are_all_the_duties_need(cluster, tmp_path):
    """The duties run as a service account bound to exactly CLUSTER_RULES and NAMESPACE_RULES."""
    webhook_port = free_port()

    async def test(admin):
        rbac = client.RbacAuthorizationV1Api(admin)
        await ensure_namespace(admin, "plait-rbac")
        subject = [{"kind": "ServiceAccount", "name": "istiod", "namespace": "plait-rbac"}]
        await rbac.create_cluster_role({"metadata": {"name": "plait-rbac-test"}, "rules": list(CLUSTER_RULES)})
        await rbac.create_cluster_role_binding(
            {
                "metadata": {"name": "plait-rbac-test"},
                "subjects": subject,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "plait-rbac-test"},
            }
        )
        await rbac.create_namespaced_role(
            "plait-rbac", {"metadata": {"name": "istiod"}, "rules": list(NAMESPACE_RULES)}
        )
        await rbac.create_namespaced_role_binding(
            "plait-rbac",
            {
                "metadata": {"name": "istiod"},
                "subjects": subject,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "istiod"},
            },
        )
        configuration = validating_webhook_configuration(
            b"", url=f"https://localhost:{webhook_port}/validate", name="plait-rbac-validator"
        )
        await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", stdin=yaml.safe_dump(configuration))
        own_token = await pod_token(admin, "plait-rbac", "istiod", audiences=())
        pods_token = await pod_token(admin, "shop", "bookinfo-ratings")

        restricted = client.Configuration(
            host=cluster.env["KUBE_TESTENV_SERVER"],
            api_key={"BearerToken": own_token},
            api_key_prefix={"BearerToken": "Bearer"},
        )
        restricted.ssl_ca_cert = cluster.env["KUBE_TESTENV_CA"]
        async with client.ApiClient(restricted) as api:
            with pytest.raises(ApiException) as forbidden:  # it really is restricted
                await client.CoreV1Api(api).list_secret_for_all_namespaces()
            assert forbidden.value.status == 403
            assert "system:serviceaccount:plait-rbac:istiod" in str(forbidden.value.body)
            await eventually(lambda: _role_in_force(api), "the Role bound (the API server's RBAC cache)")
            settings = ClusterSettings(
                namespace="plait-rbac",
                identity="istiod-0",
                election=FAST,
                webhook_port=webhook_port,
                webhook_configuration="plait-rbac-validator",
            )
            identity = await ClusterIdentity.open(api, tmp_path / "state", settings)
            await identity.start("127.0.0.1", tmp_path / "state")
            try:
                root = pem(identity.authority.root)
                await eventually(lambda: identity.election.leading, "it leads")
                await eventually(lambda: _is(root_in(admin, "default"), root.decode()), "the root published")
                wanted = base64.b64encode(root).decode()
                await eventually(lambda: _ca_bundle_is(admin, "plait-rbac-validator", wanted), "the caBundle set")
                caller = await identity.authenticator.authenticate(pods_token)
                assert (caller.namespace, caller.service_account) == ("shop", "bookinfo-ratings")
            finally:
                await identity.close()
        await asyncio.to_thread(cluster.kubectl, "delete", "validatingwebhookconfiguration", "plait-rbac-validator")

    on_cluster(cluster, test)


async def _role_in_force(api) -> bool:
    try:
        await client.CoreV1Api(api).read_namespaced_secret("no-such-secret", "plait-rbac")
    except ApiException as error:
        return error.status == 404
    return True


async def _ca_bundle_is(api, name: str, wanted: str) -> bool:
    config = await client.AdmissionregistrationV1Api(api).read_validating_webhook_configuration(name)
    return all(w.client_config.ca_bundle == wanted for w in config.webhooks)


def test_a_leader_cut_off_from_the_api_server_stops_its_jobs_and_leads_again_when_it_returns(cluster):
    """Last in this module: it stops the module's API server for a while."""

    async def test(api):
        await ensure_namespace(api, "lease-4")
        running: dict[str, int] = {}
        a = Replica(api, "cp-a", running, "lease-4")
        await eventually(lambda: a.election.leading and running.get("cp-a") == 1, "a leads")
        await asyncio.to_thread(cluster.stop)
        try:
            await eventually(
                lambda: not a.election.leading and running.get("cp-a") == 0,
                "a stops leading and its job once it cannot renew",
                timeout=30,
            )
        finally:
            await asyncio.to_thread(cluster.start)
        await eventually(lambda: a.election.leading and running.get("cp-a") == 1, "a leads again", timeout=60)
        await a.stop()

    # its own waits add up to 90 s, and stopping and starting the API server takes longer on a busy machine
    on_cluster(cluster, test, timeout=240)


def test_a_control_plane_started_before_the_api_server_waits_for_it_instead_of_exiting(cluster, tmp_path, caplog):
    """Last in this module too (it stops the API server): a control plane whose pod starts while the API
    server is away (a node's restart) says so and tries again; once the API server is back it gets its CA
    and leads, with no restart of its own."""
    settings = Settings(
        config_dir=tmp_path / "mesh",
        host="127.0.0.1",
        xds_port=free_port(),
        http_port=free_port(),
        ca_port=free_port(),
        state_dir=tmp_path / "state",
        kubernetes=True,
        kubeconfig=cluster.kubeconfig,
        cluster=ClusterSettings(namespace="early", identity="istiod-early", election=FAST, webhook_port=free_port()),
    )
    (tmp_path / "mesh").mkdir()
    cluster.stop()

    async def test():
        stop = asyncio.Event()
        control_plane = asyncio.create_task(run(settings, stop=stop))
        try:
            await eventually(lambda: "cannot reach the Kubernetes API server" in caplog.text, "it says why it waits")
            await asyncio.sleep(2)
            assert not control_plane.done(), control_plane
            await asyncio.to_thread(cluster.start)
            api = await api_client(cluster.kubeconfig)
            try:
                core = client.CoreV1Api(api)
                await eventually(lambda: _secret_in(core, "early"), "the CA's Secret, once it is back", timeout=60)
                leases = client.CoordinationV1Api(api)
                lease = await eventually(lambda: _lease(leases, "early"), "the Lease", timeout=30)
                assert lease.spec.holder_identity == "istiod-early"
            finally:
                await api.close()
        finally:
            stop.set()
            await control_plane

    with caplog.at_level(logging.WARNING, logger="plait.controlplane"):
        try:
            asyncio.run(asyncio.wait_for(test(), 180))
        finally:
            if not _answers(cluster):  # the test failed before it started it again
                cluster.start()


def _answers(cluster: KubeTestenv) -> bool:
    try:
        cluster.kubectl("get", "--raw", "/readyz")
    except RuntimeError:
        return False
    return True


async def _secret_in(core, namespace: str):
    try:
        return await core.read_namespaced_secret("istio-ca-secret", namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


async def _lease(leases, namespace: str):
    try:
        return await leases.read_namespaced_lease("plait-leader", namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def test_only_an_absent_api_server_is_waited_out():
    assert api_server_away(ConnectionRefusedError()) and api_server_away(TimeoutError())
    assert api_server_away(ApiException(status=503)) and not api_server_away(ApiException(status=403))
    assert not api_server_away(ValueError("a bad CA"))
