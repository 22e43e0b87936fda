"""Pure translation between ClinchPad API v1 lead objects and the canonical model.

Nothing here touches the network or the clock. Stages resolve only through ``clinchpad.yaml``
(``mappings.to_canonical("clinchpad", ...)``).

The lead object (https://clinchpad.com/api/docs/leads): ``_id``, ``name``, ``size`` (the value,
numeric, nullable), ``archived``, ``user`` (``{_id, name, photo_url}`` or null) and ``stage``
(``{_id, name}``). It names no pipeline (the list is queried per ``pipeline_id``; webhooks carry
``lead.pipe``), no currency, no status and no timestamps.

Tolerated because the docs leave it open:

- won/lost: a ``status`` string (``won``/``lost``, any case) or ``won``/``lost`` booleans, when a
  lead carries them, are passed to the mapping as the lead's status; otherwise ``archived: true``
  is passed as the status ``archived``. Whatever the mapping makes of it decides the stage; the
  record's status follows the canonical stage's kind (won, lost, else open), so a board whose
  won/lost are stages works the same way;
- ``size`` as a number or a numeric string; ``archived`` missing (the single-lead sample omits it)
  means not archived; ``user`` and ``stage`` null.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sync_worker.canonical import (
    CanonicalRecord,
    RecordStatus,
    SourceStage,
    StageKey,
    StageKind,
    UnmappedStage,
)
from sync_worker.errors import PermanentError
from sync_worker.mappings import Mappings

__all__ = [
    "EPOCH",
    "SOURCE",
    "LeadFields",
    "fingerprint",
    "lead_fields",
    "object_id",
    "object_id_time",
    "stage_from_payload",
    "to_canonical",
]

SOURCE = "clinchpad"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
_CLOSED: Mapping[StageKind, RecordStatus] = {StageKind.WON: "won", StageKind.LOST: "lost"}


def object_id(value: Any, field: str) -> str:
    """A ClinchPad ``_id`` (24-hex in every documented sample; any non-empty string is accepted)."""
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value).strip() == "":
        raise PermanentError(f"clinchpad: {field} is not an id")
    return str(value).strip()


def object_id_time(value: str) -> datetime:
    """The creation second a Mongo ObjectId carries in its first 4 bytes; :data:`EPOCH` otherwise.

    Used only as a lower bound of a lead's last change (snapshot pulls), never as a fact.
    """
    if not _OBJECT_ID.fullmatch(value):
        return EPOCH
    return datetime.fromtimestamp(int(value[:8], 16), UTC)


def _ref(value: Any, field: str) -> tuple[str | None, str | None]:
    """``(_id, name)`` of an embedded ``{_id, name}`` object; ``(None, None)`` for null."""
    if value is None:
        return None, None
    if not isinstance(value, Mapping):
        raise PermanentError(f"clinchpad: {field} is not an object")
    raw_id = value.get("_id")
    ref_id = object_id(raw_id, f"{field}._id") if raw_id not in (None, "") else None
    name = value.get("name")
    return ref_id, str(name) if isinstance(name, str | int) and not isinstance(name, bool) else None


def _size(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PermanentError("clinchpad: lead size is not a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise PermanentError("clinchpad: lead size is not a number") from exc
    if not amount.is_finite():
        raise PermanentError("clinchpad: lead size is not a number")
    return amount


def _source_status(lead: Mapping[str, Any], archived: bool) -> str | None:
    raw = lead.get("status")
    if isinstance(raw, str) and raw.strip().casefold() in ("won", "lost"):
        return raw.strip().casefold()
    for flag in ("won", "lost"):
        if lead.get(flag) is True:
            return flag
    return "archived" if archived else None


@dataclass(frozen=True)
class LeadFields:
    """The fields of one lead object the sync uses, validated."""

    id: str
    name: str | None
    size: Decimal | None
    archived: bool
    owner_id: str | None
    stage_id: str | None
    stage_name: str | None
    status: str | None
    """``won``, ``lost``, ``archived`` or None (see the module docstring)."""


def lead_fields(lead: Mapping[str, Any]) -> LeadFields:
    """Validate one lead object; :class:`PermanentError` naming the field otherwise."""
    lead_id = object_id(lead.get("_id"), "lead _id")
    name = lead.get("name")
    archived = lead.get("archived") is True
    owner_id, _ = _ref(lead.get("user"), "lead user")
    stage_id, stage_name = _ref(lead.get("stage"), "lead stage")
    return LeadFields(
        id=lead_id,
        name=str(name) if isinstance(name, str | int) and not isinstance(name, bool) else None,
        size=_size(lead.get("size")),
        archived=archived,
        owner_id=owner_id,
        stage_id=stage_id,
        stage_name=stage_name,
        status=_source_status(lead, archived),
    )


def to_canonical(
    lead: Mapping[str, Any],
    mappings: Mappings,
    *,
    updated_at: datetime,
    pipeline_id: str | None,
    pipeline_name: str | None = None,
    currency: str | None = None,
    change_source: str | None = None,
) -> CanonicalRecord:
    """One lead object as a deal :class:`CanonicalRecord`.

    ``updated_at`` is supplied by the caller (ClinchPad has no timestamps: the pull or activity
    time); ``pipeline_id``/``pipeline_name`` say which pipeline the lead was listed in. An unknown
    stage yields ``stage=None`` with ``unmapped`` set, never a default.
    """
    fields = lead_fields(lead)
    resolved = mappings.to_canonical(
        SOURCE,
        pipeline=pipeline_id,
        stage=fields.stage_id,
        pipeline_name=pipeline_name,
        stage_name=fields.stage_name,
        status=fields.status,
    )
    stage = resolved if isinstance(resolved, StageKey) else None
    status: RecordStatus = "open"
    if stage is not None:
        status = _CLOSED.get(mappings.model.get(stage).kind, "open")
    elif fields.status in ("won", "lost"):
        status = "won" if fields.status == "won" else "lost"
    return CanonicalRecord(
        source=SOURCE,
        kind="deal",
        external_id=fields.id,
        updated_at=updated_at,
        stage=stage,
        unmapped=resolved if isinstance(resolved, UnmappedStage) else None,
        status=status,
        pipeline_id=pipeline_id,
        source_stage=fields.stage_id,
        title=fields.name,
        amount=fields.size,
        currency=currency if fields.size is not None else None,
        owner_id=fields.owner_id,
        change_source=change_source,
    )


def fingerprint(record: CanonicalRecord) -> str:
    """11 characters that change when any synced field of ``record`` changes (not its times).

    Taken over the translated record, so a mapping edit that changes a lead's canonical stage
    counts as a change too and reaches the store at the next pull.
    """
    parts = [
        record.stage.value if record.stage is not None else None,
        record.unmapped is not None,
        record.status,
        record.pipeline_id,
        record.source_stage,
        record.title,
        str(record.amount) if record.amount is not None else None,
        record.currency,
        record.owner_id,
    ]
    digest = hashlib.blake2b(json.dumps(parts, separators=(",", ":")).encode(), digest_size=8).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def stage_from_payload(
    stage: Mapping[str, Any], *, pipeline_id: str, pipeline_name: str, order: int
) -> SourceStage:
    """A ``GET /pipelines/:id/stages`` item (``{_id, name}``) as a :class:`SourceStage`.

    Stages carry no order field: ``order`` is the position in the answer (whether it is the board
    order is not documented).
    """
    stage_id = object_id(stage.get("_id"), "stage _id")
    name = stage.get("name")
    return SourceStage(
        source=SOURCE,
        pipeline_id=pipeline_id,
        pipeline_label=pipeline_name,
        stage_id=stage_id,
        stage_label=str(name) if isinstance(name, str) and name else stage_id,
        order=order,
    )
