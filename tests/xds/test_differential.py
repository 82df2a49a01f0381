"""The simulator (`plait explain`) checked against a real Envoy on every golden input: for every workload's
proxy (sidecars in both modes), the requests its configuration suggests (every virtual host domain × every route match, plus
misses) go through the simulator and through an Envoy holding the same resources, and the listener,
filter chain, virtual host, route and cluster chosen must agree. What the simulator reports as not
modelled is a skip with its reason, logged and counted (a warning per case), never a silent pass."""

from __future__ import annotations

import copy
import dataclasses
import warnings
from pathlib import Path

import pytest
from test_golden import _PROXY_LINE, CASES, TESTDATA, translate_case  # same directory

from plait.api import load_text
from plait.lower import with_gateway_api
from plait.model import MeshSnapshot, Proxy
from plait.testing.backends import HttpBackend, loopback_subnet
from plait.testing.differential import (
    Addresses,
    agree,
    envoy_address,
    envoy_choice,
    envoy_copy,
    requests_for,
    send_probe,
    simulate_probe,
    simulated_choice,
)
from plait.testing.envoy import run_envoy
from plait.xds.generator import generate
from plait.xds.resources import ResourceSet
from plait.xds.simulate import Request, mesh_resolver, simulate
from plait.xds.simulate.outcome import NOT_MODELLED


class NotModelled(UserWarning):
    """A request the simulator said it does not model (so it was not compared)."""


def golden_proxy(case: str, workload: str, mode: str) -> tuple[MeshSnapshot, Proxy]:
    """The golden input's mesh and one of its workloads' proxy (with the identity the golden's line gives it)."""
    text = (TESTDATA / f"{case}.input.yaml").read_text()
    named = _PROXY_LINE.search(text)
    snapshot = MeshSnapshot(with_gateway_api(load_text(text).raise_for_errors()))
    we = snapshot.workload(workload)
    proxy = Proxy.from_workload_entry(we, mode=mode)
    if named.group(3) and we.name == named.group(1) and mode == (named.group(2) or "capture"):
        proxy = dataclasses.replace(proxy, identity=proxy.spiffe_id)
    return snapshot, proxy


def _golden_proxies() -> tuple[list[tuple[str, str, str]], list[tuple[Proxy, list[str]]]]:
    """(case, workload, mode) for every workload of every golden input (sidecars in both modes) that
    has a plaintext HTTP route to probe; and the proxies that have none, with what was left out."""
    compared, without_probes = [], []
    for case in CASES:
        snapshot = MeshSnapshot(
            with_gateway_api(load_text((TESTDATA / f"{case}.input.yaml").read_text()).raise_for_errors())
        )
        for we in snapshot.workload_entries:
            kind = Proxy.from_workload_entry(we).kind
            for mode in ("capture",) if kind == "router" else ("capture", "proxy"):
                _, proxy = golden_proxy(case, f"{we.namespace}/{we.name}", mode)
                probes, left_out = requests_for(generate(snapshot, proxy), proxy)
                if probes:
                    compared.append((case, f"{we.namespace}/{we.name}", mode))
                else:
                    without_probes.append((proxy, left_out))
    return compared, without_probes


GOLDEN_PROXIES, WITHOUT_PROBES = _golden_proxies()


def test_only_gateways_without_plaintext_http_are_left_out_of_the_comparison() -> None:
    """Every sidecar of every golden is compared; a gateway is left out only when no Gateway selects it
    or all its servers terminate TLS (the harness sends plaintext)."""
    assert len(GOLDEN_PROXIES) > 100
    for proxy, left_out in WITHOUT_PROBES:
        assert proxy.kind == "router", proxy.id
        assert all("a TLS chain" in reason for reason in left_out), (proxy.id, left_out)


# Goldens whose proxies run something the simulator does not model on every request (an EnvoyFilter's
# rate-limit filter calling a service that is not there: Envoy answers 500).
UNMODELLED_BY_DESIGN = {("52-envoyfilter-ratelimit-sample", "istio-system/istio-ingressgateway"): "envoy.ratelimit"}


@pytest.mark.parametrize(
    ("case", "workload", "mode"), GOLDEN_PROXIES, ids=[f"{c}:{w}:{m}" for c, w, m in GOLDEN_PROXIES]
)
def test_simulator_and_envoy_choose_alike(case: str, workload: str, mode: str, tmp_path: Path) -> None:
    snapshot, proxy = golden_proxy(case, workload, mode)
    resources = generate(snapshot, proxy)
    resolve = mesh_resolver(snapshot, proxy.namespace)
    probes, left_out = requests_for(resources, proxy)
    compared, skipped, mismatches = 0, [], []
    with loopback_subnet() as net:
        addresses = Addresses(f"{net}.1", [f"{net}.{i}" for i in range(10, 60)])
        bootstrap = envoy_copy(resources, proxy, addresses, (f"{net}.200", 8080))
        with HttpBackend("plait-echo", f"{net}.200", 8080), run_envoy(bootstrap, workdir=tmp_path):
            for probe in probes:
                outcome = simulate_probe(resources, proxy, probe, resolve)
                if outcome.unmodelled:
                    skipped.append(f"{probe}: {outcome.unmodelled}")
                    continue
                address = envoy_address(resources, proxy, probe, resolve, addresses)
                status, headers, forwarded = send_probe(
                    address, probe, absolute=proxy.mode == "proxy" and proxy.kind == "sidecar", echo_name="plait-echo"
                )
                want, got = simulated_choice(outcome), envoy_choice(status, headers, forwarded)
                compared += 1
                if not agree(want, got):
                    mismatches.append(f"{probe}\n  simulator: {want}\n  envoy:     {got}\n  ({outcome.summary()})")
    for reason in skipped:
        warnings.warn(NotModelled(f"{case} {proxy.id}: {reason}"), stacklevel=1)
    print(f"{case} {workload} {mode}: {compared} compared, {len(skipped)} not modelled, left out: {left_out}")
    assert not mismatches, (
        f"{case}: the simulator and Envoy disagree on {len(mismatches)} of {compared}:\n" + "\n".join(mismatches[:10])
    )
    if (case, workload) in UNMODELLED_BY_DESIGN:  # the simulator must say so for every request, and why
        assert skipped and all(UNMODELLED_BY_DESIGN[case, workload] in reason for reason in skipped), skipped
    else:
        assert len(skipped) <= compared // 4, f"{case}: too much is not modelled: {skipped}"


# ------------------------------------------------------------------ what the simulator says it does not model


def _listener(*chains: dict) -> dict:
    return {
        "name": "l",
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
        "filter_chains": list(chains),
    }


def test_several_matching_filter_chains_are_not_modelled_not_guessed() -> None:
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {"route_config": {}}}
    resources_alike = {"l": _listener({"name": "a", "filters": [hcm]}, {"name": "b", "filters": [hcm]})}
    by_port = {
        "l": _listener(
            {"name": "a", "filter_chain_match": {"source_ports": [1234]}, "filters": [hcm]},
            {"name": "b", "filters": [hcm]},
        )
    }
    gateway = Proxy(kind="router", ip="10.0.0.1", name="gw", namespace="istio-system")
    for listeners, reason in (
        (resources_alike, "several filter chains match (a, b)"),
        (by_port, "matches on source_ports"),
    ):
        outcome = simulate(ResourceSet(listeners=listeners), gateway, Request.from_url("http://10.0.0.1:80/"))
        assert outcome.unmodelled is not None and reason in outcome.unmodelled
        assert outcome.failed and outcome.summary().startswith("not modelled by plait's simulator")


def test_an_unknown_route_matcher_is_not_modelled_not_skipped() -> None:
    routes = {
        "virtual_hosts": [
            {
                "name": "v",
                "domains": ["*"],
                "routes": [
                    {"match": {"prefix": "/", "filter_state": [{"key": "x"}]}, "route": {"cluster": "a"}},
                    {"match": {"prefix": "/"}, "route": {"cluster": "b"}},
                ],
            }
        ]
    }
    hcm = {"name": "envoy.filters.network.http_connection_manager", "typed_config": {"route_config": routes}}
    gateway = Proxy(kind="router", ip="10.0.0.1", name="gw", namespace="istio-system")
    outcome = simulate(
        ResourceSet(listeners={"l": _listener({"filters": [hcm]})}), gateway, Request.from_url("http://10.0.0.1:80/")
    )
    assert outcome.unmodelled and "filter_state" in outcome.unmodelled
    assert outcome.cluster_names == []  # it did not fall through to the next route
    assert len(NOT_MODELLED) <= 6  # the list stays short


def test_the_comparison_catches_a_disagreement(tmp_path: Path) -> None:
    """The harness is not vacuous: an Envoy holding a route to another cluster is caught."""
    snapshot, proxy = golden_proxy("01-bookinfo-default", "default/productpage-v1", "capture")
    resources = translate_case("01-bookinfo-default")
    altered = copy.deepcopy(resources)
    vhost = next(v for v in altered.routes["9080"]["virtual_hosts"] if v["name"].startswith("details"))
    vhost["routes"][0]["route"]["cluster"] = "outbound|9080||ratings.default.svc.cluster.local"
    resolve = mesh_resolver(snapshot, proxy.namespace)
    probe = next(p for p in requests_for(resources, proxy)[0] if p.authority == "details:9080")
    with loopback_subnet() as net:
        addresses = Addresses(f"{net}.1", [f"{net}.{i}" for i in range(10, 60)])
        with (
            HttpBackend("plait-echo", f"{net}.200", 8080),
            run_envoy(envoy_copy(altered, proxy, addresses, (f"{net}.200", 8080)), workdir=tmp_path),
        ):
            got = envoy_choice(
                *send_probe(envoy_address(resources, proxy, probe, resolve, addresses), probe, echo_name="plait-echo")
            )
    want = simulated_choice(simulate_probe(resources, proxy, probe, resolve))
    assert got.clusters == {"outbound|9080||ratings.default.svc.cluster.local"}
    assert not agree(want, got)
