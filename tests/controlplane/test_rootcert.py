"""What the root-certificate publisher decides (plait.controlplane.rootcert.reconcile), without a
cluster. The cluster test is in test_kube_identity.py."""

from __future__ import annotations

from plait.controlplane.rootcert import CONFIGMAP, ROOT_CERT_KEY, concerns, reconcile

ROOT = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_a_namespace_without_the_configmap_gets_it():
    change = reconcile("shop", ROOT, None)
    assert change.version is None and change.namespace == "shop"
    assert change.body == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": "shop", "labels": {"istio.io/config": "true"}},
        "data": {ROOT_CERT_KEY: ROOT},
    }


def test_a_configmap_with_the_root_is_left_alone():
    existing = {
        "metadata": {"name": CONFIGMAP, "namespace": "shop", "resourceVersion": "7"},
        "data": {ROOT_CERT_KEY: ROOT, "extra": "x"},
    }
    assert reconcile("shop", ROOT, existing) is None


def test_an_edited_root_is_restored_keeping_what_the_user_added():
    existing = {
        "metadata": {
            "name": CONFIGMAP,
            "namespace": "shop",
            "resourceVersion": "7",
            "labels": {"team": "a"},
            "uid": "u",
            "managedFields": [],
        },
        "data": {ROOT_CERT_KEY: "garbage", "extra": "x"},
    }
    change = reconcile("shop", ROOT, existing)
    assert change.version == "7"
    assert change.body["data"] == {ROOT_CERT_KEY: ROOT, "extra": "x"}
    assert change.body["metadata"] == {
        "name": CONFIGMAP,
        "namespace": "shop",
        "labels": {"team": "a"},
        "resourceVersion": "7",
    }


def test_a_configmap_without_data_is_filled():
    change = reconcile("shop", ROOT, {"metadata": {"name": CONFIGMAP, "namespace": "shop", "resourceVersion": "3"}})
    assert change.body["data"] == {ROOT_CERT_KEY: ROOT} and change.version == "3"


def test_namespaces_skipped_as_istio_skips_them():
    assert concerns("default") and concerns("kube-system") and concerns("istio-system")
    assert not concerns("kube-public") and not concerns("kube-node-lease") and not concerns("local-path-storage")
    assert not concerns("shop", "Terminating") and concerns("shop", "Active")
