"""A ResourceSet as a static Envoy bootstrap, and the real Envoy's verdict on it.

`static_bootstrap` is pure: EDS clusters get their endpoints inline and RDS
references their route configuration inline, so one file holds everything a
proxy would receive over xDS. `envoy_validate` runs ``envoy --mode validate``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass

from plait.host.envoy_binary import find_envoy
from plait.xds.resources import ResourceSet
from plait.xds.translate.common import SDS_CLUSTER, XDS_CLUSTER

HCM = "envoy.filters.network.http_connection_manager"
_H2 = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


def _inline_routes(listener: dict, routes: dict[str, dict]) -> None:
    chains = list(listener.get("filter_chains", []))
    if "default_filter_chain" in listener:
        chains.append(listener["default_filter_chain"])
    for chain in chains:
        for f in chain.get("filters", []):
            config = f.get("typed_config", {})
            if f.get("name") == HCM and "rds" in config:
                name = config.pop("rds")["route_config_name"]
                config["route_config"] = routes.get(name, {"name": name})


def static_bootstrap(
    resources: ResourceSet,
    *,
    node_id: str = "static~127.0.0.1~static.default~default.svc.cluster.local",
    admin_port: int = 0,
    sds_socket: str = "/tmp/plait-sds.sock",
) -> dict:
    clusters = []
    for cluster in copy.deepcopy(list(resources.clusters.values())):
        if cluster.get("type") == "EDS":
            name = cluster["eds_cluster_config"].get("service_name", cluster["name"])
            del cluster["eds_cluster_config"]
            cluster["type"] = "STATIC"
            assignment = copy.deepcopy(resources.endpoints.get(name, {"cluster_name": name}))
            assignment["cluster_name"] = cluster["name"]
            cluster["load_assignment"] = assignment
        clusters.append(cluster)
    listeners = copy.deepcopy(list(resources.listeners.values()))
    for listener in listeners:
        _inline_routes(listener, resources.routes)
    text = json.dumps([clusters, listeners])
    if f'"{SDS_CLUSTER}"' in text:
        clusters.append(
            {
                "name": SDS_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": _H2,
                "load_assignment": {
                    "cluster_name": SDS_CLUSTER,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": sds_socket}}}}]}],
                },
            }
        )
    bootstrap: dict = {
        "node": {"id": node_id, "cluster": "plait-static"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    if '"ads": {}' in text:  # credentialName secrets come over ADS
        clusters.append(
            {
                "name": XDS_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": _H2,
                "load_assignment": {
                    "cluster_name": XDS_CLUSTER,
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {
                                    "endpoint": {
                                        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15010}}
                                    }
                                }
                            ]
                        }
                    ],
                },
            }
        )
        bootstrap["dynamic_resources"] = {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            }
        }
    return bootstrap


@dataclass(frozen=True)
class Verdict:
    ok: bool
    output: str


def envoy_validate(bootstrap: dict, envoy: str | None = None) -> Verdict:
    """Run the real Envoy in ``--mode validate`` on a bootstrap."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(bootstrap, f)
        path = f.name
    try:
        proc = subprocess.run(
            [envoy or find_envoy(), "--mode", "validate", "-c", path, "--disable-hot-restart", "--log-level", "error"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        return Verdict(proc.returncode == 0, (proc.stdout + proc.stderr).strip())
    finally:
        os.unlink(path)
