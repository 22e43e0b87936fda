"""The engine under test with fake systems, and record builders shared by the unit tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sync_worker.canonical import (
    CanonicalRecord,
    RecordStatus,
    StageKey,
    WebhookEvent,
)
from sync_worker.engine import EngineConfig, SyncService
from sync_worker.mappings import Mappings
from sync_worker.store import OutboxItem, SyncStore

from .fakes import T0, FakeClock, FakeConnector, FakeHubSpot, FakePipedrive

__all__ = ["HS_APP", "World", "deal", "hs_event", "reply"]

HS_APP = "INTEGRATION:1160452"


def deal(
    source: str,
    external_id: str,
    stage: StageKey | None,
    at: datetime,
    **extra: Any,
) -> CanonicalRecord:
    status: RecordStatus = extra.pop("status", None) or (
        "won" if stage is StageKey.WON else "lost" if stage is StageKey.LOST else "open"
    )
    return CanonicalRecord(
        source=source,
        kind="deal",
        external_id=external_id,
        updated_at=at,
        stage=stage,
        status=status,
        title=extra.pop("title", f"Deal {external_id}"),
        **extra,
    )


def reply(lead_id: str, email: str, at: datetime) -> CanonicalRecord:
    return CanonicalRecord(
        source="lagrowthmachine",
        kind="lead",
        external_id=lead_id,
        updated_at=at,
        stage=StageKey.CONTACTED,
        status="open",
        source_stage="REPLIED",
        title="Ada Lovelace",
        contact_email=email,
        replied_at=at,
    )


class World:
    """The service under test with its three fake systems."""

    def __init__(self, store: SyncStore, mappings: Mappings, clock: FakeClock, **config: Any) -> None:
        self.store = store
        self.clock = clock
        self.mappings = mappings
        """The mappings in force: a test may swap them, as a reload does."""
        self.hubspot = FakeHubSpot("hubspot")
        self.pipedrive = FakePipedrive("pipedrive")
        self.lgm = FakeConnector("lagrowthmachine")
        settings = {
            "coalesce_window": timedelta(seconds=2),
            "own_change_sources": {"hubspot": frozenset({HS_APP}), "pipedrive": frozenset({"api:9001"})},
            **config,
        }
        self.service = SyncService(
            store,
            lambda: self.mappings,
            {"hubspot": self.hubspot, "pipedrive": self.pipedrive, "lagrowthmachine": self.lgm},
            clock=clock,
            config=EngineConfig(**settings),
        )

    def push_all(self, after: timedelta = timedelta(seconds=3)) -> None:
        self.clock.advance(seconds=after.total_seconds())
        for target in ("hubspot", "pipedrive", "lagrowthmachine"):
            self.service.push(target)

    def linked_pair(self, stage: StageKey = StageKey.CONTACTED, **extra: Any) -> tuple[int, int]:
        """A Pipedrive deal 7 and a HubSpot deal 15 already in step and linked."""
        pd = self.service.ingest_record(deal("pipedrive", "7", stage, T0 - timedelta(hours=2), **extra))
        hs = self.service.ingest_record(deal("hubspot", "15", stage, T0 - timedelta(hours=2), **extra))
        self.store.link_records([pd.record_id, hs.record_id])
        return pd.record_id, hs.record_id

    def due(self, target: str) -> list[OutboxItem]:
        return self.store.due_outbox(self.clock() + timedelta(days=1), 100, target=target)


def hs_event(
    n: int, object_id: str, action: str = "propertyChange", change_source: str | None = None
) -> WebhookEvent:
    return WebhookEvent(
        source="hubspot",
        dedupe_key=f"hs-{n}",
        object_type="deal",
        object_id=object_id,
        action=action,
        occurred_at=T0 + timedelta(seconds=n),
        raw={"objectId": int(object_id), "subscriptionType": f"deal.{action}"},
        property_name="dealstage" if action == "propertyChange" else None,
        property_value="x",
        change_source=change_source,
    )
