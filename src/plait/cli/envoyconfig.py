"""Envoy's admin config_dump → the short tables `plait proxy-config` prints (as istioctl's), and its
SDS secrets decoded (identity, serial, validity, the root a chain leads to). Pure but for reading a
certificate file a secret may name."""

from __future__ import annotations

import base64
import itertools
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

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
    return [
        e["endpoint_config"] for e in part.get("static_endpoint_configs", []) + part.get("dynamic_endpoint_configs", [])
    ]


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
        parts.append(
            "Addr: " + ",".join(f"{r['address_prefix']}/{r.get('prefix_len', 32)}" for r in m["prefix_ranges"])
        )
    if "transport_protocol" in m:
        parts.append(f"Trans: {m['transport_protocol']}")
    return "; ".join(parts) or "ALL"


def listener_rows(dump: dict) -> list[tuple[str, ...]]:
    """NAME, ADDRESS, PORT, MATCH, DESTINATION — one row per filter chain."""
    rows = []
    for listener in listeners(dump):
        addr = listener.get("address", {}).get("socket_address", {})
        chains = listener.get("filter_chains", []) + (
            [listener["default_filter_chain"]] if "default_filter_chain" in listener else []
        )
        for chain in chains:
            rows.append(
                (
                    listener["name"],
                    addr.get("address", ""),
                    str(addr.get("port_value", "")),
                    _match(chain),
                    _filters(chain),
                )
            )
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
                rows.append(
                    (config.get("name", ""), vhost.get("name", ""), shown, _route_match(route), _virtual_service(route))
                )
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
    return {
        "cds": {c["cluster"]["name"] for c in cds.get("dynamic_active_clusters", [])},
        "lds": {item["name"] for item in lds.get("dynamic_listeners", []) if "active_state" in item},
        "rds": {r["route_config"].get("name", "") for r in rds.get("dynamic_route_configs", [])},
        "eds": {e.get("cluster_name", "") for e in endpoints(dump)},
    }


def bootstrap(dump: dict) -> Any:
    return section(dump, "bootstrap").get("bootstrap", {})


# ------------------------------------------------------------------ secrets (SDS)

SECRETS_DUMP = "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"
NOT_RECEIVED = "not received yet: is the SDS server (the proxy's agent) serving?"
FINGERPRINT_PREFIX = 12  # hex digits of a SHA-256 fingerprint shown in tables
SECRET_LISTS = (
    ("static_secrets", "STATIC"),
    ("dynamic_active_secrets", "ACTIVE"),
    ("dynamic_warming_secrets", "WARMING"),
)


def secret_entries(dump: dict) -> list[dict]:
    """Every secret Envoy holds (``default``, ``ROOTCA``, gateway credentials), with its status."""
    part = next((c for c in dump.get("configs", []) if c.get("@type") == SECRETS_DUMP), {})
    return [{**entry, "status": status} for key, status in SECRET_LISTS for entry in part.get(key, [])]


def _data_source(source: dict) -> tuple[bytes | None, str | None]:
    """The PEM in an Envoy DataSource, or why it is not available here."""
    if "inline_string" in source:
        return source["inline_string"].encode(), None
    if "inline_bytes" in source:
        return base64.b64decode(source["inline_bytes"]), None
    if "filename" in source:
        try:
            return Path(source["filename"]).read_bytes(), None
        except OSError as exc:
            return None, f"certificate file {source['filename']} is not readable here ({exc.strerror})"
    return None, "no certificate in this secret"


def _secret_pem(secret: dict) -> tuple[str, bytes | None, str | None]:
    """(type as istioctl names it, PEM, problem) of one Secret resource."""
    if "tls_certificate" in secret:
        return ("Cert Chain", *_data_source(secret["tls_certificate"].get("certificate_chain", {})))
    if "validation_context" in secret:
        return ("CA", *_data_source(secret["validation_context"].get("trusted_ca", {})))
    other = next((k for k in secret if k not in ("@type", "name")), None)
    if other is None:
        return "-", None, NOT_RECEIVED
    return other.replace("_", " ").title(), None, None


def _load(pem: bytes | None) -> tuple[list[x509.Certificate], str | None]:
    if not pem:
        return [], None
    try:
        return x509.load_pem_x509_certificates(pem), None
    except ValueError as exc:
        return [], f"not a PEM certificate chain ({exc})"


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `cert` names `issuer` as its issuer and `issuer`'s key verifies its signature."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _sans(cert: x509.Certificate, kind: type) -> list[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in names.get_values_for_type(kind)]


def _time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _validity(cert: x509.Certificate, now: datetime) -> str:
    if now < cert.not_valid_before_utc:
        return "not yet valid"
    return "expired" if now > cert.not_valid_after_utc else "valid"


def certificate_info(cert: x509.Certificate, now: datetime) -> dict:
    """What a person checks in one certificate: who it names, its serial (hex) and validity."""
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "uri_sans": _sans(cert, x509.UniformResourceIdentifier),
        "dns_sans": _sans(cert, x509.DNSName),
        "not_before": _time(cert.not_valid_before_utc),
        "not_after": _time(cert.not_valid_after_utc),
        "validity": _validity(cert, now),
        "sha256": _fingerprint(cert),
    }


def _root(cert: x509.Certificate, chains_to: str | None, **problem: str) -> dict:
    return {"chains_to": chains_to, "subject": cert.subject.rfc4514_string(), "sha256": _fingerprint(cert), **problem}


def chain_root(chain: list[x509.Certificate], trust: dict[str, list[x509.Certificate]]) -> dict:
    """Where a chain (leaf first) leads: every link is checked, then the CA secret whose certificate
    is the chain's last one or signed it (``chains_to``); else the problem, in words."""
    for i, (cert, issuer) in enumerate(itertools.pairwise(chain), start=1):
        if not _signed_by(cert, issuer):
            return {"chains_to": None, "problem": f"chain broken: certificate {i} not signed by certificate {i + 1}"}
    last = chain[-1]
    for secret_name, roots in trust.items():
        for root in roots:
            if root == last or _signed_by(last, root):
                return _root(root, secret_name)
    if _signed_by(last, last):
        return _root(last, None, problem="self-signed, in no CA secret")
    return {"chains_to": None, "subject": last.issuer.rfc4514_string(), "problem": "issuer in no CA secret"}


def _secret_info(entry: dict, trust: dict[str, list[x509.Certificate]], now: datetime) -> dict:
    kind, pem, problem = _secret_pem(entry.get("secret", {}))
    certs, bad_pem = _load(pem)
    infos = [certificate_info(c, now) for c in certs]
    info: dict[str, Any] = {"name": entry["name"], "type": kind, "status": entry["status"]}
    info.update({k: entry[k] for k in ("version_info", "last_updated") if k in entry})
    if infos:
        leaf = infos[0]
        info["identity"] = list(leaf["uri_sans"] or leaf["dns_sans"] or [leaf["subject"]])
        info["valid"] = all(c["validity"] == "valid" for c in infos)
        info["root"] = chain_root(certs, trust) if kind == "Cert Chain" else None
    info["certificates"] = infos
    if problem or bad_pem:
        info["problem"] = problem or bad_pem
    return info


def secrets(dump: dict, now: datetime) -> list[dict]:
    """Each secret decoded: identity (URI SANs, i.e. the SPIFFE id, else DNS SANs), serial, validity
    at `now`, and for certificate chains the CA secret (``ROOTCA``) they chain to. ``default`` and
    ``ROOTCA`` first, then by name."""
    entries = secret_entries(dump)
    trust: dict[str, list[x509.Certificate]] = {}
    for entry in entries:
        kind, pem, _ = _secret_pem(entry.get("secret", {}))
        if kind == "CA":
            trust[entry["name"]] = _load(pem)[0]
    infos = [_secret_info(entry, trust, now) for entry in entries]
    return sorted(infos, key=lambda info: (info["name"] != "default", info["name"] != "ROOTCA", info["name"]))


def _common_name(subject: str) -> str:
    """``CN=plait root,O=cluster.local`` → ``plait root``; the whole name when it has no CN."""
    try:
        names = x509.Name.from_rfc4514_string(subject).get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError:
        return subject
    return str(names[0].value) if names else subject


def _short_root(root: dict | None, cert: dict) -> str:
    if root is None:  # a CA certificate: it is a root itself
        return f"{_common_name(cert['subject'])} sha256:{cert['sha256'][:FINGERPRINT_PREFIX]}"
    if root.get("chains_to"):
        return (
            f"chains to {root['chains_to']} ({_common_name(root['subject'])} "
            f"sha256:{root['sha256'][:FINGERPRINT_PREFIX]})"
        )
    return f"NOT VERIFIED: {root['problem']}" + (f" ({_common_name(root['subject'])})" if root.get("subject") else "")


def secret_rows(infos: list[dict]) -> list[tuple[str, ...]]:
    """RESOURCE NAME, TYPE, STATUS, VALID CERT, SERIAL NUMBER, NOT AFTER, NOT BEFORE (as istioctl),
    then IDENTITY and ROOT: one row per certificate chain (its leaf), one per CA certificate."""
    rows = []
    for info in infos:
        certs = info["certificates"] if info["type"] == "CA" else info["certificates"][:1]
        if not certs:
            rows.append((info["name"], info["type"], info["status"], "-", "-", "-", "-", "-", info.get("problem", "-")))
        for cert in certs:
            valid = "true" if info["valid"] else "false"
            identity = ",".join(cert["uri_sans"] or cert["dns_sans"]) or cert["subject"]
            rows.append(
                (
                    info["name"],
                    info["type"],
                    info["status"],
                    valid,
                    cert["serial"],
                    cert["not_after"],
                    cert["not_before"],
                    identity,
                    _short_root(info["root"], cert),
                )
            )
    return rows
