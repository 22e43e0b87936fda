"""Actors on Dramatiq's stub broker: retries, dead letters, replay, push coalescing.

The logic runs on the production middleware (with millisecond back-offs) and a real SQLite store;
the sync service is a small fake whose failures the tests script.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from sync_worker.actors import (
    LocalPushGuard,
    configure_actors,
    poll_source,
    process_inbox_event,
    push_target,
    reapply_held_job,
    replay_dead_letter,
)
from sync_worker.engine.held import HeldReapply
from sync_worker.engine.model import DeadItem, PullStats, PushStats
from sync_worker.errors import PermanentError, TransientError
from sync_worker.runtime import RuntimeMiddleware
from sync_worker.settings import Settings
from sync_worker.store import SyncStore
from tests.runtime.conftest import REDIS_URL, EnqueueLog


@dataclass
class FakeService:
    """Counts calls; ``failures`` are raised one per call, in order, before calls succeed."""

    failures: list[Exception] = field(default_factory=list)
    handled: list[int] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)
    polls: list[tuple[str, str, bool]] = field(default_factory=list)
    poll_enqueued: int = 0
    push_results: list[PushStats] = field(default_factory=list)
    pushes: list[str] = field(default_factory=list)
    reapplied: HeldReapply = field(
        default_factory=lambda: HeldReapply(
            held=0, reapplied=0, still_held=0, enqueued=0, targets=frozenset()
        )
    )

    def _maybe_fail(self, method: str) -> None:
        self.attempts[method] += 1
        if self.failures:
            raise self.failures.pop(0)

    def handle_inbox_event(self, inbox_id: int) -> None:
        self._maybe_fail("inbox")
        self.handled.append(inbox_id)

    def poll(
        self, source: str, stream: str, *, full: bool = False, progress: Callable[[int], None] | None = None
    ) -> PullStats:
        self._maybe_fail("poll")
        self.polls.append((source, stream, full))
        return PullStats(source=source, stream=stream, records=3, enqueued=self.poll_enqueued)

    def push(self, target: str, *, limit: int = 500) -> PushStats:
        self._maybe_fail("push")
        self.pushes.append(target)
        return self.push_results.pop(0) if self.push_results else PushStats(target=target)

    def reapply_held(self) -> HeldReapply:
        self._maybe_fail("reapply")
        return self.reapplied


@pytest.fixture
def service(store: SyncStore, stub_broker: StubBroker) -> FakeService:
    fake = FakeService()
    configure_actors(
        store,
        service=fake,
        push_targets=("hubspot", "pipedrive"),
        push_window=timedelta(milliseconds=100),
        push_guard=LocalPushGuard(),
    )
    return fake


@pytest.fixture
def worker(stub_broker: StubBroker) -> Iterator[dramatiq.Worker]:
    running = dramatiq.Worker(stub_broker, worker_threads=1, worker_timeout=50)
    running.start()
    yield running
    running.stop()


def drain(broker: StubBroker, worker: dramatiq.Worker) -> None:
    """Until every queue is empty. Several passes: a job may send into a queue already joined
    (the leak scan on "maintenance" schedules a delayed push on "push")."""
    for _ in range(3):
        for queue in ("inbox", "poll", "push", "maintenance"):
            if queue in broker.queues:
                broker.join(queue, timeout=10_000, fail_fast=False)
        worker.join()


def test_transient_errors_are_retried_until_the_call_succeeds(
    service: FakeService, stub_broker: StubBroker, worker: dramatiq.Worker, store: SyncStore
) -> None:
    # Given a service that fails twice with a transient error
    service.failures = [TransientError("503 from the API"), TransientError("timeout")]
    # When one inbox message is processed
    process_inbox_event.send(41)
    drain(stub_broker, worker)
    # Then it was retried and applied once, and nothing was dead-lettered
    assert service.attempts["inbox"] == 3
    assert service.handled == [41]
    assert store.list_dead_letters() == []


def test_retry_after_is_honoured(
    service: FakeService, stub_broker: StubBroker, worker: dramatiq.Worker, enqueue_log: EnqueueLog
) -> None:
    service.failures = [TransientError("429", retry_after=0.3, status=429)]
    process_inbox_event.send(5)
    drain(stub_broker, worker)
    delays = [delay for _, args, delay in enqueue_log.named("process_inbox_event") if delay is not None]
    # the back-off alone would be at most 40 ms; the provider asked for 300 ms
    assert delays and delays[0] >= 300
    assert service.handled == [5]


def test_permanent_error_goes_straight_to_dead_letters_and_replays_once_fixed(
    service: FakeService, stub_broker: StubBroker, worker: dramatiq.Worker, store: SyncStore
) -> None:
    # Given a poll that fails permanently
    service.failures = [PermanentError("hubspot: unknown stream 'dealz'", status=400)]
    poll_source.send("hubspot", "dealz", full=True)
    drain(stub_broker, worker)
    # Then it ran once (no retry) and landed in the dead letters with its reason and arguments
    assert service.attempts["poll"] == 1
    (dead,) = store.list_dead_letters()
    assert dead.actor == "poll_source" and dead.queue == "poll"
    assert dead.payload["args"] == ["hubspot", "dealz"]
    assert dead.payload["kwargs"] == {"full": True}
    assert dead.reason.startswith("not retryable: PermanentError: hubspot: unknown stream")
    assert dead.error_class == "PermanentError"
    # When the cause is fixed and the dead letter replayed
    replay_dead_letter(store, stub_broker, dead.id)
    drain(stub_broker, worker)
    # Then the original call succeeds with the original arguments, and the letter is marked replayed
    assert service.polls == [("hubspot", "dealz", True)]
    assert store.list_dead_letters() == []
    replayed = store.get_dead_letter(dead.id)
    assert replayed is not None and replayed.replayed_at is not None
    with pytest.raises(PermanentError, match="already replayed"):
        replay_dead_letter(store, stub_broker, dead.id)


def test_exhausted_retries_land_in_dead_letters(
    service: FakeService, stub_broker: StubBroker, worker: dramatiq.Worker, store: SyncStore
) -> None:
    service.failures = [TransientError(f"503 #{n}") for n in range(10)]
    process_inbox_event.send(9)
    drain(stub_broker, worker)
    # max_retries=3 in the fixture: the first attempt and three retries
    assert service.attempts["inbox"] == 4
    (dead,) = store.list_dead_letters()
    assert dead.actor == "process_inbox_event" and dead.payload["args"] == [9]
    assert dead.inbox_id == 9  # the inbox row stops counting as pending
    assert dead.reason.startswith("gave up after 4 attempt(s): TransientError: 503 #3")


def test_changes_schedule_one_delayed_push_per_target_per_window(
    service: FakeService, stub_broker: StubBroker, worker: dramatiq.Worker, enqueue_log: EnqueueLog
) -> None:
    # When three inbox events are processed in quick succession
    for inbox_id in (1, 2, 3):
        process_inbox_event.send(inbox_id)
    drain(stub_broker, worker)
    # Then one push per target was sent, delayed by twice the coalesce window
    delayed = [(args, delay) for _, args, delay in enqueue_log.named("push_target") if delay is not None]
    assert sorted(delayed) == [(("hubspot",), 200), (("pipedrive",), 200)]
    assert sorted(service.pushes) == ["hubspot", "pipedrive"]


def test_a_poll_that_routed_nothing_schedules_no_push(
    service: FakeService, stub_broker: StubBroker, worker: dramatiq.Worker, enqueue_log: EnqueueLog
) -> None:
    poll_source.send("hubspot", "deals")
    drain(stub_broker, worker)
    assert service.polls == [("hubspot", "deals", False)]
    assert enqueue_log.named("push_target") == []


def test_dead_push_items_become_dead_letters_and_replay_as_fresh_outbox_items(
    service: FakeService, stub_broker: StubBroker, worker: dramatiq.Worker, store: SyncStore
) -> None:
    # Given an outbox item the target refused for good
    outbox_id = store.enqueue_outbox("hubspot", "k-1", {"stage": "won"})
    assert outbox_id is not None
    store.mark_outbox_failed(outbox_id, "400 INVALID_OPTION", datetime.now(UTC), dead=True)
    service.push_results = [
        PushStats(
            target="hubspot",
            items=1,
            dead=(DeadItem(outbox_id, "k-1", "400 INVALID_OPTION", {"stage": "won"}),),
        )
    ]
    # When the push runs
    push_target.send("hubspot")
    drain(stub_broker, worker)
    # Then the dead item is a dead letter
    (dead,) = store.list_dead_letters()
    assert (dead.actor, dead.message_id, dead.reason) == (
        "push_target",
        f"outbox:{outbox_id}",
        "400 INVALID_OPTION",
    )
    # When it is replayed
    replay_dead_letter(store, stub_broker, dead.id)
    drain(stub_broker, worker)
    # Then a fresh copy of the item is due and a push was sent for its target
    due = store.due_outbox(datetime.now(UTC) + timedelta(minutes=1), 10, target="hubspot")
    assert [(item.idempotency_key, dict(item.payload)) for item in due] == [
        (f"k-1:replay:{dead.id}", {"stage": "won"})
    ]
    assert service.pushes == ["hubspot", "hubspot"]


def test_replaying_an_unknown_dead_letter_fails(store: SyncStore, stub_broker: StubBroker) -> None:
    with pytest.raises(PermanentError, match="does not exist"):
        replay_dead_letter(store, stub_broker, 12345)


def test_reapplying_held_stages_schedules_pushes_only_for_the_targets_it_queued_for(
    service: FakeService, stub_broker: StubBroker, worker: dramatiq.Worker, enqueue_log: EnqueueLog
) -> None:
    # Given held stages a reload now covers, whose moves queue writes for HubSpot only
    service.reapplied = HeldReapply(
        held=2, reapplied=1, still_held=1, enqueued=1, targets=frozenset({"hubspot"})
    )
    # When the job runs
    reapply_held_job.send()
    drain(stub_broker, worker)
    # Then one delayed push is sent, for HubSpot, and it ran
    delayed = [(args, delay) for _, args, delay in enqueue_log.named("push_target") if delay is not None]
    assert delayed == [(("hubspot",), 200)]
    assert service.pushes == ["hubspot"]


def test_reapplying_that_queued_nothing_schedules_no_push(
    service: FakeService, stub_broker: StubBroker, worker: dramatiq.Worker, enqueue_log: EnqueueLog
) -> None:
    reapply_held_job.send()
    drain(stub_broker, worker)
    assert service.attempts["reapply"] == 1
    assert enqueue_log.named("push_target") == []


def test_a_failing_reapplication_is_retried_until_it_succeeds(
    service: FakeService, stub_broker: StubBroker, worker: dramatiq.Worker
) -> None:
    service.failures = [TransientError("database busy")]
    reapply_held_job.send()
    drain(stub_broker, worker)
    assert service.attempts["reapply"] == 2


@pytest.mark.redis
def test_a_worker_reapplies_held_stages_at_boot_and_after_each_good_reload(
    stub_broker: StubBroker, enqueue_log: EnqueueLog, store_path: Path, tmp_path: Path
) -> None:
    # Given a worker process booted on a copy of the shipped mappings
    folder = tmp_path / "mappings"
    shutil.copytree(Path(__file__).resolve().parents[2] / "mappings", folder)
    settings = Settings(
        _env_file=None, database_url=f"sqlite:///{store_path}", redis_url=REDIS_URL, mappings_dir=folder
    )
    middleware = RuntimeMiddleware(settings)
    middleware.after_process_boot(stub_broker)
    try:
        runtime = middleware.runtime
        assert runtime is not None
        # Then booting sent one re-application
        assert len(enqueue_log.named("reapply_held_job")) == 1
        # When the mappings are edited and reloaded, then another one is sent
        pipedrive_yaml = folder / "pipedrive.yaml"
        pipedrive_yaml.write_text(
            pipedrive_yaml.read_text().replace("canonical: meeting", "canonical: qualified")
        )
        assert runtime.mappings.reload() is True
        assert len(enqueue_log.named("reapply_held_job")) == 2
        # And a broken edit sends nothing
        pipedrive_yaml.write_text(
            pipedrive_yaml.read_text().replace("canonical: qualified", "canonical: nonsense")
        )
        assert runtime.mappings.reload() is False
        assert len(enqueue_log.named("reapply_held_job")) == 2
    finally:
        middleware.after_worker_shutdown(stub_broker, dramatiq.Worker(stub_broker))
