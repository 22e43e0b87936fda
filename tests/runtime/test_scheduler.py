"""The scheduler: intervals on an injected clock, and the Redis lease lock (two schedulers, one leads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis
from dramatiq.brokers.stub import StubBroker

from sync_worker.broker import QUEUE_MARKER_KEY, QueueLossWatch, queue_loss_watch
from sync_worker.errors import TransientError
from sync_worker.locks import RedisLock
from sync_worker.scheduler import QUEUE_WATCH_SECONDS, Job, Scheduler, queue_loss_job, scheduled_jobs
from sync_worker.settings import Settings
from tests.runtime.conftest import EnqueueLog


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def job(self, who: str, name: str, interval: float) -> Job:
        def send() -> None:
            with self._lock:
                self.sent.append((who, name))

        return Job(name, interval, send)

    def by(self, who: str) -> list[str]:
        with self._lock:
            return [name for sender, name in self.sent if sender == who]


def test_run_once_sends_each_job_on_its_interval() -> None:
    rec = Recorder()
    scheduler = Scheduler([rec.job("s", "poll", 10.0), rec.job("scan", "scan", 60.0)])
    assert scheduler.run_once(100.0) == ["poll", "scan"]  # everything is due at the start
    assert scheduler.run_once(105.0) == []
    assert scheduler.run_once(110.0) == ["poll"]
    assert scheduler.run_once(115.0) == []
    assert scheduler.run_once(159.9) == ["poll"]  # late tick: sent once, not once per missed interval
    assert scheduler.run_once(165.0) == ["scan"]


def test_a_refused_send_is_retried_soon_not_after_a_whole_interval() -> None:
    calls: list[float] = []
    down = [True]

    def send() -> None:
        calls.append(1)
        if down[0]:
            raise redis.ConnectionError("Connection refused")

    scheduler = Scheduler([Job("scan", 3600.0, send)])
    assert scheduler.run_once(0.0) == []
    down[0] = False
    assert scheduler.run_once(4.0) == []
    assert scheduler.run_once(5.0) == ["scan"]
    assert scheduler.run_once(600.0) == []


def test_scheduled_jobs_cover_streams_pushes_sweep_and_scan(
    stub_broker: StubBroker, enqueue_log: EnqueueLog
) -> None:
    settings = Settings(
        poll_interval_seconds=30, leak_scan_interval_seconds=900, full_pull_interval_seconds=3600
    )
    jobs = scheduled_jobs(settings, {"hubspot": ("deals", "deals_archived"), "pipedrive": ("deals",)})
    assert {job.name: job.interval for job in jobs} == {
        "full:hubspot:deals": 3600,
        "full:pipedrive:deals": 3600,
        "poll:hubspot:deals": 30,
        "poll:hubspot:deals_archived": 30,
        "poll:pipedrive:deals": 30,
        "push:hubspot": 30,
        "push:pipedrive": 30,
        "sweep_inbox": 30,
        "scan_leaks": 900,
        "prepare_targets": 86400,
    }
    Scheduler(jobs).run_once(0.0)
    sent = sorted((name, args) for name, args, _ in enqueue_log.sent)
    assert sent == [
        ("poll_source", ("hubspot", "deals")),
        ("poll_source", ("hubspot", "deals_archived")),
        ("poll_source", ("pipedrive", "deals")),
        ("prepare_targets_job", ()),
        ("push_target", ("hubspot",)),
        ("push_target", ("pipedrive",)),
        ("scan_leaks_job", ()),
        ("sweep_inbox_job", ()),
    ]
    # The full pulls wait one interval (the first incremental poll reads everything anyway)
    scheduler = Scheduler(jobs)
    scheduler.run_once(0.0)
    enqueue_log.sent.clear()
    assert "full:hubspot:deals" not in scheduler.run_once(1800.0)
    assert {"full:hubspot:deals", "full:pipedrive:deals"} <= set(scheduler.run_once(3600.0))
    fulls = sorted((name, args) for name, args, _ in enqueue_log.sent if args[-1:] == (True,))
    assert fulls == [
        ("poll_source", ("hubspot", "deals", True)),
        ("poll_source", ("pipedrive", "deals", True)),
    ]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


class CrashableLock(RedisLock):
    """A RedisLock whose owner can 'die': it stops renewing and never releases."""

    dead = False

    def renew(self) -> None:
        if self.dead:
            raise TransientError("process died")
        super().renew()

    def release(self) -> bool:
        return False if self.dead else super().release()


@pytest.mark.redis
def test_two_schedulers_one_enqueues_and_the_standby_takes_over(redis_client: redis.Redis) -> None:
    rec = Recorder()
    locks = {who: CrashableLock(redis_client, "scheduler", ttl=0.6) for who in ("a", "b")}
    schedulers = {
        who: Scheduler(
            [rec.job(who, "poll", 0.1)],
            lock=locks[who],
            tick=0.02,
            standby_poll=0.05,
            renew_every=0.2,
            name=who,
        )
        for who in ("a", "b")
    }
    stops = {who: threading.Event() for who in schedulers}
    threads = {
        who: threading.Thread(target=scheduler.run, args=(stops[who],), daemon=True)
        for who, scheduler in schedulers.items()
    }
    # Given two schedulers started at the same time
    for thread in threads.values():
        thread.start()
    try:
        wait_for(lambda: len(rec.sent) >= 8)
        # Then only one of them enqueues
        leader = "a" if rec.by("a") else "b"
        standby = "b" if leader == "a" else "a"
        assert rec.by(standby) == []
        assert schedulers[leader].leading and not schedulers[standby].leading
        # When the leader dies without releasing the lock
        locks[leader].dead = True
        stops[leader].set()
        threads[leader].join(5)
        died_at = time.monotonic()
        # Then the standby takes over once the lease expires, and enqueues from then on
        wait_for(lambda: len(rec.by(standby)) >= 3)
        assert time.monotonic() - died_at < 3.0
        assert schedulers[standby].leading
    finally:
        for stop in stops.values():
            stop.set()
        for thread in threads.values():
            thread.join(5)
    # And a clean stop releases the lock
    assert redis_client.get(locks["a"].key) is None


class FakeClock:
    def __init__(self) -> None:
        self.wall = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds


@pytest.mark.redis
def test_queue_loss_watch_tells_when_the_broker_lost_its_queue(redis_client: redis.Redis) -> None:
    clock = FakeClock()
    watch = QueueLossWatch(redis_client, clock=lambda: clock.wall, monotonic=lambda: clock.mono)
    uptime = float(redis_client.info("server")["uptime_in_seconds"])
    # Given a Redis this watch never saw marked: anything enqueued before Redis started is suspect
    before = watch.lost_before()
    assert before is not None
    assert abs((clock.wall - before).total_seconds() - (uptime - 2.0)) <= 2.0
    # When the marker is set, nothing is lost, check after check
    watch.mark()
    clock.advance(5)
    assert watch.lost_before() is None
    clock.advance(5)
    assert watch.lost_before() is None
    # When the data vanishes while Redis keeps running (FLUSHDB), everything until now is suspect
    redis_client.flushdb()
    clock.advance(5)
    assert watch.lost_before() == clock.wall


@pytest.mark.redis
def test_queue_loss_job_sends_one_sweep_per_loss_and_retries_a_failed_send(redis_client: redis.Redis) -> None:
    watch = QueueLossWatch(redis_client)
    sent: list[datetime] = []
    failing = [True]

    def send(before: str) -> None:
        if failing[0]:
            raise redis.ConnectionError("broker down")
        sent.append(datetime.fromisoformat(before))

    scheduler = Scheduler([queue_loss_job(watch, send)])
    # Given a lost queue and a send the broker refuses: the marker stays unset, the job is retried
    assert scheduler.run_once(0.0) == []
    assert redis_client.exists(QUEUE_MARKER_KEY) == 0
    # When the broker takes it: one sweep, and the queue is marked
    failing[0] = False
    assert scheduler.run_once(QUEUE_WATCH_SECONDS) == ["watch_queue"]
    assert len(sent) == 1 and redis_client.exists(QUEUE_MARKER_KEY) == 1
    # And no further sweep while the marker stays
    scheduler.run_once(2 * QUEUE_WATCH_SECONDS)
    scheduler.run_once(3 * QUEUE_WATCH_SECONDS)
    assert len(sent) == 1
    # Until the queue is lost again
    redis_client.flushdb()
    scheduler.run_once(4 * QUEUE_WATCH_SECONDS)
    assert len(sent) == 2 and sent[1] >= sent[0]


def test_scheduled_jobs_watch_the_queue_only_on_a_redis_broker(stub_broker: StubBroker) -> None:
    settings = Settings()
    assert queue_loss_watch(stub_broker) is None
    names = {job.name for job in scheduled_jobs(settings, {"hubspot": ("deals",)})}
    assert "watch_queue" not in names
    watch = QueueLossWatch(redis.Redis())
    jobs = {job.name: job for job in scheduled_jobs(settings, {"hubspot": ("deals",)}, queue_watch=watch)}
    assert jobs["watch_queue"].interval == QUEUE_WATCH_SECONDS
