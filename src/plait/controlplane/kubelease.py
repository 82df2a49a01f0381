"""The I/O shell of leader election: reads and writes the Lease, runs the leader's jobs.

`LeaseElection.run(jobs)` loops until cancelled: every retry period it reads the Lease, asks
`plait.controlplane.leader.Elector` what to write, writes it (create, or replace with the
resourceVersion read, so that of two writers one gets 409 Conflict). While this replica leads,
each job (an ``async`` callable: publish the root certificate, patch webhooks…) runs as a task;
when leadership is lost the jobs are cancelled, and started again if it is won back; a job that
fails is logged and started again a retry period later. Cancelling
`run` cancels the jobs and, with ``release_on_stop``, hands the Lease back at once.

The control plane needs RBAC for ``leases`` in its namespace (get, create, update).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from plait.controlplane.leader import ElectionConfig, Elector, LeaseRecord, Write

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
DEFAULT_LEASE_NAME = "plait-leader"


class LeaseElection:
    """Leader election for `identity` (the pod name, or the host name outside a cluster) over the
    Lease `namespace`/`name`."""

    def __init__(
        self,
        api: client.ApiClient,
        *,
        namespace: str,
        name: str = DEFAULT_LEASE_NAME,
        identity: str,
        config: ElectionConfig | None = None,
        release_on_stop: bool = True,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ):
        self.leases = client.CoordinationV1Api(api)
        self.namespace, self.name, self.release_on_stop = namespace, name, release_on_stop
        self.elector = Elector(identity, config or ElectionConfig())
        self.clock, self.jitter = clock, jitter

    @property
    def leading(self) -> bool:
        return self.elector.leading(self.clock())

    async def run(self, jobs: Sequence[Job] = ()) -> None:
        """Take part in the election until cancelled, running `jobs` while leading."""
        running: list[asyncio.Task] = []
        log.info("leader election: %s takes part for Lease %s/%s", self.elector.identity, self.namespace, self.name)
        try:
            while True:
                await self._attempt()
                now = self.clock()
                if self.elector.leading(now) and not running:
                    log.info(
                        "leader election: %s leads (Lease %s/%s)", self.elector.identity, self.namespace, self.name
                    )
                    running = [
                        asyncio.create_task(self._supervised(job), name=f"leader job {i}") for i, job in enumerate(jobs)
                    ]
                elif not self.elector.leading(now) and running:
                    log.warning(
                        "leader election: %s lost the lease (now held by %r); stopping the leader's jobs",
                        self.elector.identity,
                        self.elector.holder,
                    )
                    await _cancel(running)
                    running = []
                await asyncio.sleep(self.elector.next_attempt_in(now, self.jitter()))
        finally:
            await _cancel(running)
            if self.release_on_stop:
                await asyncio.shield(self._release())

    async def _supervised(self, job: Job) -> None:
        """Run `job`; if it fails, log why and start it again a retry period later."""
        while True:
            try:
                await job()
                return
            except Exception:
                log.exception("leader election: a leader's job failed; starting it again")
                await asyncio.sleep(self.elector.config.retry_period)

    async def _attempt(self) -> None:
        """One read and, when the elector says so, one write; failures only cost time."""
        timeout = self.elector.config.retry_period
        try:
            current = await asyncio.wait_for(self._read(), timeout)
            write = self.elector.on_lease(self.clock(), current)
            if write is not None:
                written = await asyncio.wait_for(self._write(write), timeout)
                self.elector.on_written(self.clock(), written)
        except (ApiException, OSError, TimeoutError) as error:
            if not (isinstance(error, ApiException) and error.status == 409):
                log.warning("leader election: Lease %s/%s: %s", self.namespace, self.name, _describe(error))
            self.elector.on_failed(self.clock())

    async def _read(self) -> LeaseRecord | None:
        try:
            lease = await self.leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return record_of(lease)

    async def _write(self, write: Write) -> LeaseRecord:
        body = lease_body(self.namespace, self.name, write.record)
        if write.record.version is None:
            lease = await self.leases.create_namespaced_lease(self.namespace, body)
        else:
            lease = await self.leases.replace_namespaced_lease(self.name, self.namespace, body)
        return record_of(lease)

    async def _release(self) -> None:
        write = self.elector.release(self.clock())
        if write is None:
            return
        try:
            # as long as a renewal may take: a loaded API server must not keep the Lease from its next holder
            await asyncio.wait_for(self._write(write), self.elector.config.renew_deadline)
            self.elector.on_released()
            log.info("leader election: %s released Lease %s/%s", self.elector.identity, self.namespace, self.name)
        except (ApiException, OSError, TimeoutError) as error:
            log.warning(
                "leader election: could not release Lease %s/%s: %s", self.namespace, self.name, _describe(error)
            )


async def _cancel(tasks: list[asyncio.Task]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _describe(error: BaseException) -> str:
    if isinstance(error, ApiException):
        return f"{error.status} {error.reason}"
    return str(error) or type(error).__name__


# ------------------------------------------------------------------ Lease ↔ LeaseRecord


def _stamp(seconds: float | None) -> str | None:
    """A MicroTime as the API server wants it (RFC 3339, always six fraction digits)."""
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(value: datetime.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def lease_body(namespace: str, name: str, record: LeaseRecord) -> dict:
    """The Lease object to create or replace with `record`."""
    metadata: dict = {"name": name, "namespace": namespace}
    if record.version is not None:
        metadata["resourceVersion"] = record.version
    spec = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.lease_seconds,
        "acquireTime": _stamp(record.acquire_time),
        "renewTime": _stamp(record.renew_time),
        "leaseTransitions": record.transitions,
    }
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {k: v for k, v in spec.items() if v is not None},
    }


def record_of(lease: client.V1Lease) -> LeaseRecord:
    spec = lease.spec or client.V1LeaseSpec()
    return LeaseRecord(
        holder=spec.holder_identity or "",
        lease_seconds=spec.lease_duration_seconds or 0,
        acquire_time=_seconds(spec.acquire_time),
        renew_time=_seconds(spec.renew_time),
        transitions=spec.lease_transitions or 0,
        version=lease.metadata.resource_version,
    )
