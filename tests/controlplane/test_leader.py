"""The leader election state machine (plait.controlplane.leader) on a scripted clock, against an
in-memory Lease with the API server's optimistic concurrency (a write must carry the
resourceVersion it read)."""

from __future__ import annotations

import pytest

from plait.controlplane.leader import ElectionConfig, Elector, LeaseRecord

CONFIG = ElectionConfig(lease_duration=15, renew_deadline=10, retry_period=2)


class Conflict(Exception):
    pass


class LeaseStore:
    """One Lease object: reads return it, writes succeed only with the current resourceVersion."""

    def __init__(self):
        self.record: LeaseRecord | None = None
        self.versions = 0
        self.reachable = {"a": True, "b": True}

    def write(self, record: LeaseRecord) -> LeaseRecord:
        current = self.record.version if self.record else None
        if record.version != current:
            raise Conflict
        self.versions += 1
        self.record = LeaseRecord(**{**record.__dict__, "version": str(self.versions)})
        return self.record


def attempt(elector: Elector, store: LeaseStore, now: float) -> None:
    """What the shell does every retry period: read, decide, write."""
    if not store.reachable[elector.identity]:
        elector.on_failed(now)
        return
    write = elector.on_lease(now, store.record)
    if write is None:
        return
    try:
        elector.on_written(now, store.write(write.record))
    except Conflict:
        elector.on_failed(now)


def run(
    electors: list[Elector],
    store: LeaseStore,
    start: float,
    end: float,
    step: float = 1.0,
    attempts: dict[str, bool] | None = None,
) -> list[tuple[float, set[str]]]:
    """Each elector attempts every `retry_period` (those with attempts[id] False are crashed);
    returns who considers itself leader at each step."""
    timeline, t = [], start
    while t <= end:
        for e in electors:
            if (attempts or {}).get(e.identity, True) and (t - start) % CONFIG.retry_period == 0:
                attempt(e, store, t)
        timeline.append((t, {e.identity for e in electors if e.leading(t)}))
        t += step
    return timeline


def test_the_first_candidate_creates_the_lease_and_leads():
    store, a = LeaseStore(), Elector("a", CONFIG)
    attempt(a, store, 100.0)
    assert a.leading(100.0) and a.holder == "a"
    assert store.record.holder == "a" and store.record.lease_seconds == 15
    assert store.record.acquire_time == store.record.renew_time == 100.0 and store.record.transitions == 0


def test_a_leader_that_renews_keeps_the_lease_and_the_other_waits():
    store, a, b = LeaseStore(), Elector("a", CONFIG), Elector("b", CONFIG)
    timeline = run([a, b], store, 0, 120)
    assert all(leaders == {"a"} for _, leaders in timeline)
    assert store.record.holder == "a" and store.record.acquire_time == 0 and store.record.renew_time == 120
    assert store.record.transitions == 0 and b.holder == "a"


def test_a_crashed_leader_is_replaced_once_the_lease_expires_on_the_standbys_clock():
    store, a, b = LeaseStore(), Elector("a", CONFIG), Elector("b", CONFIG)
    run([a, b], store, 0, 20)
    # a stops at 20 (its last renewal); b last saw the record change at 20, so it waits until 35
    timeline = run([a, b], store, 22, 60, attempts={"a": False})
    leaders_at = dict(timeline)
    assert leaders_at[30] == set() and leaders_at[34] == set()  # a's deadline passed at 30; b must wait
    assert leaders_at[36] == {"b"}  # b's first attempt at or after 35
    assert store.record.holder == "b" and store.record.transitions == 1 and store.record.acquire_time == 36
    assert all(len(leaders) <= 1 for _, leaders in timeline)


def test_a_partitioned_leader_stops_leading_before_anyone_takes_over():
    store, a, b = LeaseStore(), Elector("a", CONFIG), Elector("b", CONFIG)
    run([a, b], store, 0, 10)
    store.reachable["a"] = False  # a still runs but cannot reach the API server
    timeline = run([a, b], store, 12, 60)
    first_b = min(t for t, leaders in timeline if "b" in leaders)
    last_a = max(t for t, leaders in timeline if "a" in leaders)
    assert last_a < 20 <= 25 <= first_b  # a: renewed at 10, deadline 20; b: saw a change at 10, waits to 25
    assert all(len(leaders) <= 1 for _, leaders in timeline)
    store.reachable["a"] = True
    timeline = run([a, b], store, 62, 120)
    assert all(leaders == {"b"} for _, leaders in timeline) and a.holder == "b"


def test_of_two_candidates_writing_at_once_only_one_wins():
    store, a, b = LeaseStore(), Elector("a", CONFIG), Elector("b", CONFIG)
    write_a, write_b = a.on_lease(0, store.record), b.on_lease(0, store.record)
    a.on_written(0, store.write(write_a.record))
    with pytest.raises(Conflict):
        store.write(write_b.record)
    b.on_failed(0)
    assert a.leading(0) and not b.leading(0)
    timeline = run([a, b], store, 2, 40)
    assert all(leaders == {"a"} for _, leaders in timeline)


def test_a_released_lease_is_taken_at_the_next_attempt():
    store, a, b = LeaseStore(), Elector("a", CONFIG), Elector("b", CONFIG)
    run([a, b], store, 0, 10)
    release = a.release(11)
    store.write(release.record)
    a.on_released()
    assert store.record.holder == "" and store.record.lease_seconds == 1 and not a.leading(11)
    attempt(b, store, 12)
    assert b.leading(12) and store.record.holder == "b" and store.record.transitions == 1


def test_release_is_nothing_when_not_leading():
    store, a, b = LeaseStore(), Elector("a", CONFIG), Elector("b", CONFIG)
    run([a, b], store, 0, 4)
    assert b.release(5) is None


def test_a_restarted_replica_with_the_same_identity_takes_its_own_lease_back_at_once():
    store, a = LeaseStore(), Elector("a", CONFIG)
    run([a], store, 0, 10)
    again = Elector("a", CONFIG)  # the same pod name after a container restart
    attempt(again, store, 11)
    assert again.leading(11) and store.record.acquire_time == 0 and store.record.transitions == 0


def test_a_deposed_leader_waits_a_whole_lease_before_retaking_it():
    store, a, b = LeaseStore(), Elector("a", CONFIG), Elector("b", CONFIG)
    run([a, b], store, 0, 10)
    store.reachable["a"] = False
    run([a, b], store, 12, 40)
    assert b.leading(40) and not a.leading(40)
    store.reachable["a"] = True
    b_crashed = run([a, b], store, 42, 80, attempts={"b": False})
    first_a = min(t for t, leaders in b_crashed if "a" in leaders)
    assert first_a >= 40 + CONFIG.lease_duration  # b last renewed at 40


def test_waits_between_attempts():
    a = Elector("a", CONFIG)
    assert a.next_attempt_in(0, jitter=0.5) == pytest.approx(2 * 1.6)  # candidates are spread
    a.on_written(0, LeaseRecord(holder="a", version="1"))
    assert a.next_attempt_in(1, jitter=0.5) == 2  # the leader renews every retry period


@pytest.mark.parametrize(
    ("lease", "deadline", "retry", "message"),
    [
        (10, 10, 2, "lease duration must be longer"),
        (15, 2, 2, "renew deadline must be longer"),
    ],
)
def test_inconsistent_timings_are_refused(lease, deadline, retry, message):
    with pytest.raises(ValueError, match=message):
        ElectionConfig(lease_duration=lease, renew_deadline=deadline, retry_period=retry)
