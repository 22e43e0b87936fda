"""The sandbox's Trello: members, one board with lists and cards, custom fields, actions, webhooks.

Held in memory, thread-safe (one lock). Every change a person or the API makes is recorded as an
action shaped like Trello's (``{id, idMemberCreator, type, date, data, memberCreator}``; ``data``
carries ``card``, ``board``, ``list`` or ``listBefore``/``listAfter`` and ``old``) and delivered
to the board's webhooks as ``{"action", "model"}``, signed with ``X-Trello-Webhook`` =
base64(HMAC-SHA1(app secret, body + callbackURL)). Sources: see :mod:`connectors.trello.sandbox`.

Ids are 24-hex ObjectIds whose first 4 bytes are the creation time in seconds, then a counter,
so they sort in creation order as Trello's do.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sync_worker.sandbox.common import Faults, SandboxApiError, WebhookDeliverer

__all__ = ["RETRY_DELAYS", "Member", "TrelloSandbox", "iso", "public_webhook", "sign"]

RETRY_DELAYS: tuple[float, ...] = (30.0, 60.0, 120.0)
"""The sandbox's own retry schedule: Trello documents none (only ``consecutiveFailures``)."""

Member = dict[str, Any]


def iso(moment: datetime) -> str:
    """Trello's time format: ISO 8601 UTC with milliseconds and ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sign(secret: str, body: bytes, callback_url: str) -> str:
    digest = hmac.new(secret.encode(), body + callback_url.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _ref(obj: Mapping[str, Any], *names: str) -> dict[str, Any]:
    return {name: obj[name] for name in ("id", *names) if name in obj}


class TrelloSandbox:
    """State of one sandbox Trello. ``now`` anchors its clock (it then runs in real time)."""

    def __init__(
        self,
        *,
        api_key: str,
        app_secret: str,
        faults: Faults | None = None,
        time_scale: float = 1.0,
        now: datetime | None = None,
    ) -> None:
        self.api_key = api_key
        self._secret = app_secret
        self.faults = faults or Faults()
        self._lock = threading.RLock()
        self._start = now.astimezone(UTC) if now is not None else datetime.now(UTC)
        self._started = time.monotonic()
        self._last = 0
        self._counter = itertools.count(1)
        self.members: dict[str, Member] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.board: dict[str, Any] = {}
        self.lists: dict[str, dict[str, Any]] = {}
        self.cards: dict[str, dict[str, Any]] = {}
        self.custom_fields: dict[str, dict[str, Any]] = {}
        self.actions: list[dict[str, Any]] = []
        self.webhooks: dict[str, dict[str, Any]] = {}
        self.comments: list[dict[str, Any]] = []
        self.deliverer = WebhookDeliverer(
            retry_delays=RETRY_DELAYS, time_scale=time_scale, faults=self.faults, sign=self._signature
        )

    def __repr__(self) -> str:
        return f"TrelloSandbox(cards={len(self.cards)}, webhooks={len(self.webhooks)})"

    def close(self) -> None:
        self.deliverer.close()

    # -- clock and ids -------------------------------------------------------------------

    def now(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._started)

    def new_id(self, at: datetime | None = None) -> str:
        with self._lock:
            seconds = int((at or self.now()).timestamp())
            return f"{seconds:08x}{0x5EED:08x}{next(self._counter):08x}"

    # -- set-up ----------------------------------------------------------------------------

    def add_member(self, username: str, full_name: str, token: str | None = None) -> Member:
        member = {"id": self.new_id(self._start), "username": username, "fullName": full_name}
        self.members[member["id"]] = member
        if token is not None:
            self.tokens[token] = {"id": self.new_id(self._start), "idMember": member["id"]}
        return member

    def add_board(self, name: str) -> dict[str, Any]:
        board_id = self.new_id(self._start)
        self.board = {"id": board_id, "name": name, "closed": False, "shortLink": board_id[-8:]}
        return self.board

    def add_list(self, name: str, *, closed: bool = False) -> dict[str, Any]:
        pos = 16384.0 * (len(self.lists) + 1)
        raw = {
            "id": self.new_id(self._start),
            "name": name,
            "closed": closed,
            "pos": pos,
            "idBoard": self.board["id"],
        }
        self.lists[raw["id"]] = raw
        return raw

    def add_number_field(self, name: str) -> dict[str, Any]:
        field = {
            "id": self.new_id(self._start),
            "idModel": self.board["id"],
            "modelType": "board",
            "name": name,
            "type": "number",
            "pos": 16384.0 * (len(self.custom_fields) + 1),
        }
        self.custom_fields[field["id"]] = field
        return field

    def member_for(self, token: str) -> Member | None:
        entry = self.tokens.get(token)
        return self.members.get(entry["idMember"]) if entry else None

    # -- actions and webhooks ------------------------------------------------------------

    def _record(self, kind: str, member: Member, data: dict[str, Any], at: datetime | None = None) -> None:
        when = at or self.now()
        action = {
            "id": self.new_id(when),
            "idMemberCreator": member["id"],
            "type": kind,
            "date": iso(when),
            "data": {**data, "board": _ref(self.board, "name", "shortLink")},
            "memberCreator": dict(member),
            "appCreator": None,
            "limits": {},
        }
        self.actions.append(action)
        if at is None:
            self._deliver(action)

    def _signature(self, url: str, body: bytes, attempt: int) -> dict[str, str]:
        return {"X-Trello-Webhook": sign(self._secret, body, url)}

    def _deliver(self, action: dict[str, Any]) -> None:
        model = {k: v for k, v in self.board.items()}
        body = json.dumps({"action": action, "model": model}, separators=(",", ":")).encode()
        for hook in self.webhooks.values():
            watched = hook["idModel"] in (self.board["id"], action["data"].get("card", {}).get("id"))
            if hook["active"] and watched:
                self.deliverer.submit(hook["callbackURL"], body, {"Content-Type": "application/json"})

    def add_webhook(
        self, token: str, callback_url: str, id_model: str, description: str, active: bool = True
    ) -> dict[str, Any]:
        """Register a webhook (the HEAD check is the app's job, before this is called)."""
        with self._lock:
            for hook in self.webhooks.values():
                if (hook["callbackURL"], hook["idModel"], hook["token"]) == (callback_url, id_model, token):
                    raise SandboxApiError(
                        400, "A webhook with that callback, model, and token already exists"
                    )
            if id_model != self.board.get("id") and id_model not in self.cards:
                raise SandboxApiError(400, "invalid value for idModel")
            hook = {
                "id": self.new_id(),
                "description": description,
                "idModel": id_model,
                "callbackURL": callback_url,
                "active": active,
                "consecutiveFailures": 0,
                "firstConsecutiveFailDate": None,
                "token": token,
            }
            self.webhooks[hook["id"]] = hook
            return public_webhook(hook)

    # -- cards -----------------------------------------------------------------------------

    def card_json(self, card: Mapping[str, Any], *, custom_fields: bool) -> dict[str, Any]:
        out = {k: copy.deepcopy(v) for k, v in card.items() if k != "customFieldItems"}
        if custom_fields:
            out["customFieldItems"] = copy.deepcopy(card["customFieldItems"])
        return out

    def get_card(self, card_id: str) -> dict[str, Any]:
        card = self.cards.get(card_id)
        if card is None:
            raise SandboxApiError(404, "The requested resource was not found.")
        return card

    def _list(self, list_id: Any) -> dict[str, Any]:
        raw = self.lists.get(list_id) if isinstance(list_id, str) else None
        if raw is None:
            raise SandboxApiError(400, "invalid value for idList")
        return raw

    def create_card(
        self,
        member: Member,
        fields: Mapping[str, Any],
        *,
        at: datetime | None = None,
        amount: Decimal | None = None,
        amount_field: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            raw_list = self._list(fields.get("idList"))
            when = at or self.now()
            card_id = self.new_id(when)
            in_list = [c for c in self.cards.values() if c["idList"] == raw_list["id"]]
            card = {
                "id": card_id,
                "name": str(fields.get("name") or ""),
                "desc": str(fields.get("desc") or ""),
                "idBoard": self.board["id"],
                "idList": raw_list["id"],
                "closed": False,
                "pos": 16384.0 * (len(in_list) + 1),
                "dateLastActivity": iso(when),
                "due": fields.get("due") or None,
                "idMembers": list(fields.get("idMembers") or []),
                "idShort": len(self.cards) + 1,
                "shortLink": card_id[-8:],
                "url": f"https://trello.com/c/{card_id[-8:]}",
                "customFieldItems": [],
            }
            self.cards[card_id] = card
            self._record(
                "createCard",
                member,
                {"card": _ref(card, "name", "idShort", "shortLink"), "list": _ref(raw_list, "name")},
                at,
            )
            if amount is not None and amount_field is not None:
                self.set_number(member, card_id, amount_field, format(amount, "f"), at=at)
            return card

    def update_card(
        self, member: Member, card_id: str, fields: Mapping[str, Any], *, at: datetime | None = None
    ) -> dict[str, Any]:
        """Apply ``PUT /1/cards/{id}`` fields; one action per changed field, as Trello records."""
        with self._lock:
            card = self.get_card(card_id)
            when = at or self.now()
            for name, value in fields.items():
                if name == "idList":
                    before, after = self.lists[card["idList"]], self._list(value)
                    if after["id"] == before["id"]:
                        continue
                    card["idList"] = after["id"]
                    data = {
                        "card": _ref(card, "name", "idList", "idShort", "shortLink"),
                        "listBefore": _ref(before, "name"),
                        "listAfter": _ref(after, "name"),
                        "old": {"idList": before["id"]},
                    }
                elif name in ("name", "desc", "due", "closed", "pos"):
                    old = card.get(name)
                    if old == value:
                        continue
                    card[name] = value
                    data = {
                        "card": _ref(card, "name", name, "idShort", "shortLink"),
                        "old": {name: old},
                        "list": _ref(self.lists[card["idList"]], "name"),
                    }
                else:
                    raise SandboxApiError(400, f"invalid key: {name}")
                card["dateLastActivity"] = iso(when)
                self._record("updateCard", member, data, at)
            return card

    def set_number(
        self, member: Member, card_id: str, field_id: str, number: str | None, *, at: datetime | None = None
    ) -> dict[str, Any]:
        with self._lock:
            card = self.get_card(card_id)
            field = self.custom_fields.get(field_id)
            if field is None:
                raise SandboxApiError(404, "Custom field not found")
            if number is not None:
                try:
                    Decimal(number)
                except InvalidOperation as exc:
                    raise SandboxApiError(400, "Invalid custom field item value.") from exc
            items = card["customFieldItems"]
            old = next((i for i in items if i["idCustomField"] == field_id), None)
            card["customFieldItems"] = [i for i in items if i["idCustomField"] != field_id]
            item = {
                "id": old["id"] if old else self.new_id(),
                "idCustomField": field_id,
                "idModel": card_id,
                "modelType": "card",
                "value": {"number": number},
            }
            if number is not None:
                card["customFieldItems"].append(item)
            card["dateLastActivity"] = iso(at or self.now())
            self._record(
                "updateCustomFieldItem",
                member,
                {
                    "card": _ref(card, "name", "idShort", "shortLink"),
                    "customField": _ref(field, "name", "type"),
                    "customFieldItem": item,
                    "old": {"value": old["value"] if old else None},
                },
                at,
            )
            return item

    def delete_card(self, member: Member, card_id: str) -> None:
        with self._lock:
            card = self.cards.pop(card_id, None)
            if card is None:
                raise SandboxApiError(404, "The requested resource was not found.")
            self._record(
                "deleteCard",
                member,
                {
                    "card": _ref(card, "idShort", "shortLink"),
                    "list": _ref(self.lists[card["idList"]], "name"),
                },
            )

    def comment(self, member: Member, card_id: str, text: str) -> dict[str, Any]:
        with self._lock:
            card = self.get_card(card_id)
            self.comments.append({"card": card_id, "text": text, "member": member["id"]})
            self._record(
                "commentCard",
                member,
                {
                    "text": text,
                    "card": _ref(card, "name", "idShort"),
                    "list": _ref(self.lists[card["idList"]], "name"),
                },
            )
            return self.actions[-1]

    def board_actions(
        self, *, types: frozenset[str] | None, since: str | None, before: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Most recent first, ``since``/``before`` exclusive (ids or dates)."""
        with self._lock:
            chosen = [a for a in self.actions if types is None or _matches(a, types)]
            if since is not None:
                chosen = [a for a in chosen if _after(a, since)]
            if before is not None:
                chosen = [a for a in chosen if _before(a, before)]
            chosen.sort(key=lambda a: (a["date"], a["id"]), reverse=True)
            return copy.deepcopy(chosen[:limit])

    def visible_cards(self, which: str) -> Iterable[dict[str, Any]]:
        def archived(card: Mapping[str, Any]) -> bool:
            return bool(card["closed"]) or bool(self.lists[card["idList"]]["closed"])

        pick: dict[str, Callable[[Mapping[str, Any]], bool]] = {
            "all": lambda c: True,
            "open": lambda c: not c["closed"],
            "closed": lambda c: bool(c["closed"]),
            "visible": lambda c: not archived(c),
        }
        if which not in pick:
            raise SandboxApiError(400, "invalid value for filter")
        return [c for c in self.cards.values() if pick[which](c)]


def public_webhook(hook: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in hook.items() if k != "token"}


def _matches(action: Mapping[str, Any], types: frozenset[str]) -> bool:
    """``filter`` entries are action types, or ``updateCard:<field>`` (an update of that field)."""
    kind = action["type"]
    if kind in types:
        return True
    old = action["data"].get("old") or {}
    return kind == "updateCard" and any(f"updateCard:{name}" in types for name in old)


def _key(value: str) -> str:
    """Ids and dates compare as time first: an id's first 8 hex digits are its creation second."""
    if len(value) == 24 and all(ch in "0123456789abcdef" for ch in value):
        return iso(datetime.fromtimestamp(int(value[:8], 16), UTC))[:19] + "|" + value
    return value.replace("Z", "")[:19] + "|"


def _after(action: Mapping[str, Any], since: str) -> bool:
    return bool(f"{action['date'][:19]}|{action['id']}" > _key(since))


def _before(action: Mapping[str, Any], before: str) -> bool:
    return bool(f"{action['date'][:19]}|{action['id']}" < _key(before))
