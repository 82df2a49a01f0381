"""What a chosen route does to the request besides picking a cluster, summarised for the reader.

`route_policies` gathers the timeout (Envoy's 15s default when unset), retries, fault
injection (reported as percentages, never rolled; noted when the fault filter is missing),
mirrors, hash policy, CORS and the request/response header edits of route, virtual host and
route configuration (the most specific per-filter config wins). `rewrite` and
`rewritten_path` compute the path and Host sent upstream (``prefix_rewrite``,
``regex_rewrite``, host rewrites).
"""

from __future__ import annotations

import re

from plait.api.common import parse_duration
from plait.xds.simulate.outcome import Fault, Outcome, Policies, Retries
from plait.xds.simulate.request import Request
from plait.xds.simulate.routes import regex

FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"
ENVOY_DEFAULT_TIMEOUT = "15s"
_DENOMINATORS = {"HUNDRED": 100, "TEN_THOUSAND": 10_000, "MILLION": 1_000_000}


def percent(fraction: dict | None, default: float = 100.0) -> float:
    """A FractionalPercent as a percentage (``{numerator: 100000, denominator: MILLION}`` → 10.0)."""
    if fraction is None:
        return default
    return 100.0 * int(fraction.get("numerator", 0)) / _DENOMINATORS[fraction.get("denominator", "HUNDRED")]


def _python_substitution(substitution: str) -> str:
    """RE2's rewrite string (``\\1`` groups, ``\\\\`` a backslash) in Python's ``re`` syntax."""
    return re.sub(r"\\(\d|\\)", lambda m: "\\\\" if m.group(1) == "\\" else f"\\g<{m.group(1)}>", substitution)


_APPEND_ACTIONS = {
    "OVERWRITE_IF_EXISTS_OR_ADD": "set",
    "APPEND_IF_EXISTS_OR_ADD": "add",
    "ADD_IF_ABSENT": "add if absent",
    "OVERWRITE_IF_EXISTS": "overwrite if present",
}


def header_changes(obj: dict, side: str) -> list[str]:
    """``request``/``response`` header edits of a route, virtual host, route config or weighted cluster."""
    out = []
    for option in obj.get(f"{side}_headers_to_add", []):
        action = option.get("append_action") or (
            "APPEND_IF_EXISTS_OR_ADD" if option.get("append", True) else "OVERWRITE_IF_EXISTS_OR_ADD"
        )
        header = option.get("header", {})
        out.append(f"{_APPEND_ACTIONS.get(action, action)} {header.get('key')}: {header.get('value', '')}")
    if side == "request" and "host_rewrite_literal" in obj and "cluster" not in obj and "weighted_clusters" not in obj:
        out.append(f"Host rewritten to {obj['host_rewrite_literal']}")  # a weighted cluster's own rewrite
    return out + [f"remove {name}" for name in obj.get(f"{side}_headers_to_remove", [])]


def _fault(config: dict | None) -> Fault | None:
    if not config or not (config.get("delay") or config.get("abort")):
        return None
    fault = Fault()
    if delay := config.get("delay"):
        fault.delay = delay.get("fixed_delay") or "from the x-envoy-fault-delay-request header"
        fault.delay_percent = percent(delay.get("percentage"), default=0.0)
    if abort := config.get("abort"):
        fault.abort_http_status = abort.get("http_status")
        fault.abort_grpc_status = abort.get("grpc_status")
        fault.abort_percent = percent(abort.get("percentage"), default=0.0)
    return fault


def _retry_how(policy: dict) -> list[str]:
    """How Envoy picks where each retry goes, and when, where it differs from Istio's default (each
    retry on another host, at once)."""
    predicates = [p.get("name", "") for p in policy.get("retry_host_predicate", [])]
    how = [] if "envoy.retry_host_predicates.previous_hosts" in predicates else ["possibly on the same host"]
    if policy.get("retry_priority", {}).get("name") == "envoy.retry_priorities.previous_priorities":
        how.append("each in the next locality priority")
    elif "retry_priority" in policy:
        how.append(f"priorities chosen by {policy['retry_priority'].get('name')}")
    if base := policy.get("retry_back_off", {}).get("base_interval"):
        how.append(f"backoff from {base}")
    return how


def _retries(policy: dict | None) -> Retries | None:
    if policy is None:
        return None
    return Retries(
        attempts=int(policy.get("num_retries", 1)),
        retry_on=policy.get("retry_on", ""),
        per_try_timeout=policy.get("per_try_timeout"),
        retriable_status_codes=[int(c) for c in policy.get("retriable_status_codes", [])],
        how=_retry_how(policy),
    )


def _describe_hash(policy: dict) -> str:
    if "header" in policy:
        return f"header {policy['header'].get('header_name')}"
    if "cookie" in policy:
        return f"cookie {policy['cookie'].get('name')}"
    if "query_parameter" in policy:
        return f"query parameter {policy['query_parameter'].get('name')}"
    if policy.get("connection_properties", {}).get("source_ip"):
        return "source IP"
    return ", ".join(policy)


def _per_filter(name: str, *levels: dict) -> dict | None:
    """The most specific typed_per_filter_config for a filter: route, then virtual host, then route config."""
    return next(
        (lvl["typed_per_filter_config"][name] for lvl in levels if name in lvl.get("typed_per_filter_config", {})), None
    )


_GRPC_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def _grpc_timeout(action: dict, request: Request | None) -> str | None:
    """A gRPC client's ``grpc-timeout`` header as the route timeout, where the route lets it count
    (``max_grpc_timeout``, or ``max_stream_duration.grpc_timeout_header_max``), capped there unless 0."""
    cap = action.get("max_grpc_timeout", action.get("max_stream_duration", {}).get("grpc_timeout_header_max"))
    grpc = request is not None and (request.header("content-type") or "").startswith("application/grpc")
    header = request.header("grpc-timeout") if request and grpc else None
    if cap is None or not header or header[-1] not in _GRPC_UNITS or not header[:-1].isdigit():
        return None
    seconds = int(header[:-1]) * _GRPC_UNITS[header[-1]]
    limit = parse_duration(cap)
    if limit and seconds > limit:
        return f"{cap} (the grpc-timeout header {header}, capped by the route)"
    return f"{seconds:g}s (the grpc-timeout header {header})"


def route_policies(
    route: dict, vhost: dict, route_config: dict, action: dict, hcm: dict, request: Request | None = None
) -> tuple[Policies, list[str]]:
    notes = []
    policies = Policies(
        fault=_fault(_per_filter(FAULT, route, vhost, route_config)),
        cors=_per_filter(CORS, route, vhost, route_config) or action.get("cors") or vhost.get("cors"),
    )
    filters = {f.get("name") for f in hcm.get("http_filters", [])}
    if policies.fault and FAULT not in filters:
        notes.append(
            "the route configures a fault but the HTTP filters lack envoy.filters.http.fault: nothing is injected"
        )
    timeout = action.get("timeout")
    policies.timeout = (
        f"{ENVOY_DEFAULT_TIMEOUT} (Envoy's default)"
        if timeout is None
        else ("none (0s disables it)" if timeout in ("0s", "0") else timeout)
    )
    grpc = _grpc_timeout(action, request)
    if grpc:
        policies.timeout = grpc
    policies.retries = _retries(action.get("retry_policy") or vhost.get("retry_policy"))
    policies.mirrors = [
        (m.get("cluster", ""), percent(m.get("runtime_fraction", {}).get("default_value")))
        for m in action.get("request_mirror_policies", [])
    ]
    policies.hash_policy = [_describe_hash(h) for h in action.get("hash_policy", [])]
    for level in (route, vhost, route_config):
        policies.request_headers += header_changes(level, "request")
        policies.response_headers += header_changes(level, "response")
    return policies, notes


def rewritten_path(spec: dict, match: dict, request: Request) -> str:
    """The path after ``prefix_rewrite`` (the matched prefix, or the whole path) or ``regex_rewrite``."""
    path = request.path
    if "prefix_rewrite" in spec:
        prefix = match.get("prefix", match.get("path_separated_prefix"))
        cut = len(prefix) if prefix is not None else len(path)
        return spec["prefix_rewrite"] + path[cut:]
    if "regex_rewrite" in spec:
        rule = spec["regex_rewrite"]
        return regex(rule["pattern"]["regex"]).sub(_python_substitution(rule.get("substitution", "")), path)
    return path


def rewrite(action: dict, match: dict, request: Request, out: Outcome) -> None:
    path = rewritten_path(action, match, request)
    host = action.get("host_rewrite_literal", request.authority)
    if action.get("auto_host_rewrite"):
        host = "the upstream endpoint's host name"
    query = f"?{request.query}" if request.query else ""
    out.upstream_path, out.upstream_host = path + query, host
    if path != request.path:
        out.policies.rewrite.append(f"path {request.path} → {path}")
    if host != request.authority:
        out.policies.rewrite.append(f"host {request.authority} → {host}")
