"""The scheduler: enqueues incremental polls, pushes, the inbox sweep and the leak scan on intervals.

It only *sends messages*; workers do the work. Every ``settings.poll_interval_seconds`` it sends
``poll_source(source, stream)`` for each stream of each enabled source and a safety-net
``push_target(target)`` (outbox items whose retry time came while nothing else scheduled a push),
including ``push_target("alert")`` when an alert webhook is configured;
every :data:`SWEEP_INTERVAL_SECONDS` (or the poll interval, if shorter) ``sweep_inbox_job``; every
``settings.leak_scan_interval_seconds`` ``scan_leaks_job``. On a Redis broker, every
:data:`QUEUE_WATCH_SECONDS` it checks that the broker still holds its queue
(:class:`~sync_worker.broker.QueueLossWatch`); when Redis lost it, it sends
``sweep_inbox_job(enqueued_before)`` at once, so what the loss took is re-sent within seconds.
All jobs are due at once when a scheduler takes the lead.

Two schedulers started by mistake must not double the work: the loop runs only while it holds a
Redis lease lock (:class:`~sync_worker.locks.RedisLock`, ``SET NX PX`` + token, renewed every
third of its TTL). The other waits as a standby, trying to take the lock; when the leader dies
its lease expires and the standby takes over within ``ttl`` + one poll. A leader that fails to
renew (lease lost) steps down at once. https://redis.io/docs/latest/commands/set/ and
https://redis.io/docs/latest/develop/use/patterns/distributed-locks/

The loop is testable: :meth:`Scheduler.run_once` takes "now" (monotonic seconds) and returns the
jobs it sent; :meth:`Scheduler.run` takes a stop event, and the clock and sleep are injectable.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from sync_worker.actors import poll_source, prepare_targets_job, push_target, scan_leaks_job, sweep_inbox_job
from sync_worker.broker import QueueLossWatch, enqueue_errors
from sync_worker.engine.fullpull import full_streams
from sync_worker.errors import TransientError
from sync_worker.leaks.alerts import ALERT_TARGET
from sync_worker.settings import Settings

__all__ = [
    "QUEUE_WATCH_SECONDS",
    "SWEEP_INTERVAL_SECONDS",
    "Job",
    "LeaseLock",
    "Scheduler",
    "queue_loss_job",
    "scheduled_jobs",
]

_log = logging.getLogger(__name__)

SWEEP_INTERVAL_SECONDS: Final = 60.0
QUEUE_WATCH_SECONDS: Final = 5.0
_SEND_RETRY_SECONDS: Final = 5.0


class LeaseLock(Protocol):
    """What the scheduler needs of :class:`~sync_worker.locks.RedisLock`."""

    def acquire(self, blocking: bool = False, timeout: float | None = None) -> bool: ...

    def renew(self) -> None: ...

    def release(self) -> bool: ...


@dataclass(frozen=True)
class Job:
    """Send one message every ``interval`` seconds, the first ``first_after`` seconds after start."""

    name: str
    interval: float
    send: Callable[[], object]
    first_after: float = 0.0

    def __post_init__(self) -> None:
        if self.interval <= 0:
            raise ValueError(f"job {self.name}: interval must be > 0 seconds")


def queue_loss_job(watch: QueueLossWatch, send: Callable[[str], object] | None = None) -> Job:
    """Every :data:`QUEUE_WATCH_SECONDS`: when the broker lost its queue, send the sweep that re-sends
    what it held (``send(enqueued_before)``, default ``sweep_inbox_job.send``), then mark the queue
    anew. A send that fails leaves the marker missing, so the next check sends it again."""
    sweep = sweep_inbox_job.send if send is None else send

    def check() -> None:
        before = watch.lost_before()
        if before is None:
            return
        _log.warning(
            "broker lost its queue (marker gone): re-sending every unprocessed event enqueued before %s",
            before.isoformat(),
        )
        sweep(before.isoformat())
        watch.mark()

    return Job("watch_queue", QUEUE_WATCH_SECONDS, check)


def scheduled_jobs(
    settings: Settings,
    streams: Mapping[str, Sequence[str]],
    *,
    push_targets: Sequence[str] | None = None,
    queue_watch: QueueLossWatch | None = None,
) -> list[Job]:
    """The jobs of a scheduler: polls per source and stream, a periodic full pull of each CRM's
    deals (so deals that vanished are flagged "dropped"), pushes, the inbox sweep, the leak scan.

    ``streams`` maps each enabled source to its polled streams
    (:func:`sync_worker.runtime.enabled_streams`); ``push_targets`` default to those sources;
    ``queue_watch`` (a Redis broker's) adds :func:`queue_loss_job`.
    When ``settings.alerts.webhook_url`` is set, ``"alert"`` is pushed too (leak alerts whose retry
    time came).
    """
    poll = settings.poll_interval_seconds
    jobs = [
        Job(f"poll:{source}:{stream}", poll, functools.partial(poll_source.send, source, stream))
        for source, names in streams.items()
        for stream in names
    ]
    jobs += [
        Job(
            f"full:{source}:{stream}",
            settings.full_pull_interval_seconds,
            functools.partial(poll_source.send, source, stream, True),
            first_after=settings.full_pull_interval_seconds,  # the first incremental poll reads everything
        )
        for source, stream in full_streams(streams).items()
    ]
    targets = list(streams) if push_targets is None else list(push_targets)
    if settings.alerts.webhook_url is not None and ALERT_TARGET not in targets:
        targets.append(ALERT_TARGET)
    jobs += [Job(f"push:{target}", poll, functools.partial(push_target.send, target)) for target in targets]
    # Once a day, and first thing: the custom fields the service writes exist in the targets.
    jobs.append(Job("prepare_targets", 86400.0, prepare_targets_job.send))
    jobs.append(Job("sweep_inbox", min(SWEEP_INTERVAL_SECONDS, poll), sweep_inbox_job.send))
    jobs.append(Job("scan_leaks", settings.leak_scan_interval_seconds, scan_leaks_job.send))
    if queue_watch is not None:
        jobs.append(queue_loss_job(queue_watch))
    return jobs


class Scheduler:
    """Sends each :class:`Job` on its interval while holding ``lock`` (None: always leads).

    ``clock`` is monotonic seconds; ``sleep`` None waits on the stop event (so :meth:`stop` is
    immediate). ``tick`` is how often due jobs are checked; ``standby_poll`` how often a standby
    tries to take the lock; ``renew_every`` how often the leader renews its lease (a third of the
    lock's TTL).
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        *,
        lock: LeaseLock | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        tick: float = 1.0,
        standby_poll: float = 2.0,
        renew_every: float = 10.0,
        name: str = "scheduler",
    ) -> None:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError("job names must be unique")
        self.jobs = tuple(jobs)
        self.name = name
        self._lock = lock
        self._clock = clock
        self._sleep = sleep
        self._tick = tick
        self._standby_poll = standby_poll
        self._renew_every = renew_every
        self._next: dict[str, float] = {}
        self._stop = threading.Event()
        self.leading = False

    def __repr__(self) -> str:
        return f"Scheduler({self.name!r}, jobs={len(self.jobs)}, leading={self.leading})"

    def run_once(self, now: float) -> list[str]:
        """Send every job due at ``now``; the names sent. A send the broker refuses is retried soon."""
        sent: list[str] = []
        refused: tuple[type[BaseException], ...] = (TransientError, *enqueue_errors())
        for job in self.jobs:
            if self._next.setdefault(job.name, now + job.first_after) > now:
                continue
            try:
                job.send()
            except refused as exc:
                _log.warning("scheduler: could not send %s (%s); retrying", job.name, type(exc).__name__)
                self._next[job.name] = now + min(job.interval, _SEND_RETRY_SECONDS)
                continue
            self._next[job.name] = now + job.interval
            sent.append(job.name)
        return sent

    def stop(self) -> None:
        """Ask :meth:`run` to return (from a signal handler or another thread)."""
        self._stop.set()

    def _pause(self, seconds: float) -> None:
        if self._sleep is None:
            self._stop.wait(seconds)
        else:
            self._sleep(seconds)

    def _try_lead(self) -> bool:
        if self._lock is None:
            return True
        try:
            return self._lock.acquire(blocking=False)
        except TransientError as exc:
            _log.warning("scheduler %s: lock unavailable (%s)", self.name, exc)
            return False

    def _keep_lead(self) -> bool:
        if self._lock is None:
            return True
        try:
            self._lock.renew()
        except TransientError as exc:
            _log.warning("scheduler %s: stepping down (%s)", self.name, exc)
            return False
        return True

    def run(self, stop: threading.Event | None = None) -> None:
        """Lead or stand by until ``stop`` (or :meth:`stop`) is set; releases the lock on the way out."""
        if stop is not None:
            self._stop = stop
        renewed = 0.0
        try:
            while not self._stop.is_set():
                now = self._clock()
                if not self.leading:
                    if not self._try_lead():
                        self._pause(self._standby_poll)
                        continue
                    self.leading, renewed = True, now
                    self._next.clear()  # a new leader runs everything now
                    _log.info("scheduler %s: leading (%d jobs)", self.name, len(self.jobs))
                elif now - renewed >= self._renew_every:
                    if not self._keep_lead():
                        self.leading = False
                        continue
                    renewed = now
                self.run_once(now)
                self._pause(self._tick)
        finally:
            if self.leading and self._lock is not None:
                try:
                    self._lock.release()
                except TransientError as exc:
                    _log.warning("scheduler %s: could not release the lock (%s)", self.name, exc)
            self.leading = False
