"""VirtualService delegation: a root route's ``delegate`` brings in another VirtualService's http routes.

As Istio's ``MergeHTTPRoutes``: the delegate (a VirtualService without hosts, never translated
alone) gives its routes in its order; each keeps its own settings and takes the root route's
where it has none (rewrite, timeout, retries, fault, mirrors, CORS, headers…); its matches are
merged with the root's (every delegate match must fall within some root match, else the
delegate route is dropped, as Istio does with a warning); names join as ``root-delegate``.
A delegate that does not exist, or is not exported to the root's namespace, contributes
nothing. The delegate's destination hosts are resolved in its own namespace. Pure.
"""

from __future__ import annotations

from collections.abc import Iterator

from plait.api import networking as net
from plait.api.common import StringMatch
from plait.api.resources import Resource
from plait.model.hosts import fqdn
from plait.model.services import visible
from plait.model.snapshot import MeshSnapshot

_INHERITED = (
    "rewrite",
    "direct_response",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirror_percent",
    "mirror_percentage",
    "cors_policy",
    "headers",
)
_MATCH_STRINGS = ("uri", "scheme", "method", "authority")


def http_routes(vs: Resource, snapshot: MeshSnapshot) -> Iterator[tuple[str, net.HTTPRoute]]:
    """(label, route) for every http route of `vs`, delegations merged in: ``http[1]`` or
    ``http[1].delegate[ns/name].http[0]``."""
    for i, http in enumerate(vs.spec.http):
        if http.delegate is None:
            yield f"http[{i}]", http
            continue
        namespace = http.delegate.namespace or vs.namespace
        delegate = snapshot.resources.get(("VirtualService", namespace, http.delegate.name))
        if delegate is None or delegate.spec.hosts or not visible(namespace, delegate.spec.export_to, vs.namespace):
            continue
        for k, leaf in enumerate(delegate.spec.http):
            merged = merge_route(http, _resolved(leaf, namespace))
            if merged is not None:
                yield f"http[{i}].delegate[{namespace}/{http.delegate.name}].http[{k}]", merged


def _resolved(route: net.HTTPRoute, namespace: str) -> net.HTTPRoute:
    """The route with its destination hosts written as FQDNs of the namespace it was written in."""

    def dest(d: net.Destination) -> net.Destination:
        return d.model_copy(update={"host": fqdn(d.host, namespace)})

    return route.model_copy(
        update={
            "route": [r.model_copy(update={"destination": dest(r.destination)}) for r in route.route],
            "mirror": dest(route.mirror) if route.mirror else None,
            "mirrors": [m.model_copy(update={"destination": dest(m.destination)}) for m in route.mirrors],
        }
    )


def merge_route(root: net.HTTPRoute, leaf: net.HTTPRoute) -> net.HTTPRoute | None:
    """The delegate route under the root route, or None when their matches conflict."""
    matches = merge_matches(root.match, leaf.match)
    if matches is None:
        return None
    update: dict = {"match": matches, "delegate": None}
    update["name"] = "-".join(n for n in (root.name, leaf.name) if n) or None
    for field in _INHERITED:
        if getattr(leaf, field) is None:
            update[field] = getattr(root, field)
    if not leaf.mirrors:
        update["mirrors"] = root.mirrors
    return leaf.model_copy(update=update)


def merge_matches(
    root: list[net.HTTPMatchRequest], leaf: list[net.HTTPMatchRequest]
) -> list[net.HTTPMatchRequest] | None:
    """Each delegate match combined with every root match it does not conflict with; None if some
    delegate match fits no root match."""
    if not root or not leaf:
        return list(root or leaf)
    out = []
    for sub in leaf:
        fitting = [_merge_match(r, sub) for r in root if not _conflict(r, sub)]
        if not fitting:
            return None
        out += fitting
    return out


def _merge_match(root: net.HTTPMatchRequest, leaf: net.HTTPMatchRequest) -> net.HTTPMatchRequest:
    update: dict = {"name": "-".join(n for n in (root.name, leaf.name) if n) or None}
    for field in (*_MATCH_STRINGS, "port", "source_namespace", "stat_prefix"):
        if getattr(leaf, field) is None:
            update[field] = getattr(root, field)
    for field in ("headers", "without_headers", "query_params", "source_labels"):
        update[field] = {**getattr(root, field), **getattr(leaf, field)}
    if not leaf.gateways:
        update["gateways"] = root.gateways
    return leaf.model_copy(update=update)


def _conflict(root: net.HTTPMatchRequest, leaf: net.HTTPMatchRequest) -> bool:
    """Istio's hasConflict: the delegate match must be narrower than the root's."""
    if any(_string_conflict(getattr(root, f), getattr(leaf, f)) for f in _MATCH_STRINGS):
        return True
    for field in ("headers", "without_headers", "query_params"):
        ours = getattr(root, field)
        if any(_string_conflict(ours.get(k), v) for k, v in getattr(leaf, field).items()):
            return True
    if root.ignore_uri_case != leaf.ignore_uri_case:
        return True
    if root.port and leaf.port and root.port != leaf.port:
        return True
    if root.source_namespace and leaf.source_namespace != root.source_namespace:
        return True
    if any(k in root.source_labels and root.source_labels[k] != v for k, v in leaf.source_labels.items()):
        return True
    return bool(root.gateways and leaf.gateways and not set(leaf.gateways) <= set(root.gateways))


def _string_conflict(root: StringMatch | None, leaf: StringMatch | None) -> bool:
    """Istio's stringMatchConflict: where both set one, an exact root needs the same exact, a prefix
    root a prefix or exact under it; anything else (regexes included) conflicts."""
    if root is None or leaf is None:
        return False
    if root.kind == "exact":
        return leaf.kind != "exact" or leaf.value != root.value
    if root.kind == "prefix" and leaf.kind in ("prefix", "exact"):
        return not leaf.value.startswith(root.value)
    return True
