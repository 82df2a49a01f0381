"""The ADS protocol core, without I/O: one `AdsStream` per gRPC stream, state of the world or delta.

Flows in: `DiscoveryRequest` / `DeltaDiscoveryRequest` protobufs (`receive`) and the
proxy's current resources, a `plait.xds.publish.Published` (`update`). Flows out:
`Response`s to send (encoded with `Response.encode()`), `Ack` / `Nack` events, and a
`TypeStatus` per type (SYNCED, NOT SENT, STALE = sent but not acknowledged, NACKED).

Rules, per type URL (cds, eds, lds, rds, vhds, sds; other types are ignored):
* Subscriptions: CDS, LDS and VHDS are wildcard when no names are given (or "*"); EDS, RDS
  and SDS (secrets: the credentials a listener or cluster names) are always named (an
  empty list means nothing is wanted).
* A request whose nonce is the last one sent ACKs it, or NACKs it when it carries
  error_detail (each nonce is answered once). Other nonces are stale and are not
  ACKs, but a change of resource names is answered whatever nonce it rides on.
* Envoy ignores, without an ACK, responses of a type it watches nothing of: a SotW request that
  empties a named type's subscription ends the wait for a response in flight, and a response to
  an empty subscription (a reconnecting gateway without listeners asks for no routes) is not
  waited for.
* A NACK keeps the client's last good state as our belief of what it holds. The
  rejected version is not sent again; the next different one is sent as a change
  from that last good state (even an empty one, so that its ACK ends NACKED).
* What is sent: SotW sends the full set for wildcard types whenever anything in it
  changed, and only changed resources for named types (Envoy keeps named resources
  it is not sent); delta sends changed resources and `removed_resources`.
* On demand (delta only, Envoy's ODCDS and VHDS): names subscribed beside a wildcard subscription
  are resources the client is missing (a route names a cluster it does not hold; no virtual host it
  holds serves a request's host). `on_demand` tells the hub first (so it can widen what the proxy is
  sent); then each name is answered: a cluster by the push, by sending it again, or in
  removed_resources when there is none; a virtual host, asked for as ``<route config>/<host>``, by the
  one that serves that host (`Published.aliases`) with the asked name as its alias, or by the asked
  name without a resource when none does (Envoy answers 404).
* Pushes go in the order CDS, EDS, LDS, RDS, VHDS, SDS (make before break). An updated cluster is
  warming in Envoy until it receives its endpoints again, so the endpoints of every
  cluster a CDS push changes are resent with the EDS push that follows, changed or not.

Sharing: proxies that hold the same resources share `ResourceMap`s; what to send
from one map to another is computed once (memo on the new map) and serialised once
(`Payload`, nonce included: nonces are unique in the process, not just per stream),
so a push to 500 alike proxies costs little more than to one. State is owned by the
`AdsStream`; nothing blocks.
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import asdict, dataclass, field

from envoy.service.discovery.v3 import discovery_pb2

from plait.xds.publish import SHORT_NAMES, TYPES, Published, ResourceMap, VersionedResource, wire_field

WILDCARD_TYPES = frozenset({"cds", "lds", "vhds"})
ON_REQUEST_TYPES = frozenset({"sds", "vhds"})  # reported only on streams that subscribed to them
SYNCED, NOT_SENT, STALE, NACKED = "SYNCED", "NOT SENT", "STALE", "NACKED"
NAME_SETS_KEPT = 4096

_name_sets: dict[frozenset[str], frozenset[str]] = {}


def intern_names(names: frozenset[str]) -> frozenset[str]:
    """One shared object per distinct subscription, so alike proxies hold references, not copies."""
    found = _name_sets.get(names)
    if found is not None:
        return found
    if len(_name_sets) >= NAME_SETS_KEPT:
        _name_sets.clear()
    _name_sets[names] = names
    return names


# ------------------------------------------------------------------ outputs


@dataclass(frozen=True)
class Ack:
    type: str  # "cds" | "eds" | "lds" | "rds"
    version: str
    nonce: str


@dataclass(frozen=True)
class Nack:
    type: str
    nonce: str
    message: str


class Payload:
    """One response, shared by every stream that sends it: resources, version and a nonce unique in
    the process (so it is serialised once, not once per stream)."""

    __slots__ = ("type_url", "version", "resources", "removed", "delta", "aliases", "unresolved", "nonce", "_encoded")

    def __init__(
        self,
        current: ResourceMap,
        resources: list[VersionedResource],
        removed: list[str],
        delta: bool,
        aliases: dict[str, list[str]] | None = None,
        unresolved: tuple[str, ...] = (),
    ):
        self.type_url, self.version, self.delta = current.type_url, current.version, delta
        self.resources, self.removed = tuple(resources), tuple(removed)
        # delta only: the names a client asked for that each resource answers (VHDS), and those
        # nothing answers (sent as a resource without a body, the name as its own alias)
        self.aliases, self.unresolved = aliases or {}, tuple(unresolved)
        self.nonce = str(next(_nonces))
        self._encoded: bytes | None = None

    def renamed(self) -> "Payload":
        """The same response under a new nonce (for a stream that was already sent this one)."""
        copy = Payload.__new__(Payload)
        for name in ("type_url", "version", "resources", "removed", "delta", "aliases", "unresolved"):
            setattr(copy, name, getattr(self, name))
        copy.nonce, copy._encoded = str(next(_nonces)), None
        return copy

    def encoded(self) -> bytes:
        """The serialised DiscoveryResponse (or DeltaDiscoveryResponse), made once."""
        if self._encoded is None:
            parts = [wire_field(1, self.version)]
            if self.delta:
                parts += [
                    wire_field(
                        2,
                        wire_field(3, r.name)
                        + wire_field(1, r.version)
                        + wire_field(2, r.any_bytes())
                        + b"".join(wire_field(4, alias) for alias in self.aliases.get(r.name, ())),
                    )
                    for r in self.resources
                ]
                parts += [wire_field(2, wire_field(3, name) + wire_field(4, name)) for name in self.unresolved]
                parts += [wire_field(6, name) for name in self.removed]
            else:
                parts += [wire_field(2, r.any_bytes()) for r in self.resources]
            parts += [wire_field(4, self.type_url), wire_field(5, self.nonce)]
            self._encoded = b"".join(parts)
        return self._encoded


_nonces = itertools.count(1)


@dataclass(frozen=True)
class Response:
    payload: Payload

    @property
    def nonce(self) -> str:
        return self.payload.nonce

    @property
    def type(self) -> str:
        return SHORT_NAMES[self.payload.type_url]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.payload.resources]

    def encode(self) -> bytes:
        """The wire bytes of the DiscoveryResponse (or DeltaDiscoveryResponse)."""
        return self.payload.encoded()

    def to_proto(self) -> discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse:
        message = discovery_pb2.DeltaDiscoveryResponse if self.payload.delta else discovery_pb2.DiscoveryResponse
        return message.FromString(self.encode())


@dataclass
class TypeStatus:
    state: str = NOT_SENT
    sent_version: str = ""
    acked_version: str = ""
    nonce: str = ""  # of the last response sent
    nack_message: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


# ------------------------------------------------------------------ what to send

Held = ResourceMap | dict[str, str] | None  # what the client holds: a map we sent, or its own {name: version}


def _held_version(held: Held, held_names: frozenset[str] | None, name: str) -> str | None:
    if held is None or (held_names is not None and name not in held_names):
        return None
    if isinstance(held, ResourceMap):
        resource = held.resources.get(name)
        return resource.version if resource is not None else None
    return held.get(name)


def _held_names(held: Held, held_names: frozenset[str] | None) -> list[str]:
    if held is None:
        return []
    names = held.resources if isinstance(held, ResourceMap) else held
    return [n for n in names if held_names is None or n in held_names]


def _compute(
    delta: bool,
    held: Held,
    held_names: frozenset[str] | None,
    current: ResourceMap,
    names: frozenset[str] | None,
    force: bool,
) -> Payload | None:
    resources = current.resources
    wanted = resources if names is None else {n: resources[n] for n in names if n in resources}
    changed = [r for n, r in wanted.items() if _held_version(held, held_names, n) != r.version]
    gone = sorted(n for n in _held_names(held, held_names) if n not in wanted and (names is None or n in names))
    if delta:
        return Payload(current, changed, gone, True) if changed or gone or force else None
    if names is None:  # SotW wildcard: the whole set, or nothing
        return Payload(current, list(wanted.values()), [], False) if changed or gone or force else None
    return Payload(current, changed, [], False) if changed or force else None


def payload_for(
    delta: bool,
    held: Held,
    held_names: frozenset[str] | None,
    current: ResourceMap,
    names: frozenset[str] | None,
    force: bool,
) -> Payload | None:
    """What brings a client from `held` (restricted to `held_names`) to `current` (restricted to
    `names`); memoised on `current` when `held` is shared, so alike streams share one Payload."""
    if isinstance(held, dict):
        return _compute(delta, held, held_names, current, names, force)
    key = (delta, force, id(held), held_names, names)
    hit = current.memo.get(key)
    if hit is not None and (hit[0]() if hit[0] is not None else None) is held:
        return hit[1]
    payload = _compute(delta, held, held_names, current, names, force)
    current.memo[key] = (weakref.ref(held) if held is not None else None, payload)
    return payload


# ------------------------------------------------------------------ the state machine


@dataclass
class _TypeState:
    short: str
    names: frozenset[str] | None = None  # subscription; None = wildcard
    held: Held = None  # what we believe the client holds
    held_names: frozenset[str] | None = None
    acked: tuple[Held, frozenset[str] | None] = (None, None)  # its state at the last ACK
    answered: str = ""  # last nonce ACKed or NACKed
    status: TypeStatus = field(default_factory=TypeStatus)


def _sotw_names(short: str, names) -> frozenset[str] | None:
    if short in WILDCARD_TYPES and (not names or "*" in names):
        return None
    return intern_names(frozenset(names))


def _delta_names(
    short: str, current: frozenset[str] | None, first: bool, subscribe, unsubscribe
) -> frozenset[str] | None:
    if "*" in subscribe or (first and short in WILDCARD_TYPES and not subscribe):
        return None
    if first:
        current = frozenset()
    elif current is None:
        return frozenset() if "*" in unsubscribe else None
    return intern_names((current | frozenset(subscribe)) - frozenset(unsubscribe))


class AdsStream:
    """One ADS stream's protocol state. `published` is the proxy's current resources (None until known)."""

    def __init__(self, *, delta: bool = False, published: Published | None = None):
        self.delta = delta
        self.published = published
        self._types: dict[str, _TypeState] = {}

    @property
    def kind(self) -> str:
        return "delta" if self.delta else "sotw"

    def status(self, short: str) -> TypeStatus:
        state = self._types.get(short)
        return state.status if state is not None else TypeStatus()

    def statuses(self) -> dict[str, TypeStatus]:
        """Every config type; secrets only once the proxy asked for some (most never do)."""
        return {short: self.status(short) for short in TYPES if short not in ON_REQUEST_TYPES or short in self._types}

    def held(self, short: str) -> dict[str, VersionedResource]:
        """What the client holds of one type, as far as this stream knows (what it was last sent)."""
        state = self._types.get(short)
        if state is None or not isinstance(state.held, ResourceMap):
            return {}
        return {n: r for n, r in state.held.resources.items() if state.held_names is None or n in state.held_names}

    def receive(self, request) -> list[Response | Ack | Nack]:
        """Handle one request; returns events and the responses to send, in order."""
        short = SHORT_NAMES.get(request.type_url)
        if short is None:
            return []
        first = short not in self._types
        state = self._types.setdefault(short, _TypeState(short))
        error = request.error_detail.message if request.HasField("error_detail") else None
        out: list[Response | Ack | Nack] = list(
            self._answer(state, request.response_nonce, error, getattr(request, "version_info", ""))
        )
        asked: frozenset[str] = frozenset()
        if self.delta:
            names = _delta_names(
                short, state.names, first, request.resource_names_subscribe, request.resource_names_unsubscribe
            )
            if first and request.initial_resource_versions:
                state.held = dict(request.initial_resource_versions)
            if names is None:  # named resources asked for beside the wildcard: Envoy's on-demand CDS
                asked = frozenset(request.resource_names_subscribe) - {"*"}
        else:
            names = _sotw_names(short, request.resource_names)
            if names == frozenset() and state.status.state == STALE:
                self._drop_unwatched(state)
        pushed: list[Response] = []
        if first or names != state.names or asked:
            self._subscribe(state, names)
            pushed = self._push(state)
        out += pushed
        if asked:
            out += self._answer_on_demand(state, asked, pushed)
        return out

    def on_demand(self, request) -> frozenset[str]:
        """What a delta request asks for by name on a wildcard type (Envoy's on-demand CDS) and, on a
        new stream, what the client says it already holds of one: read before `receive`, so that the
        hub can widen the proxy's resources (`plait.xds.scope`) before they are sent."""
        short = SHORT_NAMES.get(request.type_url)
        if not self.delta or short not in WILDCARD_TYPES:
            return frozenset()
        state = self._types.get(short)
        if state is not None and state.names is not None:
            return frozenset()
        asked = frozenset(request.resource_names_subscribe) - {"*"}
        return asked | frozenset(request.initial_resource_versions) if state is None else asked

    def _answer_on_demand(self, state: _TypeState, asked: frozenset[str], pushed: list[Response]) -> list[Response]:
        """Every name asked for on demand gets an answer: the resource (unless the push just sent it),
        or, when there is no such resource, its name in removed_resources, so Envoy stops waiting."""
        if self.published is None:
            return []
        current = self.published.types[state.short]
        if state.short == "vhds":
            return [self._answer_aliases(state, current, asked)]
        sent = {name for response in pushed for name in response.names}
        again = [current.resources[n] for n in sorted(asked) if n in current.resources and n not in sent]
        missing = sorted(n for n in asked if n not in current.resources)
        if not again and not missing:
            return []
        payload = Payload(current, again, missing, True)
        status = state.status
        status.state, status.sent_version, status.nonce = STALE, current.version, payload.nonce
        return [Response(payload)]

    def _answer_aliases(self, state: _TypeState, current: ResourceMap, asked: frozenset[str]) -> Response:
        """Virtual hosts are asked for as ``<route config>/<Host header>``: each ask is answered by the
        virtual host that serves that host, with the ask as its alias (Envoy then resumes the requests
        waiting for it), or, when none does, by the ask without a resource (Envoy answers 404)."""
        aliases: dict[str, list[str]] = {}
        for name in sorted(asked):
            target = self.published.aliases.get(name)
            if target in current.resources:
                aliases.setdefault(target, []).append(name)
        answered = {name for names in aliases.values() for name in names}
        unresolved = tuple(sorted(asked - answered))
        payload = Payload(current, [current.resources[n] for n in aliases], [], True, aliases, unresolved)
        status = state.status
        status.state, status.sent_version, status.nonce = STALE, current.version, payload.nonce
        return Response(payload)

    def update(self, published: Published | None) -> list[Response]:
        """New resources for this proxy: responses for every type the client asked for, in push order."""
        self.published = published
        out: list[Response] = []
        for short in TYPES:
            if short in self._types:
                out += self._push(self._types[short])
        return out

    def _answer(self, state: _TypeState, nonce: str, error: str | None, version: str) -> list[Ack | Nack]:
        status = state.status
        if not nonce or nonce != status.nonce or nonce == state.answered:
            return []  # an initial request, a stale nonce, or one already answered
        state.answered = nonce
        if error is not None:
            status.state, status.nack_message = NACKED, error
            state.held, state.held_names = state.acked
            return [Nack(state.short, nonce, error)]
        status.state, status.nack_message = SYNCED, ""
        status.acked_version = version or status.sent_version
        state.acked = (state.held, state.held_names)
        return [Ack(state.short, status.acked_version, nonce)]

    @staticmethod
    def _drop_unwatched(state: _TypeState) -> None:
        """The client watches nothing of this named type any more (a gateway's last listener went):
        Envoy ignores a response of a type it does not watch, without an ACK, so the one in flight is
        not waited for; the client holds what it last acknowledged."""
        status = state.status
        state.answered = status.nonce
        status.state = SYNCED if status.acked_version else NOT_SENT
        state.held, state.held_names = state.acked

    @staticmethod
    def _updated(state: _TypeState, payload: Payload) -> frozenset[str]:
        """Resources the client holds in another version, which this payload replaces."""
        return frozenset(
            r.name
            for r in payload.resources
            if _held_version(state.held, state.held_names, r.name) not in (None, r.version)
        )

    def _forget_endpoints_of(self, clusters: frozenset[str]) -> None:
        """Envoy warms an updated cluster until it gets that cluster's endpoints again, even unchanged
        ones; so the next EDS push resends them (it follows this CDS push)."""
        eds = self._types.get("eds")
        if not clusters or eds is None or eds.held is None:
            return
        eds.held_names = intern_names(frozenset(_held_names(eds.held, eds.held_names)) - clusters)

    def _subscribe(self, state: _TypeState, names: frozenset[str] | None) -> None:
        """A new subscription; the client forgets what it no longer subscribes to."""
        state.names = names
        if names is not None and state.held is not None:
            state.held_names = names if state.held_names is None else intern_names(state.held_names & names)

    def _push(self, state: _TypeState) -> list[Response]:
        if self.published is None:
            return []
        current = self.published.types[state.short]
        status = state.status
        if status.state == NACKED and current.version == status.sent_version:
            return []  # nothing new since it was rejected
        # Answer even with nothing new when this type was never sent on the stream, or when the
        # rejected version was replaced by one the client already holds (its ACK ends the NACKED state).
        force = not status.nonce or status.state == NACKED
        payload = payload_for(self.delta, state.held, state.held_names, current, state.names, force)
        if payload is None:
            return []
        if payload.nonce in (status.nonce, state.answered):
            payload = payload.renamed()
        if state.short == "cds":
            self._forget_endpoints_of(self._updated(state, payload))
        state.held, state.held_names = current, state.names
        status.state, status.sent_version, status.nonce = STALE, current.version, payload.nonce
        if not self.delta and state.names == frozenset():  # Envoy acknowledges nothing of a type it does not watch
            state.answered, state.acked = payload.nonce, (state.held, state.held_names)
            status.state, status.acked_version = SYNCED, current.version
        return [Response(payload)]
