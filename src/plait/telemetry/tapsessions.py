"""The open tap sessions: which proxies must send events, and which session gets each event.

In: sessions opened and closed (a `Target` and a `TapFilter` each), and events from proxies. Out:
whether a proxy is tapped (`tapped`: what its runtime key ``plait.tap`` must say), which sessions
an event goes to (`recipients`), and a generation number that changes whenever the set of tapped
proxies may have (`generation`), so that the RTDS streams know when to look again. Pure: no I/O;
the control plane (`plait.controlplane.tap`) owns one and the queues behind the session ids.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

from plait.telemetry.tap import TapFilter, Target


@dataclass(frozen=True)
class Session:
    id: int
    target: Target
    filter: TapFilter


class TapSessions:
    def __init__(self) -> None:
        self._sessions: dict[int, Session] = {}
        self._ids = itertools.count(1)
        self.generation = 0

    def open(self, target: Target, tap_filter: TapFilter) -> Session:
        session = Session(next(self._ids), target, tap_filter)
        self._sessions[session.id] = session
        self.generation += 1
        return session

    def close(self, session_id: int) -> None:
        if self._sessions.pop(session_id, None) is not None:
            self.generation += 1

    def __len__(self) -> int:
        return len(self._sessions)

    def tapped(self, pod: str, namespace: str) -> bool:
        """Whether some open session taps the proxy of `pod` in `namespace`."""
        return any(s.target.matches(pod, namespace) for s in self._sessions.values())

    def recipients(self, event: Mapping) -> list[int]:
        """The sessions that tap the event's proxy and whose filter accepts the event."""
        return [
            s.id
            for s in self._sessions.values()
            if s.target.matches(str(event["pod"]), str(event["namespace"])) and s.filter.accepts(event)
        ]
