"""Leader election over a Kubernetes Lease, without I/O: observations in, decisions out.

Every replica of the control plane serves xDS; one of them, the leader, also does what must be
done once per cluster (the root certificate ConfigMaps, the webhooks' caBundle). The leader is
whoever holds the Lease (``coordination.k8s.io/v1``) named e.g. ``istio-system/plait-leader``.
The rules are client-go's ``leaderelection`` package (which istiod uses):

* Every `retry_period` a replica reads the Lease and asks `Elector.on_lease` what to write.
* A Lease held by someone else is left alone until it has not changed for `lease_duration` as
  seen by *this* replica's clock (`observed_at`): clocks of different machines are never
  compared, only the time since this replica last saw the record change.
* A free, expired or own Lease is written with our identity (`Write`); the API server's
  optimistic concurrency (``resourceVersion``) lets only one of several writers win.
* A leader that fails to renew for `renew_deadline` stops leading (`leading` turns false) and
  starts over as a candidate. As `renew_deadline` < `lease_duration`, an old leader stops
  before anyone else may take over.
* On a graceful stop the leader releases the Lease (`release`): a 1 s lease without holder,
  so a standby takes over at its next retry instead of waiting out the lease.

Times are floats of one clock (seconds): the shell passes ``time.time()``; tests a script.
Nothing here blocks or reads the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

JITTER_FACTOR = 1.2  # client-go: candidates wait retry_period × [1, 1 + 1.2)


@dataclass(frozen=True)
class ElectionConfig:
    """client-go's defaults (kube-controller-manager's too): 15 s lease, 10 s renew deadline, 2 s
    retry. istiod uses 30 s / 15 s / 7.5 s."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("the lease duration must be longer than the renew deadline")
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError(f"the renew deadline must be longer than {JITTER_FACTOR} × the retry period")
        if self.retry_period <= 0:
            raise ValueError("the retry period must be positive")


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec as the election reads and writes it (times as floats of the shell's clock;
    `version` is the object's resourceVersion, None for a Lease not created yet)."""

    holder: str = ""
    lease_seconds: int = 0
    acquire_time: float | None = None
    renew_time: float | None = None
    transitions: int = 0
    version: str | None = None

    def content(self) -> tuple:
        """What a change of the record means: everything but the resourceVersion."""
        return (self.holder, self.lease_seconds, self.acquire_time, self.renew_time, self.transitions)


@dataclass(frozen=True)
class Write:
    """Create (when `record.version` is None) or replace the Lease with `record`."""

    record: LeaseRecord


class Elector:
    """One replica's view of the election. Call `on_lease` with what was read, then `on_written`
    or `on_failed` with what became of the write; `leading(now)` says whether to act as leader."""

    def __init__(self, identity: str, config: ElectionConfig = ElectionConfig()):
        if not identity:
            raise ValueError("a leader election identity must not be empty")
        self.identity, self.config = identity, config
        self.observed: LeaseRecord | None = None  # the last record seen (read or written)
        self.observed_at: float | None = None  # when it last changed, on our clock
        self.renewed_at: float | None = None  # our last successful acquire or renew, while leading

    # ---------------------------------------------------------------- queries

    @property
    def holder(self) -> str:
        """The identity of the last leader observed ('' if none)."""
        return self.observed.holder if self.observed else ""

    def leading(self, now: float) -> bool:
        """Whether this replica may act as leader at `now`: it wrote the Lease less than the renew
        deadline ago."""
        return self.renewed_at is not None and now - self.renewed_at < self.config.renew_deadline

    def next_attempt_in(self, now: float, jitter: float) -> float:
        """Seconds to wait before reading the Lease again; `jitter` in [0, 1) spreads candidates."""
        if self.leading(now):
            return self.config.retry_period
        return self.config.retry_period * (1 + JITTER_FACTOR * jitter)

    # ---------------------------------------------------------------- observations → decisions

    def on_lease(self, now: float, current: LeaseRecord | None) -> Write | None:
        """The Lease as just read (None: it does not exist) → the write to attempt, or None when
        another replica holds an unexpired lease."""
        self._expire(now)
        if current is None:
            return Write(self._ours(now, acquired=now, transitions=0, version=None))
        if self.observed is None or current.content() != self.observed.content():
            self.observed, self.observed_at = current, now
        else:
            self.observed = current  # same record; keep when it last changed, take the new version
        held_by_other = current.holder not in ("", self.identity)
        if held_by_other and now < self.observed_at + self.config.lease_duration:
            return None
        if current.holder == self.identity:  # a renewal (or our own lease from before a restart)
            return Write(
                self._ours(now, acquired=current.acquire_time, transitions=current.transitions, version=current.version)
            )
        return Write(self._ours(now, acquired=now, transitions=current.transitions + 1, version=current.version))

    def on_written(self, now: float, written: LeaseRecord) -> None:
        """The write was accepted; `written` carries the new resourceVersion."""
        self.observed, self.observed_at, self.renewed_at = written, now, now

    def on_failed(self, now: float) -> None:
        """The read or the write failed (conflict, API server away, …): nothing changes but time."""
        self._expire(now)

    def release(self, now: float) -> Write | None:
        """On a graceful stop: the write that hands the lease back, if we lead."""
        if not self.leading(now) or self.observed is None:
            return None
        return Write(
            LeaseRecord(
                holder="",
                lease_seconds=1,
                acquire_time=now,
                renew_time=now,
                transitions=self.observed.transitions,
                version=self.observed.version,
            )
        )

    def on_released(self) -> None:
        self.renewed_at = None

    # ---------------------------------------------------------------- internals

    def _expire(self, now: float) -> None:
        """Past the renew deadline a leader is a candidate again (client-go starts a new elector)."""
        if self.renewed_at is not None and not self.leading(now):
            self.renewed_at = None
            self.observed = self.observed_at = None

    def _ours(self, now: float, *, acquired: float | None, transitions: int, version: str | None) -> LeaseRecord:
        return LeaseRecord(
            holder=self.identity,
            lease_seconds=max(1, int(self.config.lease_duration)),
            acquire_time=acquired,
            renew_time=now,
            transitions=transitions,
            version=version,
        )
