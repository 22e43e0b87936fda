"""Fake connectors for the engine tests: small classes satisfying the Connector protocol.

They keep deals in memory, count every call, and answer ``apply_updates`` the way the real ones
do (one result per update, in order; creates get a new id).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    PullPage,
    SourceStage,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.connector import WebhookRequest
from sync_worker.errors import TransientError

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


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

    def list_stages(self) -> list[SourceStage]:
        return []

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        for page in self.pages:
            if isinstance(page, Exception):
                raise page
            yield page

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        self.applied.append(list(updates))
        if self.fail_with:
            failure = self.fail_with.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return [replace(failure, idempotency_key=u.idempotency_key) for u in updates]
        results = []
        for update in updates:
            external_id = update.external_id
            if external_id is None:
                self.next_id += 1
                external_id = str(self.next_id)
            results.append(UpdateResult(update.idempotency_key, True, external_id))
        return results

    def verify_webhook(self, request: WebhookRequest) -> None:
        return None

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        return []

    def close(self) -> None:
        return None

    @property
    def updates(self) -> list[CanonicalUpdate]:
        return [u for batch in self.applied for u in batch]


@dataclass
class FakeHubSpot(FakeConnector):
    """Adds ``read_deals`` (HubSpot's batch read): answers from ``records``, counting calls."""

    def read_deals(self, ids: Sequence[str]) -> list[CanonicalRecord]:
        self.reads.append(list(ids))
        return [self.records[i] for i in ids if i in self.records]


@dataclass
class FakePipedrive(FakeConnector):
    """Adds ``to_record``: a webhook deal here is ``{"record": CanonicalRecord}`` wrapped in a dict."""

    by_payload: dict[str, CanonicalRecord] = field(default_factory=dict)

    def to_record(self, deal: Mapping[str, Any]) -> CanonicalRecord:
        return self.by_payload[str(deal["id"])]


def transient() -> TransientError:
    return TransientError("hubspot: 503 from the API", status=503)
