"""The in-memory Zoho CRM org behind the sandbox: users, the stock Deals pipeline, deals, contacts,
the deleted list, OAuth tokens and notification channels. Thread-safe; the app is in
:mod:`connectors.zoho.sandbox.app`.

Documentation followed (v8; facts also in the SDK ``zohocrmsdk8_0``):

- Stock Deals stages with their ``forecast_type``, a display value that differs from the stored
  one (``Identify Decision Makers`` / ``Id. Decision Makers``) and two lost stages:
  https://www.zoho.com/crm/developer/docs/api/v8/get-pipelines.html
- Records (``Modified_By``/``Created_By`` ``{name, id, email}``, offset date-times with second
  precision, numeric string ids): https://www.zoho.com/crm/developer/docs/api/v8/get-records.html
- Deleted records (``type`` recycle/permanent, ``deleted_by``, ``deleted_time``):
  https://www.zoho.com/crm/developer/docs/api/v8/get-deleted-records.html
- Notifications (``channel_expiry`` at most a week, one hour when omitted or longer; callback body
  with ``server_time`` in ms, ``ids``, ``affected_fields``, ``affected_values``, ``operation``,
  ``channel_id``, ``token``): https://www.zoho.com/crm/developer/docs/api/v8/notifications/enable.html

Simplifications: one layout and one pipeline; times are kept in UTC (``+00:00``), which is an
org time zone Zoho allows; notification callbacks are not retried (Zoho documents no retry policy).
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sync_worker.sandbox.common import CallCounter, Faults, SandboxApiError, WebhookDeliverer

__all__ = ["STOCK_STAGES", "ZohoApiError", "ZohoSandbox", "ZohoUser"]

STOCK_STAGES: tuple[tuple[str, str, str, int], ...] = (
    ("Qualification", "Qualification", "Open", 10),
    ("Needs Analysis", "Needs Analysis", "Open", 20),
    ("Value Proposition", "Value Proposition", "Open", 40),
    ("Identify Decision Makers", "Id. Decision Makers", "Open", 60),
    ("Perception Analysis", "Perception Analysis", "Open", 70),
    ("Proposal/Price Quote", "Proposal/Price Quote", "Open", 75),
    ("Negotiation/Review", "Negotiation/Review", "Open", 90),
    ("Closed Won", "Closed Won", "Closed Won", 100),
    ("Closed Lost", "Closed Lost", "Closed Lost", 0),
    ("Closed-Lost to Competition", "Closed Lost to Competition", "Closed Lost", 0),
)
"""(display value, stored value, forecast type, probability) of the stock Standard pipeline."""

PIPELINE = "Standard (Standard)"
WRITABLE = frozenset({"Deal_Name", "Stage", "Pipeline", "Amount", "Closing_Date", "Leak_Flag", "Description"})
_FORECAST_CATEGORY = {
    "Open": ("Pipeline", "6787"),
    "Closed Won": ("Closed", "6789"),
    "Closed Lost": ("Omitted", "6791"),
}


class ZohoApiError(SandboxApiError):
    """A request refused with ``status`` and a Zoho error body (``code``, ``details``, ``message``)."""

    def __init__(
        self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(status, message)
        self.code = code
        self.details = dict(details or {})

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "details": self.details, "message": self.message, "status": "error"}


@dataclass(frozen=True)
class ZohoUser:
    id: str
    name: str
    email: str

    def minified(self) -> dict[str, str]:
        return {"name": self.name, "id": self.id, "email": self.email}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


class ZohoSandbox:
    """One org. ``clock`` gives "now"; ``time_scale`` shortens nothing here (no retries to scale)."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        faults: Faults | None = None,
        credits_per_day: int = 100_000,
        clock: Any = None,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock or (lambda: datetime.now(UTC))
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.faults = faults or Faults()
        self.calls = CallCounter()
        self.credits_per_day = credits_per_day
        self.credits_used = 0
        self.rate_limited = 0
        self.url = "http://127.0.0.1"
        self.org = "5725767"
        self._ids = itertools.count(1000)
        self.integration = ZohoUser(self._id(), "Sync Worker", "sync-worker@example.test")
        self.person = ZohoUser(self._id(), "Patricia Boyle", "patricia@example.test")
        self.layout_id = self._id()
        self.pipeline_id = self._id()
        self.stage_ids = {stored: self._id() for _, stored, _, _ in STOCK_STAGES}
        self.deals: dict[str, dict[str, Any]] = {}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.deleted: list[dict[str, Any]] = []
        self.channels: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, datetime] = {}
        self.deliverer = WebhookDeliverer(retry_delays=(), faults=self.faults)

    def __repr__(self) -> str:
        return f"ZohoSandbox(deals={len(self.deals)}, url={self.url!r})"

    def _id(self) -> str:
        return f"{self.org}{next(self._ids):012d}"

    def now(self) -> datetime:
        return self._clock().astimezone(UTC).replace(microsecond=0)

    def close(self) -> None:
        self.deliverer.close()

    # -- OAuth ----------------------------------------------------------------------------

    def refresh(self, form: Mapping[str, str]) -> dict[str, Any]:
        """The token answer (``error`` in place of ``access_token`` when refused, as Zoho does)."""
        if form.get("grant_type") != "refresh_token":
            return {"error": "unsupported_grant_type"}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return {"error": "invalid_client"}
        if form.get("refresh_token") != self.refresh_token:
            return {"error": "invalid_code"}
        token = f"1000.{self._id()}.{time.monotonic_ns():x}"
        with self._lock:
            self.tokens[token] = self.now() + timedelta(hours=1)
        return {
            "access_token": token,
            "scope": "ZohoCRM.modules.ALL ZohoCRM.settings.ALL ZohoCRM.notifications.ALL",
            "api_domain": self.url,
            "token_type": "Bearer",
            "expires_in": 3600,
        }

    def accepts(self, token: str | None) -> bool:
        with self._lock:
            expiry = self.tokens.get(token or "")
            return expiry is not None and expiry > self.now()

    def expire_tokens(self) -> None:
        """Every access token stops working (tests of the 401-then-refresh path)."""
        with self._lock:
            self.tokens.clear()

    def spend_credit(self) -> tuple[bool, int]:
        """Count one call against the 24 h credits; ``(allowed, remaining)``."""
        with self._lock:
            if self.credits_used >= self.credits_per_day:
                self.rate_limited += 1
                return False, 0
            self.credits_used += 1
            return True, self.credits_per_day - self.credits_used

    # -- pipeline -------------------------------------------------------------------------

    def pipeline(self) -> dict[str, Any]:
        maps = []
        for number, (display, stored, forecast, _) in enumerate(STOCK_STAGES, start=1):
            category, suffix = _FORECAST_CATEGORY[forecast]
            maps.append(
                {
                    "display_value": display,
                    "sequence_number": number,
                    "forecast_category": {"name": category, "id": f"{self.org}00000000{suffix}"},
                    "actual_value": stored,
                    "id": self.stage_ids[stored],
                    "colour_code": "#1F76C2",
                    "forecast_type": forecast,
                }
            )
        pipeline = {
            "display_value": PIPELINE,
            "default": True,
            "actual_value": PIPELINE,
            "id": self.pipeline_id,
        }
        return {**pipeline, "child_available": False, "maps": maps}

    def stage(self, value: Any) -> tuple[str, str, str, int] | None:
        for entry in STOCK_STAGES:
            if value in (entry[0], entry[1]):
                return entry
        return None

    # -- records --------------------------------------------------------------------------

    def add_contact(self, name: str, email: str) -> dict[str, Any]:
        with self._lock:
            contact = {"id": self._id(), "Last_Name": name, "Email": email}
            self.contacts[contact["id"]] = contact
            return dict(contact)

    def seed_deal(
        self, fields: Mapping[str, Any], *, at: datetime, by: ZohoUser | None = None
    ) -> dict[str, Any]:
        """A deal as if created at ``at`` (no callback)."""
        user = (by or self.person).minified()
        with self._lock:
            deal = {"id": self._id(), "Pipeline": PIPELINE, "Owner": self.person.minified(), **fields}
            deal.update(Created_Time=iso(at), Modified_Time=iso(at), Created_By=user, Modified_By=user)
            self.deals[deal["id"]] = deal
            return copy.deepcopy(deal)

    def check_fields(self, item: Mapping[str, Any], index: int) -> None:
        for name, value in item.items():
            if name == "id":
                continue
            if name not in WRITABLE:
                raise ZohoApiError(
                    400,
                    "INVALID_DATA",
                    "invalid data",
                    {"api_name": name, "json_path": f"$.data[{index}].{name}"},
                )
            if name == "Stage" and self.stage(value) is None:
                details = {"api_name": "Stage", "json_path": f"$.data[{index}].Stage"}
                raise ZohoApiError(400, "INVALID_DATA", "Pipeline doesn't contain the Stage", details)
            if name == "Pipeline" and value != PIPELINE:
                details = {"api_name": "Pipeline", "json_path": f"$.data[{index}].Pipeline"}
                raise ZohoApiError(400, "INVALID_DATA", "Layout doesn't contain the Pipeline", details)
            if name == "Amount" and (isinstance(value, bool) or not isinstance(value, int | float)):
                details = {
                    "api_name": "Amount",
                    "expected_data_type": "double",
                    "json_path": f"$.data[{index}].Amount",
                }
                raise ZohoApiError(400, "INVALID_DATA", "invalid data", details)

    def write(
        self, record_id: str | None, item: Mapping[str, Any], by: ZohoUser, index: int = 0
    ) -> dict[str, Any]:
        """Create (``record_id`` None) or update one deal; the per-record ``details``; a callback."""
        self.check_fields(item, index)
        with self._lock:
            now = iso(self.now())
            if record_id is None:
                deal: dict[str, Any] = {"id": self._id(), "Pipeline": PIPELINE, "Owner": by.minified()}
                deal["Created_Time"] = now
                deal["Created_By"] = by.minified()
                before: dict[str, Any] = {}
                self.deals[deal["id"]] = deal
            else:
                if record_id not in self.deals:
                    raise ZohoApiError(
                        400, "INVALID_DATA", "the id given seems to be invalid", {"id": record_id}
                    )
                deal = self.deals[record_id]
                before = dict(deal)
            deal.update({k: v for k, v in item.items() if k != "id"})
            deal.update(Modified_Time=now, Modified_By=by.minified())
            changed = [k for k in item if k != "id" and before.get(k) != deal.get(k)]
            self._notify("insert" if record_id is None else "update", deal["id"], changed)
            keys = ("Modified_Time", "Modified_By", "Created_Time", "id", "Created_By")
            return {k: copy.deepcopy(deal[k]) for k in keys}

    def delete(self, record_id: str, by: ZohoUser | None = None, kind: str = "recycle") -> None:
        user = by or self.person
        with self._lock:
            deal = self.deals.pop(record_id)
            entry = {"deleted_by": user.minified(), "id": record_id, "display_name": deal.get("Deal_Name")}
            entry.update(type=kind, created_by=deal.get("Created_By"), deleted_time=iso(self.now()))
            self.deleted.append(entry)
            self._notify("delete", record_id, [])

    # -- notifications --------------------------------------------------------------------

    def watch(self, entry: Mapping[str, Any], *, replace: bool) -> dict[str, Any]:
        """Enable (or replace) one channel; the ``events`` detail of the answer."""
        channel = str(entry.get("channel_id") or "")
        if not channel.isdigit():
            raise ZohoApiError(
                400, "MANDATORY_NOT_FOUND", "required field not found", {"api_name": "channel_id"}
            )
        events = entry.get("events")
        if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
            raise ZohoApiError(400, "MANDATORY_NOT_FOUND", "required field not found", {"api_name": "events"})
        url = entry.get("notify_url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ZohoApiError(
                400, "MANDATORY_NOT_FOUND", "required field not found", {"api_name": "notify_url"}
            )
        token = entry.get("token")
        if token is not None and (not isinstance(token, str) or len(token) > 50):
            raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"api_name": "token"})
        now = self.now()
        expiry = None
        if isinstance(entry.get("channel_expiry"), str):
            expiry = datetime.fromisoformat(entry["channel_expiry"]).astimezone(UTC)
        if expiry is None or expiry > now + timedelta(days=7) or expiry <= now:
            expiry = now + timedelta(hours=1)
        with self._lock:
            if replace and channel not in self.channels:
                raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"api_name": "channel_id"})
            self.channels[channel] = {
                "channel_id": channel,
                "events": list(events),
                "token": token,
                "notify_url": url,
                "channel_expiry": iso(expiry),
                "return_affected_field_values": entry.get("return_affected_field_values") is True,
                "resource_name": "Deals",
                "resource_id": f"{self.org}000000002175",
                "resource_uri": f"{self.url}/crm/v8/Deals",
            }
            return {
                k: self.channels[channel][k]
                for k in ("channel_expiry", "resource_uri", "resource_id", "resource_name", "channel_id")
            }

    def _notify(self, operation: str, record_id: str, changed: list[str]) -> None:
        deal = self.deals.get(record_id, {})
        wanted = {"insert": "create", "update": "edit", "delete": "delete"}[operation]
        for channel in self.channels.values():
            if datetime.fromisoformat(channel["channel_expiry"]) <= self.now():
                continue
            if not {f"Deals.{wanted}", "Deals.all"} & set(channel["events"]):
                continue
            body: dict[str, Any] = {
                "server_time": int(self._clock().timestamp() * 1000),
                "query_params": {},
                "module": "Deals",
                "resource_uri": channel["resource_uri"],
                "ids": [record_id],
                "affected_fields": [{record_id: changed}] if operation == "update" else [],
                "operation": operation,
                "channel_id": channel["channel_id"],
                "token": channel["token"],
            }
            if channel["return_affected_field_values"] and operation == "update":
                body["affected_values"] = [
                    {"record_id": record_id, "values": {k: deal.get(k) for k in changed}}
                ]
            headers = {"content-type": "application/json"}
            self.deliverer.submit(channel["notify_url"], json.dumps(body).encode(), headers)
