"""Pure translation between Odoo ``crm.lead`` / ``crm.stage`` records and the canonical model.

Nothing here touches the network or the clock. Facts followed (``odoo/odoo``
``addons/crm/models/crm_lead.py`` and ``crm_stage.py``; the ORM's read format):

- Empty values read as ``False``; a many2one reads as ``[id, "display name"]`` (or a bare id when
  read with ``load=None``, as the webhook server action does); datetimes are UTC strings
  ``"YYYY-MM-DD HH:MM:SS"`` without a zone (``DEFAULT_SERVER_DATETIME_FORMAT``), dates ``YYYY-MM-DD``.
- ``crm.stage``: ``name``, ``sequence`` (lower is earlier), ``is_won``, ``fold``, ``team_id`` (empty:
  shared by every sales team). There is no lost stage.
- Won: the lead's stage ``is_won`` (``action_set_won`` moves it there with probability 100). Lost:
  the lead is archived (``active`` False, probability 0) and its stage stays as it was, with
  ``lost_reason_id``. An archived lead is lost whatever its stage says.
- ``expected_revenue`` is in the company currency (``company_currency``); ``date_deadline`` is the
  expected closing; ``partner_name`` the company; ``email_from`` the contact's address.

Stages resolve only through ``mappings/odoo.yaml``: the record status (``won``/``lost``) is passed
to the mapping and wins over the stage there; an open lead's stage is matched by id or name within
its pipeline. A stage's pipeline is ``all`` when the stage is shared by every sales team (Odoo's
stock stages) or ``team:<id>`` when it belongs to one team.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    RecordStatus,
    SourceStage,
    StageKey,
    UnmappedStage,
)
from sync_worker.errors import PermanentError
from sync_worker.mappings import Mappings, TargetStage
from sync_worker.mappings.models import normalise_name

__all__ = [
    "LEAD_FIELDS",
    "SHARED_PIPELINE",
    "SOURCE",
    "STAGE_FIELDS",
    "LeadAction",
    "LeadWrite",
    "change_source",
    "format_time",
    "from_canonical",
    "many2one_id",
    "many2one_name",
    "parse_time",
    "stage_from_payload",
    "to_canonical",
]

SOURCE = "odoo"
SHARED_PIPELINE = "all"
LEAD_FIELDS: tuple[str, ...] = (
    "name",
    "type",
    "active",
    "stage_id",
    "team_id",
    "probability",
    "expected_revenue",
    "company_currency",
    "date_deadline",
    "lost_reason_id",
    "partner_name",
    "email_from",
    "user_id",
    "create_date",
    "date_last_stage_update",
    "write_date",
    "write_uid",
)
STAGE_FIELDS: tuple[str, ...] = ("name", "sequence", "is_won", "fold", "team_id")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
LeadAction = Literal["won", "lost", "open"]
_ACTIONS: dict[str, LeadAction] = {"won": "won", "lost": "lost", "open": "open"}


def parse_time(value: Any, what: str) -> datetime | None:
    """An Odoo UTC datetime string (seconds, or with a fraction) as aware UTC; False is None."""
    if value is None or value is False or value == "":
        return None
    if not isinstance(value, str):
        raise PermanentError(f"odoo: {what} is not a datetime string")
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "T", 1))
    except ValueError as exc:
        raise PermanentError(f"odoo: {what} is not a YYYY-MM-DD HH:MM:SS time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """``moment`` as Odoo writes datetimes in domains: UTC, no zone, floored to the second."""
    return moment.astimezone(UTC).strftime(_TIME_FORMAT)


def many2one_id(value: Any) -> int | None:
    """The id of a many2one read as ``[id, name]``, a bare id, or ``False``."""
    if isinstance(value, list | tuple) and value:
        value = value[0]
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def many2one_name(value: Any) -> str | None:
    if isinstance(value, list | tuple) and len(value) > 1 and isinstance(value[1], str):
        return value[1]
    return None


def _text(value: Any) -> str | None:
    if value is None or value is False:
        return None
    text = str(value).strip()
    return text or None


def _date(value: Any, what: str) -> date | None:
    if value is None or value is False or value == "":
        return None
    if not isinstance(value, str):
        raise PermanentError(f"odoo: {what} is not a date string")
    try:
        return date.fromisoformat(value[:10])
    except ValueError as exc:
        raise PermanentError(f"odoo: {what} is not a YYYY-MM-DD date") from exc


def _amount(value: Any) -> Decimal | None:
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PermanentError("odoo: expected_revenue is not a number")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise PermanentError("odoo: expected_revenue is not a number") from exc


def change_source(write_uid: Any) -> str | None:
    """``user:<id>`` of the last writer: the service's own writes carry its bot user's id."""
    uid = many2one_id(write_uid)
    return f"user:{uid}" if uid is not None else None


def stage_from_payload(stage: Mapping[str, Any]) -> SourceStage:
    """A ``crm.stage`` record as a :class:`SourceStage` (won stages are closed)."""
    stage_id = many2one_id(stage.get("id"))
    if stage_id is None:
        raise PermanentError("odoo: crm.stage record without an id")
    team = many2one_id(stage.get("team_id"))
    sequence = stage.get("sequence")
    return SourceStage(
        source=SOURCE,
        pipeline_id=f"team:{team}" if team is not None else SHARED_PIPELINE,
        pipeline_label=many2one_name(stage.get("team_id")) or (f"Team {team}" if team else "All teams"),
        stage_id=str(stage_id),
        stage_label=_text(stage.get("name")) or str(stage_id),
        order=sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else 0,
        probability=1.0 if stage.get("is_won") is True else None,
        is_closed=stage.get("is_won") is True,
    )


def _status(lead: Mapping[str, Any], stage: SourceStage | None) -> RecordStatus:
    if lead.get("active") is False:
        return "lost"
    if stage is not None and stage.is_closed:
        return "won"
    return "open"


def to_canonical(
    lead: Mapping[str, Any], mappings: Mappings, *, stages: Mapping[str, SourceStage]
) -> CanonicalRecord:
    """A ``crm.lead`` record (read with :data:`LEAD_FIELDS`) as a :class:`CanonicalRecord`.

    ``stages`` (stage id -> :class:`SourceStage`) says which stages are won and names them for the
    mapping. An unknown stage yields ``stage=None`` with ``unmapped`` set, never a default.
    """
    lead_id = many2one_id(lead.get("id"))
    if lead_id is None:
        raise PermanentError("odoo: crm.lead record without an id")
    updated_at = parse_time(lead.get("write_date"), "write_date")
    if updated_at is None:
        raise PermanentError(f"odoo: lead {lead_id} has no write_date")
    stage_id = many2one_id(lead.get("stage_id"))
    known = stages.get(str(stage_id)) if stage_id is not None else None
    status = _status(lead, known)
    resolved = mappings.to_canonical(
        SOURCE,
        pipeline=known.pipeline_id if known else None,
        pipeline_name=known.pipeline_label if known else None,
        stage=str(stage_id) if stage_id is not None else None,
        stage_name=known.stage_label if known else many2one_name(lead.get("stage_id")),
        status=status,
    )
    currency = many2one_name(lead.get("company_currency"))
    return CanonicalRecord(
        source=SOURCE,
        kind="deal",
        external_id=str(lead_id),
        updated_at=updated_at,
        stage=resolved if isinstance(resolved, StageKey) else None,
        unmapped=resolved if isinstance(resolved, UnmappedStage) else None,
        status=status,
        pipeline_id=known.pipeline_id if known else None,
        source_stage=str(stage_id) if stage_id is not None else None,
        title=_text(lead.get("name")),
        amount=_amount(lead.get("expected_revenue")),
        currency=currency.strip() if currency else None,
        owner_id=str(owner) if (owner := many2one_id(lead.get("user_id"))) is not None else None,
        contact_email=_text(lead.get("email_from")),
        company=_text(lead.get("partner_name")),
        close_date=_date(lead.get("date_deadline"), "date_deadline"),
        lost_reason=many2one_name(lead.get("lost_reason_id")) if status == "lost" else None,
        created_at=parse_time(lead.get("create_date"), "create_date"),
        stage_changed_at=parse_time(lead.get("date_last_stage_update"), "date_last_stage_update"),
        change_source=change_source(lead.get("write_uid")),
    )


@dataclass(frozen=True)
class LeadWrite:
    """What one update becomes in Odoo: ``vals`` for ``write``/``create``, then a documented action.

    ``action``: ``lost`` (``action_set_lost`` with ``lost_reason`` as ``lost_reason_id``), ``won``
    (``action_set_won``: unarchive, first won stage, probability 100) or ``open``
    (``action_unarchive``, run before ``vals``).
    """

    vals: Mapping[str, Any] = field(default_factory=dict)
    action: LeadAction | None = None
    lost_reason: str | None = None


def _resolve_stage(target: TargetStage, stages: Sequence[SourceStage]) -> SourceStage:
    assert target.stage is not None
    if target.match_by == "id":
        found = [s for s in stages if s.stage_id == target.stage]
        if not found:
            raise PermanentError(f"odoo: no crm.stage with id {target.stage!r}")
        return found[0]
    wanted = normalise_name(target.stage)
    named = [s for s in stages if normalise_name(s.stage_label) == wanted]
    shared = [s for s in named if s.pipeline_id == SHARED_PIPELINE]
    matches = shared if len(named) > 1 and shared else named
    if len(matches) != 1:
        problem = "no" if not matches else "more than one"
        raise PermanentError(f"odoo: {problem} crm.stage named {target.stage!r}")
    return matches[0]


def _target(mappings: Mappings, key: StageKey) -> TargetStage | None:
    """The stage (first pipeline) or else the status (``statuses:``) that stands for ``key``."""
    target = mappings.to_target(SOURCE, key)
    if target is None:
        index = mappings.index.get(SOURCE)
        target = index.status_push.get(key) if index is not None else None
    return target


def from_canonical(
    update: CanonicalUpdate, mappings: Mappings, *, stages: Sequence[SourceStage]
) -> LeadWrite:
    """The ``crm.lead`` values and action for ``update``; only the fields it sets.

    Raises :class:`PermanentError` when it cannot be expressed (an unmapped stage, ``deleted``, a
    create without a title). The currency is not written: ``expected_revenue`` is always in the
    company currency.
    """
    vals: dict[str, Any] = {}
    status: str | None = None
    if update.stage is not None:
        target = _target(mappings, update.stage)
        if target is None:
            raise PermanentError(f"odoo: canonical stage {update.stage.value!r} has no mapping")
        if target.stage is not None:
            stage = _resolve_stage(target, stages)
            if stage.is_closed:
                status = "won"
            else:
                vals["stage_id"] = int(stage.stage_id)
        status = target.status or status
    if update.status is not None:
        if update.status == "deleted":
            raise PermanentError("odoo: deleting a lead is not pushed")
        status = update.status
    if status not in (None, "open", "won", "lost"):
        raise PermanentError(f"odoo: status {status!r} cannot be written")
    if status == "won":
        vals.pop("stage_id", None)
    if update.title is not None:
        vals["name"] = update.title
    if update.amount is not None:
        vals["expected_revenue"] = float(update.amount)
    if update.close_date is not None:
        vals["date_deadline"] = update.close_date.isoformat()
    if update.contact_email is not None:
        vals["email_from"] = update.contact_email
    if update.external_id is None:
        if not vals.get("name"):
            raise PermanentError("odoo: a new opportunity needs a title")
        vals["type"] = "opportunity"
    action = _ACTIONS.get(status) if status is not None else None
    reason = update.lost_reason if action == "lost" and update.lost_reason else None
    return LeadWrite(vals=vals, action=action, lost_reason=reason)
