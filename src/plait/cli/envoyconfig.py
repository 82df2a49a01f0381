"""Envoy's admin config_dump → the short tables `plait proxy-config` prints (as istioctl's). Pure."""

from __future__ import annotations

from typing import Any

from plait.xds.translate.common import parse_cluster_name

DUMP_TYPES = {
    "bootstrap": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
    "cluster": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
    "listener": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
    "route": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
    "endpoint": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
}


def section(dump: dict, kind: str) -> dict:
    return next((c for c in dump.get("configs", []) if c.get("@type") == DUMP_TYPES[kind]), {})


def clusters(dump: dict) -> list[dict]:
    part = section(dump, "cluster")
    return [c["cluster"] for c in part.get("static_clusters", []) + part.get("dynamic_active_clusters", [])]


def listeners(dump: dict) -> list[dict]:
    part = section(dump, "listener")
    static = [item["listener"] for item in part.get("static_listeners", [])]
    dynamic = [item["active_state"]["listener"] for item in part.get("dynamic_listeners", []) if "active_state" in item]
    return static + dynamic


def routes(dump: dict) -> list[dict]:
    part = section(dump, "route")
    return [r["route_config"] for r in part.get("static_route_configs", []) + part.get("dynamic_route_configs", [])]


def endpoints(dump: dict) -> list[dict]:
    part = section(dump, "endpoint")
    return [e["endpoint_config"] for e in part.get("static_endpoint_configs", []) + part.get("dynamic_endpoint_configs", [])]


def cluster_rows(dump: dict) -> list[tuple[str, ...]]:
    """SERVICE FQDN, PORT, SUBSET, DIRECTION, TYPE — as istioctl proxy-config cluster."""
    rows = []
    for c in clusters(dump):
        parsed = parse_cluster_name(c["name"])
        kind = c.get("type") or (c.get("cluster_type", {}).get("name", "").rsplit(".", 1)[-1].upper() or "EDS")
        if parsed:
            direction, port, subset, host = parsed
            rows.append((host or "", str(port), subset or "-", direction, kind))
        else:
            rows.append((c["name"], "-", "-", "-", kind))
    return sorted(rows)


def _filters(chain: dict) -> str:
    for f in chain.get("filters", []):
        config = f.get("typed_config", {})
        if "rds" in config:
            return f"Route: {config['rds']['route_config_name']}"
        if "route_config" in config:
            return f"Inline Route: {config['route_config'].get('name', '')}"
        if "cluster" in config:
            return f"Cluster: {config['cluster']}"
        if "weighted_clusters" in config:
            return "Clusters: " + ", ".join(w["name"] for w in config["weighted_clusters"]["clusters"])
    return "-"


def _match(chain: dict) -> str:
    m = chain.get("filter_chain_match", {})
    parts = []
    if "destination_port" in m:
        parts.append(f"port {m['destination_port']}")
    if "server_names" in m:
        parts.append("SNI: " + ",".join(m["server_names"]))
    if "application_protocols" in m:
        parts.append("App: " + ",".join(m["application_protocols"]))
    if "prefix_ranges" in m:
        parts.append("Addr: " + ",".join(f"{r['address_prefix']}/{r.get('prefix_len', 32)}" for r in m["prefix_ranges"]))
    if "transport_protocol" in m:
        parts.append(f"Trans: {m['transport_protocol']}")
    return "; ".join(parts) or "ALL"


def listener_rows(dump: dict) -> list[tuple[str, ...]]:
    """NAME, ADDRESS, PORT, MATCH, DESTINATION — one row per filter chain."""
    rows = []
    for listener in listeners(dump):
        addr = listener.get("address", {}).get("socket_address", {})
        chains = listener.get("filter_chains", []) + (
            [listener["default_filter_chain"]] if "default_filter_chain" in listener else [])
        for chain in chains:
            rows.append((listener["name"], addr.get("address", ""), str(addr.get("port_value", "")),
                         _match(chain), _filters(chain)))
    return rows


def _route_match(route: dict) -> str:
    m = route.get("match", {})
    for key in ("path", "prefix", "safe_regex"):
        if key in m:
            value = m[key]["regex"] if key == "safe_regex" else m[key]
            return f"{value}" + ("*" if key == "prefix" else "") + (" +headers" if m.get("headers") else "")
    return "*"


def _virtual_service(route: dict) -> str:
    config = route.get("metadata", {}).get("filter_metadata", {}).get("istio", {}).get("config", "")
    if not config:
        return "-"
    parts = config.strip("/").split("/")  # apis/GROUP/VERSION/namespaces/NS/KIND/NAME
    return f"{parts[-1]}.{parts[-3]}" if len(parts) >= 3 else config


def route_rows(dump: dict) -> list[tuple[str, ...]]:
    """NAME, VHOST NAME, DOMAINS, MATCH, VIRTUAL SERVICE — as istioctl proxy-config route."""
    rows = []
    for config in routes(dump):
        for vhost in config.get("virtual_hosts", []):
            domains = vhost.get("domains", [])
            shown = domains[0] + (f" +{len(domains) - 1} more" if len(domains) > 1 else "")
            for route in vhost.get("routes", []):
                rows.append((config.get("name", ""), vhost.get("name", ""), shown, _route_match(route),
                             _virtual_service(route)))
    return rows


def endpoint_rows(clusters_json: dict) -> list[tuple[str, ...]]:
    """ENDPOINT, STATUS, OUTLIER CHECK, CLUSTER — from the admin API's /clusters?format=json."""
    rows = []
    for status in clusters_json.get("cluster_statuses", []):
        for host in status.get("host_statuses", []):
            sock = host.get("address", {}).get("socket_address", {})
            health = host.get("health_status", {})
            state = health.get("eds_health_status", "HEALTHY")
            outlier = "FAILED" if health.get("failed_outlier_check") else "OK"
            rows.append((f"{sock.get('address')}:{sock.get('port_value')}", state, outlier, status["name"]))
    return sorted(rows, key=lambda r: (r[3], r[0]))


def resource_names(dump: dict) -> dict[str, set[str]]:
    """Names of what Envoy got over xDS (not its bootstrap or inline config), by short type."""
    cds, lds, rds = section(dump, "cluster"), section(dump, "listener"), section(dump, "route")
    return {"cds": {c["cluster"]["name"] for c in cds.get("dynamic_active_clusters", [])},
            "lds": {item["name"] for item in lds.get("dynamic_listeners", []) if "active_state" in item},
            "rds": {r["route_config"].get("name", "") for r in rds.get("dynamic_route_configs", [])},
            "eds": {e.get("cluster_name", "") for e in endpoints(dump)}}


def bootstrap(dump: dict) -> Any:
    return section(dump, "bootstrap").get("bootstrap", {})
