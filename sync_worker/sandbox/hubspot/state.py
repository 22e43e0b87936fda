"""In-memory state of the HubSpot sandbox: deals, pipelines, properties, webhooks.

Follows:
- Deal objects (``id``, ``properties`` as strings, ``createdAt``, ``updatedAt``, ``archived``,
  ``archivedAt``) and the default properties returned when none are asked for:
  https://developers.hubspot.com/docs/api-reference/crm-deals-v3/guide
- Property validation errors (``Property values were not valid`` with ``PROPERTY_DOESNT_EXIST``,
  ``INVALID_OPTION``, ``READ_ONLY_VALUE``) and batch multi-status (207 with ``results``, ``errors``,
  ``numErrors``): https://developers.hubspot.com/docs/api-reference/latest/error-handling
- Webhook events (``eventId``, ``subscriptionId``, ``portalId``, ``appId``, ``occurredAt``,
  ``subscriptionType``, ``attemptNumber``, ``objectId``, ``propertyName``, ``propertyValue``,
  ``changeSource``, ``sourceId``, ``changeFlag``), batched up to 100 per request, signed v3 (and v1 when
  configured), retried up to 10 times spread over 24 hours on connection failures, timeouts (5 s) and
  error statuses: https://developers.hubspot.com/docs/api-reference/webhooks-webhooks-v3/guide and
  https://developers.hubspot.com/docs/guides/apps/authentication/validating-requests

HubSpot does not publish the exact retry delays, only "up to 10 times over 24 hours"; the sandbox uses
:data:`DEFAULT_RETRY_DELAYS` (sum about 23.8 h), scaled by ``time_scale``.
"""

from __future__ import annotations

import contextvars
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sync_worker.sandbox.common import CallCounter, Faults, WebhookDeliverer
from sync_worker.sandbox.hubspot import catalog
from sync_worker.sandbox.hubspot.access import AccessControl
from sync_worker.sandbox.hubspot.contacts import ContactBook
from sync_worker.sandbox.hubspot.wire import ApiError, error_body, sign_v1, sign_v3, to_iso

__all__ = ["DEFAULT_RETRY_DELAYS", "DEFAULT_SUBSCRIBED_PROPERTIES", "HubSpotSandbox", "HubSpotSandboxConfig"]

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 28800)
"""Ten retries, seconds after each failed attempt; about 23.8 hours in all."""

DEFAULT_SUBSCRIBED_PROPERTIES = frozenset(
    {"dealstage", "pipeline", "amount", "closedate", "dealname", "hubspot_owner_id", "closed_lost_reason"}
)

_BUFFER: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "hubspot_events", default=None
)

_DEFAULT_READ = (
    "amount",
    "closedate",
    "createdate",
    "dealname",
    "dealstage",
    "hs_lastmodifieddate",
    "pipeline",
)
_ALWAYS_READ = ("createdate", "hs_lastmodifieddate", "hs_object_id")


@dataclass(frozen=True)
class HubSpotSandboxConfig:
    """How the sandbox behaves. Times in seconds unless named otherwise."""

    portal_id: int = 62515
    app_id: int = 1160452
    client_id: str = "sandbox-client-id"
    client_secret: str = field(default="sandbox-client-secret", repr=False)
    private_app_tokens: frozenset[str] = field(default=frozenset(), repr=False)
    webhook_url: str | None = None
    access_token_ttl: int = 1800
    rate_limit_per_10s: int = 100
    search_rate_limit_per_s: int = 5
    daily_limit: int = 500_000
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    time_scale: float = 1.0
    webhook_timeout: float = 5.0
    signature_v1: bool = False
    subscribed_properties: frozenset[str] | None = DEFAULT_SUBSCRIBED_PROPERTIES
    """``deal.propertyChange`` subscriptions; ``None`` subscribes to every writable property."""
    api_change_source: str = "INTEGRATION"
    max_events_per_request: int = 100


@dataclass
class _Deal:
    id: str
    properties: dict[str, str]
    created_ms: int
    updated_ms: int
    archived_ms: int | None = None


class HubSpotSandbox:
    """All state of one fake HubSpot portal, thread-safe. ``clock`` returns epoch seconds."""

    def __init__(
        self,
        config: HubSpotSandboxConfig | None = None,
        *,
        faults: Faults | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config if config is not None else HubSpotSandboxConfig()
        self.faults = faults if faults is not None else Faults()
        self.calls = CallCounter()
        self.webhook_url = self.config.webhook_url
        self._clock = clock
        self._lock = threading.RLock()
        self._deals: dict[str, _Deal] = {}
        self._ids = itertools.count(15_000_000_001)
        self.contacts = ContactBook(self.now_ms)
        """Contacts and deal <-> contact associations (:mod:`.contacts`)."""
        self._event_ids = itertools.count(100)
        self._subscriptions: dict[tuple[str, str], int] = {}
        self._deliverer: WebhookDeliverer | None = None
        self.access = AccessControl(
            client_id=self.config.client_id,
            client_secret=self.config.client_secret,
            access_token_ttl=self.config.access_token_ttl,
            rate_limit_per_10s=self.config.rate_limit_per_10s,
            search_rate_limit_per_s=self.config.search_rate_limit_per_s,
            daily_limit=self.config.daily_limit,
            clock=clock,
        )
        for token in self.config.private_app_tokens:
            self.access.add_private_app_token(token)
        now = self.now_ms()
        self._pipelines: dict[str, dict[str, Any]] = {}
        self._properties: dict[str, dict[str, Any]] = {p["name"]: p for p in catalog.stock_properties(now)}
        self._groups: dict[str, dict[str, Any]] = {g["name"]: g for g in catalog.stock_groups()}
        self.add_pipeline("default", "Sales Pipeline", catalog.DEFAULT_STAGES)

    def __repr__(self) -> str:
        return f"HubSpotSandbox(portal_id={self.config.portal_id}, deals={len(self._deals)})"

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    @property
    def deliverer(self) -> WebhookDeliverer:
        """The webhook deliverer (created on first use); tests read ``deliverer.deliveries``."""
        with self._lock:
            if self._deliverer is None:
                self._deliverer = WebhookDeliverer(
                    retry_delays=self.config.retry_delays,
                    time_scale=self.config.time_scale,
                    faults=self.faults,
                    sign=self._sign,
                    request_timeout=self.config.webhook_timeout,
                )
            return self._deliverer

    def close(self) -> None:
        with self._lock:
            deliverer, self._deliverer = self._deliverer, None
        if deliverer is not None:
            deliverer.close()

    # -- pipelines and properties -------------------------------------------------------------------------

    def add_pipeline(self, pipeline_id: str, label: str, stages: Sequence[catalog.StageSpec]) -> None:
        """Add (or replace) a deal pipeline; stage ids may be numeric strings like real custom pipelines."""
        now = self.now_ms()
        with self._lock:
            definition = catalog.pipeline_definition(pipeline_id, label, stages, now)
            definition["displayOrder"] = len(self._pipelines)
            self._pipelines[pipeline_id] = definition
            for stage_id, stage_label, _, _ in stages:
                for prop in catalog.stage_properties(stage_id, stage_label, now):
                    self._properties.setdefault(prop["name"], prop)

    def pipelines(self) -> list[dict[str, Any]]:
        with self._lock:
            return json.loads(json.dumps(list(self._pipelines.values())))  # type: ignore[no-any-return]

    def pipeline(self, pipeline_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._pipelines.get(pipeline_id)
            return json.loads(json.dumps(found)) if found is not None else None

    def _stage(self, pipeline_id: str, stage_id: str) -> dict[str, Any] | None:
        pipeline = self._pipelines.get(pipeline_id)
        if pipeline is None:
            return None
        return next((s for s in pipeline["stages"] if s["id"] == stage_id), None)

    def properties(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self._properties.values()]

    def property_groups(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(g) for g in self._groups.values()]

    def create_property(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /crm/v3/properties/deals``; 409 when the name exists, 400 when fields are missing."""
        missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)]
        if missing:
            raise ApiError(
                400, error_body(f"Missing required fields: {', '.join(missing)}", "VALIDATION_ERROR")
            )
        name = str(body["name"])
        with self._lock:
            if name in self._properties:
                raise ApiError(
                    409,
                    error_body(
                        f"A property named '{name}' already exists.",
                        "OBJECT_ALREADY_EXISTS",
                        context={"name": [name]},
                    ),
                )
            if str(body["groupName"]) not in self._groups:
                raise ApiError(
                    400,
                    error_body(f"Property group '{body['groupName']}' does not exist.", "VALIDATION_ERROR"),
                )
            definition = catalog.property_definition(
                name,
                str(body["label"]),
                str(body["type"]),
                str(body["fieldType"]),
                str(body["groupName"]),
                self.now_ms(),
                hubspot_defined=False,
                options=list(body.get("options", [])),
                description=str(body.get("description", "")),
            )
            self._properties[name] = definition
            return dict(definition)

    def create_property_group(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /crm/v3/properties/deals/groups``; 409 when the name exists."""
        if not body.get("name") or not body.get("label"):
            raise ApiError(400, error_body("Missing required fields: name, label", "VALIDATION_ERROR"))
        name = str(body["name"])
        with self._lock:
            if name in self._groups:
                raise ApiError(
                    409,
                    error_body(f"A property group named '{name}' already exists.", "OBJECT_ALREADY_EXISTS"),
                )
            group = {
                "name": name,
                "label": str(body["label"]),
                "displayOrder": int(body.get("displayOrder", -1)),
                "archived": False,
            }
            self._groups[name] = group
            return dict(group)

    # -- deals: reading -----------------------------------------------------------------------------------

    def wire(self, deal_id: str, properties: Iterable[str] | None = None) -> dict[str, Any] | None:
        """A deal in the wire format, with the asked-for properties (default set when None)."""
        with self._lock:
            deal = self._deals.get(deal_id)
            return None if deal is None else self._wire(deal, properties)

    def _wire(self, deal: _Deal, properties: Iterable[str] | None) -> dict[str, Any]:
        names = list(_DEFAULT_READ if properties is None else properties)
        names += [n for n in _ALWAYS_READ if n not in names]
        out: dict[str, Any] = {
            "id": deal.id,
            "properties": {n: deal.properties.get(n) for n in names},
            "createdAt": to_iso(deal.created_ms),
            "updatedAt": to_iso(deal.updated_ms),
            "archived": deal.archived_ms is not None,
        }
        if deal.archived_ms is not None:
            out["archivedAt"] = to_iso(deal.archived_ms)
        return out

    def get_deal(self, deal_id: str) -> dict[str, Any] | None:
        """Every stored property of a deal (tests and seeding), or None."""
        with self._lock:
            deal = self._deals.get(deal_id)
            return None if deal is None else self._wire(deal, list(deal.properties))

    def deal_ids(self, *, archived: bool = False) -> list[str]:
        """Ids in id order; archived ones only when ``archived``."""
        with self._lock:
            ids = [d.id for d in self._deals.values() if (d.archived_ms is not None) == archived]
        return sorted(ids, key=int)

    def live_deals(self) -> list[tuple[str, dict[str, str]]]:
        """Every unarchived deal as ``(id, properties)``, in id order (search and list read this)."""
        with self._lock:
            rows = [(d.id, dict(d.properties)) for d in self._deals.values() if d.archived_ms is None]
        return sorted(rows, key=lambda row: int(row[0]))

    def deal_properties(self, deal_id: str) -> dict[str, str] | None:
        with self._lock:
            deal = self._deals.get(deal_id)
            return None if deal is None else dict(deal.properties)

    def is_archived(self, deal_id: str) -> bool:
        with self._lock:
            deal = self._deals.get(deal_id)
            return deal is not None and deal.archived_ms is not None

    # -- deals: writing ------------------------------------------------------------------------------------

    def put_deal(
        self,
        properties: Mapping[str, str],
        *,
        deal_id: str | None = None,
        created_ms: int | None = None,
        modified_ms: int | None = None,
        archived: bool = False,
    ) -> str:
        """Seed or overwrite a deal directly: no validation, no webhook. Returns its id."""
        now = self.now_ms()
        with self._lock:
            new_id = deal_id if deal_id is not None else str(next(self._ids))
            created = created_ms if created_ms is not None else now
            deal = _Deal(new_id, {}, created, created)
            self._apply(deal, {"pipeline": "default", **properties}, created)
            deal.properties["createdate"] = to_iso(created)
            modified = modified_ms if modified_ms is not None else created
            deal.updated_ms = modified
            deal.properties["hs_lastmodifieddate"] = to_iso(modified)
            deal.archived_ms = modified if archived else None
            self._deals[new_id] = deal
            return new_id

    def validate(self, properties: Mapping[str, Any], pipeline: str | None) -> list[dict[str, Any]]:
        """The documented per-property validation errors for a create or update (empty when valid)."""
        problems: list[dict[str, Any]] = []
        with self._lock:
            for name in properties:
                if name not in self._properties:
                    problems.append(
                        _invalid(name, f'Property "{name}" does not exist', "PROPERTY_DOESNT_EXIST")
                    )
                elif name in catalog.READ_ONLY_PROPERTIES or name.startswith(
                    ("hs_date_entered_", "hs_date_exited_")
                ):
                    problems.append(
                        _invalid(
                            name,
                            f'"{name}" is a read only property; its value cannot be set.',
                            "READ_ONLY_VALUE",
                        )
                    )
            target_pipeline = str(properties.get("pipeline") or pipeline or "default")
            if "pipeline" in properties and target_pipeline not in self._pipelines:
                problems.append(
                    _invalid(
                        "pipeline", f"{target_pipeline} was not one of the allowed options", "INVALID_OPTION"
                    )
                )
            elif (
                "dealstage" in properties
                and self._stage(target_pipeline, str(properties["dealstage"])) is None
            ):
                problems.append(
                    _invalid(
                        "dealstage",
                        f"{properties['dealstage']} was not one of the allowed options "
                        f"for pipeline {target_pipeline}",
                        "INVALID_OPTION",
                    )
                )
        return problems

    def _apply(self, deal: _Deal, properties: Mapping[str, Any], now: int) -> list[str]:
        """Set values, keep the calculated properties in step; return the names whose value changed."""
        changed: list[str] = []
        for name, raw in properties.items():
            value = "" if raw is None else str(raw)
            if deal.properties.get(name, "") != value:
                changed.append(name)
            deal.properties[name] = value
        deal.properties["hs_object_id"] = deal.id
        if "dealstage" in changed:
            stamp = to_iso(now)
            deal.properties[f"hs_date_entered_{deal.properties['dealstage']}"] = stamp
            deal.properties["hs_v2_date_entered_current_stage"] = stamp
            stage = self._stage(deal.properties.get("pipeline", "default"), deal.properties["dealstage"])
            if stage is not None:
                deal.properties["hs_deal_stage_probability"] = stage["metadata"]["probability"]
                closed = stage["metadata"]["isClosed"] == "true"
                deal.properties["hs_is_closed"] = "true" if closed else "false"
                won = closed and float(stage["metadata"]["probability"]) >= 1.0
                deal.properties["hs_is_closed_won"] = "true" if won else "false"
        if changed:
            deal.updated_ms = now
            deal.properties["hs_lastmodifieddate"] = to_iso(now)
        return changed

    def _record_stage_exit(self, deal: _Deal, now: int) -> None:
        old = deal.properties.get("dealstage")
        if old:
            deal.properties[f"hs_date_exited_{old}"] = to_iso(now)

    def create_deal(
        self,
        properties: Mapping[str, Any],
        *,
        source: str,
        source_id: str,
        contact_ids: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Create a deal after validation (400 on invalid properties) and announce it.

        ``contact_ids`` (already checked to exist) are associated with the new deal.
        """
        self._raise_invalid(self.validate(properties, None))
        now = self.now_ms()
        with self._lock:
            deal = _Deal(str(next(self._ids)), {}, now, now)
            self._apply(deal, {"pipeline": "default", "createdate": to_iso(now), **properties}, now)
            self._deals[deal.id] = deal
            for contact_id in contact_ids:
                self.contacts.associate(deal.id, contact_id)
            events = [self._event("deal.creation", deal.id, now, source, source_id, change_flag="CREATED")]
            events += self._property_events(deal, list(properties), now, source, source_id)
            self._emit(events)
            return self._wire(deal, list(properties) or None)

    def update_deal(
        self, deal_id: str, properties: Mapping[str, Any], *, source: str, source_id: str
    ) -> dict[str, Any]:
        """Update a live deal (404 if missing or archived, 400 on invalid properties) and announce it."""
        with self._lock:
            deal = self._deals.get(deal_id)
            if deal is None or deal.archived_ms is not None:
                raise ApiError(404, _not_found(deal_id))
            self._raise_invalid(self.validate(properties, deal.properties.get("pipeline")))
            now = self.now_ms()
            if "dealstage" in properties and properties["dealstage"] != deal.properties.get("dealstage"):
                self._record_stage_exit(deal, now)
            changed = self._apply(deal, properties, now)
            self._emit(self._property_events(deal, changed, now, source, source_id))
            return self._wire(deal, list(properties) or None)

    def archive_deal(self, deal_id: str, *, source: str, source_id: str) -> bool:
        """Archive a deal; False when it does not exist or is already archived."""
        with self._lock:
            deal = self._deals.get(deal_id)
            if deal is None or deal.archived_ms is not None:
                return False
            now = self.now_ms()
            deal.archived_ms = now
            deal.updated_ms = now
            self._emit([self._event("deal.deletion", deal.id, now, source, source_id, change_flag="DELETED")])
            return True

    def associate_contact(self, deal_id: str, contact_id: str) -> None:
        """Associate a deal with a contact (seeding and tests); KeyError when either is unknown."""
        if self.deal_properties(deal_id) is None or not self.contacts.exists(contact_id):
            raise KeyError(f"unknown deal {deal_id} or contact {contact_id}")
        self.contacts.associate(deal_id, contact_id)

    def simulate_user_change(
        self, deal_id: str, properties: Mapping[str, Any], *, user_id: int = 9_876_543
    ) -> None:
        """Change a deal as a person in the CRM UI would: webhook events marked ``CRM_UI``."""
        self.update_deal(deal_id, properties, source="CRM_UI", source_id=f"userId:{user_id}")

    def simulate_user_create(self, properties: Mapping[str, Any], *, user_id: int = 9_876_543) -> str:
        return str(self.create_deal(properties, source="CRM_UI", source_id=f"userId:{user_id}")["id"])

    def simulate_user_archive(self, deal_id: str, *, user_id: int = 9_876_543) -> bool:
        return self.archive_deal(deal_id, source="CRM_UI", source_id=f"userId:{user_id}")

    def api_source(self) -> tuple[str, str]:
        """``(changeSource, sourceId)`` for changes made through the API by the app."""
        return self.config.api_change_source, str(self.config.app_id)

    @staticmethod
    def _raise_invalid(problems: list[dict[str, Any]]) -> None:
        if problems:
            message = "Property values were not valid: " + json.dumps(problems)
            raise ApiError(400, error_body(message, "VALIDATION_ERROR"))

    # -- webhooks ------------------------------------------------------------------------------------------

    def _subscription_id(self, subscription_type: str, prop: str = "") -> int:
        key = (subscription_type, prop)
        if key not in self._subscriptions:
            self._subscriptions[key] = 1_000 + len(self._subscriptions)
        return self._subscriptions[key]

    def _event(
        self,
        subscription_type: str,
        deal_id: str,
        now: int,
        source: str,
        source_id: str,
        *,
        prop: str | None = None,
        value: str | None = None,
        change_flag: str | None = None,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "eventId": next(self._event_ids),
            "subscriptionId": self._subscription_id(subscription_type, prop or ""),
            "portalId": self.config.portal_id,
            "appId": self.config.app_id,
            "occurredAt": now,
            "subscriptionType": subscription_type,
            "attemptNumber": 0,
            "objectId": int(deal_id),
            "changeSource": source,
            "sourceId": source_id,
        }
        if prop is not None:
            event["propertyName"] = prop
            event["propertyValue"] = value
        if change_flag is not None:
            event["changeFlag"] = change_flag
        return event

    def _property_events(
        self, deal: _Deal, names: Iterable[str], now: int, source: str, source_id: str
    ) -> list[dict[str, Any]]:
        subscribed = self.config.subscribed_properties
        return [
            self._event(
                "deal.propertyChange",
                deal.id,
                now,
                source,
                source_id,
                prop=n,
                value=deal.properties.get(n, ""),
            )
            for n in names
            if subscribed is None or n in subscribed
        ]

    @contextmanager
    def batching(self) -> Iterator[None]:
        """Collect the events of several changes (one API request) and send them together, 100 a request."""
        buffer: list[dict[str, Any]] = []
        token = _BUFFER.set(buffer)
        try:
            yield
        finally:
            _BUFFER.reset(token)
            self._emit(buffer)

    def _emit(self, events: list[dict[str, Any]]) -> None:
        buffer = _BUFFER.get()
        if buffer is not None:
            buffer.extend(events)
            return
        url = self.webhook_url
        if url is None or not events:
            return
        size = self.config.max_events_per_request
        for start in range(0, len(events), size):
            chunk = events[start : start + size]
            self.deliverer.submit(
                url,
                json.dumps(chunk).encode(),
                {
                    "Content-Type": "application/json",
                    "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/)",
                },
                body_for_attempt=_numbered(chunk),
            )

    def _sign(self, url: str, body: bytes, attempt: int) -> dict[str, str]:
        secret = self.config.client_secret
        timestamp = self.now_ms()
        headers = {
            "X-HubSpot-Request-Timestamp": str(timestamp),
            "X-HubSpot-Signature-v3": sign_v3(secret, "POST", url, body, timestamp),
        }
        if self.config.signature_v1:
            headers["X-HubSpot-Signature"] = sign_v1(secret, body)
            headers["X-HubSpot-Signature-Version"] = "v1"
        return headers


def _numbered(events: list[dict[str, Any]]) -> Callable[[int], bytes]:
    """The body for one attempt: ``attemptNumber`` counts from 0."""

    def build(attempt: int) -> bytes:
        return json.dumps([{**e, "attemptNumber": attempt - 1} for e in events]).encode()

    return build


def _invalid(name: str, message: str, error: str) -> dict[str, Any]:
    return {
        "isValid": False,
        "message": message,
        "error": error,
        "name": name,
        "localizedErrorMessage": message,
    }


def _not_found(deal_id: str) -> dict[str, Any]:
    return error_body(
        "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND", context={"id": [deal_id]}
    )
