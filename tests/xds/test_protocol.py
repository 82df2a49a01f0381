"""The ADS state machine, driven by scripted request sequences (no network): SotW and delta,
ACK / NACK / stale nonces, subscriptions, removals, reconnects, and the encoded bytes."""

from __future__ import annotations

import dataclasses

from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from plait.xds.protocol import NACKED, NOT_SENT, STALE, SYNCED, Ack, AdsStream, Nack, Response
from plait.xds.publish import Published, Publisher, ResourceMap
from plait.xds.resources import TYPE_URLS, ResourceSet
from plait.xds.scope import SplitRoute

PUBLISHER = Publisher()
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def eds_cluster(name: str, timeout: str = "1s") -> dict:
    return {"name": name, "type": "EDS", "connect_timeout": timeout, "eds_cluster_config": {"eds_config": {"ads": {}}}}


def endpoints(name: str, port: int = 8080) -> dict:
    return {
        "cluster_name": name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
                ]
            }
        ],
    }


def listener(name: str, route: str) -> dict:
    hcm = {
        "@type": HCM,
        "stat_prefix": name,
        "rds": {"route_config_name": route, "config_source": {"ads": {}}},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 15001}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def route(name: str, cluster: str) -> dict:
    return {
        "name": name,
        "virtual_hosts": [
            {"name": "all", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}
        ],
    }


def published(clusters=("a", "b"), ports=None, route_to="a", timeout="1s") -> Published:
    ports = ports or {}
    rs = ResourceSet()
    rs.add_clusters(eds_cluster(c, timeout if c == "a" else "1s") for c in clusters)
    rs.add_endpoints(endpoints(c, ports.get(c, 8080)) for c in clusters)
    rs.add_listeners([listener("l", "r")])
    rs.add_routes([route("r", route_to)])
    return PUBLISHER.publish(rs)


def sotw(short: str, names=(), nonce: str = "", version: str = "", error: str | None = None):
    detail = status_pb2.Status(code=3, message=error) if error else None
    return discovery_pb2.DiscoveryRequest(
        type_url=TYPE_URLS[short],
        resource_names=list(names),
        response_nonce=nonce,
        version_info=version,
        error_detail=detail,
    )


def delta(short: str, subscribe=(), unsubscribe=(), nonce: str = "", initial=None, error: str | None = None):
    detail = status_pb2.Status(code=3, message=error) if error else None
    return discovery_pb2.DeltaDiscoveryRequest(
        type_url=TYPE_URLS[short],
        resource_names_subscribe=list(subscribe),
        resource_names_unsubscribe=list(unsubscribe),
        response_nonce=nonce,
        initial_resource_versions=initial or {},
        error_detail=detail,
    )


def responses(outputs) -> list[Response]:
    return [o for o in outputs if isinstance(o, Response)]


def only(outputs) -> Response:
    (response,) = responses(outputs)
    return response


def cds_push(outputs) -> Response:
    """The CDS response of a push that changed cluster "a", after checking that the only other
    response resends a's endpoints (Envoy warms an updated cluster until it gets them)."""
    first, *rest = responses(outputs)
    assert first.type == "cds" and [(r.type, r.names) for r in rest] in ([], [("eds", ["a"])])
    return first


def synced_sotw_stream(p: Published) -> AdsStream:
    """A SotW stream with all four types requested and ACKed, as Envoy leaves it after start-up."""
    stream = AdsStream(published=p)
    for short, names in (("cds", ()), ("eds", ("a", "b")), ("lds", ()), ("rds", ("r",))):
        response = only(stream.receive(sotw(short, names)))
        stream.receive(sotw(short, names, nonce=response.nonce, version=response.payload.version))
    assert all(s.state == SYNCED for s in stream.statuses().values())
    return stream


# ------------------------------------------------------------------ state of the world


def test_initial_requests_are_answered_and_acks_make_a_type_synced():
    p = published()
    stream = AdsStream(published=p)
    assert stream.status("cds").state == NOT_SENT
    cds = only(stream.receive(sotw("cds")))
    assert sorted(cds.names) == ["a", "b"] and cds.payload.version == p.types["cds"].version
    assert stream.status("cds").state == STALE and stream.status("cds").sent_version == p.types["cds"].version
    events = stream.receive(sotw("cds", nonce=cds.nonce, version=cds.payload.version))
    assert events == [Ack("cds", p.types["cds"].version, cds.nonce)]
    assert stream.status("cds").state == SYNCED and stream.status("cds").acked_version == p.types["cds"].version


def test_named_types_get_the_requested_names_only():
    stream = AdsStream(published=published(clusters=("a", "b", "c")))
    assert sorted(only(stream.receive(sotw("eds", ["a", "c", "missing"]))).names) == ["a", "c"]


def test_empty_names_for_eds_mean_nothing_not_wildcard():
    stream = AdsStream(published=published())
    assert only(stream.receive(sotw("eds", []))).names == []  # answered (so Envoy's init ends), but empty
    assert stream.status("eds").state == SYNCED  # Envoy acknowledges nothing of a type it watches nothing of


def test_a_names_change_riding_on_an_ack_is_answered_with_the_new_names_only():
    stream = AdsStream(published=published(clusters=("a", "b")))
    first = only(stream.receive(sotw("eds", ["a"])))
    outputs = stream.receive(sotw("eds", ["a", "b"], nonce=first.nonce, version=first.payload.version))
    assert isinstance(outputs[0], Ack)
    assert only(outputs).names == ["b"]


def test_a_stale_nonce_is_no_ack_but_its_names_change_is_answered():
    stream = synced_sotw_stream(published())
    old_nonce = stream.status("eds").nonce
    pushed = only(stream.update(published(ports={"a": 9090})))  # EDS "a" changed: nonce moves on
    assert pushed.type == "eds" and pushed.names == ["a"]
    outputs = stream.receive(sotw("eds", ["a"], nonce=old_nonce))  # Envoy dropped "b", on the old nonce
    assert not [o for o in outputs if isinstance(o, (Ack, Nack))] and not responses(outputs)
    assert stream.status("eds").state == STALE
    resent = only(stream.receive(sotw("eds", ["a", "b"], nonce=old_nonce)))  # asks for "b" again
    assert resent.names == ["b"]  # Envoy forgot "b" when it dropped it, so it is sent again
    assert stream.held("eds").keys() == {"a", "b"}


def test_a_response_in_flight_when_the_client_stops_watching_its_type_is_not_waited_for():
    """Envoy ignores, without an ACK, a response of a type it no longer watches: a gateway whose last
    listener went empties its RDS subscription while a change of that listener's route is on its way."""
    stream = synced_sotw_stream(published())
    acked = stream.status("rds").nonce
    pushed = only(stream.update(published(route_to="b")))  # route "r" changed
    assert pushed.type == "rds" and stream.status("rds").state == STALE
    outputs = stream.receive(sotw("rds", [], nonce=acked))  # the listener is gone: no route wanted
    assert not responses(outputs) and stream.status("rds").state == SYNCED  # nothing wanted, nothing awaited
    again = only(stream.receive(sotw("rds", ["r"], nonce=acked)))  # a listener names it again
    assert again.names == ["r"] and again.payload.version == pushed.payload.version  # the change it never took


def test_the_same_change_sent_twice_on_one_stream_gets_a_new_nonce():
    stream = AdsStream(published=published(clusters=("a", "b")))
    first = only(stream.receive(sotw("eds", ["a"])))
    add = only(stream.receive(sotw("eds", ["a", "b"], nonce=first.nonce)))  # ACK + new name
    stream.receive(sotw("eds", ["a", "b"], nonce=add.nonce))
    stream.receive(sotw("eds", ["a"], nonce=add.nonce))  # drops "b" ...
    again = only(stream.receive(sotw("eds", ["a", "b"], nonce=add.nonce)))  # ... and wants it back
    assert again.names == ["b"] and again.nonce != add.nonce
    assert stream.receive(sotw("eds", ["a", "b"], nonce=again.nonce)) == [
        Ack("eds", again.payload.version, again.nonce)
    ]
    assert stream.status("eds").state == SYNCED


def test_updates_push_only_changed_types_in_cds_eds_lds_rds_order():
    stream = synced_sotw_stream(published())
    assert stream.update(published()) == []  # same content: nothing to send
    pushed = stream.update(published(clusters=("a", "b", "c"), route_to="c"))
    assert [r.type for r in pushed] == ["cds", "rds"]
    assert sorted(pushed[0].names) == ["a", "b", "c"]  # SotW wildcard: the full set


def test_a_removed_cluster_is_a_full_cds_set_without_it():
    stream = synced_sotw_stream(published(clusters=("a", "b")))
    pushed = stream.update(published(clusters=("a",)))
    assert [(r.type, r.names) for r in pushed] == [("cds", ["a"])]  # EDS "b" is not removed in SotW


def test_a_nack_records_its_message_and_the_last_good_state_is_resent_next_time():
    stream = synced_sotw_stream(published())
    bad = cds_push(stream.update(published(timeout="-1s")))
    assert bad.type == "cds"
    events = stream.receive(
        sotw(
            "cds",
            nonce=bad.nonce,
            version=stream.status("cds").acked_version,
            error="cluster a: invalid connect_timeout",
        )
    )
    assert events == [Nack("cds", bad.nonce, "cluster a: invalid connect_timeout")]
    status = stream.status("cds")
    assert status.state == NACKED and status.nack_message == "cluster a: invalid connect_timeout"
    assert status.acked_version != status.sent_version
    # The same NACK repeated on a later request of that type (Envoy keeps error_detail) counts once.
    assert stream.receive(sotw("cds", nonce=bad.nonce, error="cluster a: invalid connect_timeout")) == []
    # A push of something else does not send the rejected version again ...
    assert [r.type for r in stream.update(published(timeout="-1s", route_to="b"))] == ["rds"]
    assert stream.status("cds").state == NACKED
    # ... the next different version is sent, as a change from the last good state.
    fixed = cds_push(stream.update(published(timeout="2s", route_to="b")))
    stream.receive(sotw("cds", nonce=fixed.nonce, version=fixed.payload.version))
    assert stream.status("cds").state == SYNCED and stream.status("cds").nack_message == ""


def answer(stream: AdsStream, response: Response, error: str | None = None):
    """ACK (or NACK) a CDS/LDS response as Envoy would, on either kind of stream."""
    if stream.delta:
        return stream.receive(delta(response.type, nonce=response.nonce, error=error))
    return stream.receive(sotw(response.type, nonce=response.nonce, version=response.payload.version, error=error))


def test_going_back_to_what_the_client_holds_after_a_nack_is_sent_so_it_can_ack():
    delta_stream = AdsStream(delta=True, published=published())
    answer(delta_stream, only(delta_stream.receive(delta("cds"))))
    for stream in (synced_sotw_stream(published()), delta_stream):
        answer(stream, cds_push(stream.update(published(timeout="-1s"))), error="no")
        assert stream.status("cds").state == NACKED
        back = cds_push(stream.update(published()))  # the last good content again: nothing new, still sent
        assert back.names == ([] if stream.delta else ["a", "b"])
        answer(stream, back)
        assert stream.status("cds").state == SYNCED
        assert stream.update(published()) == []


def test_an_updated_cluster_gets_its_endpoints_again_unchanged_or_not():
    delta_stream = AdsStream(delta=True, published=published())
    for short, names in (("cds", ()), ("eds", ("a", "b"))):
        answer(delta_stream, only(delta_stream.receive(delta(short, subscribe=names))))
    for stream in (synced_sotw_stream(published()), delta_stream):
        pushed = responses(stream.update(published(timeout="3s")))  # cluster a changes, endpoints do not
        assert [(r.type, r.names) for r in pushed] == [
            ("cds", ["a", "b"] if not stream.delta else ["a"]),
            ("eds", ["a"]),
        ]
        answer(stream, pushed[0])
        if stream.delta:
            answer(stream, pushed[1])
        else:  # a SotW ACK of EDS repeats the subscription
            stream.receive(sotw("eds", ("a", "b"), nonce=pushed[1].nonce, version=pushed[1].payload.version))
        assert stream.status("eds").state == SYNCED
        assert stream.update(published(timeout="3s")) == []  # nothing new: nothing resent


def test_a_new_stream_is_sent_everything_again():
    p = published()
    synced_sotw_stream(p)
    reconnected = AdsStream(published=p)
    cds = only(reconnected.receive(sotw("cds", version=p.types["cds"].version)))  # Envoy's version, no nonce
    assert sorted(cds.names) == ["a", "b"]


def test_types_that_were_never_requested_are_not_pushed():
    stream = AdsStream(published=published())
    only(stream.receive(sotw("cds")))
    assert stream.update(published(route_to="b")) == []
    assert stream.status("rds").state == NOT_SENT


def test_unknown_types_are_ignored():
    stream = AdsStream(published=published())
    request = discovery_pb2.DiscoveryRequest(
        type_url="type.googleapis.com/envoy.service.runtime.v3.Runtime", resource_names=["rtds"]
    )
    assert stream.receive(request) == []


def with_secrets(*names: str) -> Published:
    rs = ResourceSet()
    rs.add_secrets({"name": n, "validation_context": {"trusted_ca": {"inline_string": f"CA of {n}"}}} for n in names)
    return PUBLISHER.publish(rs)


def test_secrets_are_named_sent_only_as_asked_and_reported_once_asked_for():
    stream = AdsStream(published=with_secrets("gw-cert", "other-cert"))
    assert "sds" not in stream.statuses()  # a proxy that never asks for secrets shows none
    sent = only(stream.receive(sotw("sds", ["gw-cert"])))
    assert (sent.type, sent.names) == ("sds", ["gw-cert"])
    assert stream.statuses()["sds"].state == STALE
    assert isinstance(stream.receive(sotw("sds", ["gw-cert"], nonce=sent.nonce))[0], Ack)
    assert stream.statuses()["sds"].state == SYNCED
    assert stream.update(with_secrets("gw-cert", "third")) == []  # nothing it asked for changed
    rotated = PUBLISHER.publish(
        ResourceSet(
            secrets={
                "gw-cert": {"name": "gw-cert", "validation_context": {"trusted_ca": {"inline_string": "a new CA"}}}
            }
        )
    )
    assert only(stream.update(rotated)).names == ["gw-cert"]


def test_nothing_is_sent_before_resources_are_known_then_everything_is():
    stream = AdsStream()
    assert stream.receive(sotw("cds")) == []
    assert stream.status("cds").state == NOT_SENT
    assert sorted(only(stream.update(published())).names) == ["a", "b"]


# ------------------------------------------------------------------ delta


def test_delta_sends_changes_and_removed_resources():
    stream = AdsStream(delta=True, published=published(clusters=("a", "b")))
    first = only(stream.receive(delta("cds")))  # no names on the first CDS request: wildcard
    assert sorted(first.names) == ["a", "b"] and first.payload.removed == ()
    stream.receive(delta("cds", nonce=first.nonce))
    assert stream.status("cds").state == SYNCED
    pushed = only(stream.update(published(clusters=("a", "c"))))
    assert pushed.names == ["c"] and pushed.payload.removed == ("b",)


def test_delta_named_subscribe_and_unsubscribe():
    stream = AdsStream(delta=True, published=published(clusters=("a", "b")))
    first = only(stream.receive(delta("eds", subscribe=["a"])))
    assert first.names == ["a"]
    outputs = stream.receive(delta("eds", subscribe=["b"], nonce=first.nonce))
    assert isinstance(outputs[0], Ack) and only(outputs).names == ["b"]
    assert responses(stream.receive(delta("eds", unsubscribe=["a"]))) == []
    assert stream.update(published(clusters=("a", "b"), ports={"a": 9999})) == []  # "a" is not watched
    assert only(stream.receive(delta("eds", subscribe=["a"]))).names == ["a"]  # resubscribed: sent again
    gone = only(stream.update(published(clusters=("a",), ports={"a": 9999})))
    assert gone.names == [] and gone.payload.removed == ("b",)


def test_delta_explicit_wildcard_subscription():
    stream = AdsStream(delta=True, published=published(clusters=("a", "b")))
    assert sorted(only(stream.receive(delta("cds", subscribe=["*"]))).names) == ["a", "b"]


def test_delta_reconnect_sends_only_what_differs_from_initial_versions():
    p = published(clusters=("a", "b"))
    versions = {name: r.version for name, r in p.types["cds"].resources.items()}
    stream = AdsStream(delta=True, published=p)
    same = only(stream.receive(delta("cds", initial=versions)))
    assert same.names == [] and same.payload.removed == ()  # answered, with nothing in it
    stream = AdsStream(delta=True, published=p)
    outdated = only(stream.receive(delta("cds", initial={"a": "old", "b": versions["b"], "gone": "x"})))
    assert outdated.names == ["a"] and outdated.payload.removed == ("gone",)


def test_delta_nack_then_fix():
    stream = AdsStream(delta=True, published=published())
    stream.receive(delta("cds", nonce=only(stream.receive(delta("cds"))).nonce))
    bad = cds_push(stream.update(published(timeout="-1s")))
    assert stream.receive(delta("cds", nonce=bad.nonce, error="bad a")) == [Nack("cds", bad.nonce, "bad a")]
    assert stream.status("cds").state == NACKED
    fixed = only(stream.update(published(timeout="3s")))
    assert fixed.names == ["a"]
    stream.receive(delta("cds", nonce=fixed.nonce))
    assert stream.status("cds").state == SYNCED


# ------------------------------------------------------------------ encoding and sharing


def test_encoded_sotw_response_is_the_protobuf_message():
    p = published()
    response = only(AdsStream(published=p).receive(sotw("cds")))
    message = response.to_proto()
    assert isinstance(message, discovery_pb2.DiscoveryResponse)
    assert (message.version_info, message.type_url, message.nonce) == (
        p.types["cds"].version,
        TYPE_URLS["cds"],
        response.nonce,
    )
    assert list(message.resources) == [r.to_any() for r in response.payload.resources]


def test_encoded_delta_response_is_the_protobuf_message():
    stream = AdsStream(delta=True, published=published(clusters=("a", "b")))
    stream.receive(delta("cds", nonce=only(stream.receive(delta("cds"))).nonce))
    response = only(stream.update(published(clusters=("a", "c"))))
    message = response.to_proto()
    assert isinstance(message, discovery_pb2.DeltaDiscoveryResponse)
    assert [(r.name, r.version, r.resource) for r in message.resources] == [
        (r.name, r.version, r.to_any()) for r in response.payload.resources
    ]
    assert list(message.removed_resources) == ["b"] and message.nonce == response.nonce


def test_alike_streams_share_one_payload_per_push():
    before, after = published(), published(route_to="b")
    streams = [synced_sotw_stream(before) for _ in range(3)]
    pushes = [stream.update(after) for stream in streams]
    assert all(p[0].payload is pushes[0][0].payload for p in pushes)
    assert all(p[0].encode() is pushes[0][0].encode() for p in pushes)  # serialised once for all


def test_delta_virtual_hosts_are_wildcard_and_asked_hosts_are_answered_with_aliases():
    """VHDS: Envoy subscribes without names, then asks ``<route config>/<Host header>`` when no virtual
    host it holds serves a request; each ask is answered by the virtual host that serves it, the ask as
    its alias, or by the ask alone (no resource: Envoy answers 404)."""
    vhost = (
        SplitRoute(
            PUBLISHER.convert(
                "rds",
                "r",
                route("r", "a")
                | {
                    "virtual_hosts": [
                        {
                            "name": "svc:80",
                            "domains": ["svc", "svc:80"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "a"}}],
                        }
                    ]
                },
            )
        )
        .entries["r/svc:80"]
        .resource
    )
    base = published()
    view = dataclasses.replace(
        base,
        types={**base.types, "vhds": ResourceMap(TYPE_URLS["vhds"], {vhost.name: vhost})},
        aliases={"r/svc": vhost.name},
    )
    stream = AdsStream(delta=True, published=view)
    first = only(stream.receive(delta("vhds")))
    assert first.names == ["r/svc:80"] and stream.on_demand(delta("vhds", subscribe=["r/svc"])) == {"r/svc"}
    stream.receive(delta("vhds", nonce=first.nonce))
    answer = only(stream.receive(delta("vhds", subscribe=["r/svc", "r/nowhere"]))).to_proto()
    assert [(r.name, list(r.aliases), r.HasField("resource")) for r in answer.resources] == [
        ("r/svc:80", ["r/svc"], True),
        ("r/nowhere", ["r/nowhere"], False),
    ]
    assert stream.status("vhds").state == STALE and "vhds" in stream.statuses()
    assert "vhds" not in AdsStream(delta=True, published=view).statuses()  # shown once subscribed
