"""Which ProxyConfig settings a workload's proxy runs with (Istio's ``EffectiveProxyConfig``). Pure.

Precedence, highest first: the first ProxyConfig of the workload's namespace whose ``selector``
matches its labels; the first selector-less ProxyConfig of its namespace; the first selector-less
ProxyConfig of the root namespace (mesh-wide). Within a namespace "first" is by name (Istio: by
creation time, which files do not have). Each field is taken from the highest level that sets it;
``environmentVariables`` are merged name by name. ``image`` does not apply to plait.

Istio applies these when it injects the sidecar; plait's local runtime applies them when it starts
a pod's agent (``plait agent --concurrency N --proxy-env NAME=VALUE``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from plait.api.resources import Resource
from plait.model.snapshot import ROOT_NAMESPACE


@dataclass(frozen=True)
class EffectiveProxyConfig:
    concurrency: int | None = None  # Envoy worker threads; 0: one per CPU; None: the agent's default
    environment: Mapping[str, str] = field(default_factory=dict)  # for the proxy's process


def _selector(pc: Resource) -> Mapping[str, str]:
    return pc.spec.selector.match_labels if pc.spec.selector else {}


def _first(candidates: Iterable[Resource]) -> Resource | None:
    return min(candidates, key=lambda pc: pc.name, default=None)


def applicable_proxy_configs(
    proxy_configs: Iterable[Resource], namespace: str, labels: Mapping[str, str], root_namespace: str = ROOT_NAMESPACE
) -> list[Resource]:
    """The ProxyConfigs that apply to a workload, lowest precedence first (root, namespace, workload)."""
    configs = [pc for pc in proxy_configs if pc.kind == "ProxyConfig"]
    root = _first(pc for pc in configs if pc.namespace == root_namespace and not _selector(pc))
    own = (
        None
        if namespace == root_namespace
        else _first(pc for pc in configs if pc.namespace == namespace and not _selector(pc))
    )
    workload = _first(
        pc
        for pc in configs
        if pc.namespace == namespace and _selector(pc) and all(labels.get(k) == v for k, v in _selector(pc).items())
    )
    return [pc for pc in (root, own, workload) if pc is not None]


def effective_proxy_config(
    proxy_configs: Iterable[Resource], namespace: str, labels: Mapping[str, str], root_namespace: str = ROOT_NAMESPACE
) -> EffectiveProxyConfig:
    concurrency, environment = None, {}
    for pc in applicable_proxy_configs(proxy_configs, namespace, labels, root_namespace):
        if pc.spec.concurrency is not None:
            concurrency = pc.spec.concurrency
        environment.update(pc.spec.environment_variables)
    return EffectiveProxyConfig(concurrency, environment)
