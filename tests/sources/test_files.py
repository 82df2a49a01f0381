"""The configuration directory: atomic apply/delete, persistence, hand edits, last good config."""

from __future__ import annotations

from pathlib import Path

import yaml

from plait.api import load_text
from plait.sources.files import FileStore
from plait.sources.workloads import WorkloadRegistry, parse_workload

SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
"""
VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}], timeout: %s}]
"""


def resources(text: str):
    return load_text(text).raise_for_errors()


def test_apply_persists_and_a_new_store_reloads_the_same_state(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.load()
    change = store.apply(resources(SERVICE + "---\n" + VS % "1s"))
    assert change.ok and sorted(k[0] for k in change.created) == ["Service", "VirtualService"]
    assert (tmp_path / "default" / "virtualservice-reviews.yaml").exists()
    again = FileStore(tmp_path)
    again.load()
    assert again.resources == store.resources


def test_apply_reports_updated_and_unchanged(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.load()
    store.apply(resources(SERVICE + "---\n" + VS % "1s"))
    change = store.apply(resources(SERVICE + "---\n" + VS % "2s"))
    assert change.updated == [("VirtualService", "default", "reviews")]
    assert change.unchanged == [("Service", "default", "reviews")]
    assert store.resources[("VirtualService", "default", "reviews")].spec.http[0].timeout == "2s"


def test_rejected_apply_changes_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.load()
    store.apply(resources(VS % "1s"))
    before = sorted(p.read_text() for p in tmp_path.rglob("*.yaml"))
    twice = resources(VS % "3s") + resources(VS % "4s")
    change = store.apply(twice)
    assert not change.ok and "appears twice" in change.problems[0].message
    assert sorted(p.read_text() for p in tmp_path.rglob("*.yaml")) == before
    assert store.resources[("VirtualService", "default", "reviews")].spec.http[0].timeout == "1s"


def test_delete_rewrites_a_users_multi_document_file(tmp_path: Path) -> None:
    (tmp_path / "bookinfo.yaml").write_text(SERVICE + "---\n" + VS % "1s")
    store = FileStore(tmp_path)
    assert store.load().ok
    change = store.delete([("VirtualService", "default", "reviews")])
    assert change.deleted == [("VirtualService", "default", "reviews")]
    left = list(yaml.safe_load_all((tmp_path / "bookinfo.yaml").read_text()))
    assert [d["kind"] for d in left] == ["Service"]
    assert not store.delete([("VirtualService", "default", "reviews")]).ok  # already gone


def test_update_in_place_keeps_the_object_in_the_users_file(tmp_path: Path) -> None:
    (tmp_path / "bookinfo.yaml").write_text("# reviews, by the platform team\n" + SERVICE + "---\n" + VS % "1s")
    store = FileStore(tmp_path)
    store.load()
    store.apply(resources(VS % "5s"))
    assert [p.name for p in tmp_path.rglob("*.yaml")] == ["bookinfo.yaml"]
    text = (tmp_path / "bookinfo.yaml").read_text()
    assert "timeout: 5s" in text
    assert text.startswith("# reviews, by the platform team\n")  # other documents are kept as written


def test_hand_edits_are_picked_up_and_a_broken_edit_keeps_the_last_good_config(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.load()
    assert store.poll() is None
    (tmp_path / "vs.yaml").write_text(VS % "1s")
    change = store.poll()
    assert change.ok and change.created == [("VirtualService", "default", "reviews")]
    (tmp_path / "vs.yaml").write_text(VS % "'one second'")
    broken = store.poll()
    assert not broken.ok and broken.problems[0].path == "spec.http[0].timeout"
    assert store.resources[("VirtualService", "default", "reviews")].spec.http[0].timeout == "1s"
    assert store.problems  # kept for the user to see


def test_registered_workloads_carry_readiness() -> None:
    registry = WorkloadRegistry()
    w = parse_workload(
        {
            "name": "reviews-v1",
            "namespace": "default",
            "address": "10.0.0.1",
            "labels": {"app": "reviews"},
            "ports": {"http": 9080},
        }
    )
    key = registry.register(w)
    assert registry.resources()[key].meta.annotations == {"plait.io/ready": "false"}
    registry.set_ready("default", "reviews-v1", True)
    assert registry.resources()[key].meta.annotations == {}
    assert registry.deregister("default", "reviews-v1") == key
    assert registry.deregister("default", "reviews-v1") is None


def test_a_workload_that_is_not_ready_leaves_eds_but_keeps_its_inbound_config() -> None:
    from plait.model import MeshSnapshot, Proxy
    from plait.xds.generator import generate

    registry = WorkloadRegistry()
    registry.register(parse_workload({"name": "reviews-v1", "address": "10.0.0.1", "labels": {"app": "reviews"}}))
    snapshot = MeshSnapshot([*resources(SERVICE), *registry.resources().values()])
    proxy = Proxy(kind="sidecar", ip="10.0.0.1", name="reviews-v1", namespace="default")
    config = generate(snapshot, proxy)
    assert config.endpoints["outbound|9080||reviews.default.svc.cluster.local"]["endpoints"] == []
    assert "inbound|9080||" in config.clusters
    registry.set_ready("default", "reviews-v1", True)
    ready = generate(MeshSnapshot([*resources(SERVICE), *registry.resources().values()]), proxy)
    (group,) = ready.endpoints["outbound|9080||reviews.default.svc.cluster.local"]["endpoints"]
    assert group["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"] == "10.0.0.1"


def test_objects_are_only_ever_written_inside_the_directory(tmp_path: Path) -> None:
    """Applying a file twice and deleting must never touch the file the input came from."""
    source = tmp_path / "input" / "vs.yaml"
    source.parent.mkdir()
    source.write_text(VS % "1s")
    store = FileStore(tmp_path / "mesh")
    store.load()
    for _ in range(2):
        store.apply(load_text(source.read_text(), str(source)).raise_for_errors())
    store.delete([("VirtualService", "default", "reviews")])
    assert source.read_text() == VS % "1s"
    assert list((tmp_path / "mesh").rglob("*.yaml")) == []
