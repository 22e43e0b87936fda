"""Pure translation between Pipedrive API v2 payloads and the canonical model.

Nothing here touches the network or the clock. Stages resolve only through the YAML mappings
(``mappings.to_canonical("pipedrive", ...)`` / ``mappings.to_target("pipedrive", ...)``); won and
lost come from the deal ``status``, which is passed to the mapping and wins over the stage there.

Provider documentation followed:

- Deal object v2 (RFC 3339 times, plain numeric ids, ``label_ids``, ``is_deleted``):
  https://developers.pipedrive.com/docs/api/v1/Deals (v2 section) and the API v2 migration guide,
  https://pipedrive.readme.io/docs/pipedrive-api-v2-migration-guide
- Stages and pipelines v2 (``order_nr``, ``deal_probability``, ``is_deal_rot_enabled``,
  ``days_to_rotten``, ``is_deleted``): https://developers.pipedrive.com/docs/api/v1/Stages and
  https://developers.pipedrive.com/docs/api/v1/Pipelines (v2 sections)
- Person object v2 (``emails`` as ``[{label, value, primary}]``):
  https://developers.pipedrive.com/docs/api/v1/Persons (v2 section)
- Add/update a deal v2 (numbers as numbers, ``expected_close_date`` as ``YYYY-MM-DD``,
  ``lost_reason`` only meaningful with ``status: lost``): ``POST /api/v2/deals``,
  ``PATCH /api/v2/deals/{id}`` on the same page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

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

__all__ = [
    "SOURCE",
    "find_target",
    "format_cursor",
    "from_canonical",
    "parse_time",
    "primary_email",
    "resolve_stage_id",
    "stage_from_payload",
    "to_canonical",
]

SOURCE = "pipedrive"
_RECORD_STATUSES: tuple[RecordStatus, ...] = ("open", "won", "lost", "deleted")
_STATUSES: frozenset[str] = frozenset(_RECORD_STATUSES)


def parse_time(value: Any, field: str) -> datetime | None:
    """An RFC 3339 (v2) or ``YYYY-MM-DD HH:MM:SS`` UTC (v1) time as aware UTC; None stays None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PermanentError(f"pipedrive: {field} is not a time string")
    text = value.strip().replace(" ", "T", 1)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PermanentError(f"pipedrive: {field} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_cursor(moment: datetime) -> str:
    """The ``updated_since`` value for ``moment``, floored to the second (re-reading is safe)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _id(value: Any, field: str, *, required: bool = False) -> str | None:
    """A Pipedrive id (number or numeric string) as a string."""
    if value is None or value == "":
        if required:
            raise PermanentError(f"pipedrive: {field} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PermanentError(f"pipedrive: {field} is not an id")
    return str(value).strip()


def _date(value: Any, field: str) -> date | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PermanentError(f"pipedrive: {field} is not a date string")
    try:
        return date.fromisoformat(value[:10])
    except ValueError as exc:
        raise PermanentError(f"pipedrive: {field} is not a YYYY-MM-DD date") from exc


def _amount(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PermanentError("pipedrive: deal value is not a number")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise PermanentError("pipedrive: deal value is not a number") from exc


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)


def primary_email(person: Mapping[str, Any]) -> str | None:
    """The primary (else first non-empty) address of a v2 person's ``emails`` list."""
    emails = person.get("emails")
    if not isinstance(emails, list):
        return None
    found: str | None = None
    for entry in emails:
        if not isinstance(entry, dict):
            continue
        value = entry.get("value")
        if not isinstance(value, str) or not value.strip():
            continue
        if entry.get("primary") is True:
            return value.strip()
        if found is None:
            found = value.strip()
    return found


def stage_from_payload(stage: Mapping[str, Any], pipeline_names: Mapping[str, str]) -> SourceStage:
    """A v2 stage object (plus pipeline names by id) as a :class:`SourceStage`."""
    stage_id = _id(stage.get("id"), "stage id", required=True)
    pipeline_id = _id(stage.get("pipeline_id"), "stage pipeline_id", required=True)
    assert stage_id is not None and pipeline_id is not None
    probability = stage.get("deal_probability")
    rot = stage.get("days_to_rotten") if stage.get("is_deal_rot_enabled") is True else None
    order = stage.get("order_nr")
    return SourceStage(
        source=SOURCE,
        pipeline_id=pipeline_id,
        pipeline_label=pipeline_names.get(pipeline_id, pipeline_id),
        stage_id=stage_id,
        stage_label=str(stage.get("name") or stage_id),
        order=order if isinstance(order, int) and not isinstance(order, bool) else 0,
        probability=probability / 100 if isinstance(probability, int | float) else None,
        is_closed=False,
        days_to_rotten=rot if isinstance(rot, int) and not isinstance(rot, bool) else None,
    )


def _status(deal: Mapping[str, Any]) -> RecordStatus:
    if deal.get("is_deleted") is True:
        return "deleted"
    raw = deal.get("status")
    if raw is None:
        return "open"
    for known in _RECORD_STATUSES:
        if raw == known:
            return known
    raise PermanentError(f"pipedrive: deal status {str(raw)[:20]!r} is not one of open, won, lost, deleted")


def to_canonical(
    payload: Mapping[str, Any],
    mappings: Mappings,
    *,
    stages: Mapping[str, SourceStage] | None = None,
    person_emails: Mapping[str, str] | None = None,
) -> CanonicalRecord:
    """A v2 deal object as a :class:`CanonicalRecord`.

    ``stages`` (stage id -> :class:`SourceStage`) supplies the pipeline and stage names a mapping
    may match on; ``person_emails`` (person id -> address) supplies the contact email. An unknown
    stage yields ``stage=None`` and ``unmapped`` set, never a default.
    """
    external_id = _id(payload.get("id"), "deal id", required=True)
    assert external_id is not None
    updated_at = parse_time(payload.get("update_time"), "deal update_time")
    if updated_at is None:
        raise PermanentError(f"pipedrive: deal {external_id} has no update_time")
    status = _status(payload)
    pipeline_id = _id(payload.get("pipeline_id"), "deal pipeline_id")
    stage_id = _id(payload.get("stage_id"), "deal stage_id")
    known = (stages or {}).get(stage_id) if stage_id is not None else None
    resolved = mappings.to_canonical(
        SOURCE,
        pipeline=pipeline_id,
        stage=stage_id,
        pipeline_name=known.pipeline_label if known else None,
        stage_name=known.stage_label if known else None,
        status=status,
    )
    person_id = _id(payload.get("person_id"), "deal person_id")
    return CanonicalRecord(
        source=SOURCE,
        kind="deal",
        external_id=external_id,
        updated_at=updated_at,
        stage=resolved if isinstance(resolved, StageKey) else None,
        unmapped=resolved if isinstance(resolved, UnmappedStage) else None,
        status=status,
        pipeline_id=pipeline_id,
        source_stage=stage_id,
        title=_text(payload.get("title")),
        amount=_amount(payload.get("value")),
        currency=_text(payload.get("currency")),
        owner_id=_id(payload.get("owner_id"), "deal owner_id"),
        contact_email=(person_emails or {}).get(person_id) if person_id else None,
        close_date=_date(payload.get("expected_close_date"), "deal expected_close_date"),
        lost_reason=_text(payload.get("lost_reason")) if status == "lost" else None,
        created_at=parse_time(payload.get("add_time"), "deal add_time"),
        stage_changed_at=parse_time(payload.get("stage_change_time"), "deal stage_change_time"),
    )


def _int_id(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise PermanentError(f"pipedrive: {what} {value!r} is not a numeric id") from exc


def _number(amount: Decimal) -> int | float:
    """A JSON number: v2 refuses numeric strings."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def resolve_stage_id(target: TargetStage, stages: Sequence[SourceStage]) -> tuple[int | None, int | None]:
    """``(pipeline_id, stage_id)`` to write for a mapping target.

    ``match_by="id"``: the stage id as is; the pipeline id when the mapping gives a numeric one,
    else the stage's own pipeline from ``stages`` (omitted when unknown: the stage implies it).
    ``match_by="name"``: the one stage in ``stages`` with that name, within the pipeline named
    (by id or name) when the target names one.
    """
    if target.stage is None:
        return None, None
    if target.match_by != "name":
        stage_id = _int_id(target.stage, "stage id")
        if target.pipeline is not None and target.pipeline.isdigit():
            return int(target.pipeline), stage_id
        own = [s for s in stages if s.stage_id == target.stage]
        return (_int_id(own[0].pipeline_id, "pipeline id") if own else None), stage_id
    pipeline = target.pipeline
    matches = [
        s
        for s in stages
        if _norm(s.stage_label) == _norm(target.stage)
        and (pipeline is None or s.pipeline_id == pipeline or _norm(s.pipeline_label) == _norm(pipeline))
    ]
    if len(matches) != 1:
        where = f" in pipeline {pipeline!r}" if pipeline else ""
        problem = "no" if not matches else "more than one"
        raise PermanentError(f"pipedrive: {problem} stage named {target.stage!r}{where}")
    found = matches[0]
    return _int_id(found.pipeline_id, "pipeline id"), _int_id(found.stage_id, "stage id")


def find_target(
    mappings: Mappings,
    key: StageKey,
    *,
    pipeline_id: str | None = None,
    pipeline_name: str | None = None,
) -> TargetStage | None:
    """The mapping target for ``key`` in the deal's pipeline (by id, then name); any when unknown.

    A deal in a pipeline the mapping does not know gets only statuses (won/lost), never a stage
    of another pipeline.
    """
    if pipeline_id is None and pipeline_name is None:
        return mappings.to_target(SOURCE, key)
    for candidate in (pipeline_id, pipeline_name):
        if candidate is not None:
            target = mappings.to_target(SOURCE, key, pipeline=candidate)
            if target is not None:
                return target
    return None


def from_canonical(
    update: CanonicalUpdate,
    mappings: Mappings,
    *,
    stages: Sequence[SourceStage] = (),
    pipeline_id: str | None = None,
    pipeline_name: str | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /api/v2/deals`` or ``PATCH /api/v2/deals/{id}`` for ``update``.

    Only fields the update sets are written. ``stages`` is needed only when the mapping matches
    Pipedrive stages by name; ``pipeline_id``/``pipeline_name`` say which pipeline the deal is in,
    when known (see :func:`find_target`).
    Raises :class:`PermanentError` when the update cannot be expressed (unmapped stage,
    ``deleted`` status, a create without a title).
    """
    body: dict[str, Any] = {}
    status: str | None = None
    if update.stage is not None:
        target = find_target(mappings, update.stage, pipeline_id=pipeline_id, pipeline_name=pipeline_name)
        if target is None:
            known = pipeline_name or pipeline_id
            where = f" in pipeline {known!r}" if known else ""
            raise PermanentError(f"pipedrive: canonical stage {update.stage.value!r} has no mapping{where}")
        new_pipeline, stage_id = resolve_stage_id(target, stages)
        if stage_id is not None:
            body["stage_id"] = stage_id
        if new_pipeline is not None:
            body["pipeline_id"] = new_pipeline
        if target.status is not None:
            status = target.status
    if update.status is not None:
        if update.status == "deleted":
            raise PermanentError("pipedrive: deleting a deal is not pushed")
        status = update.status
    if status is not None:
        if status not in _STATUSES - {"deleted"}:
            raise PermanentError(f"pipedrive: status {status!r} cannot be written")
        body["status"] = status
    if update.title is not None:
        body["title"] = update.title
    if update.amount is not None:
        body["value"] = _number(update.amount)
    if update.currency is not None:
        body["currency"] = update.currency
    if update.close_date is not None:
        body["expected_close_date"] = update.close_date.isoformat()
    if update.lost_reason is not None and status == "lost":
        body["lost_reason"] = update.lost_reason
    if update.external_id is None and not body.get("title"):
        raise PermanentError("pipedrive: a new deal needs a title")
    return body
