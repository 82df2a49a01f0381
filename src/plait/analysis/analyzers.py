"""The analyzers: pure functions from what was read (Istio config, Services, Namespaces, Pods…) to
Istio's analysis messages, each the counterpart of one of istioctl's analyzers.

Config that is valid alone but wrong in the mesh: a VirtualService naming a host, a subset or a
gateway nothing defines, a Gateway or a subset whose labels select no pod, a namespace nobody
labelled for injection, a pod that should have a sidecar and has none, an ``*.istio.io``
annotation Istio does not know, a Service port whose name says no protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from plait.analysis.annotations import ISTIO_ANNOTATIONS
from plait.analysis.messages import (
    DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
    NAMESPACE_MULTIPLE_INJECTION_LABELS,
    NAMESPACE_NOT_INJECTED,
    POD_MISSING_PROXY,
    PORT_NAME_NOT_UNDER_NAMING_CONVENTION,
    REFERENCED_RESOURCE_NOT_FOUND,
    SCHEMA_VALIDATION_ERROR,
    UNKNOWN_ANNOTATION,
    Message,
    MessageType,
)
from plait.api.checks import destinations, known_hosts
from plait.api.errors import Problem
from plait.api.hosts import fqdn, matches
from plait.api.resources import Resource
from plait.model.protocol import Protocol, from_port

INJECTION_LABEL, REVISION_LABEL, INJECT = "istio-injection", "istio.io/rev", "sidecar.istio.io/inject"
ISTIO_SYSTEM = "istio-system"
ANNOTATED_KINDS = ("Namespace", "Service", "Pod", "Deployment")  # whose annotations istioctl checks


@dataclass(frozen=True)
class KubeObject:
    """A Kubernetes object plait has no model for (a Namespace, a Pod, a Deployment…), as read."""

    raw: Mapping[str, Any]
    file: str = ""

    @property
    def kind(self) -> str:
        return str(self.raw.get("kind", ""))

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self.raw.get("metadata") or {}

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return "" if self.kind == "Namespace" else str(self.metadata.get("namespace") or "default")

    @property
    def labels(self) -> Mapping[str, str]:
        return self.metadata.get("labels") or {}

    @property
    def annotations(self) -> Mapping[str, str]:
        return self.metadata.get("annotations") or {}

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.raw.get("spec") or {}


@dataclass(frozen=True)
class Inputs:
    """Everything analysed: plait's kinds parsed (Istio config and Services), the problems that kept
    objects out (schema errors), and the other Kubernetes objects."""

    resources: tuple[Resource, ...] = ()
    problems: tuple[Problem, ...] = ()
    objects: tuple[KubeObject, ...] = field(default=())

    def of_kind(self, kind: str) -> list[Resource]:
        return [r for r in self.resources if r.kind == kind]

    def objects_of(self, kind: str) -> list[KubeObject]:
        return [o for o in self.objects if o.kind == kind]


def _about(r: Resource, mtype: MessageType, *args: object) -> Message:
    return Message(mtype, r.kind, r.namespace, r.name, args, r.source.file if r.source.file != "<input>" else "")


def _about_object(o: KubeObject, mtype: MessageType, *args: object) -> Message:
    return Message(mtype, o.kind, o.namespace, o.name, args, o.file)


def selector_string(labels: Mapping[str, str]) -> str:
    """A label selector as Kubernetes prints it: ``k1=v1,k2=v2``, sorted by key."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------ schema


def schema_errors(inputs: Inputs) -> list[Message]:
    """IST0106: objects that are not valid (plait validate's errors), each with its field path."""
    out = []
    for p in inputs.problems:
        if p.severity != "error" or not p.kind:
            continue
        error = f"{p.path}: {p.message}" if p.path else p.message
        file = p.file if p.file not in ("<input>", "") else ""
        out.append(Message(SCHEMA_VALIDATION_ERROR, p.kind, p.namespace or "default", p.name or "", (error,), file))
    return out


# ------------------------------------------------------------------ references


def virtual_service_references(inputs: Inputs) -> list[Message]:
    """IST0101 for a VirtualService's destination host no Service or ServiceEntry defines (``host``,
    ``mirror host``), a subset no DestinationRule of that host defines (``host+subset in
    destinationrule``, ``mirror+subset in destinationrule``) and a gateway that does not exist."""
    hosts = known_hosts(list(inputs.resources))
    subsets: dict[str, set[str]] = {}
    for dr in inputs.of_kind("DestinationRule"):
        subsets.setdefault(fqdn(dr.spec.host, dr.namespace), set()).update(s.name for s in dr.spec.subsets)
    gateways = {(g.namespace, g.name) for g in inputs.of_kind("Gateway")}
    out = []
    for vs in inputs.of_kind("VirtualService"):
        for path, dest in destinations(vs):
            mirror = ".mirror" in path
            host = fqdn(dest.host, vs.namespace)
            if not host.startswith("*") and not any(matches(k, host) for k in hosts):
                out.append(_about(vs, REFERENCED_RESOURCE_NOT_FOUND, "mirror host" if mirror else "host", dest.host))
            if dest.subset and dest.subset not in subsets.get(host, ()):
                reftype = "mirror+subset in destinationrule" if mirror else "host+subset in destinationrule"
                out.append(_about(vs, REFERENCED_RESOURCE_NOT_FOUND, reftype, f"{dest.host}+{dest.subset}"))
        for gateway in vs.spec.gateways:
            if gateway == "mesh":
                continue
            namespace, _, name = gateway.rpartition("/")
            if (namespace or vs.namespace, name) not in gateways:
                out.append(_about(vs, REFERENCED_RESOURCE_NOT_FOUND, "gateway", gateway))
    return out


def gateway_selectors(inputs: Inputs) -> list[Message]:
    """IST0101 ``selector``: a Gateway whose selector matches no pod (in any namespace, as Istio)."""
    pods = [p.labels for p in inputs.objects_of("Pod")]
    return [
        _about(gw, REFERENCED_RESOURCE_NOT_FOUND, "selector", selector_string(gw.spec.selector))
        for gw in inputs.of_kind("Gateway")
        if not any(selects(gw.spec.selector, labels) for labels in pods)
    ]


def subsets_select_pods(inputs: Inputs) -> list[Message]:
    """IST0173: a DestinationRule subset whose labels, with its Service's selector, select no pod of
    the Service's namespace. DestinationRules of hosts that are not Kubernetes Services (a
    ServiceEntry, an unknown host) are left out."""
    services = {fqdn(s.name, s.namespace): s for s in inputs.of_kind("Service") if s.spec.selector}
    pods = inputs.objects_of("Pod")
    out = []
    for dr in inputs.of_kind("DestinationRule"):
        service = services.get(fqdn(dr.spec.host, dr.namespace))
        if service is None:
            continue
        labels = [p.labels for p in pods if p.namespace == service.namespace]
        for subset in dr.spec.subsets:
            selector = {**service.spec.selector, **subset.labels}
            if not any(selects(selector, pod) for pod in labels):
                out.append(_about(dr, DESTINATION_RULE_SUBSET_NOT_SELECT_PODS, subset.name))
    return out


# ------------------------------------------------------------------ injection


def injection(inputs: Inputs) -> list[Message]:
    """IST0102 for a namespace with neither ``istio-injection`` nor ``istio.io/rev``, IST0123 for one
    with both (enabled), and IST0103 for a pod of an ``istio-injection=enabled`` namespace without
    ``istio-proxy`` (unless it opted out or uses the host's network), as Istio's injection analyzer."""
    out, injected = [], set()
    for ns in inputs.objects_of("Namespace"):
        if ns.name == ISTIO_SYSTEM:
            continue
        labels = ns.labels
        istio_labels = [f"{INJECTION_LABEL}={labels[INJECTION_LABEL]}"] if INJECTION_LABEL in labels else []
        if REVISION_LABEL in labels and labels.get(INJECTION_LABEL, "enabled") == "enabled":
            istio_labels.append(f"{REVISION_LABEL}={labels[REVISION_LABEL]}")
        if len(istio_labels) > 1:
            out.append(_about_object(ns, NAMESPACE_MULTIPLE_INJECTION_LABELS, "[" + " ".join(istio_labels) + "]"))
        if not labels.get(INJECTION_LABEL) and REVISION_LABEL not in labels:
            out.append(_about_object(ns, NAMESPACE_NOT_INJECTED, ns.name, ns.name))
        elif labels.get(INJECTION_LABEL) == "enabled":
            injected.add(ns.name)
    for pod in inputs.objects_of("Pod"):
        if pod.namespace not in injected or pod.spec.get("hostNetwork"):
            continue
        wanted = pod.labels.get(INJECT, pod.annotations.get(INJECT, ""))
        containers = [*(pod.spec.get("containers") or ()), *(pod.spec.get("initContainers") or ())]
        if wanted.lower() != "false" and not any(c.get("name") == "istio-proxy" for c in containers):
            out.append(_about_object(pod, POD_MISSING_PROXY, f"{pod.namespace}/{pod.name}"))
    return out


# ------------------------------------------------------------------ annotations and ports


def _is_istio_annotation(name: str) -> bool:
    return name == "kubernetes.io/ingress.class" or name.split("/", 1)[0].endswith("istio.io")


def unknown_annotations(inputs: Inputs) -> list[Message]:
    """IST0108: an annotation in Istio's namespace (``*.istio.io/…``) that Istio does not define, on
    a Namespace, Service, Pod or Deployment."""
    annotated: list[tuple[Mapping[str, str], Callable[..., Message]]] = [
        (r.meta.annotations, lambda *a, r=r: _about(r, *a)) for r in inputs.of_kind("Service")
    ]
    annotated += [
        (o.annotations, lambda *a, o=o: _about_object(o, *a)) for o in inputs.objects if o.kind in ANNOTATED_KINDS
    ]
    return [
        report(UNKNOWN_ANNOTATION, name)
        for annotations, report in annotated
        for name in sorted(annotations)
        if _is_istio_annotation(name) and name not in ISTIO_ANNOTATIONS
    ]


def port_names(inputs: Inputs) -> list[Message]:
    """IST0118: a Service port whose name (or appProtocol) does not say its protocol as Istio's
    ``<protocol>[-<suffix>]`` convention wants."""
    out = []
    for service in inputs.of_kind("Service"):
        for port in service.spec.ports:
            if from_port(port.name, port.app_protocol, port.protocol) is Protocol.AUTO:
                target = str(port.target_port) if port.target_port is not None else "0"  # Go's zero IntOrString
                out.append(_about(service, PORT_NAME_NOT_UNDER_NAMING_CONVENTION, port.name, port.port, target))
    return out


ANALYZERS: tuple[Callable[[Inputs], list[Message]], ...] = (
    schema_errors,
    virtual_service_references,
    gateway_selectors,
    subsets_select_pods,
    injection,
    unknown_annotations,
    port_names,
)


def analyze(inputs: Inputs, analyzers: Iterable[Callable[[Inputs], list[Message]]] = ANALYZERS) -> list[Message]:
    """Every analyzer's messages (unsorted)."""
    return [m for analyzer in analyzers for m in analyzer(inputs)]
