"""Hostnames as Istio reads them: short names, FQDNs and wildcards (the api layer's share).

`plait.model.hosts` re-exports these and adds what translation needs on top.
"""

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
