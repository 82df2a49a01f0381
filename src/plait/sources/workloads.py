"""Workloads registered at run time (by agents and the local runtime), with their readiness.

Each becomes a WorkloadEntry in the mesh; one that is not ready carries the
annotation ``plait.io/ready: "false"``, which keeps it out of EDS while its own
proxy keeps its inbound configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pydantic import ValidationError

from plait.api import networking as net
from plait.api.resources import NETWORKING_VERSIONS, ObjectMeta, Resource, Source
from plait.model.services import READY_ANNOTATION

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Workload:
    name: str
    namespace: str
    address: str
    labels: dict[str, str] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    service_account: str = "default"
    locality: str | None = None
    ready: bool = False

    @property
    def key(self) -> Key:
        return ("WorkloadEntry", self.namespace, self.name)

    def to_resource(self) -> Resource:
        spec = net.WorkloadEntrySpec(
            address=self.address,
            labels=self.labels,
            ports=self.ports,
            service_account=self.service_account,
            locality=self.locality,
        )
        annotations = {} if self.ready else {READY_ANNOTATION: "false"}
        meta = ObjectMeta(name=self.name, namespace=self.namespace, annotations=annotations)
        return Resource(
            kind="WorkloadEntry",
            api_version=NETWORKING_VERSIONS[0],
            meta=meta,
            spec=spec,
            source=Source(file="<registered workload>"),
        )


def parse_workload(data: dict) -> Workload:
    """A registration request (JSON) → Workload; ValueError says what is wrong."""
    try:
        meta = ObjectMeta.model_validate({"name": data.get("name"), "namespace": data.get("namespace") or "default"})
        spec = net.WorkloadEntrySpec.model_validate(
            {k: data[k] for k in ("address", "labels", "ports", "locality") if k in data}
            | {"serviceAccount": data.get("serviceAccount")}
        )
    except ValidationError as exc:
        raise ValueError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    if not spec.address:
        raise ValueError("address: required (the workload's IP address)")
    return Workload(
        name=meta.name,
        namespace=meta.namespace,
        address=spec.address,
        labels=dict(spec.labels),
        ports=dict(spec.ports),
        service_account=spec.service_account or "default",
        locality=spec.locality,
        ready=bool(data.get("ready", False)),
    )


class WorkloadRegistry:
    def __init__(self) -> None:
        self.workloads: dict[Key, Workload] = {}

    def register(self, workload: Workload) -> Key:
        self.workloads[workload.key] = workload
        return workload.key

    def deregister(self, namespace: str, name: str) -> Key | None:
        key = ("WorkloadEntry", namespace, name)
        return key if self.workloads.pop(key, None) else None

    def set_ready(self, namespace: str, name: str, ready: bool) -> Key | None:
        key = ("WorkloadEntry", namespace, name)
        if key not in self.workloads:
            return None
        self.workloads[key] = replace(self.workloads[key], ready=ready)
        return key

    def resources(self) -> dict[Key, Resource]:
        return {key: w.to_resource() for key, w in self.workloads.items()}
