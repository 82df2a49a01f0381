"""The mesh as translation sees it (flows in: Resources; flows out: an immutable MeshSnapshot).

`services` merges Kubernetes Services, WorkloadEntries and ServiceEntries into one
registry; `hosts` resolves and matches hostnames as Istio does; `proxy` is the
identity of one Envoy; `snapshot` indexes everything and answers scoping
questions (exportTo, Sidecar egress, DestinationRule precedence). Pure, no I/O.
"""

from plait.model.proxy import Proxy
from plait.model.snapshot import MeshSnapshot

__all__ = ["MeshSnapshot", "Proxy"]
