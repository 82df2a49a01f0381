"""Hostnames as Istio reads them: short names, FQDNs and wildcards."""

from __future__ import annotations

from plait.api.hosts import DOMAIN_SUFFIX, fqdn, matches

__all__ = ["DOMAIN_SUFFIX", "client_names", "fqdn", "matches", "overlaps"]


def overlaps(a: str, b: str) -> bool:
    return matches(a, b) or matches(b, a)


def client_names(
    hostname: str, port: int, proxy_namespace: str, addresses: tuple[str, ...] = (), domain: str = DOMAIN_SUFFIX
) -> list[str]:
    """Every Host header a client may send for a service: the domains of its virtual host.

    For ``reviews.default.svc.cluster.local`` seen from namespace ``default``:
    the FQDN, ``reviews.default.svc``, ``reviews.default``, ``reviews`` (same
    namespace only), each address, each with and without ``:port``.
    """
    names = [hostname]
    suffix = f".{domain}"
    if hostname.endswith(suffix):
        short = hostname.removesuffix(suffix)  # name.ns
        name, _, ns = short.partition(".")
        names += [f"{short}.svc", short]
        if ns == proxy_namespace:
            names.append(name)
    names += [a for a in addresses if a and a != "0.0.0.0"]
    out: list[str] = []
    for n in names:
        out += [n, f"{n}:{port}"]
    return list(dict.fromkeys(out))
