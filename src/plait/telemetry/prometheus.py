"""Istio's Prometheus exposition from Envoy's: ``envoy_istio_<metric>`` → ``istio_<metric>``, the
labels Envoy holds in short form spelled out as Istio's (`plait.telemetry.metrics.expand`: the other
side's group label and the proxy's own labels), and an empty label value of those metrics →
``unknown`` (``grpc_response_status`` stays empty, as Istio's).

In: the text of Envoy's admin ``/stats/prometheus`` and the proxy's own values (field → value, from
the environment its Envoy runs with). Out: the same text with Istio's names and labels. Two
implementations of one rule, kept equal by a test: `lua_filter`, run by Envoy itself on its
port-15090 listener (`prometheus_listener`, `prometheus_cluster`; a cost per scrape, never per
request), and `istio_exposition` for the agent's merged endpoint.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from plait.telemetry.metrics import GROUP_SEPARATOR, GROUPS, REMOVED_LABEL, expand, own_labels

ENVOY_PREFIX = "envoy_istio_"
ISTIO_PREFIX = "istio_"
KEEP_EMPTY = "grpc_response_status"
PROMETHEUS_PATH = "/stats/prometheus"
PROMETHEUS_STATS_CLUSTER = "prometheus_stats"  # Istio's name: the admin API as a cluster
BODY_LIMIT = 64 * 1024 * 1024  # the Lua filter buffers the whole answer

_LINES = re.compile(r"[^\n]*\n?")  # as the Lua filter reads them
_LABEL = re.compile(r'([A-Za-z0-9_]+)="((?:[^"\\]|\\.)*)",?')


def escape(value: str) -> str:
    """A label value as Prometheus' text format writes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series(line: str, own: Mapping[str, str]) -> str:
    brace = line.find("{")
    labels: list[tuple[str, str]] = []
    end = brace + 1
    while brace >= 0 and (match := _LABEL.match(line, end)):
        labels.append((match[1], match[2]))
        end = match.end()
    if brace < 0 or line[end : end + 1] != "}":
        return ISTIO_PREFIX + line[len(ENVOY_PREFIX) :]
    shown = ",".join(
        f'{name}="{value or ("" if name == KEEP_EMPTY else "unknown")}"' for name, value in expand(labels, own)
    )
    return f"{ISTIO_PREFIX}{line[len(ENVOY_PREFIX) : brace]}{{{shown}}}{line[end + 1 :]}"


def istio_exposition(text: str, own: Mapping[str, str]) -> str:
    """Envoy's exposition as Istio's for a proxy whose own values are `own` (field → value)."""
    escaped = {field: escape(value) for field, value in own.items()}
    return "".join(
        _series(line, escaped) if line.startswith(ENVOY_PREFIX) else line.replace(ENVOY_PREFIX, ISTIO_PREFIX)
        for line in _LINES.findall(text)
    )


_LUA = r"""
local SEP, REMOVED, KEEP_EMPTY = %(separator)s, %(removed)s, %(keep_empty)s
local GROUPS = %(groups)s
local OWN = %(own)s
local function fields(value)
  local out, start = {}, 1
  while true do
    local at = string.find(value, SEP, start, true)
    if at == nil then out[#out + 1] = string.sub(value, start); return out end
    out[#out + 1] = string.sub(value, start, at - 1)
    start = at + 1
  end
end
local function parse(line, at)
  local labels = {}
  while true do
    local _, name_end, name = string.find(line, '^([%%w_]+)="', at)
    if name == nil then return labels, at end
    local scan = name_end + 1
    while true do
      local quote = string.find(line, '["\\]', scan)
      if quote == nil then return labels, at end
      if string.sub(line, quote, quote) == '"' then
        labels[#labels + 1] = {name, string.sub(line, name_end + 1, quote - 1)}
        at = quote + 1
        if string.sub(line, at, at) == "," then at = at + 1 end
        break
      end
      scan = quote + 2
    end
  end
end
local function expand(labels)
  local held, removed, out = {}, {}, {}
  for _, label in ipairs(labels) do
    held[label[1]] = true
    if label[1] == REMOVED then
      for name in string.gmatch(label[2], "[^,]+") do removed[name] = true end
    end
  end
  local function spell(name, value)
    if not held[name] and not removed[name] then out[#out + 1] = {name, value} end
  end
  for _, label in ipairs(labels) do
    local group = GROUPS[label[1]]
    if group ~= nil then
      for _, own in ipairs(OWN[label[1]]) do spell(own[1], own[2]) end
      local values = fields(label[2])
      for n, name in ipairs(group) do spell(name, values[n] or "") end
    elseif label[1] ~= REMOVED then
      out[#out + 1] = label
    end
  end
  return out
end
local function series(line)
  local brace = string.find(line, "{", 1, true)
  if brace == nil then return "%(istio)s" .. string.sub(line, %(cut)d) end
  local labels, close = parse(line, brace + 1)
  if string.sub(line, close, close) ~= "}" then return "%(istio)s" .. string.sub(line, %(cut)d) end
  local shown = {}
  for _, label in ipairs(expand(labels)) do
    local value = label[2]
    if value == "" and label[1] ~= KEEP_EMPTY then value = "unknown" end
    shown[#shown + 1] = label[1] .. '="' .. value .. '"'
  end
  return "%(istio)s" .. string.sub(line, %(cut)d, brace) .. table.concat(shown, ",") .. string.sub(line, close)
end
function envoy_on_response(handle)
  local body = handle:body()
  if body == nil then return end
  local out = {}
  for line in string.gmatch(body:getBytes(0, body:length()), "[^\n]*\n?") do
    if string.sub(line, 1, %(prefix_length)d) == "%(envoy)s" then
      out[#out + 1] = series(line)
    else
      out[#out + 1] = (string.gsub(line, "%(envoy)s", "%(istio)s"))
    end
  end
  handle:body():setBytes(table.concat(out))
end
"""


def _lua_string(value: str) -> str:
    r"""A Lua string literal: ``\`` and ``"`` escaped, control characters as ``\ddd``."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + re.sub(r"[\x00-\x1f]", lambda m: f"\\{ord(m[0]):03d}", escaped) + '"'


def _lua_list(items: Iterable[str]) -> str:
    return "{" + ", ".join(items) + "}"


def _lua_record(fields: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{name} = {value}" for name, value in fields.items()) + "}"


def lua_filter(own: Mapping[str, str]) -> str:
    """The Lua source of `istio_exposition` for a proxy whose own values are `own`."""
    escaped = {field: escape(value) for field, value in own.items()}
    groups = {name: _lua_list(map(_lua_string, labels)) for name, labels in GROUPS.items()}
    owns = {
        group: _lua_list(_lua_list(map(_lua_string, pair)) for pair in own_labels(group, escaped).items())
        for group in GROUPS
    }
    return _LUA % {
        "separator": _lua_string(GROUP_SEPARATOR),
        "removed": _lua_string(REMOVED_LABEL),
        "keep_empty": _lua_string(KEEP_EMPTY),
        "groups": _lua_record(groups),
        "own": _lua_record(owns),
        "istio": ISTIO_PREFIX,
        "envoy": ENVOY_PREFIX,
        "prefix_length": len(ENVOY_PREFIX),
        "cut": len(ENVOY_PREFIX) + 1,
    }


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


def prometheus_listener(address: str, port: int, own: Mapping[str, str]) -> dict:
    """Istio's ``:15090/stats/prometheus``: GET only that path, answered from the admin API as
    Istio's (`lua_filter` of the proxy's own values)."""
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
                    "default_source_code": {"inline_string": lua_filter(own)},
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
