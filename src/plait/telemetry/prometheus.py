"""Istio's Prometheus exposition from Envoy's: ``envoy_istio_<metric>`` → ``istio_<metric>``, and an
empty label value of those metrics → ``unknown`` (``grpc_response_status`` stays empty, as Istio's).

In: the text of Envoy's admin ``/stats/prometheus``. Out: the same text with Istio's names. Two
implementations of one rule, kept equal by a test: `LUA_FILTER`, run by Envoy itself on its
port-15090 listener (`prometheus_listener`, `prometheus_cluster`; a cost per scrape, never per
request), and `istio_exposition` for the agent's merged endpoint.
"""

from __future__ import annotations

import re

ENVOY_PREFIX = "envoy_istio_"
ISTIO_PREFIX = "istio_"
KEEP_EMPTY = "grpc_response_status"
PROMETHEUS_PATH = "/stats/prometheus"
PROMETHEUS_STATS_CLUSTER = "prometheus_stats"  # Istio's name: the admin API as a cluster
BODY_LIMIT = 64 * 1024 * 1024  # the Lua filter buffers the whole answer

LUA_FILTER = f"""
local function unknown(key)
  if key == "{KEEP_EMPTY}" then return nil end
  return key .. '="unknown"'
end
local function istio(rest)
  return "{ISTIO_PREFIX}" .. (rest:gsub('([%w_]+)=""', unknown))
end
function envoy_on_response(handle)
  local body = handle:body()
  if body == nil then return end
  local text = body:getBytes(0, body:length())
  handle:body():setBytes((text:gsub("{ENVOY_PREFIX}([^\\n]*)", istio)))
end
"""

_LINE = re.compile(rf"{ENVOY_PREFIX}([^\n]*)")
_EMPTY = re.compile(r'([A-Za-z0-9_]+)=""')


def _unknown(match: re.Match) -> str:
    return match.group(0) if match.group(1) == KEEP_EMPTY else f'{match.group(1)}="unknown"'


def istio_exposition(text: str) -> str:
    return _LINE.sub(lambda m: ISTIO_PREFIX + _EMPTY.sub(_unknown, m.group(1)), text)


def prometheus_cluster(admin_port: int) -> dict:
    return {
        "name": PROMETHEUS_STATS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "0.250s",
        "per_connection_buffer_limit_bytes": BODY_LIMIT,
        "load_assignment": {
            "cluster_name": PROMETHEUS_STATS_CLUSTER,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
                            }
                        }
                    ]
                }
            ],
        },
    }


def prometheus_listener(address: str, port: int) -> dict:
    """Istio's ``:15090/stats/prometheus``: GET only that path, answered from the admin API and renamed."""
    route = {"match": {"path": PROMETHEUS_PATH}, "route": {"cluster": PROMETHEUS_STATS_CLUSTER}}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "stats",
        "route_config": {"virtual_hosts": [{"name": "backend", "domains": ["*"], "routes": [route]}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.lua",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                    "default_source_code": {"inline_string": LUA_FILTER},
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "name": f"{address}_{port}",
        "address": {"socket_address": {"address": address, "port_value": port}},
        "per_connection_buffer_limit_bytes": BODY_LIMIT,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
