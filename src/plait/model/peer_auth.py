"""PeerAuthentication → the mTLS mode a workload's sidecar enforces on each of its ports (pure).

Istio's precedence, most specific first: ``portLevelMtls`` of the workload-level
policy, that policy's mode, the namespace-wide policy (no selector), the
mesh-wide policy (no selector, in the root namespace), PERMISSIVE. ``UNSET``
(or no ``mtls``) at a level inherits from the next broader one. A policy with a
selector is workload-level wherever it lives. When several policies compete at
one level Istio keeps the oldest; plait has no creation times, so the workload's
own namespace beats the root namespace, then the name that sorts first wins.

`namespace_mode` is Istio's best-effort hint for clients (auto mTLS): only the
namespace-wide and mesh-wide policies of the destination's namespace count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from plait.api.resources import Resource
from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot

UNSET, DISABLE, PERMISSIVE, STRICT = "UNSET", "DISABLE", "PERMISSIVE", "STRICT"


@dataclass(frozen=True)
class PeerPolicy:
    """The merged PeerAuthentication of one workload: a mode, and overrides by workload port."""

    mode: str = PERMISSIVE
    port_modes: Mapping[int, str] = field(default_factory=dict)

    def for_port(self, port: int) -> str:
        return self.port_modes.get(port, self.mode)


def _mode(policy: Resource | None) -> str:
    mtls = policy.spec.mtls if policy else None
    return mtls.mode if mtls else UNSET


def _selects(policy: Resource) -> bool:
    return bool(policy.spec.selector and policy.spec.selector.match_labels)


def _first_by_name(policies: Iterable[Resource]) -> Resource | None:
    return min(policies, key=lambda p: p.name, default=None)


def _inherit(parent: str, policy: Resource | None) -> str:
    mode = _mode(policy)
    return parent if mode == UNSET else mode


def _broad_modes(policies: list[Resource], namespace: str, root_namespace: str) -> str | None:
    """Mesh-wide then namespace-wide mode; None when neither sets one."""
    mesh = _first_by_name(p for p in policies if p.namespace == root_namespace and not _selects(p))
    own = None
    if namespace != root_namespace:
        own = _first_by_name(p for p in policies if p.namespace == namespace and not _selects(p))
    mode = _inherit(_inherit(UNSET, mesh), own)
    return None if mode == UNSET else mode


def workload_policy(snapshot: MeshSnapshot, proxy: Proxy) -> PeerPolicy:
    """What the proxy's inbound side enforces, from the PeerAuthentications that apply to it."""
    applying = snapshot.policies_for(proxy, snapshot.peer_authentications)
    mode = _broad_modes(applying, proxy.namespace, snapshot.root_namespace) or PERMISSIVE
    selecting = [p for p in applying if _selects(p)]
    workload = _first_by_name(p for p in selecting if p.namespace == proxy.namespace) or _first_by_name(selecting)
    if workload is None:
        return PeerPolicy(mode)
    mode = _inherit(mode, workload)
    ports = {port: mode if mtls.mode == UNSET else mtls.mode for port, mtls in workload.spec.port_level_mtls.items()}
    return PeerPolicy(mode, MappingProxyType(ports))


def namespace_mode(snapshot: MeshSnapshot, namespace: str) -> str | None:
    """The namespace-wide (else mesh-wide) mode of a destination namespace; None if no policy sets one."""
    return _broad_modes(snapshot.peer_authentications, namespace, snapshot.root_namespace)
