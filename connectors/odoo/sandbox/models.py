"""The sandbox's Odoo models: their fields (kind, related model, writable) and record reads.

Read format as the ORM gives it (``odoo/odoo`` ``fields.py`` ``convert_to_read``): empty values are
``False``; a many2one is ``[id, display_name]`` (a bare id with ``load=None``); a many2many a list
of ids; datetimes ``"YYYY-MM-DD HH:MM:SS"`` in UTC, dates ``"YYYY-MM-DD"``. ``id`` is always read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["MODELS", "Field", "read_record"]


@dataclass(frozen=True)
class Field:
    kind: str
    relation: str | None = None
    readonly: bool = False


def _f(kind: str, relation: str | None = None, *, readonly: bool = False) -> Field:
    return Field(kind, relation, readonly)


_LOG = {
    "id": _f("int", readonly=True),
    "create_date": _f("datetime", readonly=True),
    "write_date": _f("datetime", readonly=True),
    "create_uid": _f("m2o", "res.users", readonly=True),
    "write_uid": _f("m2o", "res.users", readonly=True),
    "display_name": _f("char", readonly=True),
}

MODELS: Mapping[str, Mapping[str, Field]] = {
    "crm.lead": {
        **_LOG,
        "name": _f("char"),
        "type": _f("selection"),
        "active": _f("bool"),
        "stage_id": _f("m2o", "crm.stage"),
        "team_id": _f("m2o", "crm.team"),
        "user_id": _f("m2o", "res.users"),
        "probability": _f("float"),
        "automated_probability": _f("float", readonly=True),
        "expected_revenue": _f("float"),
        "company_currency": _f("m2o", "res.currency", readonly=True),
        "date_deadline": _f("date"),
        "date_closed": _f("datetime", readonly=True),
        "date_last_stage_update": _f("datetime"),
        "lost_reason_id": _f("m2o", "crm.lost.reason"),
        "partner_name": _f("char"),
        "email_from": _f("char"),
        "tag_ids": _f("m2m", "crm.tag"),
    },
    "crm.stage": {
        **_LOG,
        "name": _f("char"),
        "sequence": _f("int"),
        "is_won": _f("bool"),
        "fold": _f("bool"),
        "team_id": _f("m2o", "crm.team"),
        "requirements": _f("char"),
        "color": _f("int"),
    },
    "crm.team": {**_LOG, "name": _f("char"), "active": _f("bool")},
    "crm.lost.reason": {**_LOG, "name": _f("char"), "active": _f("bool")},
    "crm.tag": {**_LOG, "name": _f("char"), "color": _f("int")},
    "res.users": {**_LOG, "name": _f("char"), "login": _f("char"), "active": _f("bool")},
    "res.currency": {**_LOG, "name": _f("char")},
}


def _name_of(records: Mapping[str, Mapping[int, Mapping[str, Any]]], model: str | None, rid: int) -> str:
    row = records.get(model or "", {}).get(rid)
    return str(row.get("name")) if row else f"{model},{rid}"


def read_record(
    model: str,
    row: Mapping[str, Any],
    fields: Sequence[str],
    records: Mapping[str, Mapping[int, Mapping[str, Any]]],
    *,
    load: str | None = "_classic_read",
) -> dict[str, Any]:
    """``row`` as ``read``/``search_read`` return it (``fields`` already validated)."""
    spec = MODELS[model]
    out: dict[str, Any] = {"id": row["id"]}
    for name in fields:
        field, value = spec[name], row.get(name)
        if name == "display_name":
            value = row.get("name")
        if value is None or value is False or value == "":
            out[name] = {"m2m": [], "float": 0.0, "int": 0}.get(field.kind, False)
            continue
        if field.kind == "m2o":
            out[name] = [value, _name_of(records, field.relation, value)] if load else value
        elif field.kind == "datetime":
            assert isinstance(value, datetime)
            out[name] = value.strftime("%Y-%m-%d %H:%M:%S")
        elif field.kind == "m2m":
            out[name] = sorted(value)
        else:
            out[name] = value
    return out
