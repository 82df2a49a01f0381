"""DNS proxying (Istio's ``ISTIO_META_DNS_CAPTURE``) in a real pod on a real node.

A pod whose ``proxy.istio.io/config`` turns capture (and auto-allocation) on resolves ServiceEntry
hosts the cluster's DNS does not know, through its agent: a host with ``addresses`` to them, a host
without to a VIP of 240.240.0.0/16 on which its sidecar routes to the ServiceEntry's endpoint. A pod
without capture, beside it, cannot resolve them. Mesh names still resolve.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from plait.testing.kubenode import BOOKINFO_NAMESPACE, DNS_CAPTURE, MeshNode, eventually, pod_manifest

SERVICE_ENTRIES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-address
spec:
  hosts: [address.internal]
  addresses: [198.51.100.1]
  ports:
  - {name: http, number: 80, protocol: HTTP}
  location: MESH_EXTERNAL
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ratings-elsewhere
spec:
  hosts: [ratings.elsewhere.test]
  ports:
  - {name: http, number: 9080, protocol: HTTP}
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints:
  - address: RATINGS_POD_IP
"""

SLEEP = ["sleep", "1d"]


@pytest.fixture(scope="module")
def dns_clients(bookinfo: MeshNode):
    ratings = bookinfo.kubectl(
        "get", "pods", "-n", BOOKINFO_NAMESPACE, "-l", "app=ratings", "-o", "jsonpath={.items[0].status.podIP}"
    )
    bookinfo.apply(SERVICE_ENTRIES.replace("RATINGS_POD_IP", ratings), BOOKINFO_NAMESPACE)
    bookinfo.apply(pod_manifest("dns-capture", BOOKINFO_NAMESPACE, SLEEP, {"proxy.istio.io/config": DNS_CAPTURE}))
    bookinfo.apply(pod_manifest("no-capture", BOOKINFO_NAMESPACE, SLEEP))
    try:
        for pod in ("dns-capture", "no-capture"):
            bookinfo.kubectl("wait", "--for=condition=Ready", f"pod/{pod}", "-n", BOOKINFO_NAMESPACE, "--timeout=120s")
        yield bookinfo
    finally:
        bookinfo.kubectl("delete", "pod", "dns-capture", "no-capture", "-n", BOOKINFO_NAMESPACE, "--wait=false")
        bookinfo.kubectl("delete", "serviceentry", "external-address", "ratings-elsewhere", "-n", BOOKINFO_NAMESPACE)


def in_pod(node: MeshNode, pod: str, code: str) -> str:
    return node.kubectl("exec", "-n", BOOKINFO_NAMESPACE, pod, "-c", pod, "--", "python3", "-c", code).strip()


def resolve(node: MeshNode, pod: str, name: str) -> str:
    return in_pod(
        node,
        pod,
        f"import socket\ntry: print(socket.gethostbyname({name!r}))\nexcept socket.gaierror as e: print('error', e)",
    )


def test_the_injector_turns_capture_on_for_the_pod_that_asks(dns_clients):
    pod = json.loads(dns_clients.kubectl("get", "pod", "dns-capture", "-n", BOOKINFO_NAMESPACE, "-o", "json"))
    [init] = pod["spec"]["initContainers"]
    assert "--redirect-dns" in init["args"]
    proxy = next(c for c in pod["spec"]["containers"] if c["name"] == "istio-proxy")
    assert {"name": "ISTIO_META_DNS_CAPTURE", "value": "true"} in proxy["env"]


def test_a_service_entry_address_resolves_through_the_agent_and_not_without_it(dns_clients):
    assert eventually(lambda: _is(resolve(dns_clients, "dns-capture", "address.internal"), "198.51.100.1"))
    assert resolve(dns_clients, "no-capture", "address.internal").startswith("error")


def test_an_auto_allocated_address_reaches_the_service_entrys_endpoint_through_the_sidecar(dns_clients):
    address = eventually(lambda: _vip(resolve(dns_clients, "dns-capture", "ratings.elsewhere.test")))
    assert ipaddress.ip_address(address) in ipaddress.ip_network("240.240.0.0/16")
    assert resolve(dns_clients, "no-capture", "ratings.elsewhere.test").startswith("error")
    fetch = (
        "import urllib.request; "
        "print(urllib.request.urlopen('http://ratings.elsewhere.test:9080/ratings/0', timeout=5).read().decode())"
    )
    ratings = json.loads(eventually(lambda: in_pod(dns_clients, "dns-capture", fetch), timeout=30))
    assert ratings["id"] == 0 and ratings["ratings"]


def test_mesh_names_still_resolve_with_capture_on(dns_clients):
    service = dns_clients.kubectl(
        "get", "service", "reviews", "-n", BOOKINFO_NAMESPACE, "-o", "jsonpath={.spec.clusterIP}"
    )
    for name in ("reviews", "reviews.bookinfo", "reviews.bookinfo.svc.cluster.local"):
        assert resolve(dns_clients, "dns-capture", name) == service, name


def _is(value: str, expected: str) -> str:
    assert value == expected, value
    return value


def _vip(value: str) -> str:
    assert not value.startswith("error"), value
    return value
