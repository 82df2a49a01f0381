"""A pod's annotations, checked and combined with the mesh-wide settings: what its sidecar will be.

`pod_options(annotations, settings)` returns `PodOptions` or raises `InjectError` naming the
annotation, its value and what was expected (Istio refuses such pods too). Pure.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from plait.api.common import parse_duration
from plait.inject.settings import (
    ENVOY_LOG_LEVELS,
    EXCLUDE_INBOUND_PORTS,
    EXCLUDE_OUTBOUND_IP_RANGES,
    EXCLUDE_OUTBOUND_PORTS,
    INCLUDE_INBOUND_PORTS,
    INCLUDE_OUTBOUND_IP_RANGES,
    INCLUDE_OUTBOUND_PORTS,
    INTERCEPTION_MODE,
    LOG_LEVEL,
    PROXY_CONFIG,
    PROXY_CPU,
    PROXY_CPU_LIMIT,
    PROXY_IMAGE,
    PROXY_MEMORY,
    PROXY_MEMORY_LIMIT,
    READINESS_FAILURE_THRESHOLD,
    READINESS_INITIAL_DELAY,
    READINESS_PERIOD,
    REWRITE_PROBES,
    STATUS_PORT,
    InjectError,
    InjectSettings,
)

# ProxyConfig fields that change the injected sidecar; every other field Istio defines is accepted
# and has no effect here (istio/api mesh/v1alpha1/proxy.proto).
PROXY_CONFIG_SUPPORTED = (
    "holdApplicationUntilProxyStarts",
    "concurrency",
    "terminationDrainDuration",
    "proxyMetadata",
    "interceptionMode",
)
PROXY_CONFIG_NO_EFFECT = (
    "configPath",
    "binaryPath",
    "serviceCluster",
    "drainDuration",
    "parentShutdownDuration",
    "discoveryAddress",
    "discoveryRefreshDelay",
    "zipkinAddress",
    "statsdUdpAddress",
    "envoyMetricsServiceAddress",
    "proxyAdminPort",
    "availabilityZone",
    "controlPlaneAuthPolicy",
    "customConfigFile",
    "statNameLength",
    "proxyBootstrapTemplatePath",
    "tracing",
    "sds",
    "envoyAccessLogService",
    "envoyMetricsService",
    "runtimeValues",
    "statusPort",
    "extraStatTags",
    "gatewayTopology",
    "meshId",
    "readinessProbe",
    "proxyStatsMatcher",
    "caCertificatesPem",
    "image",
    "privateKeyProvider",
    "proxyHeaders",
    "fileFlushInterval",
    "fileFlushMinSizeKb",
    "tracingServiceName",
    "statsCompression",
)
INTERCEPTION_MODES = ("REDIRECT", "NONE")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?$")


@dataclass(frozen=True)
class PodOptions:
    """The sidecar one pod gets: the settings with its annotations applied."""

    image: str
    init_image: str
    interception_mode: str  # REDIRECT, or NONE: no istio-init
    include_outbound_ranges: str  # iptables -i
    exclude_outbound_ranges: str  # -x
    include_inbound_ports: str  # -b
    exclude_inbound_ports: str  # -d (with 15090, 15021 and the status port)
    include_outbound_ports: str | None  # -q, only when annotated
    exclude_outbound_ports: str | None  # -o, only when annotated
    status_port: int  # 0: no probe rewriting, no sidecar readiness probe
    readiness: tuple[int, int, int]  # the sidecar's readiness probe: initial delay, period, failure threshold
    resources: dict[str, Any]
    log_level: str
    rewrite_probes: bool
    hold_application: bool
    concurrency: int
    drain_seconds: float
    proxy_metadata: dict[str, str]


def pod_options(annotations: Mapping[str, str], settings: InjectSettings) -> PodOptions:
    proxy_config = parse_proxy_config(annotations.get(PROXY_CONFIG))
    image = annotations.get(PROXY_IMAGE, settings.proxy_image)
    return PodOptions(
        image=image,
        init_image=annotations.get(PROXY_IMAGE, settings.init_image or settings.proxy_image),
        interception_mode=_interception_mode(annotations, proxy_config),
        include_outbound_ranges=_ranges(annotations, INCLUDE_OUTBOUND_IP_RANGES, "*", wildcard=True),
        exclude_outbound_ranges=_ranges(annotations, EXCLUDE_OUTBOUND_IP_RANGES, "", wildcard=False),
        include_inbound_ports=_ports(annotations, INCLUDE_INBOUND_PORTS, "*", wildcard=True),
        exclude_inbound_ports=_ports(annotations, EXCLUDE_INBOUND_PORTS, "", wildcard=False),
        include_outbound_ports=_ports(annotations, INCLUDE_OUTBOUND_PORTS, "", wildcard=False)
        if INCLUDE_OUTBOUND_PORTS in annotations
        else None,
        exclude_outbound_ports=_ports(annotations, EXCLUDE_OUTBOUND_PORTS, "", wildcard=False)
        if EXCLUDE_OUTBOUND_PORTS in annotations
        else None,
        status_port=_status_port(annotations, settings.status_port),
        readiness=(
            _seconds(annotations, READINESS_INITIAL_DELAY, 0),
            _seconds(annotations, READINESS_PERIOD, 15),
            _seconds(annotations, READINESS_FAILURE_THRESHOLD, 4),
        ),
        resources=proxy_resources(annotations, settings.resources),
        log_level=_log_level(annotations, settings.log_level),
        rewrite_probes=_boolean(annotations, REWRITE_PROBES, settings.rewrite_app_probers),
        hold_application=_from_proxy_config(
            proxy_config, "holdApplicationUntilProxyStarts", settings.hold_application_until_proxy_starts
        ),
        # Istio: 0 means one worker per core; plait keeps the default
        concurrency=_from_proxy_config(proxy_config, "concurrency", settings.concurrency) or settings.concurrency,
        drain_seconds=_from_proxy_config(proxy_config, "terminationDrainDuration", settings.drain_seconds),
        proxy_metadata={**settings.proxy_metadata, **_from_proxy_config(proxy_config, "proxyMetadata", {})},
    )


def parse_proxy_config(text: str | None) -> dict[str, Any]:
    """The ``proxy.istio.io/config`` annotation (ProxyConfig as YAML or JSON) as a dict."""
    if text is None:
        return {}
    where = f"annotation {PROXY_CONFIG}"
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InjectError(f"{where}: not YAML or JSON: {exc}") from None
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise InjectError(
            f"{where}: expected a ProxyConfig object (fields such as holdApplicationUntilProxyStarts), "
            f"got {type(config).__name__}"
        )
    check_proxy_config_fields(config, where)
    return config


def check_proxy_config_fields(config: Mapping[str, Any], where: str) -> None:
    """Every field is one of Istio's ProxyConfig fields (a typo is an error, not a silent no-op)."""
    for key in config:
        if key not in PROXY_CONFIG_SUPPORTED and key not in PROXY_CONFIG_NO_EFFECT:
            raise InjectError(
                f"{where}: unknown ProxyConfig field {key!r}; "
                f"fields that change the sidecar: {', '.join(PROXY_CONFIG_SUPPORTED)}"
            )


def proxy_resources(annotations: Mapping[str, str], default: Mapping[str, Any]) -> dict[str, Any]:
    """Istio's "resources" template: any proxyCPU/Memory(Limit) annotation replaces the defaults wholesale."""
    wanted = {
        (PROXY_CPU, "requests", "cpu"),
        (PROXY_MEMORY, "requests", "memory"),
        (PROXY_CPU_LIMIT, "limits", "cpu"),
        (PROXY_MEMORY_LIMIT, "limits", "memory"),
    }
    if not any(name in annotations for name, _, _ in wanted):
        return json.loads(json.dumps(default))
    resources: dict[str, dict[str, str]] = {}
    for name, section, resource in sorted(wanted, key=lambda w: (w[1] != "requests", w[2])):
        if name in annotations:
            value = annotations[name].strip()
            if not _QUANTITY.match(value):
                raise InjectError(f"annotation {name}: {value!r} is not a Kubernetes quantity (e.g. 100m, 128Mi)")
            resources.setdefault(section, {})[resource] = value
    return resources


def _interception_mode(annotations: Mapping[str, str], proxy_config: Mapping[str, Any]) -> str:
    mode = str(annotations.get(INTERCEPTION_MODE, proxy_config.get("interceptionMode", "REDIRECT")))
    if mode == "TPROXY":
        raise InjectError(f"annotation {INTERCEPTION_MODE}: TPROXY is not supported by plait iptables; use REDIRECT")
    if mode not in INTERCEPTION_MODES:
        raise InjectError(f"annotation {INTERCEPTION_MODE}: {mode!r} is not one of {', '.join(INTERCEPTION_MODES)}")
    return mode


def _items(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _ranges(annotations: Mapping[str, str], name: str, default: str, *, wildcard: bool) -> str:
    value = annotations.get(name, default)
    if wildcard and value.strip() == "*":
        return "*"
    for item in _items(value):
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise InjectError(
                f"annotation {name}: {item!r} is not an IP range in CIDR form (e.g. 10.96.0.0/12)"
                + (" or '*'" if wildcard else "")
            ) from None
        if network.version != 4:
            raise InjectError(f"annotation {name}: {item!r} is IPv6; plait captures IPv4 only")
    return ",".join(_items(value))


def _ports(annotations: Mapping[str, str], name: str, default: str, *, wildcard: bool) -> str:
    value = annotations.get(name, default)
    if wildcard and value.strip() == "*":
        return "*"
    for item in _items(value):
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise InjectError(
                f"annotation {name}: {item!r} is not a port number (1-65535); "
                "expected a comma-separated list" + (" or '*'" if wildcard else "")
            )
    return ",".join(_items(value))


def _status_port(annotations: Mapping[str, str], default: int) -> int:
    value = annotations.get(STATUS_PORT, str(default)).strip()
    if not value.isdigit() or int(value) > 65535:
        raise InjectError(f"annotation {STATUS_PORT}: {value!r} is not a port number (0 turns the status port off)")
    return int(value)


def _seconds(annotations: Mapping[str, str], name: str, default: int) -> int:
    value = annotations.get(name, str(default)).strip()
    if not value.isdigit():
        raise InjectError(f"annotation {name}: {value!r} is not a whole number")
    return int(value)


def _log_level(annotations: Mapping[str, str], default: str) -> str:
    level = annotations.get(LOG_LEVEL, default)
    if level not in ENVOY_LOG_LEVELS:
        raise InjectError(f"annotation {LOG_LEVEL}: {level!r} is not one of {', '.join(ENVOY_LOG_LEVELS)}")
    return level


def _boolean(annotations: Mapping[str, str], name: str, default: bool) -> bool:
    """Go's strconv.ParseBool, as Istio reads these; anything else falls back to the default (as Istio)."""
    value = annotations.get(name)
    if value in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if value in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    return default


def proxy_config_value(config: Mapping[str, Any], field: str, where: str) -> Any:
    """One ProxyConfig field that changes the sidecar, checked; InjectError naming `where` and the field."""
    value = config[field]
    if field == "holdApplicationUntilProxyStarts":
        if not isinstance(value, bool):
            raise InjectError(f"{where}: {field}: expected true or false, got {value!r}")
        return value
    if field == "concurrency":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InjectError(f"{where}: concurrency: expected a whole number ≥ 0, got {value!r}")
        return value
    if field == "terminationDrainDuration":
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            raise InjectError(f"{where}: terminationDrainDuration: {exc}") from None
    if field == "proxyMetadata":
        if not isinstance(value, dict):
            raise InjectError(f"{where}: proxyMetadata: expected a map of NAME: value")
        return {str(k): str(v) for k, v in value.items()}
    raise KeyError(field)


def _from_proxy_config(config: Mapping[str, Any], field: str, default: Any) -> Any:
    return proxy_config_value(config, field, f"annotation {PROXY_CONFIG}") if field in config else default
