"""The sidecar injector on a real API server (kube-testenv, API-only mode: pods are stored, not run):
`kubectl create` of a Pod goes through the MutatingWebhookConfiguration to the control plane's
/inject, and the stored pod is the injected one; pods the selectors or the pod's own opt-out leave
out are stored unchanged. Then the whole control plane: its leader sets the configuration's caBundle
to the mesh's root, so the API server trusts the injector's certificate."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from plait.controlplane.api import admin_token_path
from plait.controlplane.app import Settings, run
from plait.controlplane.injector import inject_handler, mutating_webhook_configuration
from plait.controlplane.kubeidentity import ClusterSettings, namespace_labels
from plait.controlplane.leader import ElectionConfig
from plait.controlplane.webhook import serve_webhook, tls_context
from plait.inject import InjectSettings
from plait.testing.http import http_request
from plait.testing.kube import KubeTestenv, require_testenv
from plait.testing.kubeapi import api_client
from plait.testing.live import free_port

TIMEOUT = 120
PROXY_IMAGE = "registry.test/plait-proxy:1.2"


def namespace(name: str, **labels: str) -> str:
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})


def pod(name: str, ns: str, **annotations: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": name}, "annotations": annotations},
            "spec": {
                # API-only mode has no ServiceAccount admission to default it (a real cluster's does,
                # before webhooks are called), and a projected token needs it
                "serviceAccountName": f"sa-{name}",
                "containers": [
                    {
                        "name": "app",
                        "image": "app:1",
                        "ports": [{"containerPort": 9080}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 9080}},
                    }
                ],
            },
        }
    )


@pytest.fixture(scope="module")
def cluster():
    env = KubeTestenv(require_testenv(), prefix="plait-kube-injector-").start()
    try:
        yield env
    finally:
        env.remove()


def stored(cluster: KubeTestenv, ns: str, name: str) -> dict:
    return yaml.safe_load(cluster.kubectl("get", "pod", "-n", ns, name, "-o", "yaml"))


def create(cluster: KubeTestenv, text: str) -> tuple[bool, str]:
    try:
        return True, cluster.kubectl("create", "-f", "-", stdin=text)
    except RuntimeError as error:
        return False, str(error)


async def eventually_injected(cluster: KubeTestenv, ns: str, prefix: str) -> dict:
    """Create pods `prefix`-0, -1… until the API server has picked the new configuration up and one
    is stored injected (the API server reads webhook configurations from its own watch; a control
    plane starting serves its webhook once it has read the cluster, and is trusted once its leader
    has set the caBundle)."""
    for attempt in range(100):
        name = f"{prefix}-{attempt}"
        ok, message = await asyncio.to_thread(create, cluster, pod(name, ns))
        if not ok:
            assert "failed calling webhook" in message, message
            await asyncio.sleep(0.2)
            continue
        obj = await asyncio.to_thread(stored, cluster, ns, name)
        if "sidecar.istio.io/status" in (obj["metadata"].get("annotations") or {}):
            return obj
        await asyncio.sleep(0.2)
    raise AssertionError("no pod was injected: the API server never called the injector")


def test_kubectl_create_of_a_pod_stores_it_injected_or_untouched(cluster, tmp_path):
    env = cluster.env
    port = free_port()
    context = tls_context(
        Path(env["KUBE_TESTENV_WEBHOOK_CERT"]).read_bytes(),
        Path(env["KUBE_TESTENV_WEBHOOK_KEY"]).read_bytes(),
        tmp_path / "tls",
    )
    configuration = mutating_webhook_configuration(
        Path(env["KUBE_TESTENV_CA"]).read_bytes(), url=f"https://127.0.0.1:{port}/inject"
    )
    for name, labels in (
        ("shop", {"istio-injection": "enabled"}),
        ("plain", {}),
        ("canary", {"istio.io/rev": "canary"}),
    ):
        cluster.kubectl("apply", "-f", "-", stdin=namespace(name, **labels))

    async def test():
        api = await api_client(cluster.kubeconfig)
        handler = inject_handler(lambda: InjectSettings(proxy_image=PROXY_IMAGE), namespace_labels(api, None))
        runner = await serve_webhook(context, "127.0.0.1", port, inject=handler)
        try:
            await asyncio.to_thread(cluster.kubectl, "apply", "-f", "-", stdin=yaml.safe_dump(configuration))
            injected = await eventually_injected(cluster, "shop", "web")
            spec = injected["spec"]
            assert [c["name"] for c in spec["initContainers"]] == ["istio-init"]
            assert [c["name"] for c in spec["containers"]] == ["app", "istio-proxy"]
            proxy = spec["containers"][1]
            assert proxy["image"] == PROXY_IMAGE and proxy["securityContext"]["runAsUser"] == 1337
            assert spec["initContainers"][0]["image"] == PROXY_IMAGE
            assert spec["containers"][0]["readinessProbe"]["httpGet"]["port"] == 15020  # through the agent
            token = next(v for v in spec["volumes"] if v["name"] == "istio-token")
            assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == "istio-ca"
            status = yaml.safe_load(injected["metadata"]["annotations"]["sidecar.istio.io/status"])
            assert status["initContainers"] == ["istio-init"] and status["containers"] == ["istio-proxy"]
            assert injected["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"

            for ns, name, annotations in (
                ("plain", "web", {}),  # no injection label: the API server does not even call the webhook
                ("canary", "web", {}),  # another revision's namespace
                ("shop", "opted-out", {"sidecar.istio.io/inject": "false"}),  # the webhook is called, and skips it
            ):
                ok, message = await asyncio.to_thread(create, cluster, pod(name, ns, **annotations))
                assert ok, message
                obj = await asyncio.to_thread(stored, cluster, ns, name)
                assert [c["name"] for c in obj["spec"]["containers"]] == ["app"], (ns, name)
                assert "initContainers" not in obj["spec"]
                assert obj["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] == 9080
                assert "sidecar.istio.io/status" not in (obj["metadata"].get("annotations") or {})

            # a bad annotation: the pod is refused with the injector's message, and not stored
            ok, message = await asyncio.to_thread(
                create, cluster, pod("bad", "shop", **{"sidecar.istio.io/proxyCPU": "lots"})
            )
            assert not ok and "sidecar.istio.io/proxyCPU" in message and "denied the request" in message
            assert "not found" in await asyncio.to_thread(_get_error, cluster, "shop", "bad")

            # a namespace labelled an instant ago (the lookup reads it from the API server)
            cluster.kubectl("apply", "-f", "-", stdin=namespace("fresh", **{"istio-injection": "enabled"}))
            ok, message = await asyncio.to_thread(create, cluster, pod("web", "fresh"))
            assert ok, message
            assert "istio-proxy" in [
                c["name"] for c in (await asyncio.to_thread(stored, cluster, "fresh", "web"))["spec"]["containers"]
            ]
        finally:
            await runner.cleanup()
            await api.close()
        # no injector answers: pods of injected namespaces are refused (failurePolicy Fail), others are not
        ok, message = await asyncio.to_thread(create, cluster, pod("later", "shop"))
        assert not ok and "failed calling webhook" in message
        ok, message = await asyncio.to_thread(create, cluster, pod("later", "plain"))
        assert ok, message
        await asyncio.to_thread(cluster.kubectl, "delete", "mutatingwebhookconfiguration", "istio-sidecar-injector")

    asyncio.run(asyncio.wait_for(test(), TIMEOUT))


def _get_error(cluster: KubeTestenv, ns: str, name: str) -> str:
    try:
        return cluster.kubectl("get", "pod", "-n", ns, name)
    except RuntimeError as error:
        return str(error)


def test_the_control_plane_injects_once_its_leader_set_the_ca_bundle(cluster, tmp_path):
    """`plait control-plane` against the cluster with --proxy-image and a revision: the injector's
    configuration starts with a wrong caBundle; the leader sets the mesh's root, and pods of the
    revision's namespaces are injected pointing at istiod-REV."""
    webhook_port = free_port()
    inject = InjectSettings(
        proxy_image=PROXY_IMAGE, revision="blue", control_plane="istiod-blue.istio-system.svc:15012"
    )
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
            identity="istiod-blue-0",
            election=ElectionConfig(lease_duration=3, renew_deadline=2, retry_period=0.5),
            webhook_port=webhook_port,
            webhook_configuration="istio-validator-none",
        ),
        inject=inject,
    )
    (tmp_path / "mesh").mkdir()
    configuration = mutating_webhook_configuration(
        b"not yet the mesh's root", url=f"https://localhost:{webhook_port}/inject", revision="blue"
    )
    cluster.kubectl("apply", "-f", "-", stdin=namespace("blue-apps", **{"istio.io/rev": "blue"}))
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(configuration))

    async def test():
        stop = asyncio.Event()
        control_plane = asyncio.create_task(run(settings, stop=stop))
        try:
            injected = await eventually_injected(cluster, "blue-apps", "web")
            proxy = injected["spec"]["containers"][-1]
            assert proxy["name"] == "istio-proxy"
            assert "istiod-blue.istio-system.svc:15012" in " ".join(proxy.get("args", [])) + str(proxy.get("env"))
            assert yaml.safe_load(injected["metadata"]["annotations"]["sidecar.istio.io/status"])["revision"] == "blue"
        finally:
            stop.set()
            await control_plane

    asyncio.run(asyncio.wait_for(test(), TIMEOUT))
    current = yaml.safe_load(
        cluster.kubectl("get", "mutatingwebhookconfiguration", "istio-sidecar-injector-blue", "-o", "yaml")
    )
    roots = {w["clientConfig"]["caBundle"] for w in current["webhooks"]}
    assert len(roots) == 1 and roots != {configuration["webhooks"][0]["clientConfig"]["caBundle"]}


def test_a_changed_mesh_config_file_is_in_force_without_a_restart(cluster, tmp_path):
    """istiod's --meshConfig file, followed: the kubelet rewrites the mounted ConfigMap istio when it
    changes; the injector's proxy defaults and the MeshConfig translation reads (access logs) follow
    within seconds, and a wrong file is logged while the last good one stays in force."""
    mesh_file = tmp_path / "mesh.yaml"
    mesh_file.write_text("defaultConfig:\n  proxyMetadata: {GREETING: first}\n")
    http_port = free_port()
    settings = Settings(
        config_dir=tmp_path / "mesh",
        host="127.0.0.1",
        xds_port=free_port(),
        http_port=http_port,
        ca_port=free_port(),
        state_dir=tmp_path / "state",
        kubernetes=True,
        kubeconfig=cluster.kubeconfig,
        cluster=ClusterSettings(
            namespace="istio-system",
            identity="istiod-mesh-0",
            election=ElectionConfig(lease_duration=3, renew_deadline=2, retry_period=0.5),
            webhook_port=free_port(),
            webhook_configuration="istio-validator-none",
            lease_name="plait-leader-meshfile",
        ),
        inject=InjectSettings(proxy_image=PROXY_IMAGE, revision="mesh"),
        mesh_config=mesh_file,
    )
    (tmp_path / "mesh").mkdir()
    configuration = mutating_webhook_configuration(
        b"not yet the mesh's root", url=f"https://localhost:{settings.cluster.webhook_port}/inject", revision="mesh"
    )
    cluster.kubectl("apply", "-f", "-", stdin=namespace("mesh-apps", **{"istio.io/rev": "mesh"}))
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(configuration))

    def greeting(pod: dict) -> str | None:
        env = pod["spec"]["containers"][-1].get("env") or []
        return next((e.get("value") for e in env if e["name"] == "GREETING"), None)

    def mesh_config_in_force() -> dict:
        token = admin_token_path(tmp_path / "state").read_text().strip()
        reply = http_request(
            "127.0.0.1",
            http_port,
            "/api/v1/config?kind=ConfigMap&namespace=istio-system&name=istio",
            {"Authorization": f"Bearer {token}"},
        )
        items = json.loads(reply.body)["items"]
        return yaml.safe_load(items[0]["data"]["mesh"]) if items else {}

    async def test():
        stop = asyncio.Event()
        control_plane = asyncio.create_task(run(settings, stop=stop))
        try:
            assert greeting(await eventually_injected(cluster, "mesh-apps", "first")) == "first"
            mesh_file.write_text("accessLogFile: /dev/stdout\ndefaultConfig:\n  proxyMetadata: {GREETING: second}\n")
            for attempt in range(60):  # the file is read every 2 s
                if greeting(await eventually_injected(cluster, "mesh-apps", f"second-{attempt}")) == "second":
                    break
                await asyncio.sleep(0.5)
            else:
                raise AssertionError("the injector never used the changed mesh config")
            assert (await asyncio.to_thread(mesh_config_in_force))["accessLogFile"] == "/dev/stdout"

            mesh_file.write_text("defaultConfig:\n  concurrency: lots\n")  # wrong: the last good one stays
            await asyncio.sleep(5)
            assert greeting(await eventually_injected(cluster, "mesh-apps", "third")) == "second"
            assert (await asyncio.to_thread(mesh_config_in_force))["accessLogFile"] == "/dev/stdout"
        finally:
            stop.set()
            await control_plane

    asyncio.run(asyncio.wait_for(test(), TIMEOUT + 60))
