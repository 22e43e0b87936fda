"""Pure translation between Salesforce Opportunities and the canonical model (no I/O, no clock).

Field names follow the Object Reference: Opportunity (``StageName``, ``Amount``, ``CloseDate``,
``IsClosed``, ``IsWon``, ``LastModifiedById``, ``SystemModstamp``, ``IsDeleted``;
https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_opportunity.htm)
and OpportunityStage (``ApiName``, ``MasterLabel``, ``SortOrder``, ``IsActive``, ``IsClosed``,
``IsWon``, ``DefaultProbability``, ``ForecastCategoryName``;
https://developer.salesforce.com/docs/atlas.en-us.object_reference.meta/object_reference/sforce_api_objects_opportunitystage.htm).

Won and lost come from the stage's flags, never its label: ``IsClosed && IsWon`` is won,
``IsClosed && !IsWon`` lost. Stages resolve through ``mappings/salesforce.yaml`` only: the one
pseudo-pipeline :data:`PIPELINE_ID` holds the ``StageName`` values (``id``, the picklist API name)
and their labels (``name``); its ``statuses`` won/lost catch closed stages the file does not list.
Records read over REST and Outbound Message ``sObject`` fields (all text) go through the same
:func:`to_canonical`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from connectors.salesforce.wire import parse_datetime
from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    LeakFlag,
    RecordStatus,
    SourceStage,
    StageKey,
    UnmappedStage,
)
from sync_worker.errors import PayloadError, PermanentError
from sync_worker.mappings import Mappings, normalise_name

__all__ = [
    "NEW_CLOSE_DATE_DAYS",
    "PIPELINE_ID",
    "PIPELINE_LABEL",
    "SOURCE",
    "STAGE_FIELDS",
    "STAGE_QUERY",
    "StageFlags",
    "check_id",
    "flag_text",
    "from_canonical",
    "is_record_id",
    "opportunity_fields",
    "stage_from_payload",
    "to_canonical",
]

SOURCE = "salesforce"
PIPELINE_ID = "Opportunity"
PIPELINE_LABEL = "Opportunities"
STAGE_FIELDS = (
    "Id",
    "ApiName",
    "MasterLabel",
    "SortOrder",
    "IsActive",
    "IsClosed",
    "IsWon",
    "DefaultProbability",
    "ForecastCategoryName",
)
STAGE_QUERY = f"SELECT {', '.join(STAGE_FIELDS)} FROM OpportunityStage ORDER BY SortOrder"  # noqa: S608
_OPPORTUNITY_FIELDS = (
    "Id",
    "Name",
    "StageName",
    "Amount",
    "CloseDate",
    "Probability",
    "IsClosed",
    "IsWon",
    "ForecastCategoryName",
    "OwnerId",
    "CreatedDate",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
    "IsDeleted",
    "Account.Name",
)
NEW_CLOSE_DATE_DAYS = 30
"""``CloseDate`` is required on a new Opportunity; one created without it closes this many days out."""

StageFlags = Mapping[str, tuple[bool, bool]]
"""``StageName`` API value -> ``(IsClosed, IsWon)`` of its OpportunityStage."""

_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")


def opportunity_fields(multi_currency: bool = False) -> tuple[str, ...]:
    """The Opportunity fields a pull selects (``CurrencyIsoCode`` exists only in multi-currency orgs)."""
    return (*_OPPORTUNITY_FIELDS, "CurrencyIsoCode") if multi_currency else _OPPORTUNITY_FIELDS


def is_record_id(value: str) -> bool:
    """True for a 15- or 18-character record id (letters and digits only: safe inside SOQL)."""
    return _ID.match(value) is not None


def check_id(value: str) -> str:
    """``value`` when it is a record id (:func:`is_record_id`), else :class:`PermanentError`."""
    if not is_record_id(value):
        raise PermanentError(f"salesforce: {value[:40]!r} is not a record id")
    return value


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _decimal(value: Any, field: str) -> Decimal | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise PayloadError(f"salesforce: {field} {text[:30]!r} is not a number") from exc


def _date(value: Any, field: str) -> date | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError as exc:
        raise PayloadError(f"salesforce: {field} {text[:30]!r} is not a date") from exc


def stage_from_payload(row: Mapping[str, Any]) -> SourceStage:
    """One OpportunityStage row (SOQL) as a :class:`SourceStage` of :data:`PIPELINE_ID`."""
    api_name = _text(row.get("ApiName")) or _text(row.get("MasterLabel"))
    if api_name is None:
        raise PermanentError("salesforce: an OpportunityStage row has no ApiName")
    probability = _decimal(row.get("DefaultProbability"), "DefaultProbability")
    order = row.get("SortOrder")
    return SourceStage(
        source=SOURCE,
        pipeline_id=PIPELINE_ID,
        pipeline_label=PIPELINE_LABEL,
        stage_id=api_name,
        stage_label=_text(row.get("MasterLabel")) or api_name,
        order=order if isinstance(order, int) and not isinstance(order, bool) else 0,
        probability=float(probability) / 100 if probability is not None else None,
        is_closed=_bool(row.get("IsClosed")) is True,
    )


def _status(opp: Mapping[str, Any], flags: StageFlags) -> RecordStatus:
    if _bool(opp.get("IsDeleted")) is True:
        return "deleted"
    closed, won = _bool(opp.get("IsClosed")), _bool(opp.get("IsWon"))
    if closed is None:
        closed, won = flags.get(str(opp.get("StageName")), (False, False))
    if closed:
        return "won" if won else "lost"
    return "open"


def to_canonical(
    opp: Mapping[str, Any],
    mappings: Mappings,
    *,
    flags: StageFlags = {},  # noqa: B006 - read only
    currency: str | None = None,
) -> CanonicalRecord:
    """One Opportunity (REST record or Outbound Message fields) as a canonical deal.

    ``flags`` tells won/lost when the record does not carry ``IsClosed``/``IsWon``. Raises
    :class:`PayloadError` without ``Id`` or a modification time.
    """
    external_id = _text(opp.get("Id"))
    if external_id is None:
        raise PayloadError("salesforce: an Opportunity has no Id")
    updated = parse_datetime(opp.get("SystemModstamp")) or parse_datetime(opp.get("LastModifiedDate"))
    if updated is None:
        raise PayloadError(f"salesforce: Opportunity {external_id} has no SystemModstamp")
    status = _status(opp, flags)
    stage_name = _text(opp.get("StageName"))
    closed_status = status if status in ("won", "lost") else None
    resolved = mappings.to_canonical(SOURCE, pipeline=PIPELINE_ID, stage=stage_name, status=closed_status)
    account = opp.get("Account")
    company = _text(account.get("Name")) if isinstance(account, Mapping) else None
    record = CanonicalRecord(
        source=SOURCE,
        kind="deal",
        external_id=external_id,
        updated_at=updated,
        status=status,
        pipeline_id=PIPELINE_ID,
        source_stage=stage_name,
        title=_text(opp.get("Name")),
        amount=_decimal(opp.get("Amount"), "Amount"),
        currency=_text(opp.get("CurrencyIsoCode")) or currency,
        owner_id=_text(opp.get("OwnerId")),
        company=company,
        close_date=_date(opp.get("CloseDate"), "CloseDate"),
        created_at=parse_datetime(opp.get("CreatedDate")),
        change_source=_text(opp.get("LastModifiedById")),
    )
    if isinstance(resolved, UnmappedStage):
        return replace(record, unmapped=resolved)
    return replace(record, stage=resolved)


def flag_text(flag: LeakFlag) -> str | None:
    """The text a leak flag writes into the flag field (None clears it); at most 255 characters."""
    if flag.rule is None:
        return None
    parts: list[str] = [flag.rule]
    if flag.stage is not None:
        parts.append(f"in {flag.stage.value}")
    if flag.days_in_stage is not None:
        parts.append(f"for {flag.days_in_stage} days")
    text = " ".join(parts) + (f": {flag.reason}" if flag.reason else "")
    return text[:255]


def _stage_value(key: StageKey, mappings: Mappings, stages: Sequence[SourceStage]) -> str:
    target = mappings.to_target(SOURCE, key, pipeline=PIPELINE_ID)
    if target is None or target.stage is None:
        raise PermanentError(f"salesforce: canonical stage {key.value!r} has no Salesforce stage to write")
    if target.match_by == "id":
        return target.stage
    wanted = normalise_name(target.stage)
    for stage in stages:
        if normalise_name(stage.stage_label) == wanted or normalise_name(stage.stage_id) == wanted:
            return stage.stage_id
    raise PermanentError(f"salesforce: no OpportunityStage is named {target.stage!r}")


def from_canonical(
    update: CanonicalUpdate,
    mappings: Mappings,
    *,
    stages: Sequence[SourceStage] = (),
    today: date,
    multi_currency: bool = False,
    flag_field: str | None = None,
) -> dict[str, Any]:
    """The Opportunity fields to write for ``update`` (no ``attributes``/``id``: the caller adds them).

    Won/lost write the stage the mapping gives canonical won/lost. Raises :class:`PermanentError`
    when the update cannot be expressed (an unmapped stage, ``deleted``, a leak flag without a flag
    field, a new Opportunity without a name or a stage).
    """
    fields: dict[str, Any] = {}
    key = update.stage
    if update.status == "deleted":
        raise PermanentError("salesforce: deleting an Opportunity is not pushed")
    if update.status in ("won", "lost") and key not in (StageKey.WON, StageKey.LOST):
        key = StageKey(update.status)
    if key is not None:
        fields["StageName"] = _stage_value(key, mappings, stages)
    if update.title is not None:
        fields["Name"] = update.title[:120]
    if update.amount is not None:
        fields["Amount"] = float(update.amount)
    if update.currency is not None and multi_currency:
        fields["CurrencyIsoCode"] = update.currency
    if update.close_date is not None:
        fields["CloseDate"] = update.close_date.isoformat()
    if update.flag is not None:
        if flag_field is None:
            raise PermanentError("salesforce: leak flags need SYNC_SALESFORCE__FLAG_FIELD (a text field)")
        fields[flag_field] = flag_text(update.flag)
    if update.external_id is None:
        if "Name" not in fields:
            raise PermanentError("salesforce: a new Opportunity needs a name")
        if "StageName" not in fields:
            raise PermanentError("salesforce: a new Opportunity needs a stage")
        fields.setdefault("CloseDate", (today + timedelta(days=NEW_CLOSE_DATE_DAYS)).isoformat())
    return fields
