"""Hostnames as Istio reads them: short names, FQDNs and wildcards."""

from __future__ import annotations

DOMAIN_SUFFIX = "svc.cluster.local"


def fqdn(host: str, namespace: str, domain: str = DOMAIN_SUFFIX) -> str:
    """Resolve a host written in `namespace` the way Istio does.

    ``reviews`` → ``reviews.<namespace>.svc.cluster.local``; a name with a dot,
    or a wildcard, is taken as written (so ``reviews.prod`` is *not* expanded,
    exactly as in Istio: write the FQDN).
    """
    if "." in host or host.startswith("*"):
        return host
    return f"{host}.{namespace}.{domain}"


def matches(pattern: str, host: str) -> bool:
    """Does a (possibly wildcard) host pattern cover `host`? ``*`` covers all."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]
        if host.startswith("*"):
            return host[1:].endswith(suffix)
        return host.endswith(suffix)
    return False


def overlaps(a: str, b: str) -> bool:
    return matches(a, b) or matches(b, a)


def client_names(hostname: str, port: int, proxy_namespace: str, addresses: tuple[str, ...] = (),
                 domain: str = DOMAIN_SUFFIX) -> list[str]:
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
