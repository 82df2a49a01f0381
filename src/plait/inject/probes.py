"""Rewrite the app's probes through the agent (Istio's app_probe.go), so they work under STRICT mTLS.

The kubelet's probes come from outside the mesh, in plaintext: under STRICT mutual TLS the
sidecar would refuse them. So each app container's HTTP, TCP and gRPC readiness, liveness and
startup probe (and its httpGet/tcpSocket postStart/preStop hooks) becomes an ``httpGet`` on the
agent's status port (15020; iptables never captures it), path ``/app-health/CONTAINER/readyz``
(``livez``, ``startupz``, ``prestopz``, ``poststartz``). The original probes travel to the agent in
the istio-proxy container's ``ISTIO_KUBE_APP_PROBERS`` environment variable: JSON, path → the
original ``httpGet``/``tcpSocket``/``grpc`` action (named ports resolved to numbers) and its
``timeoutSeconds``. The agent runs them against the pod's own address. Exec probes are left alone.

Pure functions over pod dicts (Kubernetes' JSON shape).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from plait.inject.settings import PROXY_CONTAINER

PROBES = (("readinessProbe", "readyz"), ("livenessProbe", "livez"), ("startupProbe", "startupz"))
HOOKS = (("preStop", "prestopz"), ("postStart", "poststartz"))
PROBE_ACTIONS = ("httpGet", "tcpSocket", "grpc")
HOOK_ACTIONS = ("httpGet", "tcpSocket")


def prober_path(container: str, kind: str) -> str:
    """Where the agent serves one rewritten probe (Istio's FormatProberURL)."""
    return f"/app-health/{container}/{kind}"


def app_probers(spec: dict[str, Any], status_port: int) -> dict[str, dict[str, Any]]:
    """The original probes of every container but istio-proxy, keyed by their /app-health path.

    Named ports are resolved against the container's ports; a probe naming a port the container
    does not declare, or already pointing at `status_port` (rewritten before), is left out.
    """
    probers: dict[str, dict[str, Any]] = {}
    for container in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]:
        if container.get("name") == PROXY_CONTAINER:
            continue
        named = {p["name"]: p["containerPort"] for p in container.get("ports") or () if p.get("name")}
        hooks = container.get("lifecycle") or {}
        for kind, handler, actions in [
            *((k, container.get(f), PROBE_ACTIONS) for f, k in PROBES),
            *((k, hooks.get(f), HOOK_ACTIONS) for f, k in HOOKS),
        ]:
            prober = _prober(handler, actions, named, status_port)
            if prober is not None:
                probers[prober_path(container["name"], kind)] = prober
    return probers


def _prober(
    handler: dict[str, Any] | None, actions: tuple[str, ...], named: dict[str, int], status_port: int
) -> dict[str, Any] | None:
    if not handler:
        return None
    action = next((a for a in actions if handler.get(a) is not None), None)
    if action is None:
        return None
    body = copy.deepcopy(handler[action])
    if action != "grpc":
        port = body.get("port")
        if isinstance(port, str) and not port.isdigit():
            if port not in named:
                return None
            body["port"] = named[port]
        elif port is not None and int(port) == status_port:
            return None  # already rewritten
    prober: dict[str, Any] = {action: body}
    if handler.get("timeoutSeconds"):
        prober["timeoutSeconds"] = handler["timeoutSeconds"]
    return prober


def rewrite_probes(spec: dict[str, Any], status_port: int) -> None:
    """Point every app container's probes and hooks at the agent (in place, on a copy the caller owns)."""
    for container in [*(spec.get("initContainers") or ()), *(spec.get("containers") or ())]:
        if container.get("name") == PROXY_CONTAINER:
            continue
        for field, kind in PROBES:
            if container.get(field):
                container[field] = _rewritten(
                    container[field], PROBE_ACTIONS, prober_path(container["name"], kind), status_port
                )
        hooks = container.get("lifecycle") or {}
        for field, kind in HOOKS:
            if hooks.get(field):
                hooks[field] = _rewritten(hooks[field], HOOK_ACTIONS, prober_path(container["name"], kind), status_port)


def _rewritten(handler: dict[str, Any], actions: tuple[str, ...], path: str, port: int) -> dict[str, Any]:
    """The handler as an httpGet on the agent; unchanged when it is an exec (or unknown) handler."""
    action = next((a for a in actions if handler.get(a) is not None), None)
    if action is None:
        return handler
    out = {k: v for k, v in handler.items() if k not in actions}
    http = dict(handler["httpGet"]) if action == "httpGet" else {}
    http.update(path=path, port=port)
    if http.get("scheme") == "HTTPS":
        http["scheme"] = "HTTP"  # kubelet → HTTP → agent → HTTPS → app
    return {"httpGet": http, **out}


def probers_env(probers: dict[str, dict[str, Any]]) -> str:
    """The ISTIO_KUBE_APP_PROBERS value (compact JSON, as Istio writes it)."""
    return json.dumps(probers, separators=(",", ":"))
