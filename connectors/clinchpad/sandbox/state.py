"""A ClinchPad account in memory: users, pipelines, stages, leads, notes, activities and webhooks.

Documented (ClinchPad API v1: https://clinchpad.com/api/docs, /api/docs/pipelines,
/api/docs/stages, /api/docs/leads, /api/docs/webhooks) and reproduced:

- HTTP Basic auth, user ``api-key`` and the key as the password; anything else is 401;
- 1,200 calls an hour, then 429;
- ``_id`` values are 24-hex, Mongo-style (their first 4 bytes the creation second, as in the
  samples); a new account's pipeline "Default" with the stages Closing, In Negotiation, Offer,
  Contact and Prospect, listed in that order as in the docs' sample;
- lists are bare arrays paged with ``page`` (from 1) and ``size`` (default 25), an empty array past
  the end; ``GET /leads`` requires ``pipeline_id``;
- a lead is ``{_id, name, size, archived, user, stage}`` (``user`` ``{_id, name, photo_url}`` or
  null, ``size`` a number or null); ``PUT /leads/:id`` takes ``name``, ``size``, ``user_id`` and
  ``stage_id``; ``POST /leads`` takes ``name`` and ``pipeline_id`` (required), ``size``, ``user_id``;
  ``DELETE /leads/:id`` answers ``{}``;
- webhooks are configured in the UI (here: the constructor's ``webhook_url`` and
  ``handshake_key``); a delivery is a JSON POST of ``{activity, lead, handshake_key}``, the key
  present only when one is set, ``lead`` with ``_id``, ``name``, ``stage`` and ``pipe``.

Assumed where the docs are silent (the connector must not depend on any of it): error bodies
``{"error": "<message>"}``; a fixed one-hour window and no rate-limit headers; PUT/POST bodies as
JSON or form data (both clients' styles); the activity types ``lead:stage_changed``,
``lead:updated`` and ``lead:deleted`` (only ``lead:created`` and ``note:created`` are documented);
API writes attributed to the key's owner (the first user); ``POST /leads/:id/notes`` with
``content`` (pyclinchpad); no webhook retries.
"""

from __future__ import annotations

import hmac
import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sync_worker.sandbox.common import (
    CallCounter,
    FaultConfig,
    Faults,
    SandboxApiError,
    WebhookDeliverer,
    WindowRateLimiter,
)

__all__ = ["STOCK_STAGES", "ClinchPadApiError", "ClinchPadSandbox"]

STOCK_STAGES = ("Closing", "In Negotiation", "Offer", "Contact", "Prospect")
_COMPANIES = ("Northwind", "Contoso", "Fabrikam", "Tailspin", "Litware", "Proseware", "Adatum", "Lucerne")
_BASE = datetime(2026, 1, 1, tzinfo=UTC)


class ClinchPadApiError(SandboxApiError):
    """A request refused with ``status`` and a message."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ClinchPadSandbox:
    """One ClinchPad account. ``simulate_*`` are a person's edits in the UI, announced by webhook."""

    def __init__(
        self,
        *,
        api_key: str,
        handshake_key: str | None = None,
        webhook_url: str | None = None,
        seed: int = 1,
        leads: int = 30,
        base: datetime | None = None,
        rate_limit: int = 1200,
        rate_window_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
        faults: FaultConfig | Faults | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self._api_key = api_key
        self._handshake_key = handshake_key
        self.webhook_url = webhook_url
        self._now = now
        self._lock = threading.RLock()
        self._random = random.Random(seed)
        self._serial = itertools.count(1)
        self._base = base or _BASE
        self.faults = faults if isinstance(faults, Faults) else Faults(faults)
        self.limiter = WindowRateLimiter(rate_limit, rate_window_seconds, clock)
        self.calls = CallCounter()
        self.deliverer = WebhookDeliverer(retry_delays=(), time_scale=time_scale, faults=self.faults)
        self.users = [self._user("Claire Parson", 400), self._user("Sam Seller", 390)]
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.stages: dict[str, list[dict[str, Any]]] = {}
        self.leads: dict[str, dict[str, Any]] = {}
        self.notes: list[dict[str, Any]] = []
        self.activities: list[dict[str, Any]] = []
        self._seed(leads)

    def __repr__(self) -> str:
        return f"ClinchPadSandbox(leads={len(self.leads)})"

    def close(self) -> None:
        """Stop delivering webhooks."""
        self.deliverer.close()

    # -- seeding --------------------------------------------------------------------------

    def _oid(self, at: datetime) -> str:
        return f"{int(at.timestamp()):08x}{self._random.getrandbits(40):010x}{next(self._serial):06x}"

    def _user(self, name: str, days_before: int) -> dict[str, Any]:
        at = self._base - timedelta(days=days_before)
        return {
            "_id": self._oid(at),
            "name": name,
            "photo_url": "https://s3.amazonaws.com/clinchpad/user.png",
        }

    @property
    def owner(self) -> dict[str, Any]:
        """The API key's owner: API writes are attributed to this user."""
        return self.users[0]

    def add_pipeline(self, name: str, stage_names: tuple[str, ...] = STOCK_STAGES) -> str:
        with self._lock:
            at = self._base - timedelta(days=365)
            pipeline = {"_id": self._oid(at), "name": name}
            self.pipelines[pipeline["_id"]] = pipeline
            self.stages[pipeline["_id"]] = [{"_id": self._oid(at), "name": n} for n in stage_names]
            return str(pipeline["_id"])

    def _seed(self, count: int) -> None:
        pipeline_id = self.add_pipeline("Default")
        stages = self.stages[pipeline_id]
        for n in range(count):
            at = self._base - timedelta(
                days=self._random.randint(1, 90), seconds=self._random.randint(0, 86399)
            )
            size = None if n % 7 == 3 else self._random.randint(5, 200) * 100
            lead = {
                "_id": self._oid(at),
                "name": f"{_COMPANIES[n % len(_COMPANIES)]} {n + 1}",
                "size": size,
                "archived": n % 11 == 10,
                "user_id": None if n % 5 == 4 else self.users[n % 2]["_id"],
                "stage_id": self._random.choice(stages)["_id"],
                "pipeline_id": pipeline_id,
            }
            self.leads[lead["_id"]] = lead

    # -- auth -----------------------------------------------------------------------------

    def accepts(self, username: str | None, password: str | None) -> bool:
        if username != "api-key" or password is None:
            return False
        return hmac.compare_digest(password.encode(), self._api_key.encode())

    # -- views ----------------------------------------------------------------------------

    def _stage(self, stage_id: str) -> dict[str, Any]:
        for stages in self.stages.values():
            for stage in stages:
                if stage["_id"] == stage_id:
                    return stage
        raise ClinchPadApiError(400, "Stage not found")

    def _user_view(self, user_id: str | None) -> dict[str, Any] | None:
        return next((dict(u) for u in self.users if u["_id"] == user_id), None)

    def lead_view(self, lead: Mapping[str, Any]) -> dict[str, Any]:
        stage = self._stage(lead["stage_id"])
        return {
            "_id": lead["_id"],
            "name": lead["name"],
            "size": lead["size"],
            "archived": lead["archived"],
            "user": self._user_view(lead["user_id"]),
            "stage": {"_id": stage["_id"], "name": stage["name"]},
        }

    def pipeline(self, pipeline_id: str) -> dict[str, Any]:
        found = self.pipelines.get(pipeline_id)
        if found is None:
            raise ClinchPadApiError(404, "Pipeline not found")
        return dict(found)

    def stage_list(self, pipeline_id: str) -> list[dict[str, Any]]:
        self.pipeline(pipeline_id)
        return [dict(s) for s in self.stages[pipeline_id]]

    def lead_list(self, pipeline_id: str) -> list[dict[str, Any]]:
        self.pipeline(pipeline_id)
        with self._lock:
            return [self.lead_view(x) for x in self.leads.values() if x["pipeline_id"] == pipeline_id]

    def lead(self, lead_id: str) -> dict[str, Any]:
        with self._lock:
            found = self.leads.get(lead_id)
            if found is None:
                raise ClinchPadApiError(404, "Lead not found")
            return found

    # -- writes ---------------------------------------------------------------------------

    def _apply(self, lead: dict[str, Any], body: Mapping[str, Any]) -> list[str]:
        changed: list[str] = []
        if "name" in body:
            if not str(body["name"]).strip():
                raise ClinchPadApiError(400, "name must not be empty")
            lead["name"] = str(body["name"])
            changed.append("name")
        if "size" in body:
            lead["size"] = _size(body["size"])
            changed.append("size")
        if "user_id" in body:
            if body["user_id"] not in (None, "") and self._user_view(str(body["user_id"])) is None:
                raise ClinchPadApiError(400, "User not found")
            lead["user_id"] = body["user_id"] or None
            changed.append("user")
        if "stage_id" in body:
            stage_id = str(body["stage_id"])
            if stage_id not in {s["_id"] for s in self.stages[lead["pipeline_id"]]}:
                raise ClinchPadApiError(400, "Stage not found in the lead's pipeline")
            if stage_id != lead["stage_id"]:
                lead["stage_id"] = stage_id
                changed.append("stage")
        return changed

    def create_lead(self, body: Mapping[str, Any], *, by: Mapping[str, Any] | None = None) -> dict[str, Any]:
        name, pipeline_id = body.get("name"), body.get("pipeline_id")
        if not isinstance(name, str) or not name.strip():
            raise ClinchPadApiError(400, "name is required")
        if not isinstance(pipeline_id, str) or pipeline_id not in self.pipelines:
            raise ClinchPadApiError(400, "pipeline_id is required and must name a pipeline")
        with self._lock:
            stages = self.stages[pipeline_id]
            lead = {
                "_id": self._oid(self._now()),
                "name": name,
                "size": None,
                "archived": False,
                "user_id": None,
                "stage_id": stages[-1]["_id"],  # the first column of the board: Prospect
                "pipeline_id": pipeline_id,
            }
            self._apply(lead, {k: v for k, v in body.items() if k in ("size", "user_id")})
            self.leads[lead["_id"]] = lead
            self._announce("lead:created", lead, by or self.owner)
            return self.lead_view(lead)

    def update_lead(
        self, lead_id: str, body: Mapping[str, Any], *, by: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        with self._lock:
            lead = self.lead(lead_id)
            draft = dict(lead)
            changed = self._apply(draft, body)
            lead.update(draft)
            if changed:
                kind = "lead:stage_changed" if changed == ["stage"] else "lead:updated"
                self._announce(kind, lead, by or self.owner)
            return self.lead_view(lead)

    def delete_lead(self, lead_id: str, *, by: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            lead = self.lead(lead_id)
            del self.leads[lead_id]
            self._announce("lead:deleted", lead, by or self.owner)

    def add_note(self, lead_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        content = body.get("content")
        if not isinstance(content, str) or not content.strip():
            raise ClinchPadApiError(400, "content is required")
        with self._lock:
            lead = self.lead(lead_id)
            note = {"_id": self._oid(self._now()), "lead_id": lead_id, "content": content}
            self.notes.append(note)
            self._announce("note:created", lead, self.owner, note_content=content)
            return dict(note)

    # -- a person in the UI ---------------------------------------------------------------

    def simulate_user_change(self, lead_id: str, **changes: Any) -> dict[str, Any]:
        """A salesperson (not the key's owner) edits a lead: ``stage_id``, ``size``, ``name``..."""
        return self.update_lead(lead_id, changes, by=self.users[1])

    def simulate_archive(self, lead_id: str, archived: bool = True) -> None:
        with self._lock:
            lead = self.lead(lead_id)
            lead["archived"] = archived
            self._announce("lead:archived" if archived else "lead:unarchived", lead, self.users[1])

    def simulate_delete(self, lead_id: str) -> None:
        self.delete_lead(lead_id, by=self.users[1])

    # -- webhooks -------------------------------------------------------------------------

    def _announce(self, kind: str, lead: Mapping[str, Any], user: Mapping[str, Any], **extra: Any) -> None:
        stage = self._stage(lead["stage_id"])
        pipeline = self.pipelines[lead["pipeline_id"]]
        activity = {
            "_id": self._oid(self._now()),
            "created_at": _iso(self._now()),
            "type": kind,
            "user": dict(user),
            **extra,
        }
        self.activities.append(activity)
        if self.webhook_url is None:
            return
        body: dict[str, Any] = {
            "activity": activity,
            "lead": {
                "_id": lead["_id"],
                "name": lead["name"],
                "stage": {"_id": stage["_id"], "name": stage["name"]},
                "pipe": {"_id": pipeline["_id"], "name": pipeline["name"]},
            },
        }
        if self._handshake_key:
            body["handshake_key"] = self._handshake_key
        self.deliverer.submit(
            self.webhook_url, json.dumps(body).encode(), {"content-type": "application/json"}
        )


def _size(value: Any) -> int | float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ClinchPadApiError(400, "size must be numeric")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ClinchPadApiError(400, "size must be numeric") from None
    return int(number) if number.is_integer() else number
