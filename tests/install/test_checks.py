"""`plait check` and `verify-install` verdicts from facts (`plait.install.checks`, pure): each failure
is named with a hint; the certificate's dates are judged against the facts' clock."""

from __future__ import annotations

import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from plait.cli.main import app
from plait.install.apply import describe, is_legacy_version, owned_selector, why_no_pod, why_not_ready
from plait.install.checks import CREATED_RESOURCES, Facts, check_results, pre_check_results, verify_results
from plait.install.manifests import manifest
from plait.install.settings import InstallSettings

NOW = datetime.datetime(2026, 12, 6, tzinfo=datetime.UTC)
SETTINGS = InstallSettings()


def root_cert(days: int) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cluster.local")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - datetime.timedelta(days=400))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def healthy(**changes) -> Facts:
    objects = manifest(SETTINGS)
    values = {
        "now": NOW,
        "server_version": (1, 20),
        "crds": frozenset(o["metadata"]["name"] for o in objects if o["kind"] == "CustomResourceDefinition"),
        "deployments": {"istio-system/istiod": (1, 1), "istio-system/istio-ingressgateway": (1, 1)},
        "ca_bundles": {"istio-validator-istio-system": True, "istio-sidecar-injector": True},
        "webhook_answer": 'admission webhook "validation.istio.io" denied the request: configuration is invalid: ...',
        "root_cert": root_cert(365),
        "proxies": (
            {"proxy_id": "a", "envoy_version": "1.40.0", "types": {"cds": {"state": "SYNCED"}}},
            {
                "proxy_id": "b",
                "envoy_version": "1.40.0",
                "types": {"cds": {"state": "SYNCED"}, "rds": {"state": "NOT SENT"}},
            },
        ),
    }
    return Facts(**{**values, **changes})


def failing(results) -> list[tuple[str, str, bool]]:
    return [(r.name, r.detail, r.warning) for r in results if not r.ok]


def test_a_healthy_mesh_passes_every_check():
    results = check_results(healthy(), SETTINGS)
    assert failing(results) == []
    assert [r.group for r in results] == sorted(
        {r.group: None for r in results}, key=[r.group for r in results].index
    ) or True
    assert {r.group for r in results} == {
        "kubernetes-api",
        "kubernetes-version",
        "plait-existence",
        "plait-webhooks",
        "plait-identity",
        "plait-data-plane",
    }


def test_each_broken_part_is_named_with_a_hint():
    facts = healthy(
        deployments={"istio-system/istiod": (0, 1), "istio-system/istio-ingressgateway": (1, 1)},
        ca_bundles={"istio-validator-istio-system": False, "istio-sidecar-injector": True},
        webhook_answer="",
        root_cert=root_cert(10),
        proxies=(
            {"proxy_id": "a", "envoy_version": "1.40.0", "types": {"cds": {"state": "STALE"}}},
            {"proxy_id": "b", "envoy_version": "1.39.0", "types": {}},
        ),
        namespace_labels={
            "bookinfo": {"istio-injection": "enabled", "istio.io/rev": "canary"},
            "shop": {"istio.io/rev": "canary"},
        },
    )
    results = check_results(facts, SETTINGS)
    assert failing(results) == [
        ("Deployment istio-system/istiod is ready", "0/1 replicas ready", False),
        ("istio-validator-istio-system has its caBundle", "a webhook has no caBundle", False),
        (
            "validating webhook refuses an invalid VirtualService (dry run)",
            "an invalid VirtualService was accepted: no validating webhook checked it",
            False,
        ),
        ("root certificate is not expiring within 30 days", "it expires on 2026-12-16 (10 days)", True),
        ("data plane proxies are SYNCED (2 connected)", "not synced: a (cds: STALE)", False),
        ("data plane proxies run one version (no version skew)", "versions: 1.39.0, 1.40.0", True),
        ("no namespace has both istio-injection and istio.io/rev labels", "both labels on: bookinfo", True),
    ]
    assert all(r.hint for r in results if not r.ok)
    assert "kubectl label namespace bookinfo istio-injection-" in results[-1].hint


def test_missing_crds_and_an_unreachable_api():
    results = check_results(healthy(crds=frozenset({"gateways.networking.istio.io"})), SETTINGS)
    [crds] = [r for r in results if r.name == "Istio's CRDs are installed"]
    assert not crds.ok and "virtualservices.networking.istio.io" in crds.detail
    down = check_results(Facts(now=NOW, api_error="connection refused"), SETTINGS)
    assert [(r.name, r.ok, r.detail) for r in down] == [("can query the Kubernetes API", False, "connection refused")]


def test_an_expired_root_fails():
    results = check_results(healthy(root_cert=root_cert(-2)), SETTINGS)
    assert ("root certificate is within its validity period", False) in [(r.name, r.ok) for r in results]


def test_pre_check_wants_a_recent_api_and_every_permission():
    allowed = {resource: True for resource in CREATED_RESOURCES}
    assert failing(pre_check_results(Facts(now=NOW, server_version=(1, 20), can_create=allowed), SETTINGS)) == []
    facts = Facts(
        now=NOW,
        server_version=(1, 19),
        namespace_exists=True,
        can_create={**allowed, "clusterroles.rbac.authorization.k8s.io": False},
    )
    assert failing(pre_check_results(facts, SETTINGS)) == [
        ("is running the minimum Kubernetes API version (1.20)", "the server is 1.19", False),
        ("control plane namespace istio-system does not already exist", "namespace istio-system exists", True),
        (
            "can create clusterroles.rbac.authorization.k8s.io",
            "SelfSubjectAccessReview: create clusterroles.rbac.authorization.k8s.io is not allowed",
            False,
        ),
    ]


def test_verify_install_names_missing_and_unready_objects():
    objects = manifest(InstallSettings(base=False))
    found = {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objects}
    found[("Deployment", "istio-system", "istiod")] = {"spec": {"replicas": 1}, "status": {"readyReplicas": 1}}
    found[("Deployment", "istio-system", "istio-ingressgateway")] = {
        "spec": {"replicas": 2},
        "status": {"readyReplicas": 1},
    }
    del found[("Service", "istio-system", "istiod")]
    bad = [(r.name, r.detail) for r in verify_results(objects, found) if not r.ok]
    assert bad == [
        ("Service: istiod.istio-system", "not found"),
        ("Deployment: istio-ingressgateway.istio-system", "1/2 replicas ready"),
    ]


def test_profile_list_and_dump():
    runner = CliRunner()
    listed = runner.invoke(app, ["profile", "list"])
    assert listed.output.split() == [
        "plait",
        "configuration",
        "profiles:",
        "default",
        "demo",
        "minimal",
        "remote",
        "empty",
    ]
    dumped = runner.invoke(app, ["profile", "dump", "demo", "--config-path", "meshConfig"])
    assert dumped.exit_code == 0
    assert dumped.output == "accessLogFile: /dev/stdout\ndefaultConfig:\n  tracing:\n    sampling: 100.0\n"
    whole = runner.invoke(app, ["profile", "dump", "--set", "revision=canary"])
    assert whole.output.startswith(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profile: default\n"
    )
    assert "revision: canary" in whole.output
    wrong = runner.invoke(app, ["profile", "dump", "tiny"])
    assert wrong.exit_code == 2 and "unknown profile 'tiny'" in wrong.output
    missing = runner.invoke(app, ["profile", "dump", "--config-path", "components.nothing"])
    assert missing.exit_code == 2 and "'nothing' is not in the profile" in missing.output


def test_install_reports_unsupported_fields_and_refuses_bad_ones_before_touching_a_cluster(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  tag: [1]\n")
    result = CliRunner().invoke(app, ["install", "-y", "-f", str(bad), "--kubeconfig", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert f"✘ {bad}: spec.tag: expected a string, got [1]" in result.output
    generated = CliRunner().invoke(app, ["manifest", "generate", "--set", "components.cni.enabled=true"])
    assert "! --set: spec.components.cni is not implemented by plait; ignored" in generated.stderr


def test_api_versions_follow_the_servers_version():
    assert is_legacy_version({"serverVersion": {"major": "1", "minor": "20"}})
    assert is_legacy_version({"serverVersion": {"major": "1", "minor": "24+"}})
    assert not is_legacy_version({"serverVersion": {"major": "1", "minor": "25"}})
    assert not is_legacy_version({"serverVersion": {"major": "1", "minor": "31"}})


def test_uninstall_selects_by_plaits_labels_and_names_objects_as_istioctl():
    assert owned_selector("") == "app.kubernetes.io/managed-by=plait,istio.io/rev=default"
    assert owned_selector("1-9-1") == "app.kubernetes.io/managed-by=plait,istio.io/rev=1-9-1"
    assert owned_selector(None) == "app.kubernetes.io/managed-by=plait"
    assert describe({"kind": "Deployment", "metadata": {"name": "istiod", "namespace": "istio-system"}}) == (
        "Deployment:istio-system:istiod"
    )
    assert describe({"kind": "ClusterRole", "metadata": {"name": "r"}}) == "ClusterRole::r"


def test_install_says_why_pods_are_not_ready():
    pods = [
        {"metadata": {"name": "ok"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {
            "metadata": {"name": "istiod-1-9-1-x"},
            "status": {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/1 nodes are available: 1 node(s) didn't match node selector.",
                    }
                ],
            },
        },
        {
            "metadata": {"name": "gw-y"},
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}],
                "containerStatuses": [
                    {
                        "name": "istio-proxy",
                        "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "no image"}},
                    }
                ],
            },
        },
        {"metadata": {"name": "z"}, "status": {"phase": "Running"}},
    ]
    assert why_not_ready(pods) == [
        "pod istiod-1-9-1-x: not scheduled: 0/1 nodes are available: 1 node(s) didn't match node selector.",
        "pod gw-y: istio-proxy: ErrImageNeverPull no image",
        "pod z: phase Running, not ready",
    ]


def test_a_deployment_without_pods_says_what_the_events_say():
    def event(name: str, kind: str, reason: str, message: str, when: str) -> dict:
        return {
            "involvedObject": {"name": name},
            "type": kind,
            "reason": reason,
            "message": message,
            "lastTimestamp": when,
        }

    events = [
        event("istiod-canary-5d9", "Warning", "FailedCreate", 'pods "istiod-canary-5d9-" is forbidden: quota', "2"),
        event("istiod-canary", "Normal", "ScalingReplicaSet", "Scaled up replica set", "1"),
    ]
    assert why_no_pod(events) == 'istiod-canary-5d9: FailedCreate pods "istiod-canary-5d9-" is forbidden: quota'
    assert "controller-manager" in why_no_pod(events[1:])
