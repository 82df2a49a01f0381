"""Specs of Istio's extension kinds: EnvoyFilter (networking.istio.io/v1alpha3) and ProxyConfig
(networking.istio.io/v1beta1).

Validation follows Istio's (``pkg/config/validation/envoyfilter``): a patch needs an applyTo, a
patch, an operation and (except REMOVE) a value; the match must fit the applyTo (listener matches
for listener-class objects, …); the value must be a valid Envoy object of the applyTo's type (its
``@type``s resolved, field names in snake_case or camelCase as protobuf JSON allows). Unknown fields
inside a value are a warning, as in Istio, not an error. `extension_warnings` lists what is
accepted but has no effect (or less than the user may expect) in plait.

`envoy_value` gives a patch value in the canonical form translation uses: Envoy's JSON with proto
field names, ``TypedStruct`` wrappers of known types unwrapped.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Annotated, Any, Literal

import re2
from google.protobuf import descriptor_pool, json_format, message_factory
from pydantic import AfterValidator, Field, model_validator

from plait import __version__
from plait.api.common import IstioModel, Labels, Regex, parse_duration

ApplyTo = Literal[
    "LISTENER",
    "FILTER_CHAIN",
    "NETWORK_FILTER",
    "HTTP_FILTER",
    "ROUTE_CONFIGURATION",
    "VIRTUAL_HOST",
    "HTTP_ROUTE",
    "CLUSTER",
    "EXTENSION_CONFIG",
    "BOOTSTRAP",
    "LISTENER_FILTER",
]
PatchContext = Literal["ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY", "WAYPOINT"]
Operation = Literal[
    "MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER", "INSERT_FIRST", "REPLACE", "MERGE_AND_REPLACE_LIST"
]
FilterClass = Literal["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"]
RouteAction = Literal["ANY", "ROUTE", "REDIRECT", "DIRECT_RESPONSE"]

HCM_FILTER = "envoy.filters.network.http_connection_manager"
LISTENER_CLASS = ("LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER", "LISTENER_FILTER")
ROUTE_CLASS = ("ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE")
NOT_SUPPORTED_YET = ("EXTENSION_CONFIG", "BOOTSTRAP")

# The Envoy message each applyTo's value is (Istio's BuildXDSObjectFromStruct).
VALUE_TYPES = {
    "LISTENER": "envoy.config.listener.v3.Listener",
    "FILTER_CHAIN": "envoy.config.listener.v3.FilterChain",
    "NETWORK_FILTER": "envoy.config.listener.v3.Filter",
    "LISTENER_FILTER": "envoy.config.listener.v3.ListenerFilter",
    "HTTP_FILTER": "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
    "ROUTE_CONFIGURATION": "envoy.config.route.v3.RouteConfiguration",
    "VIRTUAL_HOST": "envoy.config.route.v3.VirtualHost",
    "HTTP_ROUTE": "envoy.config.route.v3.Route",
    "CLUSTER": "envoy.config.cluster.v3.Cluster",
    "EXTENSION_CONFIG": "envoy.config.core.v3.TypedExtensionConfig",
    "BOOTSTRAP": "envoy.config.bootstrap.v3.Bootstrap",
}
TYPED_STRUCTS = ("udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct")
TYPE_PREFIX = "type.googleapis.com/"

# Canonical names of filters whose pre-1.14 names Istio still warns about (pkg/config/xds/deprecated.go).
DEPRECATED_FILTER_NAMES = {
    "envoy.buffer": "envoy.filters.http.buffer",
    "envoy.cors": "envoy.filters.http.cors",
    "envoy.csrf": "envoy.filters.http.csrf",
    "envoy.ext_authz": "envoy.filters.http.ext_authz",
    "envoy.fault": "envoy.filters.http.fault",
    "envoy.grpc_web": "envoy.filters.http.grpc_web",
    "envoy.gzip": "envoy.filters.http.gzip",
    "envoy.health_check": "envoy.filters.http.health_check",
    "envoy.lua": "envoy.filters.http.lua",
    "envoy.rate_limit": "envoy.filters.http.ratelimit",
    "envoy.router": "envoy.filters.http.router",
    "envoy.http_connection_manager": HCM_FILTER,
    "envoy.tcp_proxy": "envoy.filters.network.tcp_proxy",
    "envoy.mongo_proxy": "envoy.filters.network.mongo_proxy",
    "envoy.redis_proxy": "envoy.filters.network.redis_proxy",
    "envoy.ratelimit": "envoy.filters.network.ratelimit",
    "envoy.listener.tls_inspector": "envoy.filters.listener.tls_inspector",
    "envoy.listener.http_inspector": "envoy.filters.listener.http_inspector",
    "envoy.listener.original_dst": "envoy.filters.listener.original_dst",
    "envoy.listener.proxy_protocol": "envoy.filters.listener.proxy_protocol",
}
MAX_PROXY_VERSION_LENGTH = 1024  # Istio treats a longer proxyVersion as matching no proxy
# Node metadata keys plait's proxies carry whose values translation knows (see `xds.envoyfilter`).
KNOWN_METADATA_KEYS = ("NAMESPACE", "INTERCEPTION_MODE", "PLAIT_MODE", "ISTIO_VERSION", "APP_ADDRESS", "PLAIT_IDENTITY")


# ---------------------------------------------------------------- Envoy message types by name


@functools.cache
def message_class(full_name: str) -> type | None:
    """The protobuf class of an Envoy (or xds, udpa, google) message, importing its package's
    modules on first use so that json_format can resolve it in an ``@type``; None if unknown."""
    pool = descriptor_pool.Default()
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
    except KeyError:
        pass
    package = full_name.rpartition(".")[0]
    try:
        module = importlib.import_module(package)
    except ImportError:
        return None
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))
    except KeyError:
        return None


def _type_urls(node: Any) -> set[str]:
    """Every ``@type`` named anywhere in a JSON value. (A TypedStruct's ``type_url`` is only a string
    to protobuf: Istio accepts one it does not know, and so does plait.)"""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "@type" and isinstance(value, str):
                found.add(value)
            else:
                found |= _type_urls(value)
    elif isinstance(node, list):
        for item in node:
            found |= _type_urls(item)
    return found


def _envoy_v2(type_name: str) -> bool:
    """Envoy's v2 API (``envoy.config.filter.http.lua.v2.Lua``): gone from Envoy and from Istio, though
    the protobuf package still ships it."""
    return type_name.startswith("envoy.") and any(part in ("v2", "v2alpha") for part in type_name.split("."))


def resolve_types(value: Any) -> list[str]:
    """Load the modules of every type a value names; returns the names no module defines (or v2)."""
    names = (url.rpartition("/")[2] for url in _type_urls(value))
    return sorted(name for name in names if _envoy_v2(name) or message_class(name) is None)


def _unwrap_typed_structs(node: Any) -> Any:
    """``{"@type": TypedStruct, "type_url": T, "value": {…}}`` → ``{"@type": T, …}`` when T is known."""
    if isinstance(node, list):
        return [_unwrap_typed_structs(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: _unwrap_typed_structs(v) for k, v in node.items()}
    inner = node.get("type_url")
    if node.get("@type", "").rpartition("/")[2] in TYPED_STRUCTS and isinstance(inner, str):
        cls = None if _envoy_v2(inner.rpartition("/")[2]) else message_class(inner.rpartition("/")[2])
        if cls is not None:
            message = json_format.ParseDict(node.get("value") or {}, cls(), ignore_unknown_fields=True)
            return {"@type": inner, **json_format.MessageToDict(message, preserving_proto_field_name=True)}
    return node


def _protobuf_duration(text: str) -> str:
    """A Go duration (``500ms``, ``1m30s``: what Istio's JSON decoder accepts) as protobuf's ``0.500s``."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        return text  # ParseDict will say what is wrong with it
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _fields(descriptor) -> dict:
    return {name: f for f in descriptor.fields for name in (f.name, f.json_name)}


def go_durations(node: Any, type_name: str) -> Any:
    """`node` (JSON of message `type_name`) with every Duration written as Go writes them rewritten
    in protobuf's form; followed into ``@type``d configs and TypedStructs."""
    cls = message_class(type_name) if isinstance(node, dict) else None
    if cls is None:
        return node
    if type_name in TYPED_STRUCTS and isinstance(node.get("type_url"), str) and isinstance(node.get("value"), dict):
        return {**node, "value": go_durations(node["value"], node["type_url"].rpartition("/")[2])}
    fields = _fields(cls.DESCRIPTOR)
    return {key: _go_durations_in(value, fields.get(key)) for key, value in node.items()}


def _go_durations_in(value: Any, field) -> Any:
    message = field.message_type if field is not None else None
    if message is None:
        return value
    if message.GetOptions().map_entry:
        value_field = message.fields_by_name["value"]
        return {k: _go_durations_in(v, value_field) for k, v in value.items()} if isinstance(value, dict) else value
    if field.is_repeated and isinstance(value, list):
        return [_go_durations_one(item, message.full_name) for item in value]
    return _go_durations_one(value, message.full_name)


def _go_durations_one(value: Any, type_name: str) -> Any:
    if type_name == "google.protobuf.Duration":
        return _protobuf_duration(value) if isinstance(value, str) else value
    if type_name == "google.protobuf.Any" and isinstance(value, dict) and isinstance(value.get("@type"), str):
        return go_durations(value, value["@type"].rpartition("/")[2])
    return go_durations(value, type_name)


def envoy_value(apply_to: str, value: dict, *, strict: bool = False) -> dict:
    """A patch value as the Envoy object of `apply_to`, in Envoy's JSON with proto field names and
    only the fields that are set (as proto merge sees them). Raises ValueError if it is not one."""
    type_name = VALUE_TYPES[apply_to]
    unknown = resolve_types(value)
    if unknown:
        hint = " (hint: use Envoy's v3 API; v2 types are gone)" if any(".v2." in u for u in unknown) else ""
        raise ValueError(f"referenced type unknown: {', '.join(unknown)}{hint}")
    cls = message_class(type_name)
    try:
        message = json_format.ParseDict(go_durations(value, type_name), cls(), ignore_unknown_fields=not strict)
    except (json_format.ParseError, ValueError, TypeError) as error:
        raise ValueError(f"not a valid {type_name}: {error}") from None
    return _unwrap_typed_structs(json_format.MessageToDict(message, preserving_proto_field_name=True))


# ---------------------------------------------------------------- EnvoyFilter


class WorkloadSelector(IstioModel):
    labels: Labels = {}


class PolicyTargetReference(IstioModel):
    group: str = ""
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)
    namespace: str = ""


class ProxyMatch(IstioModel):
    proxy_version: Regex = ""
    metadata: dict[str, str] = {}


Port = Annotated[int, Field(ge=0, le=65535)]


class SubFilterMatch(IstioModel):
    name: str = ""


class FilterMatch(IstioModel):
    name: str = ""
    sub_filter: SubFilterMatch | None = None


class FilterChainMatch(IstioModel):
    name: str = ""
    sni: str = ""
    transport_protocol: str = ""
    application_protocols: str = ""
    filter: FilterMatch | None = None
    destination_port: Port = 0


class ListenerMatch(IstioModel):
    port_number: Port = 0
    port_name: str = ""
    filter_chain: FilterChainMatch | None = None
    listener_filter: str = ""
    name: str = ""


class RouteMatch(IstioModel):
    name: str = ""
    action: RouteAction = "ANY"


class VirtualHostMatch(IstioModel):
    name: str = ""
    domain_name: str = ""
    route: RouteMatch | None = None


class RouteConfigurationMatch(IstioModel):
    port_number: Port = 0
    port_name: str = ""
    gateway: str = ""
    vhost: VirtualHostMatch | None = None
    name: str = ""


class ClusterMatch(IstioModel):
    port_number: Port = 0
    service: str = ""
    subset: str = ""
    name: str = ""


class WaypointMatch(IstioModel):
    """Istio's waypoint match; plait has no waypoint proxies, so it is only validated."""

    filter: dict[str, Any] | None = None
    route: dict[str, Any] | None = None
    port_number: int | None = Field(default=None, ge=1, le=65535)


class EnvoyConfigObjectMatch(IstioModel):
    context: PatchContext = "ANY"
    proxy: ProxyMatch | None = None
    listener: ListenerMatch | None = None
    route_configuration: RouteConfigurationMatch | None = None
    cluster: ClusterMatch | None = None
    waypoint: WaypointMatch | None = None

    @model_validator(mode="after")
    def _one_object_type(self) -> "EnvoyConfigObjectMatch":
        set_ = [name for name in OBJECT_TYPES if getattr(self, name) is not None]
        if len(set_) > 1:
            raise ValueError(
                "set only one of listener, routeConfiguration, cluster (got "
                f"{', '.join(OBJECT_TYPES[name] for name in set_)})"
            )
        if (self.waypoint is not None) != (self.context == "WAYPOINT"):
            raise ValueError("waypoint matches go with context WAYPOINT only")
        return self

    @property
    def object_type(self) -> str | None:
        return next((name for name in OBJECT_TYPES if getattr(self, name) is not None), None)


OBJECT_TYPES = {
    "listener": "listener",
    "route_configuration": "routeConfiguration",
    "cluster": "cluster",
    "waypoint": "waypoint",
}  # the oneof of a match: field → Istio's name


class Patch(IstioModel):
    operation: Operation | None = None
    value: dict[str, Any] | None = None
    filter_class: FilterClass = "UNSPECIFIED"


def _check_listener_match(apply_to: str, listener: ListenerMatch) -> None:
    """Istio's rules for filter matches: names required, subFilter only for HTTP_FILTER on the HCM."""
    chain = listener.filter_chain
    if chain is None or chain.filter is None:
        return
    if not chain.filter.name:
        raise ValueError("match.listener.filterChain.filter has no name to match on")
    sub = chain.filter.sub_filter
    if sub is None:
        return
    if apply_to != "HTTP_FILTER":
        raise ValueError("match.listener.filterChain.filter.subFilter can be used with applyTo HTTP_FILTER only")
    if chain.filter.name not in (HCM_FILTER, "envoy.http_connection_manager"):
        raise ValueError(f"match.listener.filterChain.filter.subFilter requires filter name {HCM_FILTER}")
    if not sub.name:
        raise ValueError("match.listener.filterChain.filter.subFilter has no name to match on")


def _check_match_fits(apply_to: str, match: EnvoyConfigObjectMatch) -> None:
    kind = match.object_type
    if kind is None or kind == "waypoint":
        return
    if apply_to in LISTENER_CLASS and kind != "listener":
        raise ValueError(f"applyTo {apply_to} needs a listener match, not {kind}")
    if apply_to in ROUTE_CLASS and kind != "route_configuration":
        raise ValueError(f"applyTo {apply_to} needs a routeConfiguration match, not {kind}")
    if apply_to == "CLUSTER" and kind != "cluster":
        raise ValueError(f"applyTo CLUSTER needs a cluster match, not {kind}")
    if kind == "listener" and apply_to in LISTENER_CLASS:
        _check_listener_match(apply_to, match.listener)


class EnvoyConfigObjectPatch(IstioModel):
    apply_to: ApplyTo | None = None
    match: EnvoyConfigObjectMatch | None = None
    patch: Patch | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "EnvoyConfigObjectPatch":
        if self.match is not None and self.match.context == "WAYPOINT":
            return self  # Istio does not validate waypoint patches; plait has no waypoints
        if self.apply_to is None:
            raise ValueError("missing applyTo; expected one of " + ", ".join(VALUE_TYPES))
        if self.patch is None:
            raise ValueError("missing patch")
        if self.patch.operation is None:
            raise ValueError("missing patch.operation")
        if self.patch.operation != "REMOVE" and self.patch.value is None:
            raise ValueError(f"patch.value is required for operation {self.patch.operation}")
        if self.match is not None:
            _check_match_fits(self.apply_to, self.match)
        if self.patch.value is not None:
            try:
                envoy_value(self.apply_to, self.patch.value)
            except ValueError as error:
                raise ValueError(f"patch.value: {error}") from None
        return self

    @property
    def context(self) -> str:
        return self.match.context if self.match else "ANY"


class EnvoyFilterSpec(IstioModel):
    workload_selector: WorkloadSelector | None = None
    target_refs: list[PolicyTargetReference] = Field(default=[], max_length=16)
    config_patches: list[EnvoyConfigObjectPatch] = []
    priority: int = Field(default=0, ge=-(2**31), le=2**31 - 1)

    @model_validator(mode="after")
    def _selector_or_target(self) -> "EnvoyFilterSpec":
        if self.workload_selector is not None and self.target_refs:
            raise ValueError("only one of targetRefs or workloadSelector can be set")
        return self


# ---------------------------------------------------------------- ProxyConfig


def _check_env_name(name: str) -> str:
    if not name or "=" in name or "\x00" in name:
        raise ValueError(f"{name!r} is not an environment variable name")
    return name


def _check_label_keys(labels: Labels) -> Labels:
    if any(not key for key in labels):
        raise ValueError("a label key must not be empty")
    return labels


class PolicySelector(IstioModel):
    match_labels: Annotated[Labels, AfterValidator(_check_label_keys)] = {}


class ProxyImage(IstioModel):
    image_type: str = ""


class ProxyConfigSpec(IstioModel):
    """Per-workload proxy settings (networking.istio.io/v1beta1 ProxyConfig)."""

    selector: PolicySelector | None = None
    concurrency: int | None = Field(default=None, ge=0, le=2**31 - 1)
    environment_variables: dict[Annotated[str, AfterValidator(_check_env_name)], str] = {}
    image: ProxyImage | None = None


# ---------------------------------------------------------------- what plait accepts without effect


def _patch_warnings(i: int, cp: EnvoyConfigObjectPatch) -> list[tuple[str, str]]:
    path = f"spec.configPatches[{i}]"
    out: list[tuple[str, str]] = []
    if cp.context == "WAYPOINT":
        return [(f"{path}.match.context", "plait has no waypoint proxies; this patch applies to none")]
    op, apply_to = cp.patch.operation, cp.apply_to
    if apply_to in NOT_SUPPORTED_YET:
        out.append((f"{path}.applyTo", f"applyTo {apply_to} is not supported by plait yet; this patch is ignored"))
    elif apply_to == "ROUTE_CONFIGURATION" and op not in ("MERGE", "MERGE_AND_REPLACE_LIST"):
        out.append(
            (f"{path}.patch.operation", f"{op} has no effect on ROUTE_CONFIGURATION (only MERGE does, as in Istio)")
        )
    elif op == "REPLACE" and apply_to not in ("HTTP_FILTER", "NETWORK_FILTER", "LISTENER_FILTER", "VIRTUAL_HOST"):
        out.append((f"{path}.patch.operation", f"REPLACE has no effect on {apply_to} (as in Istio)"))
    if isinstance(cp.patch.value, dict) and ({"config_discovery", "configDiscovery"} & set(cp.patch.value)):
        out.append(
            (
                f"{path}.patch.value",
                "config_discovery asks for an EXTENSION_CONFIG (ECDS), which plait does "
                "not serve yet: Envoy would wait for it; give the filter a typed_config instead",
            )
        )
    if cp.patch.filter_class != "UNSPECIFIED":
        out.append(
            (
                f"{path}.patch.filterClass",
                "filterClass has no effect (Istio ignores it too): ADD appends the filter at the end of the list",
            )
        )
    if cp.match and cp.match.proxy and len(cp.match.proxy.proxy_version) > MAX_PROXY_VERSION_LENGTH:
        out.append(
            (
                f"{path}.match.proxy.proxyVersion",
                f"longer than {MAX_PROXY_VERSION_LENGTH} characters: matches no proxy (as in Istio)",
            )
        )
    elif (
        cp.match
        and cp.match.proxy
        and cp.match.proxy.proxy_version
        and not re2.search(cp.match.proxy.proxy_version, __version__)
    ):
        out.append(
            (
                f"{path}.match.proxy.proxyVersion",
                f"matches no plait proxy: they report ISTIO_VERSION "
                f"{__version__} (plait's version); this patch applies to none",
            )
        )
    if cp.match and cp.match.proxy:
        unknown = sorted(set(cp.match.proxy.metadata) - set(KNOWN_METADATA_KEYS))
        if unknown:
            out.append(
                (
                    f"{path}.match.proxy.metadata",
                    f"plait proxies do not report {', '.join(unknown)}; "
                    f"this patch applies to none (known keys: {', '.join(KNOWN_METADATA_KEYS)})",
                )
            )
    listener = cp.match.listener if cp.match else None
    if listener and listener.port_name:
        out.append((f"{path}.match.listener.portName", "portName is not implemented (in Istio either); ignored"))
    names = (
        [listener.filter_chain.filter.name, (listener.filter_chain.filter.sub_filter or SubFilterMatch()).name]
        if listener and listener.filter_chain and listener.filter_chain.filter
        else []
    )
    for name in filter(None, [*names, listener.listener_filter if listener else ""]):
        if name in DEPRECATED_FILTER_NAMES:
            out.append(
                (
                    f"{path}.match.listener",
                    f"deprecated filter name {name!r} matches nothing; use {DEPRECATED_FILTER_NAMES[name]!r}",
                )
            )
    if cp.patch.value is not None:
        try:
            envoy_value(apply_to, cp.patch.value, strict=True)
        except ValueError as error:
            out.append((f"{path}.patch.value", f"{error} (unknown fields are ignored, as in Istio)"))
    return out


def envoy_filter_warnings(spec: EnvoyFilterSpec) -> list[tuple[str, str]]:
    """(field path, message) for what an EnvoyFilter asks that plait (or Istio) will not do."""
    out: list[tuple[str, str]] = []
    if spec.workload_selector is not None and not spec.workload_selector.labels:
        out.append(
            ("spec.workloadSelector", "workloadSelector without labels: applies to every workload of the namespace")
        )
    for i, cp in enumerate(spec.config_patches):
        out += _patch_warnings(i, cp)
    return out


def proxy_config_warnings(spec: ProxyConfigSpec) -> list[tuple[str, str]]:
    if spec.image is not None:
        return [("spec.image", "image does not apply to plait: its proxies run the Envoy installed with it")]
    return []
