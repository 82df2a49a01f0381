"""Istio's ``IstioOperator`` (install.istio.io/v1alpha1) as plait's install input (pure).

In: the texts of operator files (name, YAML) and ``--set path=value`` flags. Out: `Resolved`, the
merged spec, the frozen `InstallSettings` the manifests are built from, and one warning per field
Istio has and plait does not implement (named by its path, so an operator file written for Istio
installs unchanged and nothing is dropped silently). Merged in istioctl's order: the profile (from
``--set profile=``, else the last file that names one, else ``default``) → the files in order →
the ``--set`` flags. Gateway lists merge by ``name``; other lists are replaced. A wrong type or an
unknown value is an `OperatorError` naming the file, the field's path and what was expected.

``--set`` paths are istioctl's: ``values.global.istioNamespace=mesh``,
``components.ingressGateways[0].k8s.service.type=NodePort``,
``components.ingressGateways[name:istio-ingressgateway].enabled=false``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from plait.install.profiles import PROFILES, profile_spec
from plait.install.settings import DEFAULT_IMAGE, GatewaySettings, InstallSettings, K8sSettings

API_VERSION = "install.istio.io/v1alpha1"
KIND = "IstioOperator"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LOG_LEVELS = {"debug": "debug", "info": "info", "warn": "warning", "error": "error", "fatal": "error", "none": "error"}


class OperatorError(ValueError):
    """An IstioOperator input plait cannot use; the message names the file, the field and what was expected."""


@dataclass(frozen=True)
class Resolved:
    spec: dict[str, Any]
    settings: InstallSettings
    warnings: tuple[str, ...] = field(default=())


# ---------------------------------------------------------------- the fields plait implements, by type

Check = Callable[[Any], bool]


def _leaf(what: str, check: Check) -> tuple[str, Check]:
    return what, check


STR = _leaf("a string", lambda v: isinstance(v, str))
BOOL = _leaf("true or false", lambda v: isinstance(v, bool))
INT = _leaf("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool))
NUMBER = _leaf("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool))
MAP = _leaf("a mapping", lambda v: isinstance(v, dict))
STR_MAP = _leaf("a mapping of strings", lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()))
LIST = _leaf("a list", lambda v: isinstance(v, list))
ENV = _leaf(
    "a list of {name, value} or {name, valueFrom}",
    lambda v: isinstance(v, list) and all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in v),
)


def _one_of(*values: str) -> tuple[str, Check]:
    return f"one of {', '.join(values)}", lambda v: v in values


PORT = {"name": STR, "port": INT, "targetPort": INT, "nodePort": INT, "protocol": _one_of("TCP", "UDP", "SCTP")}
K8S = {
    "resources": MAP,
    "env": ENV,
    "hpaSpec": {"minReplicas": INT, "maxReplicas": INT, "metrics": LIST},
    "nodeSelector": STR_MAP,
    "replicaCount": INT,
    "service": {"type": _one_of("ClusterIP", "NodePort", "LoadBalancer"), "ports": [PORT]},
}
GATEWAY = {"name": STR, "namespace": STR, "enabled": BOOL, "label": STR_MAP, "k8s": K8S}
SPEC = {
    "profile": _one_of(*PROFILES),
    "revision": STR,
    "hub": STR,
    "tag": STR,
    "meshConfig": {
        "accessLogFile": STR,
        "accessLogEncoding": _one_of("TEXT", "JSON"),
        "accessLogFormat": STR,
        "enableTracing": BOOL,
        "enablePrometheusMerge": BOOL,
        "defaultConfig": {"discoveryAddress": STR, "tracing": MAP, "proxyMetadata": STR_MAP},
    },
    "values": {"global": {"istioNamespace": STR, "logging": {"level": STR}}},
    "addons": {"prometheus": BOOL},
    "components": {
        "base": {"enabled": BOOL},
        "pilot": {"enabled": BOOL, "k8s": K8S},
        "ingressGateways": [GATEWAY],
        "egressGateways": [GATEWAY],
    },
}


def _show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def check_spec(spec: Any, schema: Any, path: str, source: str) -> list[str]:
    """The paths under `path` that plait does not implement, in document order; OperatorError for a value of the wrong type."""
    if isinstance(schema, tuple):
        what, ok = schema
        if not ok(spec):
            raise OperatorError(f"{source}: {path}: expected {what}, got {_show(spec)}")
        return []
    if isinstance(schema, list):
        if not isinstance(spec, list):
            raise OperatorError(f"{source}: {path}: expected a list, got {_show(spec)}")
        return [w for i, item in enumerate(spec) for w in check_spec(item, schema[0], f"{path}[{i}]", source)]
    if spec is None:
        return []
    if not isinstance(spec, dict):
        raise OperatorError(f"{source}: {path}: expected a mapping, got {_show(spec)}")
    return [
        found
        for key, value in spec.items()
        for found in (check_spec(value, schema[key], f"{path}.{key}", source) if key in schema else [f"{path}.{key}"])
    ]


# ---------------------------------------------------------------- reading files, merging, --set


def read_operator(text: str, source: str) -> tuple[dict[str, Any], str]:
    """(spec, metadata.name) of the one IstioOperator in `text`."""
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as error:
        raise OperatorError(f"{source}: not YAML: {error}") from None
    if len(documents) != 1:
        raise OperatorError(f"{source}: expected one IstioOperator document, found {len(documents)}")
    [document] = documents
    if not isinstance(document, dict):
        raise OperatorError(f"{source}: expected an IstioOperator (a mapping), got {_show(document)}")
    if (document.get("apiVersion"), document.get("kind")) != (API_VERSION, KIND):
        raise OperatorError(
            f"{source}: expected apiVersion {API_VERSION} and kind {KIND}, "
            f"got {document.get('apiVersion')!r} {document.get('kind')!r}"
        )
    spec = document.get("spec") or {}
    if not isinstance(spec, dict):
        raise OperatorError(f"{source}: spec: expected a mapping, got {_show(spec)}")
    return spec, str((document.get("metadata") or {}).get("name") or "")


def merge(base: Any, overlay: Any) -> Any:
    """`overlay` over `base`: mappings merge key by key, gateway lists (items with a name) by name."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(overlay, list) and all(_named(i) for i in (*base, *overlay)):
        merged_list = list(base)
        names = [item["name"] for item in base]
        for item in overlay:
            if item["name"] in names:
                index = names.index(item["name"])
                merged_list[index] = merge(merged_list[index], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(overlay)


def _named(item: Any) -> bool:
    return isinstance(item, dict) and isinstance(item.get("name"), str)


_SEGMENT = re.compile(r"([^.\[\]]+)|\[([^\]]*)\]")
_PATH = re.compile(r"^[^.\[\]]+(\[[^\]]*\])*(\.[^.\[\]]+(\[[^\]]*\])*)*$")


def parse_set(flag: str) -> tuple[list[str | int | tuple[str, str]], Any]:
    """``a.b[0].c[name:x]=v`` → (["a", "b", 0, "c", ("name", "x")], v); v is a bool, an int or a string."""
    path, sep, raw = flag.partition("=")
    if not sep or not path:
        raise OperatorError(f"--set {flag}: expected path=value")
    if not _PATH.match(path):
        raise OperatorError(f"--set {flag}: expected a path such as a.b[0].c or a.b[name:x].c, got {path!r}")
    segments: list[str | int | tuple[str, str]] = []
    for key, index in _SEGMENT.findall(path):
        if key:
            segments.append(key)
        elif index.isdigit():
            segments.append(int(index))
        elif ":" in index:
            selector_key, _, selector_value = index.partition(":")
            segments.append((selector_key, selector_value))
        else:
            raise OperatorError(f"--set {flag}: [{index}]: expected a list index [N] or a selector [key:value]")
    value: Any = {"true": True, "false": False}.get(raw, raw)
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", raw) and not re.fullmatch(r"0[0-9]+", raw):
        value = int(raw)
    return segments, value


def apply_set(spec: dict[str, Any], flag: str) -> dict[str, Any]:
    """`spec` with one ``--set`` flag applied (a copy; dicts and list items are made on the way)."""
    segments, value = parse_set(flag)
    if segments and segments[0] == "spec":
        segments = segments[1:]
    result = copy.deepcopy(spec)
    node: Any = result
    for segment, following in zip(segments, [*segments[1:], None], strict=True):
        last = following is None
        fresh: Any = value if last else ([] if not isinstance(following, str) else {})
        if isinstance(segment, str):
            if not isinstance(node, dict):
                raise OperatorError(f"--set {flag}: {segment}: the field above it is not a mapping")
            if last:
                node[segment] = value
            else:
                node = node.setdefault(segment, fresh)
            continue
        if not isinstance(node, list):
            raise OperatorError(f"--set {flag}: the field before {_index(segment)} is not a list")
        position = _find(node, segment, flag)
        if position == len(node):
            node.append({segment[0]: segment[1]} if isinstance(segment, tuple) else fresh)
        if last:
            node[position] = value
        else:
            node = node[position]
    return result


def _index(segment: int | tuple[str, str]) -> str:
    return f"[{segment}]" if isinstance(segment, int) else f"[{segment[0]}:{segment[1]}]"


def _find(items: list[Any], segment: int | tuple[str, str], flag: str) -> int:
    if isinstance(segment, int):
        if segment > len(items):
            raise OperatorError(f"--set {flag}: [{segment}]: the list has {len(items)} items")
        return segment
    key, value = segment
    for position, item in enumerate(items):
        if isinstance(item, dict) and str(item.get(key)) == value:
            return position
    return len(items)


# ---------------------------------------------------------------- settings


def _log_level(level: str, source: str) -> str:
    """Istio's ``scope:level[,scope:level]`` (or a bare level): the default scope's level, in plait's words."""
    scopes = dict(part.split(":", 1) if ":" in part else ("default", part) for part in level.split(",") if part)
    chosen = scopes.get("default", "info").strip()
    if chosen not in _LOG_LEVELS:
        raise OperatorError(
            f"{source}: spec.values.global.logging.level: expected default:LEVEL with LEVEL one of "
            f"{', '.join(_LOG_LEVELS)}, got {level!r}"
        )
    return _LOG_LEVELS[chosen]


def _k8s(k8s: dict[str, Any]) -> K8sSettings:
    service = k8s.get("service") or {}
    hpa = k8s.get("hpaSpec")
    return K8sSettings(
        resources=copy.deepcopy(k8s.get("resources") or {}),
        env=tuple(copy.deepcopy(k8s.get("env") or [])),
        hpa={k: copy.deepcopy(v) for k, v in hpa.items()} if hpa else None,
        node_selector=dict(k8s.get("nodeSelector") or {}),
        replicas=k8s.get("replicaCount"),
        service_type=service.get("type"),
        service_ports=tuple(copy.deepcopy(service["ports"])) if service.get("ports") else None,
    )


def _gateway(spec: dict[str, Any], egress: bool, namespace: str, path: str) -> GatewaySettings:
    name = spec.get("name")
    if not name:
        raise OperatorError(f"{path}.name: expected the gateway's name")
    labels = {"app": name, "istio": "egressgateway" if egress else "ingressgateway", **(spec.get("label") or {})}
    return GatewaySettings(name, spec.get("namespace") or namespace, labels, egress, _k8s(spec.get("k8s") or {}))


def to_settings(spec: dict[str, Any], owner: str = "", image: str | None = None, source: str = "") -> InstallSettings:
    """The frozen settings of a merged, checked spec; `image` (``--image``) wins over hub/tag."""
    revision = spec.get("revision") or ""
    if revision and not _DNS_LABEL.match(revision):
        raise OperatorError(
            f"{source}: spec.revision: expected lower-case letters, digits and '-' (a DNS label), got {revision!r}"
        )
    values = (spec.get("values") or {}).get("global") or {}
    namespace = values.get("istioNamespace") or "istio-system"
    components = spec.get("components") or {}
    pilot = components.get("pilot") or {}
    default_hub, default_tag = DEFAULT_IMAGE.rsplit(":", 1)
    gateways = [
        _gateway(g, egress, namespace, f"{source}: spec.components.{kind}[{i}]")
        for kind, egress in (("ingressGateways", False), ("egressGateways", True))
        for i, g in enumerate(components.get(kind) or [])
        if g.get("enabled")
    ]
    return InstallSettings(
        namespace=namespace,
        image=image or f"{spec['hub'] + '/proxy' if spec.get('hub') else default_hub}:{spec.get('tag') or default_tag}",
        revision=revision,
        owner=owner or "installed-state",
        log_level=_log_level(str((values.get("logging") or {}).get("level") or "default:info"), source),
        base=bool((components.get("base") or {}).get("enabled")),
        pilot=_k8s(pilot.get("k8s") or {}) if pilot.get("enabled") else None,
        gateways=tuple(gateways),
        mesh_config=copy.deepcopy(spec.get("meshConfig") or {}),
        prometheus=bool((spec.get("addons") or {}).get("prometheus")),
    )


def _strings(spec: dict[str, Any]) -> dict[str, Any]:
    """revision, hub and tag as strings even when YAML or --set read them as numbers (``tag: 1.9``)."""
    return {k: str(v) if k in ("revision", "hub", "tag") and isinstance(v, int | float) else v for k, v in spec.items()}


def resolve(files: Sequence[tuple[str, str]] = (), sets: Iterable[str] = (), *, image: str | None = None) -> Resolved:
    """Profile → files (name, text) in order → ``--set`` flags: the merged spec, settings and warnings."""
    warnings: list[str] = []
    specs: list[dict[str, Any]] = []
    owner = ""
    for name, text in files:
        spec, metadata_name = read_operator(text, name)
        spec = _strings(spec)
        warnings += [f"{name}: {p} is not implemented by plait; ignored" for p in check_spec(spec, SPEC, "spec", name)]
        specs.append(spec)
        to_settings(spec, source=name)  # the values' own errors, named by this file
        owner = metadata_name or owner
    sets = list(sets)
    profiles = [s["profile"] for s in specs if s.get("profile")]
    for flag in sets:
        segments, value = parse_set(flag)
        if segments in (["profile"], ["spec", "profile"]):
            profiles.append(value)
    profile = str(profiles[-1]) if profiles else "default"
    if profile not in PROFILES:
        raise OperatorError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    merged = profile_spec(profile)
    for spec in specs:
        merged = merge(merged, spec)
    merged["profile"] = profile
    before = set(check_spec(merged, SPEC, "spec", "merged"))
    for flag in sets:
        merged = _strings(apply_set(merged, flag))
    after = check_spec(merged, SPEC, "spec", "--set")
    warnings += [f"--set: {p} is not implemented by plait; ignored" for p in after if p not in before]
    return Resolved(merged, to_settings(merged, owner, image, files[-1][0] if files else "--set"), tuple(warnings))
