"""Pure translation between Zoho CRM v8 Deals records and the canonical model.

Nothing here touches the network or the clock. Stages resolve only through ``zoho.yaml``.

Provider documentation followed:

- Record shape (flat field API names; ``id`` a numeric string; ``Modified_Time`` ISO 8601 with an
  offset and second precision; ``Modified_By``/``Owner`` as ``{name, id, email}``; ``Stage`` and
  ``Pipeline`` strings; ``Closing_Date`` ``YYYY-MM-DD``): Get Records and Update Records,
  https://www.zoho.com/crm/developer/docs/api/v8/get-records.html,
  https://www.zoho.com/crm/developer/docs/api/v8/update-records.html, and the SDK's
  ``json_details.json`` (``record.Record``, ``users.MinifiedUser``).
- Pipelines: ``{id, display_value, actual_value, default, maps: [{id, display_value, actual_value,
  sequence_number, forecast_type, forecast_category}]}``; won and lost come from ``forecast_type``
  (``Open``, ``Closed Won``, ``Closed Lost``), several stages may be lost, and a stage's display
  value may differ from its stored value. https://www.zoho.com/crm/developer/docs/api/v8/get-pipelines.html
- Deleted records: ``{id, display_name, type, deleted_by, deleted_time}``.
  https://www.zoho.com/crm/developer/docs/api/v8/get-deleted-records.html

Which of the two stage values a record carries is not documented, so both are matched. Whether
``Amount`` comes as a number or a string is not documented either: both are read.

A Deals record says when it was last modified, not when it entered its stage (that is only in the
Stage History related list). Entering the stage modified the record, so ``Modified_Time`` is the
latest the stage can have been entered: it is given as ``stage_changed_at``, which the store uses
only on first sight or when the stage changed. A deal that has sat untouched in its stage for
weeks is then as old in it as it looks on the first sync, never older.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    LeakFlag,
    RecordStatus,
    SourceStage,
    StageKey,
    UnmappedStage,
)
from sync_worker.errors import PermanentError
from sync_worker.mappings import Mappings, normalise_name

__all__ = [
    "FIELDS",
    "SOURCE",
    "ZohoStage",
    "deleted_to_canonical",
    "flag_text",
    "format_time",
    "from_canonical",
    "parse_time",
    "source_stages",
    "stages_from_pipelines",
    "to_canonical",
]

SOURCE = "zoho"
FIELDS: tuple[str, ...] = (
    "Deal_Name",
    "Stage",
    "Pipeline",
    "Amount",
    "Closing_Date",
    "Owner",
    "Contact_Name",
    "Account_Name",
    "Created_Time",
    "Modified_Time",
    "Modified_By",
)
"""The field API names every read asks for (``fields`` is mandatory, at most 50)."""

_FORECAST_STATUS: Mapping[str, RecordStatus] = {
    "open": "open",
    "closed won": "won",
    "closed lost": "lost",
}


@dataclass(frozen=True)
class ZohoStage:
    """One stage (``maps`` entry) of one pipeline, with both of its values."""

    pipeline_id: str
    pipeline: str
    stage_id: str
    actual: str
    display: str
    order: int
    status: RecordStatus

    def matches(self, value: str) -> bool:
        wanted = normalise_name(value)
        return wanted in (normalise_name(self.actual), normalise_name(self.display))


def parse_time(value: Any, field: str) -> datetime | None:
    """A Zoho DateTime (``2021-05-02T11:17:33+05:30``) as aware UTC; None stays None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PermanentError(f"zoho: {field} is not a date-time string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PermanentError(f"zoho: {field} is not an ISO 8601 date-time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(moment: datetime) -> str:
    """``moment`` as Zoho writes DateTime: second precision with an offset (``+00:00``)."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text or None


def _ref(value: Any, key: str = "id") -> str | None:
    """A lookup's ``id`` (or ``name``), or a plain string value."""
    if isinstance(value, dict):
        return _text(value.get(key))
    return _text(value)


def _amount(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PermanentError("zoho: Amount is not a number")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise PermanentError("zoho: Amount is not a number") from exc


def _date(value: Any) -> date | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError as exc:
        raise PermanentError("zoho: Closing_Date is not a YYYY-MM-DD date") from exc


def stages_from_pipelines(payload: Any) -> list[ZohoStage]:
    """The stages of a ``GET /settings/pipeline`` answer, in pipeline then sequence order."""
    if not isinstance(payload, dict) or not isinstance(payload.get("pipeline"), list):
        raise PermanentError("zoho: the pipeline answer has no pipeline list")
    found: list[ZohoStage] = []
    for pipeline in payload["pipeline"]:
        if not isinstance(pipeline, dict) or not isinstance(pipeline.get("maps"), list):
            continue
        name = _text(pipeline.get("actual_value")) or _text(pipeline.get("display_value")) or ""
        pipeline_id = _text(pipeline.get("id")) or name
        for index, raw in enumerate(pipeline["maps"]):
            if not isinstance(raw, dict):
                continue
            actual = _text(raw.get("actual_value")) or _text(raw.get("display_value"))
            if actual is None:
                continue
            forecast = normalise_name(str(raw.get("forecast_type") or "open"))
            order = raw.get("sequence_number")
            found.append(
                ZohoStage(
                    pipeline_id=pipeline_id,
                    pipeline=name,
                    stage_id=_text(raw.get("id")) or actual,
                    actual=actual,
                    display=_text(raw.get("display_value")) or actual,
                    order=order if isinstance(order, int) and not isinstance(order, bool) else index,
                    status=_FORECAST_STATUS.get(forecast, "open"),
                )
            )
    return found


def source_stages(stages: Sequence[ZohoStage]) -> list[SourceStage]:
    return [
        SourceStage(
            source=SOURCE,
            pipeline_id=s.pipeline_id,
            pipeline_label=s.pipeline,
            stage_id=s.stage_id,
            stage_label=s.actual,  # the stored value: what the mapping names and the API writes
            order=s.order,
            is_closed=s.status != "open",
        )
        for s in stages
    ]


def _find_stage(stages: Sequence[ZohoStage], pipeline: str | None, stage: str) -> ZohoStage | None:
    inside = [s for s in stages if pipeline is None or normalise_name(s.pipeline) == normalise_name(pipeline)]
    for candidates in (inside, stages):
        for known in candidates:
            if known.matches(stage):
                return known
    return None


def to_canonical(
    record: Mapping[str, Any],
    mappings: Mappings,
    stages: Sequence[ZohoStage],
    *,
    emails: Mapping[str, str] | None = None,
) -> CanonicalRecord:
    """A Deals record as a :class:`CanonicalRecord` (``change_source`` is ``Modified_By.id``)."""
    external_id = _text(record.get("id"))
    if external_id is None:
        raise PermanentError("zoho: a Deals record has no id")
    updated_at = parse_time(record.get("Modified_Time"), "Modified_Time")
    if updated_at is None:
        raise PermanentError(f"zoho: deal {external_id} has no Modified_Time")
    pipeline = _ref(record.get("Pipeline"), "name")
    stage_value = _ref(record.get("Stage"), "name")
    known = _find_stage(stages, pipeline, stage_value) if stage_value else None
    status: RecordStatus = known.status if known is not None else "open"
    resolved: StageKey | UnmappedStage = UnmappedStage(SOURCE, pipeline, stage_value)
    for name in (known.actual, known.display) if known is not None else (stage_value,):
        resolved = mappings.to_canonical(
            SOURCE,
            pipeline=known.pipeline_id if known else None,
            pipeline_name=pipeline or (known.pipeline if known else None),
            stage=known.stage_id if known else None,
            stage_name=name,
            status=status if known is not None else None,
        )
        if isinstance(resolved, StageKey):
            break
    contact = _ref(record.get("Contact_Name"))
    return CanonicalRecord(
        source=SOURCE,
        kind="deal",
        external_id=external_id,
        updated_at=updated_at,
        stage=resolved if isinstance(resolved, StageKey) else None,
        unmapped=resolved if isinstance(resolved, UnmappedStage) else None,
        status=status,
        pipeline_id=known.pipeline_id if known else pipeline,
        source_stage=known.actual if known else stage_value,
        title=_text(record.get("Deal_Name")),
        amount=_amount(record.get("Amount")),
        owner_id=_ref(record.get("Owner")),
        contact_email=(emails or {}).get(contact) if contact else None,
        company=_ref(record.get("Account_Name"), "name"),
        close_date=_date(record.get("Closing_Date")),
        created_at=parse_time(record.get("Created_Time"), "Created_Time"),
        stage_changed_at=updated_at,
        change_source=_ref(record.get("Modified_By")),
    )


def deleted_to_canonical(item: Mapping[str, Any]) -> CanonicalRecord:
    """One ``GET /Deals/deleted`` entry as a deleted record (the stage is not in the entry)."""
    external_id = _text(item.get("id"))
    deleted_at = parse_time(item.get("deleted_time"), "deleted_time")
    if external_id is None or deleted_at is None:
        raise PermanentError("zoho: a deleted-records entry has no id or deleted_time")
    return CanonicalRecord(
        source=SOURCE,
        kind="deal",
        external_id=external_id,
        updated_at=deleted_at,
        status="deleted",
        title=_text(item.get("display_name")),
        change_source=_ref(item.get("deleted_by")),
        unmapped=UnmappedStage(SOURCE, None, None),
    )


def flag_text(flag: LeakFlag) -> str:
    """The single-line flag value: ``stalled: <reason> (stage proposal, 30 days, since 2024-05-01)``."""
    if flag.rule is None:
        return ""
    facts = []
    if flag.stage is not None:
        facts.append(f"stage {flag.stage.value}")
    if flag.days_in_stage is not None:
        facts.append(f"{flag.days_in_stage} days")
    if flag.since is not None:
        facts.append(f"since {flag.since.date().isoformat()}")
    text = f"{flag.rule}: {flag.reason}".rstrip(": ")
    if facts:
        text += f" ({', '.join(facts)})"
    return text[:255]


def _number(amount: Decimal) -> int | float:
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _target_stage(
    key: StageKey, mappings: Mappings, stages: Sequence[ZohoStage], pipeline: str | None
) -> ZohoStage:
    target = mappings.to_target(SOURCE, key, pipeline=pipeline) if pipeline else None
    if target is None:
        target = mappings.to_target(SOURCE, key)
    if target is None or target.stage is None:
        raise PermanentError(f"zoho: canonical stage {key.value!r} has no mapping in zoho.yaml")
    wanted_pipeline = pipeline or target.pipeline
    for known in stages:
        same = target.stage == known.stage_id or known.matches(target.stage)
        if same and (
            wanted_pipeline is None or normalise_name(known.pipeline) == normalise_name(wanted_pipeline)
        ):
            return known
    found = _find_stage(stages, target.pipeline, target.stage)
    if found is None:
        raise PermanentError(f"zoho: stage {target.stage!r} is not in the account's pipelines")
    return found


def from_canonical(
    update: CanonicalUpdate,
    mappings: Mappings,
    stages: Sequence[ZohoStage],
    *,
    pipeline: str | None = None,
    flag_field: str = "Leak_Flag",
) -> dict[str, Any]:
    """One ``data[]`` item of ``PUT /crm/v8/Deals`` (or ``POST`` for a create) for ``update``.

    The stage is written as its stored value with its pipeline; won or lost without a stage writes
    the stage mapped to canonical won or lost. ``pipeline`` is the deal's current pipeline.
    """
    item: dict[str, Any] = {}
    if update.external_id is not None:
        item["id"] = update.external_id
    if update.status == "deleted":
        raise PermanentError("zoho: deleting a deal is not pushed")
    key = update.stage
    if key is None and update.status in ("won", "lost"):
        key = StageKey(update.status)
    if key is not None:
        stage = _target_stage(key, mappings, stages, pipeline)
        item["Pipeline"] = stage.pipeline
        item["Stage"] = stage.actual
    if update.title is not None:
        item["Deal_Name"] = update.title
    if update.amount is not None:
        item["Amount"] = _number(update.amount)
    if update.close_date is not None:
        item["Closing_Date"] = update.close_date.isoformat()
    if update.flag is not None:
        item[flag_field] = flag_text(update.flag)
    if update.external_id is None and "Deal_Name" not in item:
        raise PermanentError("zoho: a new deal needs a title (Deal_Name)")
    return item
