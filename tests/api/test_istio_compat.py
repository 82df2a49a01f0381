"""Istio API plait lacks is named "not supported by plait yet"; spelling and YAML as Kubernetes reads them."""

from __future__ import annotations

import pytest

from plait.api import load_text, security, unsupported
from plait.api.kubeyaml import load_documents

VS = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
"""


def only_error(text: str):
    result = load_text(text, "compat.yaml")
    assert result.resources == [] and len(result.errors) == 1, [str(p) for p in result.problems]
    return result.errors[0]


@pytest.mark.parametrize(
    "line, path, field",
    [
        (
            "    fault: {delay: {fixedDelay: 1s, exponentialDelay: 1s}}",
            "spec.http[0].fault.delay.exponentialDelay",
            "exponentialDelay",
        ),
        ("    redirect_unused: 1", "spec.http[0].redirect_unused", None),
    ],
)
def test_real_istio_fields_are_not_supported_yet_and_typos_are_unknown(line: str, path: str, field: str | None) -> None:
    problem = only_error(VS + line + "\n")
    assert problem.path == path
    if field:
        assert problem.message.startswith(f"{field} is an Istio field that is not supported by plait yet")
        assert "spelling" not in problem.message
    else:
        assert "not supported" not in problem.message and "camelCase" in problem.message


def test_a_field_listed_deep_in_a_destination_rule_is_matched_at_every_level() -> None:
    text = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: r
  subsets:
  - name: v1
    trafficPolicy:
      portLevelSettings:
      - port: {number: 80}
        loadBalancer: {zoneAwareLbSetting: {}}
"""
    problem = only_error(text)
    assert problem.path == "spec.subsets[0].trafficPolicy.portLevelSettings[0].loadBalancer.zoneAwareLbSetting"
    assert "not supported by plait yet" in problem.message


def test_a_model_field_wins_over_the_not_supported_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(unsupported.NOT_SUPPORTED_FIELDS, "VirtualService", ("http.timeout", "hosts"))
    result = load_text(VS + "    timeout: 5s\n")
    assert not result.errors
    assert result.resources[0].spec.http[0].timeout == "5s"


def test_values_istio_has_are_not_supported_yet_and_other_values_are_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(unsupported.NOT_SUPPORTED_VALUES, ("ServiceEntry", "resolution"), frozenset({"LATER"}))
    se = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: s}\n"
        "spec: {hosts: [a.example.com], resolution: LATER, ports: [{number: 80, name: h, protocol: HTTP}]}\n"
    )
    problem = only_error(se)
    assert problem.path == "spec.resolution"
    assert problem.message == "'LATER' is valid in Istio but not supported by plait yet"
    literal = only_error(se.replace("LATER", "DNSS"))
    assert "not supported" not in literal.message and "'DNSS'" in literal.message


def test_condition_keys_istio_has_are_not_supported_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(security, "NOT_SUPPORTED_CONDITION_KEYS", ("source.later",))
    ap = (
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a}\n"
        "spec: {rules: [{when: [{key: source.later, values: [td]}]}]}\n"
    )
    problem = only_error(ap)
    assert problem.path == "spec.rules[0].when[0].key"
    assert problem.message == "condition key 'source.later' is valid in Istio but not supported by plait yet"
    assert "unknown condition key" in only_error(ap.replace("source.later", "source.latter")).message


@pytest.mark.parametrize(
    "api_version, kind",
    [
        ("extensions.istio.io/v1alpha1", "WasmPlugin"),
        ("networking.istio.io/v1", "WorkloadGroup"),
        ("gateway.networking.k8s.io/v1alpha2", "UDPRoute"),
        ("gateway.networking.k8s.io/v1alpha2", "HTTPRoute"),
    ],
)
def test_istio_and_gateway_api_kinds_without_a_model_are_not_supported_yet(api_version: str, kind: str) -> None:
    problem = only_error(f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: a}}\nspec: {{}}\n")
    assert problem.message == f"kind {kind} ({api_version}) is not supported by plait yet"
    assert problem.path == "kind"


def test_snake_case_field_names_are_refused_naming_the_camel_case_spelling() -> None:
    problem = only_error(VS + "    retries: {attempts: 2, per_try_timeout: 1s}\n")
    assert problem.path == "spec.http[0].retries.per_try_timeout"
    assert "write 'perTryTimeout'" in problem.message


def test_legacy_spellings_in_istios_crd_are_accepted() -> None:
    result = load_text(
        VS + "    mirror: {host: ratings}\n    mirror_percent: 5\n---\n"
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: j}\n"
        "spec: {jwtRules: [{issuer: i, jwks_uri: 'https://i/keys'}]}\n"
    )
    assert not result.errors, [str(p) for p in result.errors]
    vs, ra = result.resources
    assert vs.spec.http[0].mirror_percent == 5
    assert ra.spec.jwt_rules[0].jwks_uri == "https://i/keys"


def test_upper_case_header_names_in_matches_are_lower_cased_jwt_claims_kept() -> None:
    text = VS.replace("  hosts: [reviews]", "  hosts: [reviews]\n  gateways: [bookinfo-gateway]").replace(
        "  - route:",
        "  - match: [{headers: {X-User: {exact: Jason}, '@request.auth.claims.Group': "
        "{exact: a}}, withoutHeaders: {X-Debug: {}}}]\n    route:",
    )
    (vs,) = load_text(text).raise_for_errors()
    match = vs.spec.http[0].match[0]
    assert list(match.headers) == ["x-user", "@request.auth.claims.Group"]
    assert match.headers["x-user"].exact == "Jason"
    assert list(match.without_headers) == ["x-debug"]


def test_yaml_is_read_as_kubernetes_reads_it() -> None:
    (doc,) = load_documents(
        "addresses: [2001:db8::1, 10.0.0.1, 'fe80::']\ntime: 10:30\nday: 2026-12-06\nbig: 1e3\nflag: yes\nport: 0x1F\n"
    )
    assert doc == {
        "addresses": ["2001:db8::1", "10.0.0.1", "fe80::"],
        "time": "10:30",
        "day": "2026-12-06",
        "big": 1000.0,
        "flag": True,
        "port": 31,
    }


def test_a_service_entry_with_unquoted_ipv6_addresses_loads() -> None:
    text = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: v6}\nspec:\n"
        "  hosts: [db.example.com]\n  addresses: [2001:db8::1, 2001:db8::/64]\n"
        "  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: STATIC\n"
        "  endpoints: [{address: 2001:db8::10}]\n"
    )
    (se,) = load_text(text).raise_for_errors()
    assert se.spec.addresses == ["2001:db8::1", "2001:db8::/64"]
    assert se.spec.endpoints[0].address == "2001:db8::10"


def test_a_key_written_twice_is_refused_as_kubectl_refuses_it() -> None:
    problem = only_error(VS.replace("  hosts: [reviews]\n", "  hosts: [reviews]\n  hosts: [ratings]\n"))
    assert problem.message == "not valid YAML at line 6, column 3: found duplicate key 'hosts'"
    (doc,) = load_documents("base: &b {a: 1, b: 2}\nx:\n  <<: *b\n  a: 3\n")
    assert doc["x"] == {"a": 3, "b": 2}  # a merged key may still be overridden


def test_without_headers_regex_star_means_absent_as_in_istio() -> None:
    text = VS.replace("  hosts: [reviews]", "  hosts: [reviews]\n  gateways: [bookinfo-gateway]").replace(
        "  - route:", "  - match: [{withoutHeaders: {x-debug: {regex: '*'}}}]\n    route:"
    )
    (vs,) = load_text(text).raise_for_errors()
    assert vs.spec.http[0].match[0].without_headers["x-debug"].kind == "present"


def test_a_kind_with_a_model_wins_over_the_not_supported_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(unsupported.NOT_SUPPORTED_KINDS, "VirtualService", "networking.istio.io")
    assert load_text(VS).resources
    assert "is not an apiVersion of VirtualService" in only_error(VS.replace("/v1\n", "/v9\n", 1)).message


def _model_fields_by_path(model: type, prefix: str = "", seen: frozenset = frozenset()) -> set[str]:
    """Every dotted camelCase field path inside a spec model (list items and dict values followed)."""
    import types
    import typing

    from pydantic import BaseModel

    def models_in(annotation) -> list[type]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models_in(arg)]

    if model in seen:
        return set()
    paths = set()
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        paths.add(path)
        for sub in models_in(
            info.annotation if not isinstance(info.annotation, types.GenericAlias) else info.annotation
        ):
            paths |= _model_fields_by_path(sub, path + ".", seen | {model})
    return paths


def test_no_field_listed_as_not_supported_is_one_a_model_implements() -> None:
    """The list names only what plait lacks: an entry a model has grown must leave the list."""
    from plait.api.resources import SPEC_MODELS

    implemented = []
    for kind, entries in unsupported.NOT_SUPPORTED_FIELDS.items():
        paths = _model_fields_by_path(SPEC_MODELS[kind][1])
        implemented += [
            f"{kind}: {entry}" for entry in entries if any(p == entry or p.endswith("." + entry) for p in paths)
        ]
    assert implemented == []
