"""Pure translation between LaGrowthMachine payloads and the canonical model.

No network, no clock: every time a record needs that the payload does not carry is passed in
(``observed_at``). Stages resolve only through the YAML mappings (``mappings.to_canonical``,
``mappings.reply_stage``, ``mappings.to_target``); no status name is mapped here.

Payload shapes followed (see the package docstring for which parts are documented and which are
assumed):

- campaign lead stats row (``GET /campaigns/:campaignId/statsleads``): ``id``, ``firstname``,
  ``lastname``, ``email``, ``companyName``, ``companyUrl``, ``linkedinUrl``, ``status``,
  ``action_todo``: https://documenter.getpostman.com/view/2071164/TVCmSkH2
- inbox webhook body, published shape (see :mod:`connectors.lagrowthmachine.webhooks`):
  ``{"type": "INBOX_MESSAGE", "messageChannel", "lead": {"id", "linkedinUrl", "email"},
  "messages": [{"id", "content", "direction": "INCOMING" | "OUTGOING", "createdAt"}]}``;
- inbox message, flat shape (what the connector read before the published one; still accepted):
  ``messageId``, ``conversationId``, ``leadId``, ``campaignId``, ``createdAt`` (Unix ms or ISO 8601),
  ``received`` / ``sent`` or ``direction``, ``messageChannel``, ``lead``;
- conversation (an item of ``GET /conversations/search``'s ``data``): the fields the vendor's node
  filters on (``LaGrowthMachine/n8n-nodes-lagrowthmachine``,
  ``nodes/LaGrowthMachine/descriptions/ConversationDescription.ts``): ``id``, ``leadId``,
  ``campaignId``, ``identityId``, ``lastMessageAt`` (epoch ms), ``lastMessageStatus`` (``RECEIVED``,
  ``SENT``, ``SEND_FAILED``), ``lastMessageType``, ``leadReplied``; a ``lastMessage`` object and a
  ``lead`` object are read when present (assumed);
- lead status update (``POST /leads/status``, form-encoded): ``status``, ``campaign`` (a campaign
  name, repeated for several, or ``all``: ``nodes/LaGrowthMachine/LaGrowthMachine.node.ts``,
  ``updateStatus``), and ``proEmail`` identifying the lead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    RecordStatus,
    StageKey,
    StageKind,
    StageModel,
    UnmappedStage,
)
from sync_worker.errors import PayloadError, PermanentError
from sync_worker.mappings import Mappings

__all__ = [
    "REPLY_SOURCE_STAGE",
    "SOURCE",
    "from_canonical",
    "is_deleted",
    "is_incoming",
    "lead_to_canonical",
    "parse_id",
    "parse_timestamp",
    "reply_message",
    "reply_to_canonical",
    "to_canonical",
]

SOURCE = "lagrowthmachine"
REPLY_SOURCE_STAGE = "REPLIED"
"""``source_stage`` of a reply record: a reply is an event, not a lead status."""

# Keys under which a lead may carry the id of the same person/deal in a CRM (assumed: LGM's native
# CRM integrations store these on the lead; not in the public API reference).
_CRM_ID_KEYS: Mapping[str, tuple[str, ...]] = {
    "hubspot": ("hubspotId", "hubspot_id", "hubspotContactId"),
    "pipedrive": ("pipedriveId", "pipedrive_id", "pipedrivePersonId"),
}


def parse_id(value: object, field: str) -> str:
    """An id that may arrive as a string or an integer, as a non-empty string."""
    if isinstance(value, bool) or value is None:
        raise PayloadError(f"{field}: expected an id, got {type(value).__name__}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise PayloadError(f"{field}: expected a non-empty string or integer id")


def parse_timestamp(value: object, field: str) -> datetime:
    """Unix milliseconds (LGM's ``createdAt``) or an ISO 8601 string, as aware UTC."""
    if isinstance(value, bool) or value is None:
        raise PayloadError(f"{field}: expected a timestamp")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value / 1000.0, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise PayloadError(f"{field}: timestamp out of range") from exc
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return parse_timestamp(int(text), field)
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise PayloadError(f"{field}: not an ISO 8601 timestamp") from exc
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise PayloadError(f"{field}: expected Unix milliseconds or an ISO 8601 string")


def _text(payload: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _links(lead: Mapping[str, Any]) -> dict[str, str]:
    links: dict[str, str] = {}
    for system, keys in _CRM_ID_KEYS.items():
        for key in keys:
            value = lead.get(key)
            if value is not None and not isinstance(value, bool) and str(value).strip():
                links[system] = str(value).strip()
                break
    return links


def _status_for(model: StageModel, key: StageKey) -> RecordStatus:
    kind = model.get(key).kind
    if kind is StageKind.WON:
        return "won"
    if kind is StageKind.LOST:
        return "lost"
    return "open"


def is_deleted(lead: Mapping[str, Any]) -> bool:
    """True when a lead row says the lead was removed (assumed flags: deleted, isDeleted, removed)."""
    return any(lead.get(key) is True for key in ("deleted", "isDeleted", "removed"))


def lead_to_canonical(
    lead: Mapping[str, Any],
    mappings: Mappings,
    *,
    observed_at: datetime,
    campaign_id: str | None = None,
) -> CanonicalRecord:
    """A lead-status record from one campaign lead stats row.

    The row carries no modification time, so ``observed_at`` (when the pull read it) is the
    record's ``updated_at``. The status resolves through the mappings with ``pipeline=None``; an
    unknown status is an :class:`UnmappedStage` in ``unmapped``, never a default. A lead flagged
    ``deleted``/``removed`` becomes a ``deleted`` record.
    """
    lead_id = parse_id(lead.get("id", lead.get("leadId")), "lead.id")
    status = _text(lead, "status", "leadStatus")
    common: dict[str, Any] = {
        "source": SOURCE,
        "kind": "lead",
        "external_id": lead_id,
        "updated_at": observed_at,
        "pipeline_id": campaign_id,
        "source_stage": status,
        "title": " ".join(p for p in (_text(lead, "firstname"), _text(lead, "lastname")) if p) or None,
        "contact_email": _text(lead, "proEmail", "email", "persoEmail"),
        "linkedin_url": _text(lead, "linkedinUrl"),
        "company": _text(lead, "companyName"),
        "links": _links(lead),
    }
    if is_deleted(lead):
        return CanonicalRecord(**common, status="deleted")
    resolved = mappings.to_canonical(SOURCE, pipeline=None, stage=status)
    if isinstance(resolved, UnmappedStage):
        return CanonicalRecord(**common, unmapped=resolved)
    return CanonicalRecord(**common, stage=resolved, status=_status_for(mappings.model, resolved))


def is_incoming(message: Mapping[str, Any]) -> bool:
    """True when an inbox message was received from the lead (a reply), not sent to them.

    ``direction: "INCOMING"`` is the published webhook's word; ``received: true``, ``direction:
    "inbound"`` and ``status: "RECEIVED"`` (the conversation search's ``lastMessageStatus`` value)
    are accepted too.
    """
    if message.get("received") is True:
        return True
    direction = message.get("direction")
    if isinstance(direction, str) and direction.lower() in ("inbound", "incoming", "received"):
        return True
    status = message.get("status")
    return isinstance(status, str) and status.upper() == "RECEIVED"


def _with_context(message: Mapping[str, Any], holder: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(message)
    for key in ("leadId", "campaignId", "lead", "messageChannel"):
        if merged.get(key) is None and holder.get(key) is not None:
            merged[key] = holder[key]
    return merged


def reply_message(payload: Mapping[str, Any]) -> dict[str, Any] | None:
    """The incoming message ``payload`` carries, as one flat message; None when it carries none.

    ``payload`` is a published ``INBOX_MESSAGE`` body (its last ``INCOMING`` entry of
    ``messages[]``, with the body's ``lead`` and ``messageChannel``), a conversation of the
    conversation search (its ``lastMessage``, or ``lastMessageStatus: "RECEIVED"`` at
    ``lastMessageAt``), or a flat inbox message.
    """
    messages = payload.get("messages")
    if isinstance(messages, list):
        incoming = [m for m in messages if isinstance(m, Mapping) and is_incoming(m)]
        if not incoming:
            return None
        message = _with_context(incoming[-1], payload)
        lead = message.get("lead")
        if message.get("leadId") is None and isinstance(lead, Mapping):
            message["leadId"] = lead.get("id")
        message.setdefault("messageId", message.get("id"))
        return message
    last = payload.get("lastMessage")
    if isinstance(last, Mapping):
        message = _with_context(last, payload)
        return message if is_incoming(message) else None
    if "lastMessageStatus" in payload or "lastMessageAt" in payload:
        status = payload.get("lastMessageStatus")
        if not (isinstance(status, str) and status.upper() == "RECEIVED"):
            return None
        flat = {"conversationId": payload.get("id"), "createdAt": payload.get("lastMessageAt")}
        return _with_context({**flat, "received": True}, payload)
    return dict(payload) if is_incoming(payload) else None


def reply_to_canonical(message: Mapping[str, Any], mappings: Mappings) -> CanonicalRecord:
    """An "a lead replied" record from one payload that carries an incoming message.

    ``message`` is any shape :func:`reply_message` reads (the webhook's ``raw`` or a conversation
    search item). ``replied_at`` and ``updated_at`` are the message's ``createdAt``; the stage is
    ``mappings.reply_stage("lagrowthmachine")`` (an :class:`UnmappedStage` when none is configured).
    :class:`PermanentError` when it carries no incoming message.
    """
    flat = reply_message(message)
    if flat is None:
        raise PermanentError("lagrowthmachine: the payload carries no incoming message (not a reply)")
    message = flat
    lead_raw = message.get("lead")
    lead: Mapping[str, Any] = lead_raw if isinstance(lead_raw, Mapping) else {}
    lead_id = parse_id(message.get("leadId", lead.get("id")), "leadId")
    replied_at = parse_timestamp(message.get("createdAt"), "createdAt")
    campaign = message.get("campaignId")
    stage = mappings.reply_stage(SOURCE)
    return CanonicalRecord(
        source=SOURCE,
        kind="lead",
        external_id=lead_id,
        updated_at=replied_at,
        stage=stage,
        status="open" if stage is None else _status_for(mappings.model, stage),
        pipeline_id=parse_id(campaign, "campaignId") if campaign is not None else None,
        source_stage=REPLY_SOURCE_STAGE,
        title=" ".join(
            p for p in (_text(lead, "firstname", "firstName"), _text(lead, "lastname", "lastName")) if p
        )
        or None,
        contact_email=_text(lead, "proEmail", "email", "persoEmail"),
        linkedin_url=_text(lead, "linkedinUrl"),
        company=_text(lead, "companyName"),
        replied_at=replied_at,
        links=_links(lead),
        unmapped=UnmappedStage(SOURCE, None, REPLY_SOURCE_STAGE) if stage is None else None,
    )


def to_canonical(
    payload: Mapping[str, Any],
    mappings: Mappings,
    *,
    kind: Literal["lead", "message"],
    observed_at: datetime | None = None,
    campaign_id: str | None = None,
) -> CanonicalRecord:
    """Translate one payload: a lead stats row (``kind="lead"``) or an incoming message."""
    if kind == "message":
        return reply_to_canonical(payload, mappings)
    if observed_at is None:
        raise PermanentError("lagrowthmachine: a lead row needs observed_at (it carries no timestamp)")
    return lead_to_canonical(payload, mappings, observed_at=observed_at, campaign_id=campaign_id)


def _target_key(update: CanonicalUpdate) -> StageKey | None:
    if update.stage is not None:
        return update.stage
    if update.status == "won":
        return StageKey.WON
    if update.status == "lost":
        return StageKey.LOST
    return None


def from_canonical(
    update: CanonicalUpdate, mappings: Mappings, *, campaigns: Sequence[str] | None = None
) -> dict[str, str | list[str]]:
    """The form fields of ``POST /leads/status`` for one update.

    ``campaign`` is ``all`` (every campaign the lead is in: a won or lost deal must stop every
    sequence) unless ``campaigns`` names some (campaign NAMES, sent as a repeated ``campaign``
    field, as the vendor's node does). The lead is identified by ``contact_email`` sent as
    ``proEmail``. Raises :class:`PermanentError` when the update cannot be expressed (no stage or
    won/lost status, a stage the mapping cannot represent, no e-mail, an empty campaign list).
    """
    key = _target_key(update)
    if key is None:
        raise PermanentError("lagrowthmachine: only a stage or a won/lost status can be pushed")
    target = mappings.to_target(SOURCE, key)
    status = None if target is None else (target.status or target.stage)
    if not status:
        raise PermanentError(f"lagrowthmachine: canonical stage {key.value!r} has no lead status mapped")
    if not update.contact_email:
        raise PermanentError("lagrowthmachine: a lead status update needs the lead's e-mail")
    if campaigns is not None and not campaigns:
        raise PermanentError("lagrowthmachine: no campaign to apply the lead status to")
    campaign: str | list[str] = "all" if campaigns is None else list(campaigns)
    return {"status": status, "proEmail": update.contact_email, "campaign": campaign}
