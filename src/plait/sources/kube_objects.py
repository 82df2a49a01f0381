"""Kubernetes objects, as the API server returns them (JSON dicts), → plait Resources. Pure.

* Istio's CRDs (VirtualService, DestinationRule, …, Telemetry) and the Gateway API's (GatewayClass,
  Gateway, HTTPRoute, GRPCRoute, TCPRoute, TLSRoute, ReferenceGrant), in whichever version the cluster serves, and
  core/v1 Services go through the same parser as files (`plait.api.loader.parse_document`), so an
  invalid object gets the message `plait validate` gives, with ``kubernetes`` as its file.
* Pods become WorkloadEntries named after the pod (the proxy's node id names its pod, so its
  inbound configuration finds it): labels (plus Istio's ``service.istio.io/workload-name``: its
  Deployment, as callers' metrics name it), IP, service account, named container ports, and
  readiness. As Istio does, the EndpointSlices are the truth about endpoints: a pod that a slice
  lists is ready when that slice says so (``conditions.ready`` unset counts as ready), and it
  takes its address from the slice while the pod's status has none; a pod no slice lists is ready
  when its ``Ready`` condition is true. A not-ready workload carries ``plait.io/ready: "false"``,
  which keeps it out of EDS (Istio leaves unready endpoints out too).
* A Service without a selector gets its endpoints from the EndpointSlices written for it: each
  address becomes a WorkloadEntry labelled ``plait.io/endpoints-of: <service>``, and the Service
  selects that label, with each port's target taken from the slice's port of the same name.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from plait.api import networking as net
from plait.api.errors import Problem
from plait.api.gatewayapi import GROUP as GATEWAY_API_GROUP
from plait.api.loader import parse_document
from plait.api.resources import (
    NETWORKING_VERSIONS,
    SECURITY_VERSIONS,
    SPEC_MODELS,
    TELEMETRY_VERSIONS,
    ObjectMeta,
    Resource,
    Source,
    api_kind,
)
from plait.model.services import READY_ANNOTATION
from plait.telemetry.metrics import WORKLOAD_NAME_LABEL

SOURCE_FILE = "kubernetes"  # what problems name as their file
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # on an EndpointSlice: the Service it serves
ENDPOINTS_OF_LABEL = "plait.io/endpoints-of"  # on WorkloadEntries made from a selector-less Service's slices
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

Key = tuple[str, str, str]  # (kind, namespace, name)
ObjectKey = tuple[str, str]  # (namespace, name) inside one watched type


class KubeConfigError(Exception):
    """No usable kubeconfig: says which file or setting was tried. (Defined here, not beside the
    client in `kubernetes`, so that catching it does not import the Kubernetes client.)"""


@dataclass(frozen=True)
class WatchedType:
    """One kind of object the control plane lists and watches, with the versions it reads, best first."""

    kind: str
    group: str  # "" for the core group
    versions: tuple[str, ...]
    plural: str

    def path(self, version: str) -> str:
        """The cluster-wide list/watch path, e.g. /api/v1/pods or /apis/networking.istio.io/v1/gateways."""
        prefix = f"/api/{version}" if not self.group else f"/apis/{self.group}/{version}"
        return f"{prefix}/{self.plural}"


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y") and lower[-2] not in "aeiou":
        return lower[:-1] + "ies"
    return lower + ("es" if lower.endswith("s") else "s")


def _version_names(api_versions: Iterable[str]) -> tuple[str, ...]:
    """``networking.istio.io/v1`` → ``v1``, in the order given (`SPEC_MODELS` lists the newest first)."""
    return tuple(v.split("/", 1)[1] for v in api_versions)


NAMESPACES = WatchedType("Namespace", "", ("v1",), "namespaces")
NODES = WatchedType("Node", "", ("v1",), "nodes")
SERVICES = WatchedType("Service", "", ("v1",), "services")
PODS = WatchedType("Pod", "", ("v1",), "pods")
ENDPOINT_SLICES = WatchedType("EndpointSlice", "discovery.k8s.io", ("v1", "v1beta1"), "endpointslices")
CONFIG_TYPES = tuple(
    WatchedType(kind, versions[0].split("/")[0], _version_names(versions), _plural(api_kind(kind)))
    for kind, (versions, _) in SPEC_MODELS.items()
    if versions in (NETWORKING_VERSIONS, SECURITY_VERSIONS, TELEMETRY_VERSIONS)
    or versions[0].startswith(GATEWAY_API_GROUP + "/")
)  # Istio's kinds, and the Gateway API's (its Gateway is plait's KubernetesGateway, at .../gateways)
WATCHED_TYPES = (NAMESPACES, NODES, SERVICES, PODS, ENDPOINT_SLICES, *CONFIG_TYPES)
LOCALITY_LABEL = "istio-locality"  # on a pod: its locality as region.zone.subzone, instead of its node's
NODE_LOCALITY_LABELS = ("topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone")


def object_key(obj: Mapping) -> ObjectKey:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta.get("name") or "")


def resource_version(obj: Mapping) -> str | None:
    return (obj.get("metadata") or {}).get("resourceVersion")


# ---------------------------------------------------------------- Istio config and Services


def parse_object(obj: Mapping, kind: str, api_version: str) -> tuple[Resource | None, list[Problem]]:
    """An Istio object or a Service from the cluster → Resource, or the problems that `plait validate`
    would report for it (file ``kubernetes``, the object's kind namespace/name, the field path).
    `kind` and `api_version` are those of the list it came in (watch events of custom objects carry
    them, but list items of core kinds do not)."""
    meta = dict(obj.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != LAST_APPLIED}
    meta["annotations"] = annotations
    doc = {**obj, "apiVersion": api_version, "kind": kind, "metadata": meta}
    resources, problems = parse_document(doc, Source(file=SOURCE_FILE))
    errors = [p for p in problems if p.severity == "error"]
    if errors or not resources:
        return None, errors
    return resources[0], []


# ---------------------------------------------------------------- EndpointSlices


@dataclass(frozen=True)
class SliceEndpoint:
    """One address of one EndpointSlice (discovery.k8s.io v1 and v1beta1 read alike)."""

    namespace: str
    service: str
    address: str
    ready: bool
    pod: str | None  # the Pod the slice's targetRef names, if any
    ports: tuple[tuple[str, int], ...]  # (port name, port) the address serves


def slice_endpoints(obj: Mapping) -> tuple[SliceEndpoint, ...]:
    """Every address of an EndpointSlice, with its readiness (unset ``conditions.ready`` is ready)."""
    namespace, _ = object_key(obj)
    service = ((obj.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL, "")
    ports = tuple((p.get("name") or "", int(p["port"])) for p in obj.get("ports") or () if p.get("port"))
    out = []
    for endpoint in obj.get("endpoints") or ():
        ready = (endpoint.get("conditions") or {}).get("ready")
        target = endpoint.get("targetRef") or {}
        pod = target.get("name") if target.get("kind") == "Pod" else None
        for address in endpoint.get("addresses") or ():
            out.append(SliceEndpoint(namespace, service, address, ready is not False, pod, ports))
    return tuple(out)


def endpoints_by_pod(endpoints: Iterable[SliceEndpoint]) -> dict[ObjectKey, list[SliceEndpoint]]:
    """Slice endpoints that name a Pod, by (namespace, pod name)."""
    out: dict[ObjectKey, list[SliceEndpoint]] = {}
    for endpoint in endpoints:
        if endpoint.pod:
            out.setdefault((endpoint.namespace, endpoint.pod), []).append(endpoint)
    return out


def endpoints_by_service(endpoints: Iterable[SliceEndpoint]) -> dict[ObjectKey, list[SliceEndpoint]]:
    """Slice endpoints by (namespace, service name)."""
    out: dict[ObjectKey, list[SliceEndpoint]] = {}
    for endpoint in endpoints:
        if endpoint.service:
            out.setdefault((endpoint.namespace, endpoint.service), []).append(endpoint)
    return out


# ---------------------------------------------------------------- Pods


def _condition(pod: Mapping, name: str) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or ()
    return any(c.get("type") == name and c.get("status") == "True" for c in conditions)


def _container_ports(pod: Mapping) -> dict[str, int]:
    containers = (pod.get("spec") or {}).get("containers") or ()
    return {
        p["name"]: int(p["containerPort"])
        for c in containers
        for p in c.get("ports") or ()
        if p.get("name") and p.get("containerPort")
    }


def _workload_entry(name: str, namespace: str, spec: net.WorkloadEntrySpec, ready: bool, origin: str) -> Resource:
    annotations = {} if ready else {READY_ANNOTATION: "false"}
    meta = ObjectMeta(name=name, namespace=namespace, annotations=annotations)
    return Resource(
        kind="WorkloadEntry",
        api_version=NETWORKING_VERSIONS[0],
        meta=meta,
        spec=spec,
        source=Source(file=f"{SOURCE_FILE} {origin}"),
    )


def locality(pod_labels: Mapping[str, str], node_labels: Mapping[str, str]) -> str | None:
    """Istio's locality of a pod, ``region/zone/subzone``: its ``istio-locality`` label (written with
    dots), else its node's topology labels; None when neither says anything."""
    if pod_labels.get(LOCALITY_LABEL):
        return pod_labels[LOCALITY_LABEL].replace(".", "/")
    parts = [node_labels.get(label, "") for label in NODE_LOCALITY_LABELS]
    return "/".join(parts).rstrip("/") or None


def workload_name(pod: Mapping) -> str:
    """The pod's workload as Istio names it in metrics: its Deployment (the owning ReplicaSet's name without
    the ``pod-template-hash``), else its controller's name, else the pod's own."""
    meta = pod.get("metadata") or {}
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is None:
        return meta.get("name", "")
    name, template_hash = owner.get("name", ""), (meta.get("labels") or {}).get("pod-template-hash")
    if owner.get("kind") == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
        return name[: -len(template_hash) - 1]
    return name


def pod_workload(
    pod: Mapping, endpoints: Iterable[SliceEndpoint] = (), node_labels: Mapping[str, str] | None = None
) -> Resource | None:
    """A Pod (with the slice endpoints that name it, and its node's labels) → its WorkloadEntry; None
    for a pod that has no address yet or has finished."""
    namespace, name = object_key(pod)
    status, spec = pod.get("status") or {}, pod.get("spec") or {}
    endpoints = list(endpoints)
    address = status.get("podIP") or next((e.address for e in endpoints), None)
    if not address or status.get("phase") in ("Succeeded", "Failed"):
        return None
    listed_ready = any(e.ready for e in endpoints) if endpoints else _condition(pod, "Ready")
    ready = listed_ready and not (pod.get("metadata") or {}).get("deletionTimestamp")
    labels = dict((pod.get("metadata") or {}).get("labels") or {})
    labels.setdefault(WORKLOAD_NAME_LABEL, workload_name(pod))  # what callers' metrics name it by
    we = net.WorkloadEntrySpec(
        address=address,
        labels=labels,
        ports=_container_ports(pod),
        locality=locality(labels, node_labels or {}),
        service_account=spec.get("serviceAccountName") or spec.get("serviceAccount") or "default",
    )
    return _workload_entry(name, namespace, we, ready, f"Pod {namespace}/{name}")


# ---------------------------------------------------------------- selector-less Services


def _dns_label(address: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", address.lower()).strip("-")


def selectorless_service(service: Resource, endpoints: list[SliceEndpoint]) -> tuple[Resource, list[Resource]]:
    """A Service without a selector whose EndpointSlices were written by hand (or by a controller)
    → the Service selecting its endpoints, and one WorkloadEntry per address."""
    label = {ENDPOINTS_OF_LABEL: service.name}
    slice_ports = {name: port for e in endpoints for name, port in e.ports}
    ports = [p.model_copy(update={"target_port": slice_ports.get(p.name, p.target_port)}) for p in service.spec.ports]
    spec = service.spec.model_copy(update={"selector": label, "ports": ports})
    entries: dict[str, Resource] = {}
    for e in endpoints:
        name = f"{service.name}-{_dns_label(e.address)}"
        previous = entries.get(name)
        ready = e.ready or (previous is not None and READY_ANNOTATION not in previous.meta.annotations)
        we = net.WorkloadEntrySpec(address=e.address, labels=label)
        entries[name] = _workload_entry(
            name, service.namespace, we, ready, f"EndpointSlice of Service {service.namespace}/{service.name}"
        )
    return dataclasses.replace(service, spec=spec), list(entries.values())


def registry_resources(
    services: Mapping[ObjectKey, Resource],
    pods: Iterable[Mapping],
    endpoints: Iterable[SliceEndpoint],
    *,
    workload_of: Callable[[Mapping, tuple[SliceEndpoint, ...]], Resource | None] | None = None,
) -> dict[Key, Resource]:
    """Services and the workloads behind them (from the Pods and every EndpointSlice's endpoints), as
    the snapshot's registry reads them. `workload_of` (default `pod_workload`) lets a caller memoise
    the per-pod conversion."""
    workload_of = workload_of or pod_workload
    endpoints = list(endpoints)
    by_pod, by_service = endpoints_by_pod(endpoints), endpoints_by_service(endpoints)
    out: dict[Key, Resource] = {}
    for pod in pods:
        we = workload_of(pod, tuple(by_pod.get(object_key(pod), ())))
        if we is not None:
            out[we.key] = we
    for key, service in services.items():
        if service.spec.selector or key not in by_service:
            out[service.key] = service
            continue
        service, entries = selectorless_service(service, by_service[key])
        out[service.key] = service
        out.update((we.key, we) for we in entries)
    return out


SCRAPE_ANNOTATION = "prometheus.io/"  # Istio's (and Prometheus' kubernetes-pods habit): scrape, port, path


def _label_name(key: str) -> str:
    """A Kubernetes label key as a Prometheus label name (what Prometheus' labelmap makes of it)."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def scrape_targets(pods: Iterable[Mapping]) -> list[dict]:
    """Prometheus HTTP service discovery (``http_sd_configs``) for the running pods annotated
    ``prometheus.io/scrape: "true"``: ``POD_IP:prometheus.io/port`` at ``prometheus.io/path``
    (default /metrics), labelled with the pod's labels, ``namespace`` and ``pod``, as Istio's
    Prometheus addon labels them with its kubernetes-pods job."""
    targets = []
    for pod in pods:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        annotations = meta.get("annotations") or {}
        port = annotations.get(SCRAPE_ANNOTATION + "port", "")
        if annotations.get(SCRAPE_ANNOTATION + "scrape") != "true" or not port.isdigit():
            continue
        if status.get("phase") != "Running" or not status.get("podIP"):
            continue
        labels = {_label_name(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        labels.update(
            namespace=meta.get("namespace", ""),
            pod=meta.get("name", ""),
            __metrics_path__=annotations.get(SCRAPE_ANNOTATION + "path") or "/metrics",
        )
        targets.append({"targets": [f"{status['podIP']}:{port}"], "labels": labels})
    return sorted(targets, key=lambda t: (t["labels"]["namespace"], t["labels"]["pod"]))
