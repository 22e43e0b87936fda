"""A local Zoho CRM (API v8) for tests, ``sync-worker sandbox`` and the demo.

:func:`start_zoho_sandbox` builds a :class:`~connectors.zoho.sandbox.state.ZohoSandbox`, seeds it
deterministically from :class:`~sync_worker.plugins.SandboxOptions` (``seed``, ``deals``, ``now``)
and serves it on a free port. With ``webhook_base_url`` it holds a Deals notification channel
whose callbacks go to ``{webhook_base_url}/webhooks/zoho`` carrying the generated token. The
documentation it follows is cited in :mod:`~connectors.zoho.sandbox.state` and
:mod:`~connectors.zoho.sandbox.app`.
"""

from __future__ import annotations

import json
import random
import secrets
from datetime import UTC, datetime, timedelta

from connectors.zoho.sandbox.app import create_app
from connectors.zoho.sandbox.state import STOCK_STAGES, ZohoSandbox, iso
from sync_worker.plugins import SandboxOptions
from sync_worker.sandbox.common import Delivery, FaultConfig, Faults, ServerHandle, serve_in_thread

__all__ = ["ZohoSandboxServer", "seed_deals", "start_zoho_sandbox"]

CHANNEL_ID = "1000000068001"
_OPEN = [stored for _, stored, forecast, _ in STOCK_STAGES if forecast == "Open"]


def seed_deals(sandbox: ZohoSandbox, *, deals: int, seed: int, now: datetime) -> list[str]:
    """``deals`` deals over the stock stages, each with a contact, modified over the last 90 days."""
    rng = random.Random(seed)
    created: list[str] = []
    for number in range(deals):
        contact = sandbox.add_contact(f"Buyer {number}", f"buyer{number}@seed{seed}.example.test")
        stored = rng.choice([s for _, s, _, _ in STOCK_STAGES])
        at = now - timedelta(days=rng.randint(0, 90), seconds=rng.randint(0, 86_399))
        fields = {
            "Deal_Name": f"Seed deal {number}",
            "Stage": stored,
            "Amount": rng.randint(1, 200) * 500,
            "Closing_Date": (at + timedelta(days=30)).date().isoformat(),
            "Contact_Name": {"name": contact["Last_Name"], "id": contact["id"]},
        }
        created.append(sandbox.seed_deal(fields, at=at)["id"])
    return created


class ZohoSandboxServer:
    """The running sandbox (:class:`~sync_worker.plugins.SandboxServer`)."""

    def __init__(self, state: ZohoSandbox, handle: ServerHandle, *, webhook_token: str, seed: int) -> None:
        self.state = state
        self.url = handle.url
        self._handle = handle
        self._webhook_token = webhook_token
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return f"ZohoSandboxServer({self.url!r})"

    def env(self) -> dict[str, str]:
        return {
            "SYNC_ZOHO__BASE_URL": self.url,
            "SYNC_ZOHO__ACCOUNTS_URL": self.url,
            "SYNC_ZOHO__CLIENT_ID": self.state.client_id,
            "SYNC_ZOHO__CLIENT_SECRET": self.state.client_secret,
            "SYNC_ZOHO__REFRESH_TOKEN": self.state.refresh_token,
            "SYNC_ZOHO__USER_ID": self.state.integration.id,
            "SYNC_ZOHO__WEBHOOK_TOKEN": self._webhook_token,
            "SYNC_ZOHO__CHANNEL_ID": CHANNEL_ID,
        }

    def simulate_change(self) -> str:
        """A person moves one open deal to the next open stage (or back to the first)."""
        with self.state._lock:
            open_ids = sorted(i for i, d in self.state.deals.items() if d.get("Stage") in _OPEN)
        if not open_ids:
            raise RuntimeError("the Zoho sandbox has no open deal to change")
        deal_id = self._rng.choice(open_ids)
        current = _OPEN.index(self.state.deals[deal_id]["Stage"])
        self.state.write(deal_id, {"Stage": _OPEN[(current + 1) % len(_OPEN)]}, self.state.person)
        return deal_id

    def deliveries(self) -> list[Delivery]:
        return list(self.state.deliverer.deliveries)

    def forge(self, delivery: Delivery) -> Delivery:
        body = json.loads(delivery.body)
        body["token"] = secrets.token_urlsafe(18)
        return Delivery(
            url=delivery.url,
            body=json.dumps(body).encode(),
            headers=dict(delivery.headers),
            attempt=1,
            status=None,
            error=None,
            at=delivery.at,
        )

    def set_faults(self, config: FaultConfig) -> None:
        self.state.faults.config = config

    def api_calls(self) -> int:
        return self.state.calls.total

    def rate_limited(self) -> int:
        return self.state.rate_limited

    def stop(self) -> None:
        self._handle.stop()
        self.state.close()


def start_zoho_sandbox(options: SandboxOptions) -> ZohoSandboxServer:
    """Build, seed and serve a Zoho sandbox (see the module docstring)."""
    now = (options.now or datetime.now(UTC)).astimezone(UTC)
    state = ZohoSandbox(
        client_id=f"1000.{secrets.token_hex(12).upper()}",
        client_secret=secrets.token_hex(20),
        refresh_token=f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}",
        faults=Faults(options.faults),
    )
    seed_deals(state, deals=options.deals, seed=options.seed, now=now)
    handle = serve_in_thread(create_app(state), host=options.host)
    state.url = handle.url
    token = secrets.token_urlsafe(24)
    if options.webhook_base_url:
        entry = {
            "channel_id": CHANNEL_ID,
            "events": ["Deals.all"],
            "token": token,
            "notify_url": f"{options.webhook_base_url.rstrip('/')}/webhooks/zoho",
            "channel_expiry": iso(datetime.now(UTC) + timedelta(days=7) - timedelta(minutes=1)),
            "return_affected_field_values": True,
        }
        state.watch(entry, replace=False)
    return ZohoSandboxServer(state, handle, webhook_token=token, seed=options.seed)
