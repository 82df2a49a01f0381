"""Hostnames and addresses as Istio reads them: short names, FQDNs, wildcards, CIDRs (the api layer's share).

`plait.model.hosts` re-exports these and adds what translation needs on top.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator

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


_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_WILDCARD_LABEL = re.compile(r"^\*(-?[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)?$")  # *, *foo, *-foo (Istio's rule)


def check_host(host: str) -> str:
    """A DNS name whose first label may be a wildcard (``*``, ``*.example.com``, ``*-foo.example.com``).

    As in Istio, a trailing dot is allowed (``istio.io.``)."""
    first, _, rest = host.partition(".")
    labels = rest.removesuffix(".").split(".") if rest else []
    if (
        not host
        or len(host) > 255
        or not (_WILDCARD_LABEL.match(first) or _HOST_LABEL.match(first))
        or not all(_HOST_LABEL.match(label) for label in labels)
    ):
        raise ValueError(
            f"{host!r} is not a valid host; expected a DNS name such as 'reviews', "
            "'reviews.default.svc.cluster.local' or a wildcard such as '*.example.com'"
        )
    return host


Host = Annotated[str, AfterValidator(check_host)]


def check_cidr(text: str) -> str:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or CIDR block such as '10.0.0.0/16'") from None
    return text


Cidr = Annotated[str, AfterValidator(check_cidr)]
