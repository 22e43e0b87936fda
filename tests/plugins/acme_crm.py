"""A minimal connector from outside the project, installed only through an entry point.

"Acme" keeps its deals in a JSON file (``SYNC_ACME__DATA_FILE``): ``{"deals": [{"id", "name",
"stage", "updated"}]}`` with ``updated`` in epoch seconds. Webhooks carry ``{"id", "name", "stage",
"updated"}`` and the shared secret in ``X-Acme-Token``. It is written against the public plug-in
surface only (:mod:`sync_worker.plugins`, :mod:`sync_worker.connector`, the canonical model and
errors), as a third party's package would be.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr

from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    PullPage,
    SourceStage,
    StageKey,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.connector import Connector, NormaliseContext, Normalised, WebhookRequest
from sync_worker.errors import PayloadError, SignatureError
from sync_worker.mappings import Mappings
from sync_worker.plugins import BuildContext, ConnectorSpec, StreamSpec
from sync_worker.ratelimit import Limit

NAME = "acme"
STAGES = ("Lead", "Talking", "Offer", "Signed", "Gone")


class AcmeSettings(BaseModel):
    data_file: str | None = Field(
        default=None, description="path of the JSON file holding the deals; unset: the connector is disabled"
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="shared secret webhooks carry in X-Acme-Token; unset: every webhook is refused",
    )


def _record(deal: Mapping[str, Any], mappings: Mappings) -> CanonicalRecord:
    resolved = mappings.to_canonical(NAME, pipeline="main", stage=str(deal["stage"]))
    key = resolved if isinstance(resolved, StageKey) else None
    return CanonicalRecord(
        source=NAME,
        kind="deal",
        external_id=str(deal["id"]),
        updated_at=datetime.fromtimestamp(float(deal["updated"]), UTC),
        stage=key,
        pipeline_id="main",
        source_stage=str(deal["stage"]),
        title=deal.get("name"),
        unmapped=None if key is not None else resolved,  # type: ignore[arg-type]
    )


class AcmeConnector:
    name = NAME

    def __init__(self, section: AcmeSettings, mappings: Callable[[], Mappings]) -> None:
        assert section.data_file is not None
        self._path = Path(section.data_file)
        self._secret = section.webhook_secret
        self._mappings = mappings

    def _load(self) -> list[dict[str, Any]]:
        deals: list[dict[str, Any]] = json.loads(self._path.read_text())["deals"]
        return deals

    def list_stages(self) -> list[SourceStage]:
        return [SourceStage(NAME, "main", "Main", s, s, i) for i, s in enumerate(STAGES)]

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        since = float(cursor) if cursor else -1.0
        deals = sorted((d for d in self._load() if float(d["updated"]) > since), key=lambda d: d["updated"])
        records = tuple(_record(d, self._mappings()) for d in deals)
        newest = str(max((float(d["updated"]) for d in deals), default=since)) if deals else cursor
        yield PullPage(stream, records, newest, True)

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        deals = self._load()
        by_id = {str(d["id"]): d for d in deals}
        results = []
        for update in updates:
            if update.external_id is None:
                deal = {"id": f"A{len(deals) + 1}", "name": update.title, "stage": "Lead", "updated": 0}
                deals.append(deal)
                by_id[deal["id"]] = deal
            deal = by_id[update.external_id or deal["id"]]
            if update.stage is not None:
                target = self._mappings().to_target(NAME, update.stage)
                if target is not None and target.stage is not None:
                    deal["stage"] = target.stage
            deal["updated"] = datetime.now(UTC).timestamp()
            results.append(UpdateResult(update.idempotency_key, True, str(deal["id"])))
        self._path.write_text(json.dumps({"deals": deals}))
        return results

    def verify_webhook(self, request: WebhookRequest) -> None:
        given = request.headers.get("x-acme-token", "")
        if self._secret is None or not hmac.compare_digest(given, self._secret.get_secret_value()):
            raise SignatureError("acme: bad X-Acme-Token")

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        try:
            deal = json.loads(body)
            stamp = datetime.fromtimestamp(float(deal["updated"]), UTC)
        except (ValueError, KeyError, TypeError) as exc:
            raise PayloadError("acme: body is not a deal") from exc
        return [
            WebhookEvent(
                NAME, f"{deal['id']}:{deal['updated']}", "deal", str(deal["id"]), "change", stamp, deal
            )
        ]

    def normalise_events(self, events: Sequence[Any], ctx: NormaliseContext) -> Normalised:
        out = Normalised()
        for event in events:
            out.records.append((_record(event.payload, ctx.mappings), (event.id,)))
        return out

    def prepare(self) -> list[str]:
        return []

    def close(self) -> None:
        return None


def _build(ctx: BuildContext) -> Connector:
    return AcmeConnector(ctx.section, ctx.mappings)


SPEC = ConnectorSpec(
    name=NAME,
    title="Acme",
    settings_model=AcmeSettings,
    enabled=lambda section: section.data_file is not None,
    build=_build,
    streams=(StreamSpec("deals", cursor="time", since=lambda m: str(m.timestamp()), full=True),),
    limits=lambda section: {"default": Limit(10, 1.0)},
    account=lambda section: (str(section.data_file), section.webhook_secret),
    credential_env="SYNC_ACME__DATA_FILE",
    tie_rank=50,
)
