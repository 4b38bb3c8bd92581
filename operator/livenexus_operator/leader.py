"""Leader election on a coordination.k8s.io/v1 Lease, the same protocol client-go's leaderelection uses.

Why not kopf's peering: it pauses *every* operator that sees a peer of equal priority (so two
replicas of one Deployment would both stop), and its pause is only as quick as its watch, so both may
act for a moment at startup. A Lease is written with optimistic concurrency (resourceVersion): at
most one replica can win a given round, and a leader that cannot renew within ``renew_deadline``
stops itself before anyone else may take over (``lease_duration`` > ``renew_deadline``).

Expiry is judged by *local* time since we last saw the record change, not by the renewTime written
by another machine, so clock skew between nodes cannot make a live leader look dead.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from livenexus_common.cli import sleep_or_stop
from livenexus_operator import kube

log = logging.getLogger(__name__)


def _micro_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaseElector:
    """Acquire and keep one Lease; :meth:`run_as_leader` wraps a coroutine in that."""

    namespace: str
    """Namespace of the Lease."""
    name: str
    """Name of the Lease."""
    identity: str
    """This replica's holderIdentity (unique per pod)."""
    lease_duration_s: int = 15
    """How long others wait after the last observed renewal before taking over."""
    renew_deadline_s: float = 10.0
    """A leader that failed to renew for this long gives up leadership."""
    retry_period_s: float = 2.0
    """Time between acquire/renew attempts."""
    _observed: tuple[str, str] | None = field(default=None, repr=False)
    """(holder, renewTime) as last seen, to detect a stale record."""
    _observed_at: float = field(default=0.0, repr=False)
    """Monotonic time of the last change of :attr:`_observed`."""
    _renewed_at: float | None = field(default=None, repr=False)
    """Monotonic time of our last successful acquire/renew write; None while we do not hold the Lease."""

    def __post_init__(self) -> None:
        if self.renew_deadline_s >= self.lease_duration_s:
            raise ValueError("renew_deadline_s must be shorter than lease_duration_s")

    @property
    def _path(self) -> str:
        return kube.object_path("coordination.k8s.io/v1", "Lease", self.namespace, self.name)

    async def try_acquire_or_renew(self) -> bool:
        """One round: True when we hold the Lease afterwards."""
        now = _micro_time()
        try:
            lease = await kube.get("coordination.k8s.io/v1", "Lease", self.namespace, self.name)
        except kube.NotFound:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._spec(now, now, 0),
            }
            try:
                await kube.request("POST", self._path.rsplit("/", 1)[0], body=body)
            except kube.Conflict:
                return False
            self._remember(self.identity, now)
            self._renewed_at = time.monotonic()
            return True

        spec: dict[str, Any] = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        renewed = str(spec.get("renewTime") or "")
        self._remember(holder, renewed)
        ours = holder == self.identity
        expired = time.monotonic() - self._observed_at > float(
            spec.get("leaseDurationSeconds") or self.lease_duration_s
        )
        if holder and not ours and not expired:
            self._renewed_at = None
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        acquired = str(spec.get("acquireTime") or now) if ours else now
        lease["spec"] = self._spec(acquired, now, transitions)
        try:
            # PUT carries metadata.resourceVersion: if anyone wrote the Lease since our GET, we get 409.
            await kube.request("PUT", self._path, body=lease)
        except kube.Conflict:
            return False
        self._remember(self.identity, now)
        self._renewed_at = time.monotonic()
        if not ours:
            log.info(
                "acquired lease %s/%s (previous holder: %s)", self.namespace, self.name, holder or "none"
            )
        return True

    def holds(self) -> bool:
        """True while our last successful renewal is younger than ``renew_deadline_s``.

        Others may take over only ``lease_duration_s`` after the last renewal they saw, which is later than
        this deadline, so a replica that passes this check is still the only leader (clocks are local).
        """
        at = self._renewed_at
        return at is not None and time.monotonic() - at < self.renew_deadline_s

    def _spec(self, acquired: str, renewed: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_duration_s,
            "acquireTime": acquired,
            "renewTime": renewed,
            "leaseTransitions": transitions,
        }

    def _remember(self, holder: str, renewed: str) -> None:
        if self._observed != (holder, renewed):
            self._observed = (holder, renewed)
            self._observed_at = time.monotonic()

    async def acquire(self, stop: asyncio.Event | None = None) -> bool:
        """Block until we lead (True) or ``stop`` is set (False)."""
        while stop is None or not stop.is_set():
            try:
                if await self.try_acquire_or_renew():
                    return True
            except Exception as exc:  # API hiccups must not kill a standby replica
                log.warning("lease %s/%s: acquire attempt failed: %s", self.namespace, self.name, exc)
            await sleep_or_stop(stop, self.retry_period_s)
        return False

    async def keep(self, stop: asyncio.Event | None = None) -> None:
        """Renew until ``stop`` is set (returns) or renewal fails past the deadline (raises LostLease)."""
        last_ok = time.monotonic()
        while stop is None or not stop.is_set():
            if await sleep_or_stop(stop, self.retry_period_s):
                return
            try:
                ok = await asyncio.wait_for(self.try_acquire_or_renew(), timeout=self.renew_deadline_s)
            except Exception as exc:
                log.warning("lease %s/%s: renewal failed: %s", self.namespace, self.name, exc)
                ok = False
            if ok:
                last_ok = time.monotonic()
            elif time.monotonic() - last_ok > self.renew_deadline_s:
                self._renewed_at = None
                raise LostLease(
                    f"could not renew lease {self.namespace}/{self.name} for {self.renew_deadline_s}s"
                )
            else:
                # Someone else holds it now (only possible after our deadline passed unseen): stop at once.
                current = self._observed[0] if self._observed else ""
                if current and current != self.identity:
                    self._renewed_at = None
                    raise LostLease(f"lease {self.namespace}/{self.name} is now held by {current}")

    async def release(self) -> None:
        """Hand the Lease over at once (as client-go's ReleaseOnCancel) instead of letting it expire."""
        try:
            lease = await kube.get("coordination.k8s.io/v1", "Lease", self.namespace, self.name)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec.update({"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _micro_time()})
            lease["spec"] = spec
            self._renewed_at = None  # from here on another replica may lead: no more writes from us
            await kube.request("PUT", self._path, body=lease)
            log.info("released lease %s/%s", self.namespace, self.name)
        except Exception as exc:
            log.warning("lease %s/%s: release failed (it will expire): %s", self.namespace, self.name, exc)


class LostLease(RuntimeError):
    """Leadership was lost; the process must stop reconciling."""


class NotLeader(RuntimeError):
    """A write was refused because this replica cannot prove it still holds the Lease."""


@dataclass
class WriteFence:
    """The gate every status write of the operator passes (handlers and refresher alike).

    Leadership ends on a timer inside :meth:`LeaseElector.keep`, but a reconcile that began before may still
    be running; without this gate its write could land after a new leader's, undoing it.
    """

    elector: LeaseElector | None = None
    """The Lease we act under; None when leader election is off (one replica), then writes are never fenced."""

    def check(self) -> None:
        """Raise :class:`NotLeader` unless this replica holds the Lease right now."""
        if self.elector is not None and not self.elector.holds():
            raise NotLeader(
                f"not writing: this replica ({self.elector.identity}) no longer holds lease "
                f"{self.elector.namespace}/{self.elector.name}"
            )


FENCE = WriteFence()
"""The process-wide fence; ``main.run`` points it at its elector."""
