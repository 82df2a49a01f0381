"""Checks across objects: duplicates (errors), dangling references (warnings, as istioctl analyze)."""

from __future__ import annotations

from plait.api.errors import Problem
from plait.api.extensions import envoy_filter_warnings, proxy_config_warnings
from plait.api.hosts import fqdn, matches
from plait.api.resources import Resource

EXTENSION_WARNINGS = {"EnvoyFilter": envoy_filter_warnings, "ProxyConfig": proxy_config_warnings}


def _problem(r: Resource, path: str, message: str, severity: str = "error") -> Problem:
    return Problem(
        message=message,
        file=r.source.file,
        document=r.source.document,
        kind=r.kind,
        namespace=r.namespace,
        name=r.name,
        path=path,
        severity=severity,
    )  # type: ignore[arg-type]


def destinations(vs: Resource):
    """(field path, Destination) for every destination a VirtualService names."""
    for i, http in enumerate(vs.spec.http):
        for j, rd in enumerate(http.route):
            yield f"spec.http[{i}].route[{j}].destination", rd.destination
        if http.mirror:
            yield f"spec.http[{i}].mirror", http.mirror
        for j, m in enumerate(http.mirrors):
            yield f"spec.http[{i}].mirrors[{j}].destination", m.destination
    for section in ("tcp", "tls"):
        for i, route in enumerate(getattr(vs.spec, section)):
            for j, rd in enumerate(route.route):
                yield f"spec.{section}[{i}].route[{j}].destination", rd.destination


def known_hosts(resources: list[Resource]) -> list[str]:
    """Every host a Service (its FQDN) or a ServiceEntry defines."""
    hosts = [f"{r.name}.{r.namespace}.svc.cluster.local" for r in resources if r.kind == "Service"]
    hosts += [h for r in resources if r.kind == "ServiceEntry" for h in r.spec.hosts]
    return hosts


def check_references(resources: list[Resource]) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[tuple[str, str, str], Resource] = {}
    for r in resources:
        if r.key in seen:
            first = seen[r.key]
            problems.append(
                _problem(
                    r,
                    "metadata.name",
                    f"{r.kind} {r.namespace}/{r.name} is defined twice; "
                    f"first in {first.source.file} document {first.source.document}",
                )
            )
        seen[r.key] = r

    problems += [
        _problem(r, path, message, "warning")
        for r in resources
        if r.kind in EXTENSION_WARNINGS
        for path, message in EXTENSION_WARNINGS[r.kind](r.spec)
    ]
    subsets: dict[str, set[str]] = {}
    for dr in (r for r in resources if r.kind == "DestinationRule"):
        subsets.setdefault(fqdn(dr.spec.host, dr.namespace), set()).update(s.name for s in dr.spec.subsets)
    known = known_hosts(resources)
    gateways = {f"{r.namespace}/{r.name}" for r in resources if r.kind == "Gateway"}

    for vs in (r for r in resources if r.kind == "VirtualService"):
        for path, dest in destinations(vs):
            host = fqdn(dest.host, vs.namespace)
            if not any(matches(k, host) for k in known) and not host.startswith("*"):
                problems.append(
                    _problem(
                        vs,
                        f"{path}.host",
                        f"no Service or ServiceEntry defines host {host!r}; requests routed there will fail (503)",
                        "warning",
                    )
                )
            if dest.subset and not any(dest.subset in names for h, names in subsets.items() if matches(h, host)):
                problems.append(
                    _problem(
                        vs,
                        f"{path}.subset",
                        f"subset {dest.subset!r} of {host} is not defined by "
                        "any DestinationRule; requests routed there will fail (503)",
                        "warning",
                    )
                )
        for i, gw in enumerate(vs.spec.gateways):
            ref = gw if gw == "mesh" or "/" in gw else f"{vs.namespace}/{gw}"
            if ref != "mesh" and ref not in gateways:
                problems.append(
                    _problem(
                        vs,
                        f"spec.gateways[{i}]",
                        f"gateway {ref!r} is not defined; this VirtualService does not apply there",
                        "warning",
                    )
                )
    return problems
