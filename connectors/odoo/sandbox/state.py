"""One Odoo database in memory, with the ORM behaviour the connector relies on.

Followed from ``odoo/odoo`` (``addons/crm/models/crm_lead.py``, ``crm_stage.py``, the ORM) and the
external API pages (https://www.odoo.com/documentation/19.0/developer/reference/external_api.html):

- ``search_read(domain, fields, offset, limit, order)``, ``read(ids, fields, load)``, ``search``,
  ``search_count``, ``create(vals_list)`` (ids in order), ``write(ids, vals)`` (the same values for
  every id, returns True), ``unlink(ids)`` (a hard delete: nothing remembers the record).
- ``active_test``: records with ``active = False`` are left out of searches unless the context says
  ``active_test: False`` or the domain names ``active``.
- Writing ``is_won`` on a stage sets probability 100 on its leads; a lead moved to a won stage gets
  probability 100. The CRM actions are in :mod:`connectors.odoo.sandbox.crm`.
- ``write_date`` is kept with microseconds (reads show the second), ``write_uid`` is the caller.
- ``res.users.context_get()``.

Errors are :class:`OdooError` carrying Odoo's exception name and the JSON-2 status it answers with.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.odoo.sandbox.domain import DomainError, matches, mentions
from connectors.odoo.sandbox.models import MODELS, read_record

__all__ = ["Env", "OdooError", "OdooState", "value_error"]

_MODEL_METHODS = frozenset({"search_read", "search", "search_count", "create", "context_get"})
_LEAD_ONLY = frozenset(
    {"action_set_lost", "action_set_won", "action_unarchive", "action_archive", "message_post"}
)
_DEFAULT_ORDER = {"crm.stage": "sequence, name, id", "crm.lead": "id desc"}


class OdooError(Exception):
    """A failed call: ``name`` as Odoo reports it (``odoo.exceptions.AccessDenied``), ``status``
    the JSON-2 answer's."""

    def __init__(self, name: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.status = status


def value_error(message: str) -> OdooError:
    return OdooError("builtins.ValueError", message, 422)


@dataclass(frozen=True)
class Env:
    """Who calls, with which context."""

    uid: int
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def active_test(self) -> bool:
        return self.context.get("active_test", True) is not False


class OdooState:
    """The records by model and id; every public method is thread-safe."""

    def __init__(
        self, *, now: Callable[[], datetime] = lambda: datetime.now(UTC), database: str = "sandbox"
    ) -> None:
        self.now = now
        self.database = database
        self.records: dict[str, dict[int, dict[str, Any]]] = {model: {} for model in MODELS}
        self.messages: list[dict[str, Any]] = []
        self.lock = threading.RLock()
        self.on_change: Callable[[str, list[int]], None] | None = None
        self._next = dict.fromkeys(MODELS, 1)

    def __repr__(self) -> str:
        return f"OdooState(leads={len(self.records['crm.lead'])})"

    # -- direct access (seeding, the people in the sandbox) --------------------------------

    def insert(self, model: str, values: Mapping[str, Any], *, uid: int, at: datetime | None = None) -> int:
        with self.lock:
            rid = self._next[model]
            self._next[model] = rid + 1
            stamp = at or self.now()
            row: dict[str, Any] = {
                "id": rid,
                "create_date": stamp,
                "write_date": stamp,
                "create_uid": uid,
                "write_uid": uid,
            }
            if "active" in MODELS[model]:
                row["active"] = True
            row.update(values)
            self.records[model][rid] = row
            return rid

    def lead(self, lead_id: int) -> dict[str, Any]:
        with self.lock:
            return dict(self.records["crm.lead"][lead_id])

    def read_for_webhook(self, lead_id: int, fields: Sequence[str]) -> dict[str, Any] | None:
        with self.lock:
            row = self.records["crm.lead"].get(lead_id)
            return read_record("crm.lead", row, fields, self.records, load=None) if row else None

    # -- the API ---------------------------------------------------------------------------

    def call(self, env: Env, model: str, method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Run ``model.method(*args, **kwargs)`` as ``env`` (``args[0]`` is the ids of a record method)."""
        if model not in MODELS:
            raise OdooError("builtins.KeyError", f"Model {model!r} does not exist", 404)
        fn = getattr(self, "m_" + method.replace(".", "_"), None)
        if (
            fn is None
            or (method in _LEAD_ONLY and model != "crm.lead")
            or (method == "context_get" and model != "res.users")
        ):
            raise OdooError(
                "builtins.AttributeError", f"The method '{method}' does not exist on the model '{model}'", 404
            )
        try:
            bound = inspect.signature(fn).bind(env, model, *args, **kwargs)
        except TypeError as exc:
            raise OdooError("builtins.TypeError", f"{model}.{method}(): {exc}", 422) from exc
        with self.lock:
            try:
                return fn(*bound.args, **bound.kwargs)
            except DomainError as exc:
                raise value_error(str(exc)) from exc

    @staticmethod
    def is_model_method(method: str) -> bool:
        return method in _MODEL_METHODS

    def _fields(self, model: str, fields: Sequence[str] | None) -> list[str]:
        spec = MODELS[model]
        names = list(fields) if fields else [n for n in spec if n != "id"]
        unknown = [n for n in names if n not in spec]
        if unknown:
            raise value_error(f"Invalid field {unknown[0]!r} on model {model!r}")
        return [n for n in names if n != "id"]

    def _order_key(self, model: str, order: str | None) -> list[tuple[str, bool]]:
        terms: list[tuple[str, bool]] = []
        for part in (order or _DEFAULT_ORDER.get(model, "id")).split(","):
            words = part.split()
            if (
                not words
                or words[0] not in MODELS[model]
                or (len(words) > 1 and words[1].lower() not in ("asc", "desc"))
            ):
                raise value_error(f"Invalid order {order!r}")
            terms.append((words[0], len(words) > 1 and words[1].lower() == "desc"))
        return terms

    def _search(
        self,
        env: Env,
        model: str,
        domain: Sequence[Any] | None,
        offset: int,
        limit: int | None,
        order: str | None,
    ) -> list[dict[str, Any]]:
        domain = list(domain or [])
        kinds = {name: f.kind for name, f in MODELS[model].items()}
        active = "active" in kinds and env.active_test and not mentions(domain, "active")
        rows = [
            r
            for r in self.records[model].values()
            if (not active or r.get("active")) and matches(domain, r, kinds)
        ]
        for name, desc in reversed(self._order_key(model, order)):
            rows.sort(key=_sort_key(name), reverse=desc)
        rows = rows[offset:]
        return rows[:limit] if limit else rows

    def _existing(self, model: str, ids: Any) -> list[dict[str, Any]]:
        if isinstance(ids, int) and not isinstance(ids, bool):
            ids = [ids]
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise value_error("ids must be a list of integers")
        missing = [i for i in ids if i not in self.records[model]]
        if missing:
            raise OdooError(
                "odoo.exceptions.MissingError",
                f"Record does not exist or has been deleted. (Records: {model}({missing[0]},))",
                404,
            )
        return [self.records[model][i] for i in ids]

    def m_search_read(
        self,
        env: Env,
        model: str,
        domain: Any = None,
        fields: Any = None,
        offset: int = 0,
        limit: int | None = None,
        order: str | None = None,
        load: str | None = "_classic_read",
    ) -> list[dict[str, Any]]:
        names = self._fields(model, fields)
        rows = self._search(env, model, domain, offset, limit, order)
        return [read_record(model, r, names, self.records, load=load) for r in rows]

    def m_search(
        self,
        env: Env,
        model: str,
        domain: Any = None,
        offset: int = 0,
        limit: int | None = None,
        order: str | None = None,
    ) -> list[int]:
        return [r["id"] for r in self._search(env, model, domain, offset, limit, order)]

    def m_search_count(self, env: Env, model: str, domain: Any = None, limit: int | None = None) -> int:
        return len(self._search(env, model, domain, 0, limit, None))

    def m_read(
        self, env: Env, model: str, ids: Any, fields: Any = None, load: str | None = "_classic_read"
    ) -> list[dict[str, Any]]:
        names = self._fields(model, fields)
        return [read_record(model, r, names, self.records, load=load) for r in self._existing(model, ids)]

    def m_context_get(self, env: Env, model: str) -> dict[str, Any]:
        return {"lang": "en_US", "tz": "Europe/Brussels", "uid": env.uid}

    def _clean(self, model: str, vals: Any) -> dict[str, Any]:
        if not isinstance(vals, dict):
            raise value_error("vals must be a dictionary of field values")
        spec, clean = MODELS[model], {}
        for name, value in vals.items():
            if name not in spec:
                raise value_error(f"Invalid field {name!r} on model {model!r}")
            kind, relation = spec[name].kind, spec[name].relation
            if (
                kind == "m2o"
                and value not in (False, None)
                and value not in self.records.get(relation or "", {})
            ):
                raise OdooError(
                    "psycopg2.errors.ForeignKeyViolation", f"{name}: no {relation} record {value!r}", 422
                )
            if name == "probability" and not 0 <= float(value) <= 100:
                raise OdooError(
                    "psycopg2.errors.CheckViolation",
                    "The probability of closing the deal should be between 0% and 100%!",
                    422,
                )
            if not spec[name].readonly:
                clean[name] = value
        return clean

    def _apply(self, env: Env, model: str, row: dict[str, Any], vals: Mapping[str, Any]) -> None:
        now = self.now()
        for name, value in vals.items():
            if MODELS[model][name].kind == "m2m":
                row[name] = _commands(row.get(name) or [], value)
            else:
                row[name] = value
        if model == "crm.lead" and "stage_id" in vals:
            row["date_last_stage_update"] = now
            if self._stage_won(vals["stage_id"]):
                row["probability"] = row["automated_probability"] = 100.0
        if model == "crm.stage" and "is_won" in vals:
            for lead in self.records["crm.lead"].values():
                if lead.get("stage_id") == row["id"]:
                    lead["probability"] = 100.0 if vals["is_won"] else 10.0
        row["write_date"], row["write_uid"] = now, env.uid

    def _stage_won(self, stage_id: Any) -> bool:
        return bool(self.records["crm.stage"].get(stage_id, {}).get("is_won"))

    def _changed(self, model: str, ids: list[int]) -> None:
        if model == "crm.lead" and ids and self.on_change is not None:
            self.on_change(model, ids)

    def m_write(self, env: Env, model: str, ids: Any, vals: Any) -> bool:
        rows = self._existing(model, ids)
        clean = self._clean(model, vals)
        for row in rows:
            self._apply(env, model, row, clean)
        self._changed(model, [r["id"] for r in rows])
        return True

    def m_create(self, env: Env, model: str, vals_list: Any) -> list[int]:
        items = vals_list if isinstance(vals_list, list) else [vals_list]
        cleaned = [self._clean(model, vals) for vals in items]
        ids: list[int] = []
        for vals in cleaned:
            if "name" in MODELS[model] and not vals.get("name"):
                raise OdooError(
                    "psycopg2.errors.NotNullViolation",
                    f'null value in column "name" of relation "{model}"',
                    422,
                )
            if model == "crm.lead":
                vals = {**self._lead_defaults(vals), **vals}
            tags = vals.pop("tag_ids", None)
            rid = self.insert(model, vals, uid=env.uid)
            if tags is not None:
                self.records[model][rid]["tag_ids"] = _commands([], tags)
            ids.append(rid)
        self._changed(model, ids)
        return ids

    def _lead_defaults(self, vals: Mapping[str, Any]) -> dict[str, Any]:
        shared = sorted(
            (s["sequence"], s["id"]) for s in self.records["crm.stage"].values() if not s.get("team_id")
        )
        stage = vals.get("stage_id") or (shared[0][1] if shared else False)
        return {
            "type": "lead",
            "stage_id": stage,
            "probability": 100.0 if self._stage_won(stage) else 10.0,
            "expected_revenue": 0.0,
            "company_currency": 1,
            "tag_ids": [],
            "date_last_stage_update": self.now(),
        }

    def m_unlink(self, env: Env, model: str, ids: Any) -> bool:
        for row in self._existing(model, ids):
            del self.records[model][row["id"]]
        return True


def _sort_key(name: str) -> Callable[[Mapping[str, Any]], tuple[bool, Any]]:
    """Empty values first (ascending), then by value."""

    def key(row: Mapping[str, Any]) -> tuple[bool, Any]:
        value = row.get(name)
        empty = value is None or value is False
        return (not empty, 0 if empty else value)

    return key


def _commands(current: list[int], commands: Any) -> list[int]:
    """Many2many commands: ``(4, id)`` link, ``(3, id)`` unlink, ``(6, 0, ids)`` set, ``(5,)`` clear."""
    ids = list(current)
    if not isinstance(commands, list):
        raise value_error("x2many values must be a list of commands")
    for command in commands:
        if not isinstance(command, list | tuple) or not command:
            raise value_error(f"Invalid x2many command {command!r}")
        code = command[0]
        if code == 4 and command[1] not in ids:
            ids.append(command[1])
        elif code == 3:
            ids = [i for i in ids if i != command[1]]
        elif code == 6:
            ids = list(command[2])
        elif code == 5:
            ids = []
        elif code not in (3, 4):
            raise value_error(f"Unsupported x2many command {command!r}")
    return ids
