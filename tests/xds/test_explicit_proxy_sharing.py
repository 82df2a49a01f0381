"""Explicit-proxy sidecars alike but for their IP (and listen ports) share everything but their
listeners: a differential test (random edits; every proxy's resources against a fresh full generation
of its own), and counts of what a change regenerates (the shared part once, listeners per proxy only
when they may have changed)."""

from __future__ import annotations

import json
import random

import pytest
from test_hub import SHAPE, FakeEnvoy, _edit, _versions, synced, synthetic, workload_proxy  # same directory

from plait.api import load_text
from plait.testing.synthetic import load_one, virtual_service_yaml
from plait.xds import hub as hub_module
from plait.xds.generator import generate
from plait.xds.hub import XdsHub
from plait.xds.publish import TYPES, Publisher

IPS = ("10.250.0.2", "10.250.0.3", "10.250.0.4")


def explicit_proxies(snapshot) -> list:
    """Workload 2's sidecar at three IPs (one with listen ports of its own), both endpoints of
    workload 3 at their own IPs, and one proxy of workload 6 (another namespace)."""
    proxies = [workload_proxy(snapshot, 2, mode="proxy", ip=ip) for ip in IPS]
    proxies.append(workload_proxy(snapshot, 2, mode="proxy", ip="10.250.0.5", listen_ports={8080: 18080}))
    proxies += [workload_proxy(snapshot, 3, e, mode="proxy", ip=f"10.250.1.{e + 2}") for e in (0, 1)]
    proxies.append(workload_proxy(snapshot, 6, mode="proxy", ip="10.250.2.2"))
    return proxies


def _listener_filter(step: int, ip: str, *, extra: bool) -> str:
    """An EnvoyFilter that patches the inbound listener of one IP only (matched by listener name), and
    now and then adds a listener naming a cluster nothing generates (the proxies of its namespace are
    refused: Istio adds a listener whatever listener the patch's match names)."""
    patches = [
        {
            "applyTo": "LISTENER",
            "match": {"context": "SIDECAR_INBOUND", "listener": {"name": f"{ip}_8080"}},
            "patch": {"operation": "MERGE", "value": {"per_connection_buffer_limit_bytes": 1024 * (step + 1)}},
        }
    ]
    if extra:
        patches.append(
            {
                "applyTo": "LISTENER",
                "match": {"context": "SIDECAR_INBOUND", "listener": {"name": f"{ip}_8080"}},
                "patch": {
                    "operation": "ADD",
                    "value": {
                        "name": f"extra-{ip}",
                        "address": {"socket_address": {"address": ip, "port_value": 19000}},
                        "filter_chains": [
                            {
                                "filters": [
                                    {
                                        "name": "envoy.filters.network.tcp_proxy",
                                        "typed_config": {
                                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                                            "tcp_proxy.v3.TcpProxy",
                                            "stat_prefix": "extra",
                                            "cluster": "outbound|8080||nowhere.example",
                                        },
                                    }
                                ]
                            }
                        ],
                    },
                },
            }
        )
    return json.dumps(
        {
            "apiVersion": "networking.istio.io/v1alpha3",
            "kind": "EnvoyFilter",
            "metadata": {"name": "one-ip", "namespace": SHAPE.namespace(2)},
            "spec": {"configPatches": patches},
        }
    )


def _mesh_config(tracing: bool) -> str:
    mesh = "enableTracing: true\ndefaultConfig: {tracing: {sampling: 50, zipkin: {address: 10.9.9.9:9411}}}"
    body = "\n".join(f"    {line}" for line in (mesh if tracing else "enableTracing: false").splitlines())
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{body}\n"


def _peer_authentication(mode: str) -> str:
    return f"""apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: {SHAPE.namespace(2)}}}
spec: {{mtls: {{mode: {mode}}}}}
"""


def _listener_edit(rng, step: int) -> tuple[list, list]:
    """An edit of what listeners read: an IP-specific EnvoyFilter, tracing, mutual TLS."""
    kind = rng.choice(["envoyfilter", "envoyfilter-delete", "tracing", "peer-authentication"])
    if kind == "envoyfilter":
        return load_text(_listener_filter(step, rng.choice(IPS), extra=rng.random() < 0.5)).raise_for_errors(), []
    if kind == "envoyfilter-delete":
        return [], [("EnvoyFilter", SHAPE.namespace(2), "one-ip")]
    if kind == "tracing":
        return [load_one(_mesh_config(rng.random() < 0.5))], []
    return [load_one(_peer_authentication(rng.choice(["STRICT", "PERMISSIVE", "DISABLE"])))], []


def test_after_random_edits_every_explicit_proxy_holds_what_a_full_generation_gives():
    """Property test (fixed seed): after every random edit, each explicit-proxy sidecar holds exactly
    what `generate` makes for it alone (or is refused exactly when that would be inconsistent), while
    those alike but for their IP share their clusters, endpoints, routes and secrets."""
    rng = random.Random(17)
    snapshot = synthetic(scoped=False)
    proxies = explicit_proxies(snapshot)
    proxies += [workload_proxy(snapshot, 2), workload_proxy(snapshot, 2, mode="proxy", ip="10.250.0.2", name="other")]
    hub = XdsHub(snapshot)
    envoys = synced(hub, proxies)
    publisher = Publisher()
    shared_seen = refusals = 0
    for step in range(50):
        if step % 3 == 0:
            upserts, deletes = _listener_edit(rng, step)
        else:  # any edit of the mesh, or (as its step 0) new weights: the routes-only path
            upserts, deletes = _edit(rng, hub.snapshot, step if step % 3 == 1 else 0)
        new = hub.snapshot.with_changes(upserts=upserts, deletes=deletes)
        hub.update(new, [r.key for r in upserts] + deletes)
        for envoy in envoys:
            envoy.answer(envoy.pushes())
            proxy = envoy.conn.proxy
            fresh = publisher.publish(generate(new, proxy))
            status = next(s for s in hub.statuses() if s.proxy_id == envoy.conn.proxy_id)
            assert status.refused == fresh.inconsistencies, (step, proxy.id)
            assert status.errors == fresh.errors == (), (step, proxy.id)
            if fresh.inconsistencies:  # refused: the proxy keeps its last good config
                refusals += 1
                continue
            held = envoy.conn.stream.published
            diff = {s: sorted(set(_versions(held)[s].items()) ^ set(_versions(fresh)[s].items())) for s in TYPES}
            assert _versions(held) == _versions(fresh), f"step {step} ({upserts or deletes}): {proxy.id}: {diff}"
        held = [e.conn.stream.published for e in envoys[: len(IPS)] if not e.conn.group.refused]
        if len(held) > 1:
            shared_seen += 1
            assert all(p.types[t] is held[0].types[t] for p in held for t in TYPES if t != "lds"), step
            assert len({p.types["lds"].version for p in held}) == len(held), step
    assert shared_seen > 25  # steps where at least two of them were not refused
    assert refusals  # the added listener naming a missing cluster was refused
    assert hub.metrics.get_sample_value("plait_xds_generations_total", {"kind": "shared"})
    assert hub.metrics.get_sample_value("plait_xds_generations_total", {"kind": "virtual_hosts"})


@pytest.fixture
def calls(monkeypatch) -> dict[str, int]:
    """How often the hub calls each generator entry point."""
    counts = dict.fromkeys(
        ("translate", "generate", "generate_routes", "changed_virtual_hosts", "explicit_proxy_listeners"), 0
    )
    for name in counts:
        original = getattr(hub_module, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(hub_module, name, counted)
    return counts


def test_a_change_regenerates_the_shared_part_once_and_listeners_only_when_they_may_change(calls):
    snapshot = synthetic(scoped=False)
    proxies = [workload_proxy(snapshot, 2, mode="proxy", ip=f"10.250.0.{i}") for i in range(2, 12)]
    hub = XdsHub(snapshot)
    envoys = synced(hub, proxies)
    assert calls == {
        "translate": 1,
        "generate": 0,
        "generate_routes": 0,
        "changed_virtual_hosts": 0,
        "explicit_proxy_listeners": 10,
    }
    published = [e.conn.stream.published for e in envoys]
    assert all(p.types["cds"] is published[0].types["cds"] for p in published)

    def change(*docs: str) -> dict[str, int]:
        for name in calls:
            calls[name] = 0
        upserts = [load_one(d) for d in docs]
        hub.update(hub.snapshot.with_changes(upserts=upserts), [r.key for r in upserts])
        for envoy in envoys:
            envoy.answer(envoy.pushes())
        return dict(calls)

    # HTTP routes only: the changed virtual host of the shared route configuration once, no listener.
    routes = change(virtual_service_yaml(SHAPE, 0, v1_weight=70))  # svc-0000 has subsets
    assert routes == {
        "translate": 0,
        "generate": 0,
        "generate_routes": 0,
        "changed_virtual_hosts": 1,
        "explicit_proxy_listeners": 0,
    }
    # Mutual TLS of their namespace: what listeners read; the shared part still once.
    assert change(_peer_authentication("STRICT")) == {
        "translate": 1,
        "generate": 0,
        "generate_routes": 0,
        "changed_virtual_hosts": 0,
        "explicit_proxy_listeners": 10,
    }
    assert all(e.conn.stream.status("lds").state == "SYNCED" for e in envoys)


def test_a_new_explicit_proxy_reuses_the_shared_part_and_a_disconnected_kind_is_forgotten(calls):
    snapshot = synthetic(scoped=False)
    hub = XdsHub(snapshot)
    first = FakeEnvoy(hub, workload_proxy(snapshot, 2, mode="proxy", ip="10.250.0.2"))
    FakeEnvoy(hub, workload_proxy(snapshot, 2, mode="proxy", ip="10.250.0.3"))
    assert calls["translate"] == 1
    other = FakeEnvoy(hub, workload_proxy(snapshot, 3, mode="proxy", ip="10.250.0.4"))  # another namespace
    assert calls["translate"] == 2 and len(hub._shared) == 2
    hub.disconnect(other.conn)
    hub.update(hub.snapshot.with_changes(upserts=[load_one(_peer_authentication("STRICT"))]), None)
    assert len(hub._shared) == 1 and first.conn.stream.published is not None
