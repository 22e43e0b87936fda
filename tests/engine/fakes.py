"""Fake connectors for the engine tests: small classes satisfying the Connector protocol.

They keep deals in memory, count every call, and answer ``apply_updates`` the way the real ones
do (one result per update, in order; creates get a new id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.hubspot import inbox as hubspot_inbox
from connectors.pipedrive import inbox as pipedrive_inbox
from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    PullPage,
    RecordRemoval,
    SourceStage,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.connector import NormaliseContext, Normalised, WebhookRequest
from sync_worker.errors import TransientError
from sync_worker.store.models import InboxEvent

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _failure(planned: list[UpdateResult | Exception], keys: Sequence[str]) -> list[UpdateResult] | None:
    """The next planned failure for a call on ``keys`` (raised, or one result per key); None: none."""
    if not planned:
        return None
    failure = planned.pop(0)
    if isinstance(failure, Exception):
        raise failure
    return [replace(failure, idempotency_key=key) for key in keys]


@dataclass
class FakeClock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class FakeConnector:
    """A system with deals in memory; ``fail_with`` makes the next ``apply_updates`` answer so."""

    name: str
    records: dict[str, CanonicalRecord] = field(default_factory=dict)
    applied: list[list[CanonicalUpdate]] = field(default_factory=list)
    reads: list[list[str]] = field(default_factory=list)
    pages: list[PullPage] = field(default_factory=list)
    fail_with: list[UpdateResult | Exception] = field(default_factory=list)
    next_id: int = 900
    stamp: Callable[[], datetime] | None = None
    """When set, each result carries ``updated_at`` (the modification time the provider answers)."""

    def list_stages(self) -> list[SourceStage]:
        return []

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        for page in self.pages:
            if isinstance(page, Exception):
                raise page
            yield page

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        self.applied.append(list(updates))
        failed = _failure(self.fail_with, [u.idempotency_key for u in updates])
        if failed is not None:
            return failed
        results = []
        for update in updates:
            external_id = update.external_id
            if external_id is None:
                self.next_id += 1
                external_id = str(self.next_id)
            at = self.stamp() if self.stamp is not None else None
            results.append(UpdateResult(update.idempotency_key, True, external_id, updated_at=at))
        return results

    def verify_webhook(self, request: WebhookRequest) -> None:
        return None

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        return []

    def close(self) -> None:
        return None

    def prepare(self) -> list[str]:
        return []

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        out = Normalised()
        for event in events:
            out.skip(event, "the fake handles no events")
        return out

    @property
    def updates(self) -> list[CanonicalUpdate]:
        return [u for batch in self.applied for u in batch]


@dataclass
class FakeRemover(FakeConnector):
    """Adds ``remove_records`` (the optional capability); ``remove_fail_with`` answers the next call."""

    removed: list[list[RecordRemoval]] = field(default_factory=list)
    remove_fail_with: list[UpdateResult | Exception] = field(default_factory=list)

    def remove_records(self, removals: Sequence[RecordRemoval]) -> list[UpdateResult]:
        self.removed.append(list(removals))
        failed = _failure(self.remove_fail_with, [r.idempotency_key for r in removals])
        if failed is not None:
            return failed
        return [UpdateResult(r.idempotency_key, True, r.external_id) for r in removals]

    @property
    def removals(self) -> list[RecordRemoval]:
        return [r for batch in self.removed for r in batch]


@dataclass
class FakeHubSpot(FakeRemover):
    """Adds ``read_deals`` (HubSpot's batch read): answers from ``records``, counting calls."""

    def read_deals(self, ids: Sequence[str]) -> list[CanonicalRecord]:
        self.reads.append(list(ids))
        return [self.records[i] for i in ids if i in self.records]

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        # The real connector's translation of inbox events, over this fake's batch reads.
        return hubspot_inbox.normalise_events(events, ctx, self.read_deals)


@dataclass
class FakePipedrive(FakeRemover):
    """Adds ``to_record``: a webhook deal here is ``{"record": CanonicalRecord}`` wrapped in a dict."""

    by_payload: dict[str, CanonicalRecord] = field(default_factory=dict)

    def to_record(self, deal: Mapping[str, Any]) -> CanonicalRecord:
        return self.by_payload[str(deal["id"])]

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        return pipedrive_inbox.normalise_events(events, ctx, self.to_record)


def transient() -> TransientError:
    return TransientError("hubspot: 503 from the API", status=503)
