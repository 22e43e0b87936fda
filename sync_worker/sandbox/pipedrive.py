"""A local Pipedrive: the v2 deals/pipelines/stages/persons API, v1 notes, deal labels and webhooks v2.

State lives in memory in :class:`PipedriveSandbox` (thread-safe); :func:`create_app` serves it.
Followed documentation (field names, parameters and behaviours):

- Deals v2: https://developers.pipedrive.com/docs/api/v1/Deals#getDeals (``GET /api/v2/deals``:
  ``updated_since``/``updated_until`` RFC3339, ``sort_by`` id|update_time|add_time, ``sort_direction``,
  ``status`` comma list, "if omitted, all not deleted deals are returned", ``limit`` default 100 max 500,
  ``cursor`` with ``additional_data.next_cursor`` null on the last page), ``GET /api/v2/deals/archived``
  ("all archived deals"; the plain list returns "all not archived deals"), ``PATCH /api/v2/deals/{id}``
  (``lost_reason`` "can only be set if deal status is lost"; ``close_time`` only when won or lost;
  ``won_time``/``lost_time`` only with that status), ``DELETE`` ("marks a deal as deleted").
- Pipelines and stages v2: https://developers.pipedrive.com/docs/api/v1/Pipelines#getPipelines and
  https://developers.pipedrive.com/docs/api/v1/Stages#getStages (``pipeline_id`` filter, cursor paging).
- Persons v2 (``emails`` list of ``{value, primary, label}``):
  https://developers.pipedrive.com/docs/api/v1/Persons#getPerson
- Notes v1: https://developers.pipedrive.com/docs/api/v1/Notes#addNote (``content`` required; v1
  ``start``/``limit`` paging under ``additional_data.pagination``).
- Deal labels: https://developers.pipedrive.com/docs/api/v1/DealFields#updateDealField (the ``label``
  field's ``options``; "all active items must be supplied and already existing items must have their
  ID supplied"); deals carry them as v2 ``label_ids``.
- Webhooks v2: https://pipedrive.readme.io/docs/guide-for-webhooks-v2 (``POST /v1/webhooks`` body; the
  ``meta`` block: action create|change|delete, entity, entity_id, id, change_source app|api, attempt,
  is_bulk_edit, version "2.0", webhook_id...; ``data`` is null on delete, ``previous`` holds only the
  changed fields (the last state on delete, null on create); HTTP basic auth; retried "after 3, 30 and
  150 seconds" on a non-2xx answer) and https://pipedrive.readme.io/docs/webhooks-v2-migration-guide.
- Auth and errors: https://pipedrive.readme.io/docs/core-api-concepts-authentication (``x-api-token``
  header, ``api_token`` query parameter, OAuth bearer) and
  https://pipedrive.readme.io/docs/core-api-concepts-http-status-codes (``success: false`` bodies).
- Rate limits: https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting (per token, 2-second
  window, ``x-ratelimit-limit``/``-remaining``/``-reset`` on every response, 429 beyond).

Simplifications: the 2-second window is fixed rather than rolling; v2 type errors are answered 400 with
a message of our own wording (the documented envelope, not Pipedrive's exact text); unknown body
fields are refused (400) so that a client sending a misspelt field finds out.
"""

from __future__ import annotations

import base64
import copy
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_worker.sandbox.common import (
    CallCounter,
    FaultConfig,
    Faults,
    Handler,
    SandboxApiError,
    WebhookDeliverer,
    WindowRateLimiter,
    admin_routes,
    counted_route,
)

__all__ = ["DEFAULT_STAGES", "RETRY_DELAYS", "PipedriveApiError", "PipedriveSandbox", "create_app"]

RETRY_DELAYS: tuple[float, ...] = (3.0, 30.0, 150.0)
"""Webhook retry schedule in seconds, from the webhooks v2 guide."""

DEFAULT_STAGES: tuple[str, ...] = (
    "Qualified",
    "Contact Made",
    "Demo Scheduled",
    "Proposal Made",
    "Negotiations Started",
)
"""The stages of the stock pipeline a new Pipedrive company starts with."""

_ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."
_DEAL_STATUSES = frozenset({"open", "won", "lost"})
_SORTS = frozenset({"id", "update_time", "add_time"})
_STAGE_SORTS = frozenset({"id", "update_time", "add_time", "order_nr"})

# v2 typing: what each writable deal field accepts ("?" = may be null).
_DEAL_FIELDS: dict[str, str] = {
    "title": "str",
    "owner_id": "int",
    "person_id": "int?",
    "org_id": "int?",
    "pipeline_id": "int",
    "stage_id": "int",
    "value": "number",
    "currency": "str",
    "is_deleted": "bool",
    "is_archived": "bool",
    "archive_time": "str?",
    "status": "str",
    "probability": "number?",
    "lost_reason": "str?",
    "visible_to": "int",
    "close_time": "str?",
    "won_time": "str?",
    "lost_time": "str?",
    "expected_close_date": "str?",
    "label_ids": "int_list",
    "custom_fields": "object",
    "add_time": "str",
}


class PipedriveApiError(SandboxApiError):
    """An API request refused with ``status`` and a Pipedrive error message."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError as exc:
        raise PipedriveApiError(400, f"Invalid parameter {name}: expected RFC3339 date-time") from exc
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _check_type(name: str, kind: str, value: Any) -> None:
    nullable = kind.endswith("?")
    base = kind.rstrip("?")
    if value is None:
        if nullable:
            return
        raise PipedriveApiError(400, f"Validation failed: {name}: must not be null")
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "object": isinstance(value, dict),
        "int_list": isinstance(value, list)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value),
    }[base]
    if not ok:
        expected = {"int_list": "array of integers", "str": "string"}.get(base, base)
        got = type(value).__name__
        raise PipedriveApiError(400, f"Validation failed: {name}: expected {expected}, got {got}")


def _encode_cursor(payload: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PipedriveApiError(400, "Invalid cursor") from exc
    if not isinstance(payload, list) or len(payload) != 3:
        raise PipedriveApiError(400, "Invalid cursor")
    return payload


def _page(
    items: Iterable[dict[str, Any]], *, sort_by: str, direction: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Keyset paging over ``(sort_by, id)``: stable while records change between pages."""
    reverse = direction == "desc"
    ordered = sorted(items, key=lambda r: (r[sort_by], r["id"]), reverse=reverse)
    if cursor is not None:
        key_name, value, last_id = _decode_cursor(cursor)
        if key_name != f"{sort_by}:{direction}":
            raise PipedriveApiError(400, "Invalid cursor: it was issued for another sort order")
        after = (value, last_id)
        ordered = [
            r
            for r in ordered
            if ((r[sort_by], r["id"]) < after if reverse else (r[sort_by], r["id"]) > after)
        ]
    page = ordered[:limit]
    more = len(ordered) > limit
    next_cursor = (
        _encode_cursor([f"{sort_by}:{direction}", page[-1][sort_by], page[-1]["id"]]) if more else None
    )
    return page, next_cursor


def _int_param(
    request: Request, name: str, default: int | None = None, maximum: int | None = None
) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise PipedriveApiError(400, f"Invalid parameter {name}: expected an integer") from exc
    if value < 0 or (maximum is not None and value > maximum) or (name == "limit" and value == 0):
        raise PipedriveApiError(400, f"Invalid parameter {name}: out of range")
    return value


def _ids_param(request: Request) -> set[int] | None:
    """The documented ``ids`` filter: up to 100 comma-separated ids (unknown ones are just absent)."""
    raw = request.query_params.get("ids")
    if not raw:
        return None
    try:
        ids = {int(part) for part in raw.split(",") if part.strip()}
    except ValueError as exc:
        raise PipedriveApiError(400, "Invalid parameter ids: comma-separated integers expected") from exc
    if len(ids) > 100:
        raise PipedriveApiError(400, "Invalid parameter ids: at most 100 ids")
    return ids


def _choice_param(request: Request, name: str, allowed: frozenset[str], default: str) -> str:
    value = request.query_params.get(name) or default
    if value not in allowed:
        raise PipedriveApiError(400, f"Invalid parameter {name}: must be one of {sorted(allowed)}")
    return value


class PipedriveSandbox:
    """One Pipedrive company in memory: pipelines, stages, deals, persons, notes, labels, webhooks.

    Mutations through the API are webhook-marked ``change_source: "api"``; :meth:`simulate_user_change`
    changes a deal as a person in the web app would (``"app"``). ``calls`` counts API requests per path
    and status; ``deliverer.deliveries`` records every webhook attempt. Tokens never appear in reprs.
    """

    def __init__(
        self,
        *,
        api_token: str,
        oauth_token: str | None = None,
        rate_limit: int = 80,
        rate_window_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        faults: FaultConfig | Faults | None = None,
        time_scale: float = 1.0,
        retry_delays: Iterable[float] = RETRY_DELAYS,
        company_id: int = 7001,
        user_id: int = 9001,
        stock_pipeline: bool = True,
    ) -> None:
        self._tokens = {api_token} | ({oauth_token} if oauth_token else set())
        self._now = now
        self._lock = threading.RLock()
        self.faults = faults if isinstance(faults, Faults) else Faults(faults)
        self.limiter = WindowRateLimiter(rate_limit, rate_window_seconds, clock)
        self.calls = CallCounter()
        self.deliverer = WebhookDeliverer(
            retry_delays=tuple(retry_delays), time_scale=time_scale, faults=self.faults
        )
        self.company_id = company_id
        self.user_id = user_id
        self.pipelines: dict[int, dict[str, Any]] = {}
        self.stages: dict[int, dict[str, Any]] = {}
        self.deals: dict[int, dict[str, Any]] = {}
        self.persons: dict[int, dict[str, Any]] = {}
        self.notes: dict[int, dict[str, Any]] = {}
        self.webhooks: dict[int, dict[str, Any]] = {}
        self.label_options: dict[int, dict[str, Any]] = {}
        self._next = {"pipeline": 1, "stage": 1, "deal": 1, "person": 1, "note": 1, "webhook": 1, "label": 1}
        if stock_pipeline:
            pipeline = self.add_pipeline("Pipeline")
            for name in DEFAULT_STAGES:
                self.add_stage(pipeline["id"], name)

    def __repr__(self) -> str:
        return f"PipedriveSandbox(deals={len(self.deals)}, webhooks={len(self.webhooks)})"

    # ----- identity and helpers -------------------------------------------------------------

    def accepts_token(self, token: str | None) -> bool:
        return token is not None and token in self._tokens

    def _id(self, kind: str) -> int:
        value = self._next[kind]
        self._next[kind] = value + 1
        return value

    def now_iso(self) -> str:
        return _iso(self._now())

    def close(self) -> None:
        """Stop webhook delivery."""
        self.deliverer.close()

    # ----- pipelines, stages, labels, persons ----------------------------------------------

    def add_pipeline(self, name: str) -> dict[str, Any]:
        with self._lock:
            stamp = self.now_iso()
            pipeline: dict[str, Any] = {
                "id": self._id("pipeline"),
                "name": name,
                "order_nr": len(self.pipelines) + 1,
                "is_deleted": False,
                "is_deal_probability_enabled": False,
                "add_time": stamp,
                "update_time": stamp,
                "is_selected": not self.pipelines,
            }
            self.pipelines[pipeline["id"]] = pipeline
            return copy.deepcopy(pipeline)

    def add_stage(
        self,
        pipeline_id: int,
        name: str,
        *,
        deal_probability: int = 100,
        rotten_days: int | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            if pipeline_id not in self.pipelines:
                raise KeyError(pipeline_id)
            stamp = self.now_iso()
            order = 1 + sum(1 for s in self.stages.values() if s["pipeline_id"] == pipeline_id)
            stage: dict[str, Any] = {
                "id": self._id("stage"),
                "order_nr": order,
                "name": name,
                "is_deleted": False,
                "deal_probability": deal_probability,
                "pipeline_id": pipeline_id,
                "is_deal_rot_enabled": rotten_days is not None,
                "days_to_rotten": rotten_days,
                "add_time": stamp,
                "update_time": stamp,
            }
            self.stages[stage["id"]] = stage
            return copy.deepcopy(stage)

    def add_label_option(self, label: str, color: str = "blue") -> dict[str, Any]:
        with self._lock:
            option: dict[str, Any] = {"id": self._id("label"), "label": label, "color": color}
            self.label_options[option["id"]] = option
            return dict(option)

    def add_person(
        self, name: str, emails: Iterable[str] = (), *, owner_id: int | None = None
    ) -> dict[str, Any]:
        with self._lock:
            stamp = self.now_iso()
            first, _, last = name.partition(" ")
            person: dict[str, Any] = {
                "id": self._id("person"),
                "name": name,
                "first_name": first,
                "last_name": last or None,
                "owner_id": owner_id or self.user_id,
                "org_id": None,
                "add_time": stamp,
                "update_time": stamp,
                "emails": [
                    {"value": email, "primary": index == 0, "label": "work"}
                    for index, email in enumerate(emails)
                ],
                "phones": [],
                "is_deleted": False,
                "visible_to": 3,
                "label_ids": [],
                "custom_fields": {},
            }
            self.persons[person["id"]] = person
            return copy.deepcopy(person)

    # ----- deals ---------------------------------------------------------------------------

    def get_deal(self, deal_id: int) -> dict[str, Any]:
        with self._lock:
            if deal_id not in self.deals:
                raise PipedriveApiError(404, "Deal not found")
            return copy.deepcopy(self.deals[deal_id])

    def create_deal(
        self, fields: Mapping[str, Any], *, change_source: str = "api", notify: bool = True, **overrides: Any
    ) -> dict[str, Any]:
        """Create a deal from v2 ``fields``. ``overrides`` (seeding only) set read-only fields such as
        ``update_time`` or ``stage_change_time`` verbatim. ``notify=False`` sends no webhook."""
        with self._lock:
            if not isinstance(fields.get("title"), str) or not fields["title"]:
                raise PipedriveApiError(400, "Validation failed: title: required")
            stamp = self.now_iso()
            ordered = sorted(self.stages.values(), key=lambda s: (s["pipeline_id"], s["order_nr"]))
            if not ordered:
                raise PipedriveApiError(400, "Validation failed: stage_id: the company has no stages")
            first_stage = ordered[0]
            base: dict[str, Any] = {
                "id": 0,
                "title": "",
                "creator_user_id": self.user_id,
                "owner_id": self.user_id,
                "person_id": None,
                "org_id": None,
                "pipeline_id": first_stage["pipeline_id"],
                "stage_id": first_stage["id"],
                "value": 0,
                "currency": "USD",
                "add_time": stamp,
                "update_time": stamp,
                "stage_change_time": None,
                "status": "open",
                "probability": None,
                "lost_reason": None,
                "visible_to": 3,
                "close_time": None,
                "won_time": None,
                "lost_time": None,
                "expected_close_date": None,
                "label_ids": [],
                "is_deleted": False,
                "is_archived": False,
                "archive_time": None,
                "origin": "API",
                "custom_fields": {},
            }
            deal = self._apply_fields(base, fields, creating=True)
            deal["id"] = self._id("deal")
            deal.update(overrides)
            self.deals[deal["id"]] = deal
            if notify:
                self._emit("create", deal["id"], None, deal, change_source)
            return copy.deepcopy(deal)

    def update_deal(
        self,
        deal_id: int,
        fields: Mapping[str, Any],
        *,
        change_source: str = "api",
        user_id: int | None = None,
    ) -> dict[str, Any]:
        """Apply a v2 PATCH; sends one ``change`` webhook whose ``previous`` holds the changed fields."""
        with self._lock:
            if deal_id not in self.deals:
                raise PipedriveApiError(404, "Deal not found")
            before = self.deals[deal_id]
            after = self._apply_fields(before, fields, creating=False)
            changed = {k for k in after if after[k] != before.get(k)}
            if changed:
                after["update_time"] = self.now_iso()
                self.deals[deal_id] = after
                self._emit("change", deal_id, before, after, change_source, user_id=user_id)
            return copy.deepcopy(self.deals[deal_id])

    def simulate_user_change(self, deal_id: int, user_id: int | None = None, **fields: Any) -> dict[str, Any]:
        """Change a deal as a person in the Pipedrive web app would (``change_source: "app"``)."""
        return self.update_deal(deal_id, fields, change_source="app", user_id=user_id)

    def delete_deal(self, deal_id: int, *, change_source: str = "api") -> None:
        with self._lock:
            deal = self.deals.get(deal_id)
            if deal is None or deal["is_deleted"]:
                raise PipedriveApiError(404, "Deal not found")
            before = copy.deepcopy(deal)
            deal["is_deleted"] = True
            deal["update_time"] = self.now_iso()
            self._emit("delete", deal_id, before, None, change_source)

    def _apply_fields(
        self, current: dict[str, Any], fields: Mapping[str, Any], *, creating: bool
    ) -> dict[str, Any]:
        for name, value in fields.items():
            kind = _DEAL_FIELDS.get(name)
            if kind is None or (name == "add_time" and not creating):
                raise PipedriveApiError(400, f"Validation failed: {name}: unknown or read-only field")
            _check_type(name, kind, value)
        deal = copy.deepcopy(current)
        deal.update({k: copy.deepcopy(v) for k, v in fields.items()})
        stamp = self.now_iso()
        if "status" in fields and fields["status"] not in _DEAL_STATUSES:
            raise PipedriveApiError(400, "Validation failed: status: must be one of open, won, lost")
        if "stage_id" in fields:
            stage = self.stages.get(fields["stage_id"])
            if stage is None:
                raise PipedriveApiError(
                    400, f"Validation failed: stage_id: stage {fields['stage_id']} not found"
                )
            if "pipeline_id" in fields and fields["pipeline_id"] != stage["pipeline_id"]:
                raise PipedriveApiError(400, "Validation failed: stage_id: stage is not in pipeline_id")
            deal["pipeline_id"] = stage["pipeline_id"]
        elif "pipeline_id" in fields:
            stages = [s for s in self.stages.values() if s["pipeline_id"] == fields["pipeline_id"]]
            if not stages:
                raise PipedriveApiError(400, "Validation failed: pipeline_id: pipeline not found")
            deal["stage_id"] = min(stages, key=lambda s: s["order_nr"])["id"]
        if not creating and deal["stage_id"] != current["stage_id"]:
            deal["stage_change_time"] = stamp
        if deal.get("person_id") is not None and deal["person_id"] not in self.persons:
            raise PipedriveApiError(400, "Validation failed: person_id: person not found")
        if any(label not in self.label_options for label in deal["label_ids"]):
            raise PipedriveApiError(400, "Validation failed: label_ids: unknown label id")
        if deal.get("expected_close_date"):
            try:
                date.fromisoformat(deal["expected_close_date"])
            except ValueError as exc:
                raise PipedriveApiError(
                    400, "Validation failed: expected_close_date: use YYYY-MM-DD"
                ) from exc
        status = deal["status"]
        if fields.get("lost_reason") is not None and status != "lost":
            raise PipedriveApiError(
                400, "Validation failed: lost_reason can only be set if deal status is lost"
            )
        for field_name, allowed in (
            ("won_time", {"won"}),
            ("lost_time", {"lost"}),
            ("close_time", {"won", "lost"}),
        ):
            if fields.get(field_name) is not None and status not in allowed:
                raise PipedriveApiError(
                    400,
                    f"Validation failed: {field_name} can only be set if deal status is "
                    + " or ".join(sorted(allowed)),
                )
        if status != current.get("status"):
            if status == "open":
                deal.update(close_time=None, won_time=None, lost_time=None, lost_reason=None)
            else:
                deal["close_time"] = fields.get("close_time") or stamp
                deal[f"{status}_time"] = fields.get(f"{status}_time") or deal["close_time"]
                if status == "won":
                    deal.update(lost_time=None, lost_reason=None)
                else:
                    deal["won_time"] = None
        if deal["is_archived"] and not current.get("is_archived"):
            deal["archive_time"] = fields.get("archive_time") or stamp
        return deal

    def list_deals(
        self,
        *,
        archived: bool = False,
        statuses: Iterable[str] | None = None,
        updated_since: datetime | None = None,
        updated_until: datetime | None = None,
        pipeline_id: int | None = None,
        stage_id: int | None = None,
        person_id: int | None = None,
        owner_id: int | None = None,
        ids: set[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Deals matching the documented list filters (copies, unsorted)."""
        wanted = set(statuses) if statuses is not None else None
        with self._lock:
            out = []
            for deal in self.deals.values():
                if deal["is_archived"] != archived:
                    continue
                if wanted is None:
                    if deal["is_deleted"]:
                        continue
                elif not (("deleted" in wanted) if deal["is_deleted"] else deal["status"] in wanted):
                    continue
                updated = _parse_time(deal["update_time"], "update_time")
                if updated_since is not None and updated < updated_since:
                    continue
                if updated_until is not None and updated >= updated_until:
                    continue
                if pipeline_id is not None and deal["pipeline_id"] != pipeline_id:
                    continue
                if stage_id is not None and deal["stage_id"] != stage_id:
                    continue
                if person_id is not None and deal["person_id"] != person_id:
                    continue
                if owner_id is not None and deal["owner_id"] != owner_id:
                    continue
                if ids is not None and deal["id"] not in ids:
                    continue
                out.append(copy.deepcopy(deal))
            return out

    # ----- notes, labels, webhooks -----------------------------------------------------------

    def add_note(
        self, content: str, *, deal_id: int | None = None, person_id: int | None = None
    ) -> dict[str, Any]:
        with self._lock:
            if deal_id is not None and deal_id not in self.deals:
                raise PipedriveApiError(400, "Deal not found")
            stamp = _iso(self._now()).replace("T", " ").rstrip("Z")
            note: dict[str, Any] = {
                "id": self._id("note"),
                "content": content,
                "deal_id": deal_id,
                "person_id": person_id,
                "org_id": None,
                "lead_id": None,
                "user_id": self.user_id,
                "add_time": stamp,
                "update_time": stamp,
                "active_flag": True,
                "pinned_to_deal_flag": False,
            }
            self.notes[note["id"]] = note
            return dict(note)

    def set_label_options(self, options: list[Any]) -> list[dict[str, Any]]:
        """Replace the label field's options as ``PUT /v1/dealFields/{id}`` does (ids keep options)."""
        with self._lock:
            kept: dict[int, dict[str, Any]] = {}
            fresh: list[dict[str, Any]] = []
            for item in options:
                if not isinstance(item, dict) or not isinstance(item.get("label"), str):
                    raise PipedriveApiError(400, "options: each option needs a label")
                if "id" in item:
                    if item["id"] not in self.label_options:
                        raise PipedriveApiError(400, f"options: unknown option id {item['id']}")
                    kept[item["id"]] = {
                        "id": item["id"],
                        "label": item["label"],
                        "color": item.get("color", "blue"),
                    }
                else:
                    fresh.append(item)
            for item in fresh:
                option_id = self._id("label")
                kept[option_id] = {
                    "id": option_id,
                    "label": item["label"],
                    "color": item.get("color", "blue"),
                }
            self.label_options = kept
            return [dict(o) for o in kept.values()]

    def label_field(self) -> dict[str, Any]:
        with self._lock:
            return {
                "id": 12,
                "key": "label",
                "name": "Label",
                "field_type": "set",
                "edit_flag": False,
                "active_flag": True,
                "options": [dict(o) for o in self.label_options.values()],
            }

    def add_webhook(self, body: Mapping[str, Any]) -> dict[str, Any]:
        url = body.get("subscription_url")
        action = body.get("event_action")
        obj = body.get("event_object")
        version = body.get("version", "2.0")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise PipedriveApiError(400, "subscription_url: a full valid URL is required")
        if action not in {"create", "change", "delete", "*"}:
            raise PipedriveApiError(400, "event_action: must be one of create, change, delete, *")
        if not isinstance(obj, str) or not obj:
            raise PipedriveApiError(400, "event_object: required")
        if version != "2.0":
            raise PipedriveApiError(400, "version: the sandbox only sends webhooks v2 (version 2.0)")
        with self._lock:
            hook: dict[str, Any] = {
                "id": self._id("webhook"),
                "company_id": self.company_id,
                "owner_id": self.user_id,
                "user_id": body.get("user_id", self.user_id),
                "event_action": action,
                "event_object": obj,
                "subscription_url": url,
                "http_auth_user": body.get("http_auth_user"),
                "http_auth_password": body.get("http_auth_password"),
                "version": "2.0",
                "name": body.get("name"),
                "is_active": 1,
                "add_time": _iso(self._now()),
                "type": "general",
            }
            self.webhooks[hook["id"]] = hook
            return dict(hook)

    def _emit(
        self,
        action: str,
        deal_id: int,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        change_source: str,
        *,
        user_id: int | None = None,
    ) -> None:
        if action == "change" and before is not None and after is not None:
            previous: dict[str, Any] | None = {k: before.get(k) for k in after if after[k] != before.get(k)}
        else:
            previous = copy.deepcopy(before) if action == "delete" else None
        event_id = str(uuid.uuid4())
        for hook in self.webhooks.values():
            if hook["event_object"] not in {"deal", "*"} or hook["event_action"] not in {action, "*"}:
                continue
            meta = {
                "action": action,
                "entity": "deal",
                "company_id": str(self.company_id),
                "correlation_id": str(uuid.uuid4()),
                "entity_id": str(deal_id),
                "id": event_id,
                "is_bulk_edit": False,
                "timestamp": _iso(self._now()),
                "type": "general",
                "user_id": str(user_id or self.user_id),
                "version": "2.0",
                "webhook_id": str(hook["id"]),
                "webhook_owner_id": str(hook["owner_id"]),
                "change_source": change_source,
                "attempt": 1,
                "host": "sandbox.pipedrive.com",
                "permitted_user_ids": [str(self.user_id)],
            }
            payload = {"meta": meta, "data": copy.deepcopy(after), "previous": previous}
            headers = {"content-type": "application/json"}
            if hook["http_auth_user"]:
                creds = f"{hook['http_auth_user']}:{hook['http_auth_password'] or ''}".encode()
                headers["authorization"] = "Basic " + base64.b64encode(creds).decode()

            def body_for(attempt: int, payload: dict[str, Any] = payload) -> bytes:
                return json.dumps({**payload, "meta": {**payload["meta"], "attempt": attempt}}).encode()

            self.deliverer.submit(hook["subscription_url"], body_for(1), headers, body_for_attempt=body_for)


def _ok(data: Any, additional: Any = None, status: int = 200, **extra: Any) -> JSONResponse:
    return JSONResponse(
        {"success": True, "data": data, "additional_data": additional, **extra}, status_code=status
    )


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "success": False,
        "error": message,
        "error_info": _ERROR_INFO,
        "data": None,
        "additional_data": None,
    }
    if status == 401:
        body["errorCode"] = 401
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    content_type = request.headers.get("content-type", "")
    if "application/x-www-form-urlencoded" in content_type:
        return {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
    try:
        body = json.loads(raw or b"{}")
    except json.JSONDecodeError as exc:
        raise PipedriveApiError(400, "Request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise PipedriveApiError(400, "Request body must be a JSON object")
    return body


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-token") or request.query_params.get("api_token")


def create_app(sandbox: PipedriveSandbox) -> Starlette:
    """The Starlette app serving ``sandbox`` (routes under ``/api/v1``, ``/api/v2`` and ``/_sandbox``)."""

    def api(path: str, handler: Handler, methods: list[str] | None = None) -> Route:
        return counted_route(sandbox.calls, path, _serve, handler, methods)

    async def _serve(request: Request, handler: Handler) -> Response:
        token = _token(request)
        if not sandbox.accepts_token(token):
            return _error(401, "unauthorized access")
        assert token is not None
        decision = sandbox.limiter.hit(token)
        reset = str(max(1, int(decision.reset_seconds + 0.999)))
        headers = {
            "x-ratelimit-limit": str(decision.limit),
            "x-ratelimit-remaining": str(decision.remaining),
            "x-ratelimit-reset": reset,
        }
        if not decision.allowed:
            return _error(429, "Request over limit", {**headers, "retry-after": reset})
        outcome = await sandbox.faults.apply(request)
        if outcome == "429":
            return _error(
                429, "Request over limit", {**headers, "x-ratelimit-remaining": "0", "retry-after": reset}
            )
        if outcome == "error":
            status = sandbox.faults.pick((500, 502, 503))
            return _error(status, "Internal server error", headers)
        try:
            response = await handler(request)
        except PipedriveApiError as exc:
            return _error(exc.status, exc.message, headers)
        response.headers.update(headers)
        return response

    def paged(items: list[dict[str, Any]], request: Request, sorts: frozenset[str]) -> Response:
        limit = _int_param(request, "limit", 100, 500) or 100
        sort_by = _choice_param(request, "sort_by", sorts, "id")
        direction = _choice_param(request, "sort_direction", frozenset({"asc", "desc"}), "asc")
        page, next_cursor = _page(
            items,
            sort_by=sort_by,
            direction=direction,
            limit=limit,
            cursor=request.query_params.get("cursor"),
        )
        return _ok(page, {"next_cursor": next_cursor})

    async def list_pipelines(request: Request) -> Response:
        with sandbox._lock:
            items = [copy.deepcopy(p) for p in sandbox.pipelines.values() if not p["is_deleted"]]
        return paged(items, request, _SORTS)

    async def get_pipeline(request: Request) -> Response:
        pipeline = sandbox.pipelines.get(request.path_params["id"])
        if pipeline is None:
            raise PipedriveApiError(404, "Pipeline not found")
        return _ok(copy.deepcopy(pipeline))

    async def list_stages(request: Request) -> Response:
        pipeline_id = _int_param(request, "pipeline_id")
        with sandbox._lock:
            items = [
                copy.deepcopy(s)
                for s in sandbox.stages.values()
                if not s["is_deleted"] and (pipeline_id is None or s["pipeline_id"] == pipeline_id)
            ]
        return paged(items, request, _STAGE_SORTS)

    async def get_stage(request: Request) -> Response:
        stage = sandbox.stages.get(request.path_params["id"])
        if stage is None:
            raise PipedriveApiError(404, "Stage not found")
        return _ok(copy.deepcopy(stage))

    def deal_list(request: Request, *, archived: bool) -> Response:
        raw_status = request.query_params.get("status")
        statuses = None
        if raw_status:
            statuses = [s.strip() for s in raw_status.split(",") if s.strip()]
            if any(s not in _DEAL_STATUSES | {"deleted"} for s in statuses):
                raise PipedriveApiError(400, "Invalid parameter status: open, won, lost or deleted")
        since = request.query_params.get("updated_since")
        until = request.query_params.get("updated_until")
        items = sandbox.list_deals(
            archived=archived,
            statuses=statuses,
            updated_since=_parse_time(since, "updated_since") if since else None,
            updated_until=_parse_time(until, "updated_until") if until else None,
            pipeline_id=_int_param(request, "pipeline_id"),
            stage_id=_int_param(request, "stage_id"),
            person_id=_int_param(request, "person_id"),
            owner_id=_int_param(request, "owner_id"),
            ids=_ids_param(request),
        )
        return paged(items, request, _SORTS)

    async def list_deals(request: Request) -> Response:
        return deal_list(request, archived=False)

    async def list_archived(request: Request) -> Response:
        return deal_list(request, archived=True)

    async def create_deal(request: Request) -> Response:
        return _ok(sandbox.create_deal(await _json_body(request)))

    async def deal(request: Request) -> Response:
        deal_id = request.path_params["id"]
        if request.method == "PATCH":
            return _ok(sandbox.update_deal(deal_id, await _json_body(request)))
        if request.method == "DELETE":
            sandbox.delete_deal(deal_id)
            return _ok({"id": deal_id})
        return _ok(sandbox.get_deal(deal_id))

    async def list_persons(request: Request) -> Response:
        with sandbox._lock:
            ids = _ids_param(request)
            items = [
                copy.deepcopy(p)
                for p in sandbox.persons.values()
                if not p["is_deleted"] and (ids is None or p["id"] in ids)
            ]
        return paged(items, request, _SORTS)

    async def get_person(request: Request) -> Response:
        person = sandbox.persons.get(request.path_params["id"])
        if person is None:
            raise PipedriveApiError(404, "Person not found")
        return _ok(copy.deepcopy(person))

    async def notes(request: Request) -> Response:
        if request.method == "POST":
            body = await _json_body(request)
            content = body.get("content")
            if not isinstance(content, str) or not content:
                raise PipedriveApiError(400, "content: required")
            deal_id = body.get("deal_id")
            try:
                deal_id = int(deal_id) if deal_id is not None else None
            except (TypeError, ValueError) as exc:
                raise PipedriveApiError(400, "deal_id: expected an integer") from exc
            return _ok(sandbox.add_note(content, deal_id=deal_id), status=201)
        deal_id = _int_param(request, "deal_id")
        start = _int_param(request, "start", 0) or 0
        limit = _int_param(request, "limit", 100, 500) or 100
        with sandbox._lock:
            found = [dict(n) for n in sandbox.notes.values() if deal_id is None or n["deal_id"] == deal_id]
        page = found[start : start + limit]
        more = start + limit < len(found)
        pagination = {"start": start, "limit": limit, "more_items_in_collection": more}
        if more:
            pagination["next_start"] = start + limit
        return _ok(page, {"pagination": pagination})

    async def deal_fields(request: Request) -> Response:
        if request.method == "PUT":
            if request.path_params["id"] != 12:
                raise PipedriveApiError(404, "Field not found")
            body = await _json_body(request)
            options = body.get("options")
            if isinstance(options, str):
                try:
                    options = json.loads(options)
                except json.JSONDecodeError as exc:
                    raise PipedriveApiError(400, "options: invalid JSON") from exc
            if not isinstance(options, list):
                raise PipedriveApiError(400, "options: expected an array")
            sandbox.set_label_options(options)
            return _ok(sandbox.label_field())
        return _ok(
            [sandbox.label_field()],
            {"pagination": {"start": 0, "limit": 100, "more_items_in_collection": False}},
        )

    async def webhooks(request: Request) -> Response:
        if request.method == "POST":
            hook = sandbox.add_webhook(await _json_body(request))
            return JSONResponse({"status": "ok", "success": True, "data": hook}, status_code=201)
        if request.method == "DELETE":
            if sandbox.webhooks.pop(request.path_params["id"], None) is None:
                raise PipedriveApiError(404, "Webhook not found")
            return JSONResponse({"status": "ok", "success": True})
        return JSONResponse(
            {"status": "ok", "success": True, "data": [dict(h) for h in sandbox.webhooks.values()]}
        )

    async def me(request: Request) -> Response:
        return _ok({"id": sandbox.user_id, "company_id": sandbox.company_id, "name": "Sandbox Admin"})

    async def admin_user_change(request: Request) -> Response:
        try:
            body = await _json_body(request)
            return JSONResponse(sandbox.simulate_user_change(request.path_params["id"], **body))
        except PipedriveApiError as exc:
            return _error(exc.status, exc.message)

    routes = [
        api("/api/v2/pipelines", list_pipelines),
        api("/api/v2/pipelines/{id:int}", get_pipeline),
        api("/api/v2/stages", list_stages),
        api("/api/v2/stages/{id:int}", get_stage),
        api("/api/v2/deals", list_deals, ["GET"]),
        api("/api/v2/deals", create_deal, ["POST"]),
        api("/api/v2/deals/archived", list_archived),
        api("/api/v2/deals/{id:int}", deal, ["GET", "PATCH", "DELETE"]),
        api("/api/v2/persons", list_persons),
        api("/api/v2/persons/{id:int}", get_person),
        api("/api/v1/notes", notes, ["GET", "POST"]),
        api("/api/v1/dealFields", deal_fields),
        api("/api/v1/dealFields/{id:int}", deal_fields, ["PUT"]),
        api("/api/v1/webhooks", webhooks, ["GET", "POST"]),
        api("/api/v1/webhooks/{id:int}", webhooks, ["DELETE"]),
        api("/api/v1/users/me", me),
        Route("/_sandbox/deals/{id:int}/user-change", admin_user_change, methods=["POST"]),
        *admin_routes(sandbox.calls, sandbox.faults),
    ]
    return Starlette(routes=routes)
