"""The DNS name table (Istio's NDS) a proxy's agent answers from, built from the mesh snapshot."""

from __future__ import annotations

import pytest

from plait.api import load_text
from plait.model import MeshSnapshot, Proxy
from plait.xds.nametable import NameInfo, NameTable, build_name_table, from_json

MESH = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.12
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: tcp, port: 5432}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-0, namespace: default}
spec: {address: 10.0.0.7, labels: {app: db}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db-1, namespace: default, annotations: {plait.io/ready: "false"}}
spec: {address: 10.0.0.8, labels: {app: db}}
---
apiVersion: v1
kind: Service
metadata: {name: ledger, namespace: finance}
spec:
  clusterIP: 10.96.0.40
  ports: [{name: grpc, port: 7000}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.corp.example]
  addresses: [192.168.7.10, 10.20.0.0/16]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 192.168.7.11}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: [api.example.com, b.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: default}
spec:
  hosts: [none.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wildcard, namespace: default}
spec:
  hosts: ["*.wild.example.com"]
  addresses: [192.168.9.9]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private, namespace: finance}
spec:
  hosts: [vault.finance.example]
  addresses: [192.168.8.1]
  exportTo: ["."]
  ports: [{number: 8200, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 192.168.8.2}]
"""

PROXY = Proxy(kind="sidecar", ip="10.0.0.1", name="productpage-1", namespace="default")


@pytest.fixture(scope="module")
def snapshot() -> MeshSnapshot:
    return MeshSnapshot(load_text(MESH).raise_for_errors())


def test_kubernetes_services_carry_short_name_and_namespace(snapshot: MeshSnapshot) -> None:
    table = build_name_table(snapshot, PROXY).table
    assert table["reviews.default.svc.cluster.local"] == NameInfo(
        ips=("10.96.0.12",), registry="Kubernetes", shortname="reviews", namespace="default"
    )
    assert table["ledger.finance.svc.cluster.local"].ips == ("10.96.0.40",)


def test_headless_service_resolves_to_its_ready_endpoints(snapshot: MeshSnapshot) -> None:
    assert build_name_table(snapshot, PROXY).table["db.default.svc.cluster.local"].ips == ("10.0.0.7",)


def test_service_entry_addresses_only_single_ips(snapshot: MeshSnapshot) -> None:
    info = build_name_table(snapshot, PROXY).table["legacy.corp.example"]
    assert info == NameInfo(ips=("192.168.7.10",), registry="External")


def test_hosts_without_addresses_and_wildcards_are_left_to_upstream_dns(snapshot: MeshSnapshot) -> None:
    table = build_name_table(snapshot, PROXY).table
    assert "api.example.com" not in table
    assert "none.example.com" not in table
    assert not any(host.startswith("*") for host in table)


def test_export_to_limits_the_table(snapshot: MeshSnapshot) -> None:
    assert "vault.finance.example" not in build_name_table(snapshot, PROXY).table
    finance = Proxy(kind="sidecar", ip="10.0.0.9", name="teller-1", namespace="finance")
    assert build_name_table(snapshot, finance).table["vault.finance.example"].ips == ("192.168.8.1",)


def test_sidecar_egress_limits_the_table() -> None:
    sidecar = """
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*"]}]
"""
    snapshot = MeshSnapshot(load_text(MESH + sidecar).raise_for_errors())
    table = build_name_table(snapshot, PROXY).table
    assert "reviews.default.svc.cluster.local" in table
    assert "ledger.finance.svc.cluster.local" not in table


def test_auto_allocation_gives_stable_class_e_vips(snapshot: MeshSnapshot) -> None:
    table = build_name_table(snapshot, PROXY, auto_allocate=True).table
    assert table["api.example.com"].ips == ("240.240.0.1",)
    assert table["b.example.com"].ips == ("240.240.0.2",)
    assert "none.example.com" not in table  # resolution NONE: no VIP, as Istio
    assert table["legacy.corp.example"].ips == ("192.168.7.10",)  # its own address wins
    finance = Proxy(kind="sidecar", ip="10.0.0.9", name="teller-1", namespace="finance")
    assert build_name_table(snapshot, finance, auto_allocate=True).table["api.example.com"].ips == ("240.240.0.1",)


def test_wire_form_round_trips(snapshot: MeshSnapshot) -> None:
    table = build_name_table(snapshot, PROXY)
    wire = table.to_json()
    assert wire["table"]["reviews.default.svc.cluster.local"] == {
        "ips": ["10.96.0.12"],
        "registry": "Kubernetes",
        "shortname": "reviews",
        "namespace": "default",
    }
    assert from_json(wire) == table


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "a name table is a JSON object"),
        ({"table": {"a.example": "1.2.3.4"}}, "table.a.example: expected an object"),
        ({"table": {"a.example": {"ips": ["not-an-ip"]}}}, "table.a.example.ips: expected a list of IP addresses"),
    ],
)
def test_bad_wire_form_names_the_field(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        from_json(data)


def test_empty_table() -> None:
    assert NameTable().to_json() == {"table": {}}
