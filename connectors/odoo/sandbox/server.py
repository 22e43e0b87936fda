"""A live Odoo sandbox: seeded, served on a local port, announcing lead changes by webhook.

:func:`start_sandbox` is the spec's ``sandbox=`` factory (:class:`~sync_worker.plugins.SandboxServer`).
``version`` 19 (the default) speaks JSON-2 and still JSON-RPC; 17 and 18 speak JSON-RPC only. With a
``webhook_base_url`` an automation rule on ``crm.lead`` (on creation and update) runs a "Send Webhook
Notification" server action to ``{base}/webhooks/odoo?token=<secret>``: once, a one-second timeout,
no retry, ``Content-Type: application/json`` and nothing else, the chosen fields read with
``load=None`` and dumped with ``sort_keys=True, default=str``. Seeding happens before the rule
exists, so the seed data announces nothing. Keys and the secret never appear in a repr.
"""

from __future__ import annotations

import json
import random
import secrets
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from connectors.odoo.sandbox.app import OdooAccess, create_app
from connectors.odoo.sandbox.crm import CrmState
from connectors.odoo.sandbox.seed import SeededIds, seed_database
from connectors.odoo.sandbox.state import Env
from sync_worker.plugins import SandboxOptions
from sync_worker.sandbox.common import (
    CallCounter,
    Delivery,
    FaultConfig,
    Faults,
    ServerHandle,
    WebhookDeliverer,
    serve_in_thread,
)

__all__ = ["WEBHOOK_FIELDS", "OdooSandbox", "start_sandbox"]

WEBHOOK_FIELDS: tuple[str, ...] = (
    "id",
    "name",
    "type",
    "active",
    "stage_id",
    "probability",
    "expected_revenue",
    "lost_reason_id",
    "write_date",
    "write_uid",
)
_ACTION_ID = 7
_ACTION_NAME = "sync-worker lead webhook"


class OdooSandbox:
    """One running sandbox: ``url``, ``state`` (a :class:`CrmState`), ``ids`` (the seeded users and
    stages), ``api_key`` of the bot user, and the webhook ``deliverer``."""

    def __init__(self, options: SandboxOptions, *, version: int = 19, database: str = "sandbox") -> None:
        now = options.now or datetime.now(UTC)
        offset = now - datetime.now(UTC)
        self.version = version
        self.database = database
        self.api_key = secrets.token_hex(20)
        self.webhook_secret = secrets.token_urlsafe(24)
        self.faults = Faults(options.faults)
        self.calls = CallCounter()
        # Time runs on from ``options.now``, so writes are always newer than the seed data.
        self.state = CrmState(database=database, now=lambda: datetime.now(UTC) + offset)
        self.ids: SeededIds = seed_database(self.state, seed=options.seed, deals=options.deals, now=now)
        self.deliverer = WebhookDeliverer(retry_delays=(), faults=self.faults, request_timeout=1.0)
        self.access = OdooAccess(
            keys={self.api_key: self.ids.bot_uid},
            logins={"sync-worker": self.ids.bot_uid},
            database=database,
            version=version,
        )
        self._random = random.Random(options.seed)
        self.webhook_url: str | None = None
        if options.webhook_base_url:
            base = options.webhook_base_url.rstrip("/")
            self.webhook_url = f"{base}/webhooks/odoo?{urlencode({'token': self.webhook_secret})}"
            self.state.on_change = self._announce
        self._handle: ServerHandle = serve_in_thread(
            create_app(self.state, self.access, faults=self.faults, calls=self.calls), host=options.host
        )
        self.url = self._handle.url

    def __repr__(self) -> str:
        return f"OdooSandbox(url={self.url!r}, version={self.version}, {self.state!r})"

    def env(self) -> dict[str, str]:
        """The ``SYNC_ODOO__*`` variables that point the service at this sandbox."""
        return {
            "SYNC_ODOO__BASE_URL": self.url,
            "SYNC_ODOO__API_KEY": self.api_key,
            "SYNC_ODOO__DATABASE": self.database,
            "SYNC_ODOO__LOGIN": "sync-worker",
            "SYNC_ODOO__USER_ID": str(self.ids.bot_uid),
            "SYNC_ODOO__WEBHOOK_SECRET": self.webhook_secret,
        }

    def _announce(self, model: str, ids: list[int]) -> None:
        if self.webhook_url is None:
            return
        for lead_id in ids:
            values = self.state.read_for_webhook(lead_id, WEBHOOK_FIELDS)
            if values is None:
                continue
            payload: dict[str, Any] = {
                "_action": f"{_ACTION_NAME}(#{_ACTION_ID})",
                "_id": lead_id,
                "_model": model,
                **values,
            }
            body = json.dumps(payload, sort_keys=True, default=str).encode()
            self.deliverer.submit(self.webhook_url, body, {"Content-Type": "application/json"})

    def as_person(self, model: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a method as Mitchell Admin would in the web client (not the API user)."""
        return self.state.call(
            Env(self.ids.person_uid, {"active_test": False}), model, method, list(args), kwargs
        )

    def open_opportunities(self) -> list[int]:
        with self.state.lock:
            return sorted(
                r["id"]
                for r in self.state.records["crm.lead"].values()
                if r.get("active") and r.get("type") == "opportunity" and r.get("probability", 0) < 100
            )

    def simulate_change(self) -> str:
        """A person moves one open opportunity to the next open stage (or back to the first)."""
        lead_id = self._random.choice(self.open_opportunities())
        order = [self.ids.stages[name] for name in ("New", "Qualified", "Proposition", "Negotiation")]
        current = self.state.lead(lead_id).get("stage_id")
        position = order.index(current) if current in order else -1
        self.as_person("crm.lead", "write", [lead_id], {"stage_id": order[(position + 1) % len(order)]})
        return str(lead_id)

    def deliveries(self) -> list[Delivery]:
        return list(self.deliverer.deliveries)

    def forge(self, delivery: Delivery) -> Delivery:
        """The same delivery with a token that is not the secret."""
        parts = urlsplit(delivery.url)
        query = [
            (k, "forged-" + secrets.token_urlsafe(12) if k == "token" else v)
            for k, v in parse_qsl(parts.query)
        ]
        return replace(delivery, url=urlunsplit(parts._replace(query=urlencode(query))))

    def set_faults(self, config: FaultConfig) -> None:
        self.faults.config = config

    def api_calls(self) -> int:
        return self.calls.total

    def rate_limited(self) -> int:
        return self.calls.by_status[429]

    def stop(self) -> None:
        self._handle.stop()
        self.deliverer.close()


def start_sandbox(options: SandboxOptions, *, version: int = 19) -> OdooSandbox:
    """Seed and serve an Odoo sandbox (see the module docstring)."""
    return OdooSandbox(options, version=version)
