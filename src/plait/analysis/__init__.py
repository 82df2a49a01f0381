"""Istio's configuration analysis (``istioctl analyze``): messages about config that is valid alone
but wrong in the mesh, with Istio's codes, names, levels and texts.

Flows in: `Inputs`: plait's kinds parsed by `plait validate`'s loader (Istio config, Services),
the problems that kept objects out (schema errors), and other Kubernetes objects as read
(Namespaces, Pods, Deployments…); `inputs.Reading` gathers them from YAML files and from what a
cluster listed. Flows out: `analyze` → `Message`s (`messages`), printed as istioctl prints them.

State: none; everything here is pure (no I/O, no clock). ``plait analyze`` (``plait.cli.analyze``)
is the shell that reads the cluster and the files and prints.
"""

from plait.analysis.analyzers import ANALYZERS, Inputs, KubeObject, analyze
from plait.analysis.messages import MESSAGE_TYPES, Level, Message, MessageType, sorted_unique

__all__ = [
    "ANALYZERS",
    "MESSAGE_TYPES",
    "Inputs",
    "KubeObject",
    "Level",
    "Message",
    "MessageType",
    "analyze",
    "sorted_unique",
]
