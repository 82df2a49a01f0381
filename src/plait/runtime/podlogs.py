"""A local-mesh pod's log, by container, as ``kubectl logs POD -c CONTAINER`` shows a Kubernetes pod's.

In: the pod (`plait.runtime.local.Pod`: its log file, ``<state-dir>/logs/<pod>.log``, where its agent
writes its own lines prefixed ``[agent] ``, its Envoy's prefixed ``[envoy] `` and the application's
as they are) and a container name. Out: that container's lines: ``istio-proxy`` (Istio's name for the
sidecar container) is the agent's and Envoy's lines, Envoy's without their prefix (so access log
lines read as on Kubernetes); the application container is the rest. Reading is plain file I/O;
`follow` polls the file for new lines.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path

PROXY_CONTAINER = "istio-proxy"
AGENT_PREFIX, ENVOY_PREFIX = "[agent] ", "[envoy] "
POLL = 0.2  # seconds between looks at a followed file


class PodLogError(ValueError):
    """A container the pod does not have, said for people."""


def containers(pod) -> list[str]:
    """A pod's container names: its application's (its ``app`` label, else its deployment's name), then
    ``istio-proxy``; a gateway has only ``istio-proxy``."""
    if pod.kind == "gateway":
        return [PROXY_CONTAINER]
    return [pod.labels.get("app") or pod.deployment, PROXY_CONTAINER]


def check_container(pod, container: str | None) -> str:
    """The container to show: `container`, or the pod's first (its application's, as Istio's
    ``kubectl.kubernetes.io/default-container``); PodLogError if the pod has no such container."""
    names = containers(pod)
    if container is None:
        return names[0]
    if container not in names:
        raise PodLogError(f"container {container!r} is not valid for pod {pod.name}: choose one of {', '.join(names)}")
    return container


def container_lines(lines: Iterable[str], container: str) -> Iterator[str]:
    """The lines of `container` among a pod log's `lines` (without line ends)."""
    for line in lines:
        if line.startswith(ENVOY_PREFIX):
            if container == PROXY_CONTAINER:
                yield line[len(ENVOY_PREFIX) :]
        elif line.startswith(AGENT_PREFIX):
            if container == PROXY_CONTAINER:
                yield line
        elif container != PROXY_CONTAINER:
            yield line


def read(path: Path, container: str, tail: int | None = None) -> tuple[list[str], int]:
    """The container's lines in the file now (the last `tail` of them) and where the file ended."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # a line still being written is left for later
    lines = list(container_lines(data[:end].decode(errors="replace").splitlines(), container))
    return (lines[max(len(lines) - tail, 0) :] if tail is not None else lines), end


def follow(path: Path, container: str, offset: int, *, poll: float = POLL) -> Iterator[str]:
    """The container's lines written to the file after `offset`, as they come (until the caller stops)."""
    while True:
        with path.open("rb") as file:
            file.seek(offset)
            data = file.read()
        end = data.rfind(b"\n") + 1
        if end:
            offset += end
            yield from container_lines(data[:end].decode(errors="replace").splitlines(), container)
        else:
            time.sleep(poll)
