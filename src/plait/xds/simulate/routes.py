"""Envoy's route matching: the virtual host for a Host, then the first route whose match holds.

`find_virtual_host` searches domains (exact, longest ``*suffix``, longest ``prefix*``, ``*``);
`route_mismatch` says why a route's path, header, query-parameter or gRPC match fails for a
request (None when it holds), with Envoy's StringMatcher and HeaderMatcher semantics (RE2
full match for ``safe_regex``, missing headers, first query value). `describe_match` and
`virtual_service_of` put a route in words: its conditions and the VirtualService rule it
came from.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import re2

from plait.xds.simulate.request import Request, strip_port

_VS_PATH = re.compile(r"/namespaces/([^/]+)/virtual-service/([^/]+)$")
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@functools.lru_cache(maxsize=1024)
def regex(pattern: str):
    return re2.compile(pattern, _RE2_OPTIONS)


def full_match(pattern: str, value: str) -> bool:
    """RE2 full match, as Envoy's safe_regex."""
    return regex(pattern).fullmatch(value) is not None


def string_matches(matcher: dict, value: str) -> bool:
    """Envoy's StringMatcher: exact, prefix, suffix, contains, safe_regex; ignore_case for all but regex."""
    if "safe_regex" in matcher:
        return full_match(matcher["safe_regex"]["regex"], value)
    fold = matcher.get("ignore_case", False)
    subject = value.lower() if fold else value
    for kind, test in (
        ("exact", str.__eq__),
        ("prefix", str.startswith),
        ("suffix", str.endswith),
        ("contains", str.__contains__),
    ):
        if kind in matcher:
            wanted = matcher[kind].lower() if fold else matcher[kind]
            return test(subject, wanted)
    return False


def describe_string_match(matcher: dict) -> str:
    if "safe_regex" in matcher:
        return f"regex {matcher['safe_regex']['regex']!r}"
    for kind in ("exact", "prefix", "suffix", "contains"):
        if kind in matcher:
            return f"{kind} {matcher[kind]!r}" + (" (any case)" if matcher.get("ignore_case") else "")
    return "an unsupported string matcher"


def virtual_service_of(route: dict) -> tuple[str | None, str | None]:
    """(``namespace/name`` of the VirtualService, ``http[i].match[j]``) from Istio's route metadata."""
    meta = route.get("metadata", {}).get("filter_metadata", {})
    found = _VS_PATH.search(meta.get("istio", {}).get("config", ""))
    return (f"{found.group(1)}/{found.group(2)}" if found else None), meta.get("plait", {}).get("route")


class DomainIndex:
    """A route configuration's domains as Envoy searches them, built once: exact, longest
    ``*suffix``, longest ``prefix*``, then ``*`` (the first virtual host to claim a domain has it)."""

    def __init__(self, route_config: dict):
        self.ignore_port = bool(route_config.get("ignore_port_in_host_matching"))
        self.exact: dict[str, dict] = {}
        suffixes: dict[str, dict] = {}
        prefixes: dict[str, dict] = {}
        self.default: dict | None = None
        for vhost in route_config.get("virtual_hosts", []):
            for domain in (d.lower() for d in vhost.get("domains", [])):
                if domain == "*":
                    self.default = self.default or vhost
                elif domain.startswith("*"):
                    suffixes.setdefault(domain[1:], vhost)
                elif domain.endswith("*"):
                    prefixes.setdefault(domain[:-1], vhost)
                else:
                    self.exact.setdefault(domain, vhost)
        self.suffixes = sorted(suffixes.items(), key=lambda item: len(item[0]), reverse=True)
        self.prefixes = sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True)

    def find(self, authority: str) -> tuple[dict | None, str]:
        """The virtual host Envoy picks for a Host header, and why."""
        host = authority.lower()
        if self.ignore_port:
            host = strip_port(host)
        if host in self.exact:
            return self.exact[host], f'domain "{host}" (exact)'
        for key, vhost in self.suffixes:
            if len(key) < len(host) and host.endswith(key):
                return vhost, f'domain "*{key}" (longest suffix wildcard)'
        for key, vhost in self.prefixes:
            if len(key) < len(host) and host.startswith(key):
                return vhost, f'domain "{key}*" (longest prefix wildcard)'
        if self.default is not None:
            return self.default, f'domain "*" (no other domain matches {host!r})'
        return None, f"no virtual host has a domain for {host!r}"


def find_virtual_host(route_config: dict, authority: str) -> tuple[dict | None, str]:
    """Envoy's domain search (`DomainIndex`) in one route configuration."""
    return DomainIndex(route_config).find(authority)


_PATH_KINDS = ("prefix", "path", "safe_regex", "path_separated_prefix", "connect_matcher")
_MATCH_KEYS = frozenset(_PATH_KINDS) | {"case_sensitive", "headers", "query_parameters", "grpc", "dynamic_metadata"}
JWT_FILTER = "envoy.filters.http.jwt_authn"

MetadataCheck = Callable[[Mapping[str, Any]], bool]
"""Envoy's MetadataMatcher on the request's dynamic metadata (the simulated filters' output)."""


def _path_mismatch(match: dict, request: Request) -> str | None:
    path, fold = request.path, match.get("case_sensitive") is False
    if "connect_matcher" in match:
        return None if request.method == "CONNECT" else "not a CONNECT request"
    if request.method == "CONNECT":
        return "a CONNECT request has no path; only a connect_matcher route takes it"
    subject = path.lower() if fold else path
    if "prefix" in match:
        wanted = match["prefix"].lower() if fold else match["prefix"]
        return None if subject.startswith(wanted) else f"path does not start with {match['prefix']!r}"
    if "path" in match:
        wanted = match["path"].lower() if fold else match["path"]
        return None if subject == wanted else f"path is not {match['path']!r}"
    if "safe_regex" in match:
        regex = match["safe_regex"]["regex"]
        return None if full_match(regex, path) else f"path does not fully match regex {regex!r}"
    if "path_separated_prefix" in match:
        wanted = match["path_separated_prefix"].lower() if fold else match["path_separated_prefix"]
        ok = subject == wanted or subject.startswith(wanted + "/")
        return None if ok else f"path is not {match['path_separated_prefix']!r} or below it"
    return "the route has no path matcher plait can evaluate"


def _header_value_matches(hm: dict, value: str) -> bool:
    if "present_match" in hm:
        return bool(hm["present_match"])
    if "string_match" in hm:
        return string_matches(hm["string_match"], value)
    if "range_match" in hm:
        r = hm["range_match"]
        return value.lstrip("-").isdigit() and int(r.get("start", 0)) <= int(value) < int(r.get("end", 0))
    legacy = {
        "exact_match": "exact",
        "prefix_match": "prefix",
        "suffix_match": "suffix",
        "contains_match": "contains",
        "safe_regex_match": "safe_regex",
    }
    for key, kind in legacy.items():
        if key in hm:
            return string_matches({kind: hm[key]}, value)
    return False


def describe_header_match(hm: dict) -> str:
    name, invert = hm.get("name", ""), " not" if hm.get("invert_match") else ""
    if "present_match" in hm:
        present = bool(hm["present_match"]) != bool(hm.get("invert_match"))
        return f"header {name} {'present' if present else 'absent'}"
    if "string_match" in hm:
        return f"header {name}{invert} {describe_string_match(hm['string_match'])}"
    rest = ", ".join(f"{k} {v!r}" for k, v in hm.items() if k not in ("name", "invert_match"))
    return f"header {name}{invert} {rest}"


def header_mismatch(hm: dict, request: Request) -> str | None:
    """Envoy's HeaderMatcher: a missing header matches only an (inverted) present_match, unless
    treat_missing_header_as_empty makes it the empty string."""
    value = request.header(hm.get("name", "").lower())
    invert = bool(hm.get("invert_match"))
    if value is None and hm.get("treat_missing_header_as_empty"):
        value = ""
    if value is None:
        ok = "present_match" in hm and bool(hm["present_match"]) == invert
    else:
        ok = _header_value_matches(hm, value) != invert
    if ok:
        return None
    has = "the request has none" if value is None else f"the request has {value!r}"
    return f"wants {describe_header_match(hm)}; {has}"


def _query_params(query: str) -> dict[str, str]:
    """First value of each parameter, not percent-decoded (as Envoy matches them)."""
    params: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        name, _, value = part.partition("=")
        params.setdefault(name, value)
    return params


def _query_mismatch(qm: dict, params: dict[str, str]) -> str | None:
    name = qm.get("name", "")
    if name not in params:
        return f"wants query parameter {name}; the request has none"
    if "string_match" in qm and not string_matches(qm["string_match"], params[name]):
        return f"wants query parameter {name} {describe_string_match(qm['string_match'])}; it is {params[name]!r}"
    return None


def describe_metadata_match(mm: Mapping[str, Any]) -> str:
    """``JWT claim groups exact 'admin'`` for Istio's claim matchers, else the filter and path."""
    keys = [str(segment.get("key")) for segment in mm.get("path", [])]
    value = mm.get("value", {})
    plain = next((m for m in value.get("or_match", {}).get("value_matchers", []) if "list_match" not in m), value)
    how = describe_string_match(plain["string_match"]) if "string_match" in plain else "present"
    invert = " not" if mm.get("invert") else ""
    if mm.get("filter") == JWT_FILTER and keys[:1] == ["payload"]:
        return f"JWT claim {'.'.join(keys[1:])}{invert} {how} (or a list holding it)"
    return f"metadata {mm.get('filter')}/{'.'.join(keys)}{invert} {how}"


def _metadata_mismatch(mm: Mapping[str, Any], check: MetadataCheck | None) -> str | None:
    if check is None:
        return f"wants {describe_metadata_match(mm)}: dynamic metadata is not simulated here"
    if check(mm):
        return None
    if mm.get("filter") == JWT_FILTER:
        return f"wants {describe_metadata_match(mm)}; the verified JWT payload routing sees does not have it"
    return f"wants {describe_metadata_match(mm)}; the request's metadata does not have it"


def unmodelled_matchers(match: dict) -> list[str]:
    """The fields of a route match the simulator does not evaluate (it must not guess about them)."""
    return sorted(set(match) - _MATCH_KEYS)


def route_mismatch(match: dict, request: Request, metadata: MetadataCheck | None = None) -> str | None:
    """None when the route's match holds for the request, else the first reason it does not.
    `metadata` evaluates ``dynamic_metadata`` matchers (without it they are reported, not guessed)."""
    unknown = unmodelled_matchers(match)
    if unknown:
        return f"matches on {', '.join(unknown)}, which plait cannot evaluate"
    reasons = [_path_mismatch(match, request)]
    reasons += [header_mismatch(hm, request) for hm in match.get("headers", [])]
    params = _query_params(request.query)
    reasons += [_query_mismatch(qm, params) for qm in match.get("query_parameters", [])]
    if "grpc" in match and not (request.header("content-type") or "").startswith("application/grpc"):
        reasons.append("wants a gRPC request (content-type application/grpc)")
    reasons += [_metadata_mismatch(mm, metadata) for mm in match.get("dynamic_metadata", [])]
    return next((r for r in reasons if r), None)


def describe_match(match: dict) -> str:
    """The conditions of a route match, in words."""
    parts = []
    for kind in _PATH_KINDS:
        if kind in match:
            value = match[kind]["regex"] if kind == "safe_regex" else match[kind]
            parts.append("CONNECT" if kind == "connect_matcher" else f"{kind.replace('safe_', '')} {value!r}")
    if match.get("case_sensitive") is False:
        parts.append("any case")
    parts += [describe_header_match(hm) for hm in match.get("headers", [])]
    for qm in match.get("query_parameters", []):
        how = describe_string_match(qm["string_match"]) if "string_match" in qm else "present"
        parts.append(f"query {qm.get('name')} {how}")
    if "grpc" in match:
        parts.append("gRPC")
    parts += [describe_metadata_match(mm) for mm in match.get("dynamic_metadata", [])]
    return ", ".join(parts)
