"""ResourceSet: the named Envoy resources (as Envoy's JSON form) that one proxy receives."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from plait.xds.translate.common import (
    CLUSTER_TYPE,
    ENDPOINT_TYPE,
    LISTENER_TYPE,
    ROUTE_TYPE,
    SECRET_TYPE,
    VIRTUAL_HOST_TYPE,
)
from plait.xds.translate.secrets import redacted

# Short names as used by istioctl and the CLI, in the order Envoy should receive them. Secrets (sds) are
# the credentials a credentialName names, served over ADS to the proxies that refer to them. Virtual
# hosts (vhds) are never generated apart: a scoped sidecar is sent its route configurations' virtual
# hosts one by one (`plait.xds.scope`).
TYPE_URLS = {
    "cds": CLUSTER_TYPE,
    "eds": ENDPOINT_TYPE,
    "lds": LISTENER_TYPE,
    "rds": ROUTE_TYPE,
    "vhds": VIRTUAL_HOST_TYPE,
    "sds": SECRET_TYPE,
}
CONFIG_TYPES = ("cds", "eds", "lds", "rds")  # what `to_dict` shows unless asked for secrets


@dataclass
class ResourceSet:
    clusters: dict[str, dict] = field(default_factory=dict)
    endpoints: dict[str, dict] = field(default_factory=dict)
    listeners: dict[str, dict] = field(default_factory=dict)
    routes: dict[str, dict] = field(default_factory=dict)
    secrets: dict[str, dict] = field(default_factory=dict)

    def add_clusters(self, items: Iterable[dict]) -> None:
        self.clusters.update((c["name"], c) for c in items)

    def add_endpoints(self, items: Iterable[dict]) -> None:
        self.endpoints.update((e["cluster_name"], e) for e in items)

    def add_listeners(self, items: Iterable[dict]) -> None:
        self.listeners.update((item["name"], item) for item in items)

    def add_routes(self, items: Iterable[dict]) -> None:
        self.routes.update((r["name"], r) for r in items)

    def add_secrets(self, items: Iterable[dict]) -> None:
        self.secrets.update((s["name"], s) for s in items)

    def of_type(self, short: str) -> dict[str, dict]:
        return {
            "cds": self.clusters,
            "eds": self.endpoints,
            "lds": self.listeners,
            "rds": self.routes,
            "vhds": {},
            "sds": self.secrets,
        }[short]

    def to_dict(self, types: Iterable[str] = CONFIG_TYPES) -> dict[str, list[dict]]:
        """Canonical form for golden files and `plait translate`: each type sorted by name; private
        keys of secrets are redacted (this form is for people, never for Envoy)."""
        shown = {short: [items[name] for name in sorted(items)] for short in types for items in [self.of_type(short)]}
        if "sds" in shown:
            shown["sds"] = [redacted(s) for s in shown["sds"]]
        return shown
