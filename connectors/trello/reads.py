"""Reading a board, its cards, custom fields and members: the GETs the connector shares.

- ``GET /1/boards/{id}?fields=name``, ``GET /1/boards/{id}/lists?filter=all`` (archived lists too),
  ``GET /1/boards/{id}/cards/all?customFieldItems=true`` (every card, archived ones too): py-trello
  0.20.1 ``trelloclient.py``/``board.py``; https://developer.atlassian.com/cloud/trello/rest/api-group-boards/
- ``GET /1/batch?urls=/cards/{id}?customFieldItems=true,…``: at most 10 routes, GET only, no
  ``/1`` prefix (trello.js ``GetBatch``). One entry per route; whether an entry is wrapped
  (``{"200": {…}}``) is not confirmed, so both shapes are read, and an entry that is an error is
  a card not readable now.
- ``GET /1/boards/{id}/customFields``: the field definitions (path not confirmed: a 404 means no
  amount field by name; an id in ``SYNC_TRELLO__AMOUNT_FIELD`` needs no lookup).
- ``GET /1/members/me?fields=id``: the token's member (bucket ``members``: 100 per 900 s).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.trello.access import MEMBERS_BUCKET
from connectors.trello.convert import Board
from sync_worker.errors import PermanentError
from sync_worker.http import ApiClient

__all__ = ["BATCH_ROUTES", "BoardReader", "is_object_id"]

BATCH_ROUTES = 10
_OBJECT_ID = re.compile(r"[0-9a-f]{24}")


def is_object_id(value: str) -> bool:
    return _OBJECT_ID.fullmatch(value) is not None


def _objects(data: Any, where: str) -> list[Mapping[str, Any]]:
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise PermanentError(f"trello {where}: response is not a list of objects")
    return data


def _batch_entry(entry: Any) -> Mapping[str, Any] | None:
    """A card from one batch entry, bare or wrapped as ``{"200": card}``; None for an error."""
    if not isinstance(entry, dict):
        return None
    if len(entry) == 1:
        ((status, body),) = entry.items()
        if status.isdigit():
            return body if status == "200" and isinstance(body, dict) else None
    return entry if isinstance(entry.get("id"), str) else None


class BoardReader:
    """The reads of one board, on the connector's :class:`ApiClient`."""

    def __init__(self, api: ApiClient, board_id: str) -> None:
        if not is_object_id(board_id) and not board_id.isalnum():
            raise PermanentError("trello: SYNC_TRELLO__BOARD_ID is not a board id or short link")
        self._api = api
        self.board_id = board_id
        self.reads = 0

    def _get(self, path: str, params: Mapping[str, Any] | None = None, bucket: str = "default") -> Any:
        self.reads += 1
        return self._api.request("GET", path, params=params, bucket=bucket).data

    def board(self) -> Board:
        """The board's name and every list (archived ones too)."""
        info = self._get(f"/1/boards/{self.board_id}", {"fields": "name"})
        if not isinstance(info, dict) or not isinstance(info.get("id"), str):
            raise PermanentError("trello GET /1/boards/{id}: response is not a board")
        lists = _objects(self._get(f"/1/boards/{self.board_id}/lists", {"filter": "all"}), "lists")
        by_id = {str(raw["id"]): raw for raw in lists if isinstance(raw.get("id"), str)}
        name = info.get("name")
        return Board(id=info["id"], name=name if isinstance(name, str) else None, lists=by_id)

    def all_cards(self) -> list[Mapping[str, Any]]:
        """Every card of the board, archived ones too, with their custom field items."""
        path = f"/1/boards/{self.board_id}/cards/all"
        return _objects(self._get(path, {"customFieldItems": "true"}), "cards")

    def cards(self, ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """The cards ``ids`` that can be read now: one batch call for up to 10, else the board's
        full card list (one call, whatever the count)."""
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return {}
        if len(wanted) > BATCH_ROUTES:
            keep = set(wanted)
            return {str(c["id"]): c for c in self.all_cards() if c.get("id") in keep}
        for card_id in wanted:
            if not is_object_id(card_id):
                raise PermanentError(f"trello: card id {card_id[:30]!r} is not an object id")
        urls = ",".join(f"/cards/{card_id}?customFieldItems=true" for card_id in wanted)
        entries = self._get("/1/batch", {"urls": urls})
        if not isinstance(entries, list):
            raise PermanentError("trello GET /1/batch: response is not a list")
        found: dict[str, Mapping[str, Any]] = {}
        for entry in entries:
            card = _batch_entry(entry)
            if card is not None and card.get("id") in wanted:
                found[str(card["id"])] = card
        return found

    def number_field(self, name_or_id: str) -> str | None:
        """The id of the Number custom field ``name_or_id`` (an id is taken as is)."""
        if is_object_id(name_or_id):
            return name_or_id
        try:
            fields = self._get(f"/1/boards/{self.board_id}/customFields")
        except PermanentError as exc:
            if exc.status == 404:
                return None
            raise
        wanted = " ".join(name_or_id.split()).casefold()
        for field in fields if isinstance(fields, list) else []:
            if (
                isinstance(field, dict)
                and field.get("type") == "number"
                and " ".join(str(field.get("name") or "").split()).casefold() == wanted
                and isinstance(field.get("id"), str)
            ):
                return str(field["id"])
        return None

    def me(self) -> str:
        """The id of the token's member."""
        data = self._get("/1/members/me", {"fields": "id"}, bucket=MEMBERS_BUCKET)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise PermanentError("trello GET /1/members/me: response has no id")
        return str(data["id"])

    def webhooks(self) -> list[Mapping[str, Any]]:
        """Every webhook of the member's tokens (``GET /1/members/me/tokens?webhooks=true``)."""
        tokens = self._get("/1/members/me/tokens", {"webhooks": "true"}, bucket=MEMBERS_BUCKET)
        hooks: list[Mapping[str, Any]] = []
        for token in tokens if isinstance(tokens, list) else []:
            found = token.get("webhooks") if isinstance(token, dict) else None
            hooks.extend(h for h in found or [] if isinstance(h, dict))
        return hooks
