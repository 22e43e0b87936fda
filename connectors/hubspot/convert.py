"""Pure translation between HubSpot CRM v3 deal objects and the canonical model.

No network, no clock: :func:`to_canonical` turns one deal object (as returned by search, batch
read or the archived listing) into a :class:`~sync_worker.canonical.CanonicalRecord`;
:func:`from_canonical` turns one :class:`~sync_worker.canonical.CanonicalUpdate` into the
``properties`` object HubSpot writes. Stages resolve only through the YAML mappings.

HubSpot documentation followed:

* Deals and their default properties:
  https://developers.hubspot.com/docs/api/crm/deals and
  https://knowledge.hubspot.com/properties/hubspots-default-deal-properties
  (``dealname``, ``amount``, ``dealstage``, ``pipeline``, ``closedate``, ``hs_lastmodifieddate``,
  ``hs_is_closed_won``, ``closed_lost_reason``, ``deal_currency_code``, ``hubspot_owner_id``).
  Reading a property the account does not have returns nothing rather than an error, so the
  project's own ``sync_worker_pipedrive_id`` is always asked for.
* Property values: every value is sent and received as a string; date-time values are ISO 8601
  or epoch milliseconds, and an empty string clears a value:
  https://developers.hubspot.com/docs/api/crm/properties
* Pipelines and stage metadata (``probability``, ``isClosed`` as strings):
  https://developers.hubspot.com/docs/api/crm/pipelines
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
    StageKind,
    StageModel,
    UnmappedStage,
)
from sync_worker.errors import PermanentError
from sync_worker.mappings import Mappings

__all__ = [
    "DEAL_PROPERTIES",
    "FLAG_PROPERTIES",
    "LINK_PREFIX",
    "SOURCE",
    "deal_properties",
    "from_canonical",
    "link_property",
    "parse_hubspot_datetime",
    "stages_from_pipelines",
    "to_canonical",
]

SOURCE = "hubspot"

# The project's own deal properties holding the id of the deal's twin in another system, one per
# system named in ``SYNC_HUBSPOT__LINK_SYSTEMS`` (created by ``ensure_identity_properties``); read
# into ``CanonicalRecord.links[<system>]``.
LINK_PREFIX = "sync_worker_"
LINK_SUFFIX = "_id"


def link_property(system: str) -> str:
    """The deal property holding the id of the deal's twin in ``system``."""
    return f"{LINK_PREFIX}{system}{LINK_SUFFIX}"


def _links(props: Mapping[str, Any]) -> dict[str, str]:
    links: dict[str, str] = {}
    for name in props:
        if name.startswith(LINK_PREFIX) and name.endswith(LINK_SUFFIX):
            value = _text(props, name)
            system = name[len(LINK_PREFIX) : -len(LINK_SUFFIX)]
            if value is not None and system:
                links[system] = value
    return links


# What the translation reads; requested on every search, batch read and listing.
DEAL_PROPERTIES: tuple[str, ...] = (
    "dealname",
    "amount",
    "deal_currency_code",
    "dealstage",
    "pipeline",
    "closedate",
    "createdate",
    "hs_lastmodifieddate",
    "hubspot_owner_id",
    "closed_lost_reason",
    "hs_is_closed",
    "hs_is_closed_won",
    "hs_v2_date_entered_current_stage",
)


def deal_properties(link_systems: Sequence[str] = ()) -> tuple[str, ...]:
    """What a read asks for: :data:`DEAL_PROPERTIES` plus the link property of each linked system."""
    return (*DEAL_PROPERTIES, *(link_property(system) for system in link_systems))


# The custom deal properties leak flags are written to (created by ensure_flag_properties).
FLAG_PROPERTIES: tuple[str, ...] = (
    "sync_worker_leak_status",
    "sync_worker_leak_reason",
    "sync_worker_leak_stage",
    "sync_worker_leak_since",
    "sync_worker_leak_days",
)


def parse_hubspot_datetime(value: object) -> datetime | None:
    """A HubSpot date-time value (ISO 8601 or epoch ms, string or number) as aware UTC, or None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise PermanentError(f"not a date-time: {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    if not isinstance(value, str):
        raise PermanentError(f"not a date-time: {type(value).__name__}")
    text = value.strip()
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PermanentError(f"not an ISO 8601 date-time: {text[:40]!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _text(props: Mapping[str, Any], name: str) -> str | None:
    value = props.get(name)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _amount(props: Mapping[str, Any]) -> Decimal | None:
    raw = _text(props, "amount")
    if raw is None:
        return None
    try:
        return Decimal(raw.replace(",", ""))
    except InvalidOperation as exc:
        raise PermanentError(f"deal amount is not a number: {raw[:40]!r}") from exc


def _status(
    key: StageKey | None, props: Mapping[str, Any], model: StageModel, archived: bool
) -> RecordStatus:
    if archived:
        return "deleted"
    if key is not None:
        kind = model.get(key).kind
        if kind is StageKind.WON:
            return "won"
        if kind is StageKind.LOST:
            return "lost"
        return "open"
    # Unmapped stage: fall back on HubSpot's own calculated properties.
    if _text(props, "hs_is_closed_won") == "true":
        return "won"
    if _text(props, "hs_is_closed") == "true":
        return "lost"
    return "open"


def to_canonical(payload: Mapping[str, Any], mappings: Mappings) -> CanonicalRecord:
    """One HubSpot deal object (``{"id", "properties", "createdAt", "updatedAt", "archived"}``).

    An archived deal gets status ``deleted``; an unknown pipeline/stage yields ``stage=None`` and
    ``unmapped`` set. Raises :class:`PermanentError` when the object lacks an id or a timestamp.
    """
    raw_id = payload.get("id")
    if raw_id is None or isinstance(raw_id, bool) or str(raw_id).strip() == "":
        raise PermanentError("deal object has no id")
    props = payload.get("properties") or {}
    if not isinstance(props, Mapping):
        raise PermanentError("deal properties is not an object")
    archived = bool(payload.get("archived"))
    updated = (
        (parse_hubspot_datetime(payload.get("archivedAt")) if archived else None)
        or parse_hubspot_datetime(props.get("hs_lastmodifieddate"))
        or parse_hubspot_datetime(payload.get("updatedAt"))
    )
    if updated is None:
        raise PermanentError(f"deal {raw_id}: no hs_lastmodifieddate or updatedAt")
    pipeline = _text(props, "pipeline")
    stage_id = _text(props, "dealstage")
    resolved = mappings.to_canonical(SOURCE, pipeline=pipeline, stage=stage_id)
    key = resolved if isinstance(resolved, StageKey) else None
    unmapped = resolved if isinstance(resolved, UnmappedStage) else None
    close = parse_hubspot_datetime(props.get("closedate"))
    return CanonicalRecord(
        source=SOURCE,
        kind="deal",
        external_id=str(raw_id),
        updated_at=updated,
        stage=key,
        status=_status(key, props, mappings.model, archived),
        pipeline_id=pipeline,
        source_stage=stage_id,
        title=_text(props, "dealname"),
        amount=_amount(props),
        currency=_text(props, "deal_currency_code"),
        owner_id=_text(props, "hubspot_owner_id"),
        close_date=close.date() if close is not None else None,
        lost_reason=_text(props, "closed_lost_reason"),
        created_at=parse_hubspot_datetime(props.get("createdate"))
        or parse_hubspot_datetime(payload.get("createdAt")),
        stage_changed_at=parse_hubspot_datetime(props.get("hs_v2_date_entered_current_stage")),
        links=_links(props),
        unmapped=unmapped,
    )


def _iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_date(day: date) -> str:
    # HubSpot stores closedate as a date-time; midnight UTC is how it returns date-only values.
    return f"{day.isoformat()}T00:00:00.000Z"


@dataclass(frozen=True)
class _ResolvedStage:
    pipeline: str | None
    stage: str


def _resolve_target(
    key: StageKey, mappings: Mappings, stages: Sequence[SourceStage], pipeline: str | None
) -> _ResolvedStage:
    target = mappings.to_target(SOURCE, key, pipeline=pipeline)
    if target is None or target.stage is None:
        raise PermanentError(f"hubspot: no stage is mapped for canonical stage {key.value!r}")
    if target.match_by == "id":
        pipeline_id = target.pipeline
        if pipeline_id is not None and stages and all(s.pipeline_id != pipeline_id for s in stages):
            # The mapping named its pipeline by label only: write the id HubSpot knows it by.
            wanted = " ".join(pipeline_id.split()).casefold()
            for known in stages:
                if " ".join(known.pipeline_label.split()).casefold() == wanted:
                    pipeline_id = known.pipeline_id
                    break
        return _ResolvedStage(pipeline_id, target.stage)
    wanted_stage = " ".join(target.stage.split()).casefold()
    wanted_pipeline = " ".join(target.pipeline.split()).casefold() if target.pipeline else None
    for known in stages:
        if " ".join(known.stage_label.split()).casefold() != wanted_stage:
            continue
        if wanted_pipeline is not None and wanted_pipeline not in (
            " ".join(known.pipeline_label.split()).casefold(),
            known.pipeline_id.casefold(),
        ):
            continue
        return _ResolvedStage(known.pipeline_id, known.stage_id)
    raise PermanentError(
        f"hubspot: stage named {target.stage!r} (canonical {key.value!r}) is not in the account's pipelines"
    )


def _flag_properties(flag: LeakFlag) -> dict[str, str]:
    if flag.rule is None:
        return {name: "" for name in FLAG_PROPERTIES}
    return {
        "sync_worker_leak_status": flag.rule,
        "sync_worker_leak_reason": flag.reason[:65536],
        "sync_worker_leak_stage": flag.stage.value if flag.stage is not None else "",
        "sync_worker_leak_since": _iso_ms(flag.since) if flag.since is not None else "",
        "sync_worker_leak_days": str(flag.days_in_stage) if flag.days_in_stage is not None else "",
    }


def from_canonical(
    update: CanonicalUpdate,
    mappings: Mappings,
    *,
    stages: Sequence[SourceStage] = (),
    pipeline: str | None = None,
) -> dict[str, str]:
    """The HubSpot ``properties`` object for one update (only the fields the update sets).

    The stage is written as ``dealstage`` + ``pipeline`` from ``mappings.to_target("hubspot", key)``;
    a target matched by name is resolved to ids through ``stages`` (from ``list_stages``).
    ``pipeline`` is the deal's current pipeline, when known, to prefer a stage inside it. A status
    of won/lost without a stage writes the stage mapped to the canonical ``won``/``lost``.
    Raises :class:`PermanentError` when a stage cannot be resolved or the status is ``deleted``.
    """
    props: dict[str, str] = {}
    if update.status == "deleted":
        raise PermanentError("hubspot: deleting a deal through an update is not supported")
    key = update.stage
    if key is None and update.status in ("won", "lost"):
        key = StageKey(update.status)
    if key is not None:
        resolved = _resolve_target(key, mappings, stages, pipeline)
        props["dealstage"] = resolved.stage
        if resolved.pipeline is not None:
            props["pipeline"] = resolved.pipeline
    if update.title is not None:
        props["dealname"] = update.title
    if update.amount is not None:
        props["amount"] = format(update.amount, "f")
    if update.currency is not None:
        props["deal_currency_code"] = update.currency
    if update.close_date is not None:
        props["closedate"] = _iso_date(update.close_date)
    if update.lost_reason is not None:
        props["closed_lost_reason"] = update.lost_reason
    if update.flag is not None:
        props.update(_flag_properties(update.flag))
    return props


def stages_from_pipelines(payload: Mapping[str, Any]) -> list[SourceStage]:
    """``GET /crm/v3/pipelines/deals`` -> every stage, pipelines and stages in display order."""
    results = payload.get("results")
    if not isinstance(results, list):
        raise PermanentError("pipelines response has no results array")
    out: list[SourceStage] = []
    for pipe in sorted(results, key=lambda p: int(p.get("displayOrder") or 0)):
        stages = pipe.get("stages") or []
        for stage in sorted(stages, key=lambda s: int(s.get("displayOrder") or 0)):
            meta = stage.get("metadata") or {}
            probability = meta.get("probability")
            out.append(
                SourceStage(
                    source=SOURCE,
                    pipeline_id=str(pipe["id"]),
                    pipeline_label=str(pipe.get("label") or pipe["id"]),
                    stage_id=str(stage["id"]),
                    stage_label=str(stage.get("label") or stage["id"]),
                    order=int(stage.get("displayOrder") or 0),
                    probability=float(probability) if probability not in (None, "") else None,
                    is_closed=str(meta.get("isClosed", "false")).lower() == "true",
                )
            )
    return out
