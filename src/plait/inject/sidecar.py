"""The injected pod: Istio's sidecar template, built in Python (`inject`).

In: a Pod (or a workload's pod template: ``metadata`` + ``spec``) as a dict in Kubernetes' JSON
shape, the mesh-wide `InjectSettings`, and optionally the `Workload` that owns it. Out: a new
dict, the pod with the ``istio-init`` init container (``plait iptables`` with Istio's
arguments), the ``istio-proxy`` container (``plait agent`` as uid 1337, xDS and CA on the control
plane's port 15012 with the pod's projected token), the token, root-certificate and Envoy
volumes, the app's probes rewritten through the agent, Istio's labels and the
``sidecar.istio.io/status`` annotation. A pod that has that annotation is returned unchanged, so
injecting twice changes nothing. Pure: no I/O, the input is not modified.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from plait.inject.options import PodOptions, pod_options
from plait.inject.probes import app_probers, probers_env, rewrite_probes
from plait.inject.prometheus import merge_enabled, scrape_annotations
from plait.inject.settings import (
    APP_METRICS_ENV,
    APP_PROBERS_ENV,
    ENVOY_DIR,
    ENVOY_VOLUME,
    INBOUND_CAPTURE_PORT,
    INIT_CONTAINER,
    OUTBOUND_CAPTURE_PORT,
    PROMETHEUS_PORT,
    PROXY_CONTAINER,
    PROXY_UID,
    READINESS_PORT,
    REVISION_LABEL,
    ROOT_CERT_CONFIGMAP,
    ROOT_CERT_DIR,
    ROOT_CERT_VOLUME,
    STATUS,
    TOKEN_DIR,
    TOKEN_VOLUME,
    InjectSettings,
)
from plait.inject.workload import Workload, workload_of_pod

TLS_MODE_LABEL = "security.istio.io/tlsMode"
CANONICAL_NAME_LABEL = "service.istio.io/canonical-name"
CANONICAL_REVISION_LABEL = "service.istio.io/canonical-revision"
WORKLOAD_NAME_LABEL = "service.istio.io/workload-name"
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
DEFAULT_LOGS_CONTAINER = "kubectl.kubernetes.io/default-logs-container"
TOKEN_EXPIRATION_SECONDS = 43200


def inject(pod: Mapping[str, Any], settings: InjectSettings, *, workload: Workload | None = None) -> dict[str, Any]:
    """The pod with a sidecar; raises `InjectError` on a bad annotation. Already injected: unchanged."""
    out = copy.deepcopy(dict(pod))
    metadata = out.setdefault("metadata", {})
    if STATUS in (metadata.get("annotations") or {}):
        return out
    spec = out.setdefault("spec", {})
    annotations = metadata.setdefault("annotations", {})
    labels = metadata.setdefault("labels", {})
    options = pod_options(annotations, settings)
    workload = workload or workload_of_pod(out)
    app_containers = [c["name"] for c in spec.get("containers") or () if c.get("name") != PROXY_CONTAINER]
    probers = {}
    if options.rewrite_probes and options.status_port:
        probers = app_probers(spec, options.status_port)
        rewrite_probes(spec, options.status_port)
    _add_labels(labels, workload)
    merge = merge_enabled(annotations, settings.enable_prometheus_merge)
    scraped, app_metrics = scrape_annotations(annotations, merge=merge, status_port=options.status_port)
    proxy = proxy_container(
        options, settings, labels=labels, workload=workload, app_containers=app_containers, probers=probers
    )
    if app_metrics is not None:  # after the template's, as Istio's injector adds it
        proxy["env"].append({"name": APP_METRICS_ENV, "value": app_metrics})
    injected_init = [init_container(options)] if options.interception_mode != "NONE" else []
    inits, injected_init = _apply_overrides(spec.get("initContainers") or [], injected_init)
    spec["initContainers"] = [*inits, *injected_init]
    containers, [proxy] = _apply_overrides(spec.get("containers") or [], [proxy])
    spec["containers"] = [proxy, *containers] if options.hold_application else [*containers, proxy]
    injected_volumes = sidecar_volumes(settings)
    spec["volumes"] = [*(spec.get("volumes") or ()), *injected_volumes]
    secrets = [{"name": name} for name in settings.image_pull_secrets]
    if secrets:
        spec["imagePullSecrets"] = [*(spec.get("imagePullSecrets") or ()), *secrets]
    if not spec["initContainers"]:
        del spec["initContainers"]
    annotations.setdefault(REVISION_LABEL, settings.revision_name)
    annotations.update(scraped)  # Istio's scrape hints: the merged 15020, or Envoy's 15090
    if app_containers:
        annotations.setdefault(DEFAULT_LOGS_CONTAINER, app_containers[0])
        annotations.setdefault(DEFAULT_CONTAINER, app_containers[0])
    annotations[STATUS] = injection_status(injected_init, [proxy], injected_volumes, secrets, settings)
    return out


def _apply_overrides(existing: list[dict], injected: list[dict]) -> tuple[list[dict], list[dict]]:
    """A container the pod already has under an injected name customises the injected one (Istio's
    "customizing injection"): (the pod's other containers, the injected ones with the pod's fields over them)."""
    by_name = {c.get("name"): c for c in existing}
    merged = [merge_container(c, by_name[c["name"]]) if c["name"] in by_name else c for c in injected]
    names = {c["name"] for c in injected}
    return [c for c in existing if c.get("name") not in names], merged


# Lists merged item by item, keyed as Kubernetes' strategic merge keys them.
_MERGE_KEYS = {"env": "name", "volumeMounts": "mountPath", "ports": "containerPort"}


def merge_container(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay`'s fields over `base`: maps merged recursively, env/volumeMounts/ports by key, the rest replaced."""
    out = dict(base)
    for key, value in overlay.items():
        if key in _MERGE_KEYS and isinstance(value, list) and isinstance(base.get(key), list):
            item_key = _MERGE_KEYS[key]
            overrides = {item.get(item_key): item for item in value}
            kept = [overrides.pop(item.get(item_key), item) for item in base[key]]
            out[key] = [*kept, *overrides.values()]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = merge_container(base[key], value)
        else:
            out[key] = value
    return out


def injection_status(
    init: list[dict], containers: list[dict], volumes: list[dict], secrets: list[dict], settings: InjectSettings
) -> str:
    """``sidecar.istio.io/status``: what was injected (Istio's SidecarInjectionStatus JSON)."""

    def names(items: list[dict]) -> list[str] | None:
        return [item["name"] for item in items] or None

    return json.dumps(
        {
            "initContainers": names(init),
            "containers": names(containers),
            "volumes": names(volumes),
            "imagePullSecrets": names(secrets),
            "revision": settings.revision_name,
        },
        separators=(",", ":"),
    )


def _add_labels(labels: dict[str, str], workload: Workload) -> None:
    """Istio's template labels: tlsMode, canonical service name and revision (a user's value wins)."""
    labels.setdefault(TLS_MODE_LABEL, "istio")
    name = (
        labels.get(CANONICAL_NAME_LABEL) or labels.get("app.kubernetes.io/name") or labels.get("app") or workload.name
    )
    labels[CANONICAL_NAME_LABEL] = name[:63].strip("-_.")
    labels[CANONICAL_REVISION_LABEL] = (
        labels.get(CANONICAL_REVISION_LABEL)
        or labels.get("app.kubernetes.io/version")
        or labels.get("version")
        or "latest"
    )


def iptables_args(options: PodOptions) -> list[str]:
    """istio-iptables' arguments as Istio's template passes them (``-d`` always has 15090,15021 and the status
    port; ``-q`` and ``-o`` only when annotated)."""
    excluded_inbound = [str(PROMETHEUS_PORT), str(READINESS_PORT)]
    extra = [p for p in options.exclude_inbound_ports.split(",") if p]
    if options.status_port and str(options.status_port) not in extra:
        extra.append(str(options.status_port))
    args = [
        "iptables",
        "-p",
        str(OUTBOUND_CAPTURE_PORT),
        "-z",
        str(INBOUND_CAPTURE_PORT),
        "-u",
        str(PROXY_UID),
        "-m",
        options.interception_mode,
        "-i",
        options.include_outbound_ranges,
        "-x",
        options.exclude_outbound_ranges,
        "-b",
        options.include_inbound_ports,
        "-d",
        ",".join([*excluded_inbound, *extra]),
    ]
    if options.include_outbound_ports is not None:
        args += ["-q", options.include_outbound_ports]
    if options.exclude_outbound_ports is not None:
        args += ["-o", options.exclude_outbound_ports]
    if dns_capture(options.proxy_metadata):
        args.append("--redirect-dns")
    return args


def dns_capture(proxy_metadata: Mapping[str, str]) -> bool:
    """Does proxyMetadata turn on the agent's DNS proxy (``ISTIO_META_DNS_CAPTURE``, read as Go's ParseBool)?"""
    return proxy_metadata.get("ISTIO_META_DNS_CAPTURE", "") in ("1", "t", "T", "true", "TRUE", "True")


def init_container(options: PodOptions) -> dict[str, Any]:
    """``istio-init``: installs the capture rules in the pod's network namespace, as root with NET_ADMIN/NET_RAW."""
    return {
        "name": INIT_CONTAINER,
        "image": options.init_image,
        "command": ["plait"],
        "args": iptables_args(options),
        "resources": copy.deepcopy(options.resources),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "readOnlyRootFilesystem": False,
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "runAsUser": 0,
        },
    }


@dataclass(frozen=True)
class _ProxyEnv:
    labels: Mapping[str, str]
    workload: Workload
    app_containers: list[str]
    probers: dict[str, Any]


def agent_args(options: PodOptions, settings: InjectSettings, labels: Mapping[str, str]) -> list[str]:
    """``plait agent`` for this pod; ``$(VAR)`` is expanded by the kubelet from the container's env."""
    args = [
        "agent",
        "--mode",
        "capture" if options.interception_mode == "REDIRECT" else "proxy",
        "--name",
        "$(POD_NAME)",
        "--namespace",
        "$(POD_NAMESPACE)",
        "--ip",
        "$(INSTANCE_IP)",
        "--service-account",
        "$(SERVICE_ACCOUNT)",
    ]
    if labels:
        args += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
    args += [
        "--control-plane",
        settings.control_plane,
        "--token-file",
        f"{TOKEN_DIR}/{TOKEN_VOLUME}",
        "--root-cert",
        f"{ROOT_CERT_DIR}/root-cert.pem",
        "--trust-domain",
        settings.trust_domain,
        "--state-dir",
        ENVOY_DIR,
        "--status-port",
        str(READINESS_PORT),
        "--prometheus-port",
        str(PROMETHEUS_PORT),
    ]
    if options.status_port:
        args += ["--probe-port", str(options.status_port)]
    args += [
        "--log-level",
        options.log_level,
        "--concurrency",
        str(options.concurrency),
        "--drain-duration",
        f"{options.drain_seconds:g}",
    ]
    return args


def proxy_container(
    options: PodOptions,
    settings: InjectSettings,
    *,
    labels: Mapping[str, str],
    workload: Workload,
    app_containers: list[str],
    probers: dict[str, Any],
) -> dict[str, Any]:
    """``istio-proxy``: ``plait agent`` as uid/gid 1337 (whose traffic iptables never captures)."""
    container: dict[str, Any] = {
        "name": PROXY_CONTAINER,
        "image": options.image,
        "command": ["plait"],
        "args": agent_args(options, settings, labels),
        "ports": [{"containerPort": PROMETHEUS_PORT, "protocol": "TCP", "name": "http-envoy-prom"}],
    }
    if options.hold_application:
        # The kubelet starts the next container only once postStart returns: the app waits for the proxy.
        container["lifecycle"] = {"postStart": {"exec": {"command": ["plait", "agent-wait"]}}}
    container["env"] = proxy_env(options, settings, _ProxyEnv(labels, workload, app_containers, probers))
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    if options.status_port:
        container["startupProbe"] = _readiness_probe(period=1, failures=600)
        delay, period, failures = options.readiness
        container["readinessProbe"] = _readiness_probe(period=period, failures=failures, delay=delay)
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": PROXY_UID,
        "runAsGroup": PROXY_UID,
    }
    container["resources"] = copy.deepcopy(options.resources)
    container["volumeMounts"] = [
        {"mountPath": ROOT_CERT_DIR, "name": ROOT_CERT_VOLUME},
        {"mountPath": ENVOY_DIR, "name": ENVOY_VOLUME},
        {"mountPath": TOKEN_DIR, "name": TOKEN_VOLUME},
    ]
    return container


def _readiness_probe(*, period: int, failures: int, delay: int = 0) -> dict[str, Any]:
    """The agent's /healthz/ready (Istio's sidecar startup and readiness probes)."""
    return {
        "httpGet": {"path": "/healthz/ready", "port": READINESS_PORT},
        "initialDelaySeconds": delay,
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _field(path: str) -> dict[str, Any]:
    return {"valueFrom": {"fieldRef": {"fieldPath": path}}}


def proxy_env(options: PodOptions, settings: InjectSettings, pod: _ProxyEnv) -> list[dict[str, Any]]:
    """The istio-proxy container's environment, with Istio's names."""
    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", **_field("metadata.name")},
        {"name": "POD_NAMESPACE", **_field("metadata.namespace")},
        {"name": "INSTANCE_IP", **_field("status.podIP")},
        {"name": "SERVICE_ACCOUNT", **_field("spec.serviceAccountName")},
        {"name": "HOST_IP", **_field("status.hostIP")},
        {"name": "ISTIO_META_APP_CONTAINERS", "value": ",".join(pod.app_containers)},
        {"name": "ISTIO_META_CLUSTER_ID", "value": settings.cluster_id},
        {"name": "ISTIO_META_NODE_NAME", **_field("spec.nodeName")},
        {"name": "ISTIO_META_INTERCEPTION_MODE", "value": options.interception_mode},
        {"name": "ISTIO_META_WORKLOAD_NAME", "value": pod.labels.get(WORKLOAD_NAME_LABEL) or pod.workload.name},
    ]
    if pod.workload.api_version and pod.workload.name:
        env.append({"name": "ISTIO_META_OWNER", "value": pod.workload.owner_uri})
    env += [
        {"name": "ISTIO_META_MESH_ID", "value": settings.trust_domain},
        {"name": "TRUST_DOMAIN", "value": settings.trust_domain},
    ]
    env += [{"name": name, "value": value} for name, value in options.proxy_metadata.items()]
    if pod.probers:
        env.append({"name": APP_PROBERS_ENV, "value": probers_env(pod.probers)})
    return env


def sidecar_volumes(settings: InjectSettings) -> list[dict[str, Any]]:
    """Envoy's writable directory, the pod's token for the CA (audience istio-ca), the mesh's root certificate."""
    return [
        {"name": ENVOY_VOLUME, "emptyDir": {"medium": "Memory"}},
        {
            "name": TOKEN_VOLUME,
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "path": TOKEN_VOLUME,
                            "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                            "audience": settings.token_audience,
                        }
                    }
                ]
            },
        },
        {"name": ROOT_CERT_VOLUME, "configMap": {"name": ROOT_CERT_CONFIGMAP}},
    ]
