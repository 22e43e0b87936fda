"""A local Trello for the connector's tests, the demo and ``sync-worker sandbox``.

It follows Trello's documentation, not the connector (section 4 of the project's research notes):

- Auth: ``key`` and ``token`` query parameters,
  https://developer.atlassian.com/cloud/trello/guides/rest-api/authorization/
- Rate limits: 300 per 10 s per key, 100 per 10 s per token, ``/1/members/`` 100 per 900 s, the 429
  bodies ``API_KEY_LIMIT_EXCEEDED`` / ``API_TOKEN_LIMIT_EXCEEDED`` and the 200-429 lockout,
  https://developer.atlassian.com/cloud/trello/guides/rest-api/rate-limits/
- Webhooks: ``POST /1/webhooks`` with a ``HEAD`` check of the callback URL, signed deliveries
  ``{"action", "model"}`` with ``X-Trello-Webhook`` over body + callback URL,
  https://developer.atlassian.com/cloud/trello/guides/rest-api/webhooks/
- Boards, lists, cards, custom field items (numbers as strings), the actions feed with
  ``since``/``before``/``limit`` ≤ 1000/``filter`` (most recent first), batch ≤ 10 GET routes:
  py-trello 0.20.1, trello.js (generated from Trello's spec), the TrelloDotNet wiki.

:func:`start_sandbox` seeds it deterministically from :class:`~sync_worker.plugins.SandboxOptions`
(a "Sales Pipeline" board whose lists are those of ``mappings/trello.yaml``, ``deals`` cards, an
"Amount" Number field), registers the service's webhook when ``webhook_base_url`` is given (seed
data announces nothing) and serves it on a free port.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from connectors.trello.sandbox.app import create_app, simulate
from connectors.trello.sandbox.state import TrelloSandbox, sign
from sync_worker.plugins import SandboxOptions
from sync_worker.sandbox.common import Delivery, FaultConfig, Faults, ServerHandle, serve_in_thread

__all__ = ["LISTS", "TrelloSandbox", "TrelloSandboxServer", "start_sandbox"]

LISTS: tuple[str, ...] = (
    "Leads",
    "Contacted",
    "Qualified",
    "Meeting",
    "Proposal",
    "Negotiation",
    "Won",
    "Lost",
    "On Hold",
)
"""The lists of the seeded board, in board order (the names ``mappings/trello.yaml`` maps)."""


@dataclass
class TrelloSandboxServer:
    """A running, seeded sandbox Trello (:class:`~sync_worker.plugins.SandboxServer`)."""

    url: str
    state: TrelloSandbox
    board_id: str
    api_key: str = field(repr=False)
    token: str = field(repr=False)
    app_secret: str = field(repr=False)
    member_id: str
    _handle: ServerHandle = field(repr=False)
    _app: Any = field(repr=False)

    def env(self) -> dict[str, str]:
        return {
            "SYNC_TRELLO__BASE_URL": self.url,
            "SYNC_TRELLO__API_KEY": self.api_key,
            "SYNC_TRELLO__TOKEN": self.token,
            "SYNC_TRELLO__APP_SECRET": self.app_secret,
            "SYNC_TRELLO__BOARD_ID": self.board_id,
            "SYNC_TRELLO__MEMBER_ID": self.member_id,
        }

    def simulate_change(self) -> str:
        return simulate(self.state)

    def deliveries(self) -> list[Delivery]:
        return list(self.state.deliverer.deliveries)

    def forge(self, delivery: Delivery) -> Delivery:
        """The delivery signed with a secret that is not the app's."""
        headers = dict(delivery.headers)
        headers["X-Trello-Webhook"] = sign("not-the-secret", delivery.body, delivery.url)
        return replace(delivery, headers=headers)

    def set_faults(self, config: FaultConfig) -> None:
        self.state.faults.config = config

    def api_calls(self) -> int:
        return int(self._app_state().calls.total)

    def rate_limited(self) -> int:
        return int(self._app_state().rate_limited)

    def _app_state(self) -> Any:
        return self._app.state.trello

    def stop(self) -> None:
        self._handle.stop()
        self.state.close()


def seed(box: TrelloSandbox, *, deals: int, rng: random.Random, now: datetime) -> None:
    """The board, its lists, an Amount field and ``deals`` cards with a history of actions."""
    people = [box.add_member(f"rep{i}", f"Sales Rep {i}") for i in range(1, 4)]
    box.add_board("Sales Pipeline")
    lists = [box.add_list(name) for name in LISTS]
    box.add_list("Old leads (archived)", closed=True)
    amount = box.add_number_field("Amount")
    for number in range(deals):
        person = rng.choice(people)
        created = now - timedelta(days=rng.randint(5, 90), minutes=rng.randint(0, 1440))
        card = box.create_card(
            person,
            {"idList": lists[0]["id"], "name": f"Board deal {number + 1:04d}", "idMembers": [person["id"]]},
            at=created,
            amount=Decimal(rng.randrange(500, 50000, 50)),
            amount_field=amount["id"],
        )
        step = rng.randint(0, len(lists) - 1)
        if step:
            moved = created + timedelta(days=rng.randint(1, 4))
            box.update_card(person, card["id"], {"idList": lists[step]["id"]}, at=moved)
        if rng.random() < 0.05:
            box.update_card(person, card["id"], {"closed": True}, at=created + timedelta(days=4))


def start_sandbox(options: SandboxOptions) -> TrelloSandboxServer:
    """Build, seed and serve a sandbox Trello (see the module docstring)."""
    api_key, token, app_secret = secrets.token_hex(16), secrets.token_hex(32), secrets.token_hex(32)
    now = (options.now or datetime.now(UTC)).astimezone(UTC)
    box = TrelloSandbox(
        api_key=api_key,
        app_secret=app_secret,
        faults=Faults(options.faults),
        time_scale=options.time_scale,
        now=now,
    )
    bot = box.add_member("sync-worker", "sync-worker", token=token)
    seed(box, deals=options.deals, rng=random.Random(options.seed), now=now)
    if options.webhook_base_url:
        callback = f"{options.webhook_base_url.rstrip('/')}/webhooks/trello"
        box.add_webhook(token, callback, box.board["id"], "sync-worker")
    app = create_app(box)
    try:
        handle = serve_in_thread(app, host=options.host)
    except BaseException:
        box.close()
        raise
    return TrelloSandboxServer(
        url=handle.url,
        state=box,
        board_id=box.board["id"],
        api_key=api_key,
        token=token,
        app_secret=app_secret,
        member_id=bot["id"],
        _handle=handle,
        _app=app,
    )
