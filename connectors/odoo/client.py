"""The Odoo CRM connector: opportunities (``crm.lead`` of ``type`` opportunity) in and out.

Calls, all through one :class:`~connectors.odoo.transport.OdooTransport` (JSON-2 on Odoo 19+,
JSON-RPC ``execute_kw`` on 17/18; https://www.odoo.com/documentation/19.0/developer/reference/external_api.html):

- Stages: ``crm.stage/search_read`` (``name, sequence, is_won, fold, team_id``; ``_order`` is
  ``sequence, name, id``). ``odoo/odoo`` ``addons/crm/models/crm_stage.py``.
- Pull: ``crm.lead/search_read`` with ``domain`` ``[("type", "=", "opportunity"), ...cursor]``,
  ``order "write_date asc, id asc"``, ``limit`` 200, and ``context {"active_test": false}`` so that
  archived (lost) leads are read too (see :mod:`connectors.odoo.cursor`). Odoo has no feed of
  deleted records: a pull from no cursor lists every opportunity, and the core treats one missing
  from a complete full pull as gone.
- Webhook events are read back in one ``search_read`` of their ids (the server action sends only
  the fields it was set up with).
- Writes: :mod:`connectors.odoo.push`. Own writes: ``write_uid`` is the API user's id
  (``change_source`` ``user:<id>``), from the settings or asked once (``res.users/context_get`` on
  JSON-2, ``common.authenticate`` on JSON-RPC).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from connectors.odoo.convert import (
    LEAD_FIELDS,
    SHARED_PIPELINE,
    SOURCE,
    STAGE_FIELDS,
    LeadWrite,
    from_canonical,
    many2one_id,
    stage_from_payload,
    to_canonical,
)
from connectors.odoo.cursor import PullCursor
from connectors.odoo.push import LeadWriter, PlannedUpdate
from connectors.odoo.transport import OdooTransport
from connectors.odoo.webhooks import HANDLED_MODEL, parse_webhook, verify_token
from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    PullPage,
    SourceStage,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.connector import NormaliseContext, Normalised, WebhookRequest, deleted_record
from sync_worker.errors import ConfigError, PermanentError, SyncWorkerError
from sync_worker.mappings import Mappings

if TYPE_CHECKING:
    from sync_worker.store.models import InboxEvent

__all__ = ["PAGE_SIZE", "STREAMS", "OdooConnector"]

STREAMS: tuple[str, ...] = ("deals",)
PAGE_SIZE = 200
_OPPORTUNITY = ("type", "=", "opportunity")


class OdooConnector:
    """Odoo opportunities as canonical records, pushes, leak flags and server-action webhooks.

    ``mappings`` is called at translation time (hot reloads apply at once). ``user_id`` is the API
    user when known; otherwise it is asked of the server the first time it is needed.
    """

    name = SOURCE

    def __init__(
        self,
        transport: OdooTransport,
        mappings: Callable[[], Mappings],
        *,
        lang: str = "en_US",
        user_id: int | None = None,
        webhook_secret: SecretStr | None = None,
        flag_with: str = "both",
        tag_prefix: str = "Leak: ",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._transport = transport
        self._mappings = mappings
        self._lang = lang
        self._user_id = user_id
        self._webhook_secret = webhook_secret
        self._clock = clock
        self._stages: dict[str, SourceStage] | None = None
        self._writer = LeadWriter(transport, self._context, flag_with=flag_with, tag_prefix=tag_prefix)

    def __repr__(self) -> str:
        return f"OdooConnector({self._transport!r})"

    @property
    def transport(self) -> str:
        return self._transport.name

    def close(self) -> None:
        self._transport.close()

    def _context(self) -> dict[str, Any]:
        return {"lang": self._lang, "active_test": False}

    def _search_read(
        self, model: str, domain: list[Any], fields: Sequence[str], **extra: Any
    ) -> list[Mapping[str, Any]]:
        rows = self._transport.call(
            model,
            "search_read",
            params={"domain": domain, "fields": list(fields), **extra},
            context=self._context(),
        )
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
            raise PermanentError(f"odoo {model}.search_read: the answer is not a list of records")
        return rows

    def own_marker(self) -> str | None:
        """``user:<id>`` of the API user (the ``change_source`` of the service's own writes)."""
        if self._user_id is None:
            self._user_id = self._transport.current_uid()
        return f"user:{self._user_id}" if self._user_id is not None else None

    # -- stages ---------------------------------------------------------------------------

    def _stage_index(self, *, refresh: bool = False) -> dict[str, SourceStage]:
        if self._stages is None or refresh:
            rows = self._search_read("crm.stage", [], STAGE_FIELDS, order="sequence, name, id")
            self._stages = {s.stage_id: s for s in map(stage_from_payload, rows)}
        return self._stages

    def list_stages(self) -> list[SourceStage]:
        """Every ``crm.stage``, shared ones first, then in Odoo's order (refetched each call)."""
        stages = self._stage_index(refresh=True).values()
        return sorted(
            stages, key=lambda s: (s.pipeline_id != SHARED_PIPELINE, s.pipeline_id, s.order, int(s.stage_id))
        )

    def _records(self, rows: Sequence[Mapping[str, Any]]) -> list[CanonicalRecord]:
        if not rows:
            return []
        stages = self._stage_index()
        ids = {str(i) for r in rows if (i := many2one_id(r.get("stage_id"))) is not None}
        if not ids <= stages.keys():
            stages = self._stage_index(refresh=True)
        mappings = self._mappings()
        return [to_canonical(row, mappings, stages=stages) for row in rows]

    # -- pulls ----------------------------------------------------------------------------

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        """Opportunities written since ``cursor`` (None: all of them, archived ones included)."""
        if stream not in STREAMS:
            raise ConfigError(f"odoo: unknown stream {stream!r}; expected one of {', '.join(STREAMS)}")
        position = PullCursor.parse(cursor) if cursor else None
        while True:
            domain: list[Any] = [_OPPORTUNITY, *(position.domain() if position else [])]
            rows = self._search_read(
                "crm.lead", domain, LEAD_FIELDS, limit=PAGE_SIZE, order="write_date asc, id asc"
            )
            records = self._records(rows)
            for record in records:
                lead_id = int(record.external_id)
                if position is None:
                    position = PullCursor(record.updated_at.replace(microsecond=0), frozenset({lead_id}))
                else:
                    position = position.advance(record.updated_at, lead_id)
            done = len(rows) < PAGE_SIZE
            yield PullPage(stream, tuple(records), str(position) if position else cursor, done)
            if done:
                return

    # -- pushes ---------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        """Creates in one call, equal values in one ``write``, won/lost through their actions."""
        plans: list[PlannedUpdate] = []
        stages: list[SourceStage] | None = None
        mappings = self._mappings()
        for update in updates:
            try:
                if update.kind != "deal":
                    raise PermanentError(f"odoo: {update.kind} records are not written")
                lead_id = _lead_id(update.external_id) if update.external_id is not None else None
                if stages is None and update.stage is not None:
                    stages = list(self._stage_index().values())
                write = from_canonical(update, mappings, stages=stages or [])
                plans.append(PlannedUpdate(update, write, lead_id))
            except SyncWorkerError as exc:
                plans.append(PlannedUpdate(update, LeadWrite(), None, exc))
        return self._writer.apply(plans)

    def prepare(self) -> list[str]:
        """Create the leak tags (``crm.tag``) the account lacks; the names created."""
        before = set(self._writer.tag_ids(create=False))
        after = self._writer.tag_ids(create=True)
        return sorted(set(after) - before)

    # -- webhooks -------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> None:
        verify_token(request, self._webhook_secret)

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        return parse_webhook(body, now=self._clock)

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        """Own writes are echoes; the others are read back in one ``search_read``.

        A delivery whose ``write_uid`` is the API user is an echo without a read. One that names no
        writer is an echo when the lead, read back, was last written by the API user. One that
        names a person stays that person's change even if the service wrote the lead since.
        """
        out = Normalised()
        own = {m for m in (*ctx.own_markers, self.own_marker()) if m}
        wanted: dict[int, list[InboxEvent]] = {}
        for event in events:
            if event.object_type != HANDLED_MODEL or not event.object_id.isdigit():
                out.skip(event, f"{event.object_type} events are not synced")
            elif event.change_source is not None and event.change_source in own:
                out.echo_ids.append(event.id)
            else:
                wanted.setdefault(int(event.object_id), []).append(event)
        if not wanted:
            return out
        rows = self._search_read("crm.lead", [("id", "in", sorted(wanted))], LEAD_FIELDS)
        out.reads += 1
        by_id = {int(r["id"]): r for r in rows if isinstance(r.get("id"), int)}
        found = {int(r["id"]): rec for r, rec in zip(rows, self._records(rows), strict=True)}
        for lead_id, group in wanted.items():
            ids = tuple(e.id for e in group)
            row = by_id.get(lead_id)
            if row is None:
                gone = deleted_record(group[-1], "deal", ctx)
                if gone is None:
                    for event in group:
                        out.skip(event, "the lead is gone and was never stored")
                else:
                    out.records.append((gone, ids))
            elif row.get("type") != "opportunity":
                for event in group:
                    out.skip(event, "a lead, not an opportunity")
            else:
                record = found[lead_id]
                people = [e.change_source for e in group if e.change_source is not None]
                if not people and record.change_source in own:
                    out.echo_ids.extend(ids)  # nothing but our own write since the delivery
                elif people and record.change_source in own:
                    # A person's change announced, then overwritten in part by ours: still theirs.
                    out.records.append((replace(record, change_source=people[-1]), ids))
                else:
                    out.records.append((record, ids))
        return out


def _lead_id(value: str) -> int:
    if not value.isdigit():
        raise PermanentError(f"odoo: lead id {value[:40]!r} is not numeric")
    return int(value)
