"""CanonicalUpdate <-> JSON, for outbox payloads.

The outbox stores JSON text; the engine's push step turns a payload back into the
:class:`~sync_worker.canonical.CanonicalUpdate` it hands a connector. Amounts travel as decimal
strings (no float rounding), dates and timestamps as ISO 8601, stage keys as their values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sync_worker.canonical import CanonicalUpdate, LeakFlag, StageKey
from sync_worker.errors import PermanentError

__all__ = ["deserialise_update", "serialise_update"]


def _plain(value: object) -> object:
    if isinstance(value, StageKey):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def serialise_update(update: CanonicalUpdate) -> dict[str, Any]:
    """A JSON-ready dict of every field of ``update`` (the flag as a nested dict or None)."""
    body: dict[str, Any] = {}
    for spec in fields(update):
        value = getattr(update, spec.name)
        if isinstance(value, LeakFlag):
            body[spec.name] = {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
        else:
            body[spec.name] = _plain(value)
    return body


def _opt(body: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    raw = body.get(key)
    if raw is None:
        return None
    if kind is datetime:
        return datetime.fromisoformat(raw)
    if kind is date:
        return date.fromisoformat(raw)
    return kind(raw)


def deserialise_update(body: Mapping[str, Any]) -> CanonicalUpdate:
    """The update :func:`serialise_update` produced; :class:`PermanentError` when malformed."""
    try:
        raw_flag = body.get("flag")
        flag = None
        if raw_flag is not None:
            flag = LeakFlag(
                rule=raw_flag.get("rule"),
                reason=raw_flag.get("reason") or "",
                stage=_opt(raw_flag, "stage", StageKey),
                since=_opt(raw_flag, "since", datetime),
                days_in_stage=_opt(raw_flag, "days_in_stage", int),
            )
        return CanonicalUpdate(
            target=str(body["target"]),
            idempotency_key=str(body["idempotency_key"]),
            origin=str(body["origin"]),
            external_id=body.get("external_id"),
            kind=body.get("kind") or "deal",
            stage=_opt(body, "stage", StageKey),
            status=body.get("status"),
            title=body.get("title"),
            amount=_opt(body, "amount", Decimal),
            currency=body.get("currency"),
            close_date=_opt(body, "close_date", date),
            lost_reason=body.get("lost_reason"),
            contact_email=body.get("contact_email"),
            origin_id=body.get("origin_id"),
            flag=flag,
        )
    except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
        raise PermanentError(f"not a serialised CanonicalUpdate: {type(exc).__name__}") from exc
