"""Reading the board's actions feed: which actions matter, which card they touch, in what order.

``GET /1/boards/{id}/actions`` returns the most recent actions first; ``since`` and ``before`` take
"a date string YYYY-MM-DDThh:mm:ssZ or a mongo object ID", ``limit`` is 0 to 1000 (default 50):
trello.js ``GetBoardActions`` and the TrelloDotNet wiki ("Get the most recent Actions … Default 50,
Max 1000"; ``Before``: "an Action ID to retrieve actions before this ID"). Whether ``since`` is
exclusive is not documented, so actions are deduplicated by id and re-reading one is harmless.
``actions_before`` nested on ``GET /1/boards/{id}`` does not filter (TRELLO-229), so it is not used.

Action shape: ``{id, idMemberCreator, type, date, data: {card: {id, name, idList, …}, board,
list | listBefore | listAfter: {id, name}, old: {idList | closed | …}}}``. ``updateCard`` with
``listBefore``/``listAfter`` is a stage move, ``deleteCard`` a deletion, ``moveCardFromBoard`` a card
that left this board (it vanished from this pipeline).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from connectors.trello.convert import id_time, parse_time

__all__ = [
    "ACTION_FILTER",
    "CARD_ACTIONS",
    "GONE_ACTIONS",
    "MAX_LIMIT",
    "action_time",
    "card_id_of",
    "chronological",
    "is_stage_move",
    "list_after",
]

MAX_LIMIT: Final = 1000
CARD_ACTIONS: Final = frozenset(
    {
        "createCard",
        "copyCard",
        "updateCard",
        "deleteCard",
        "moveCardToBoard",
        "moveCardFromBoard",
        "updateCustomFieldItem",
        "convertToCardFromCheckItem",
    }
)
"""Action types that change a card's deal (stage, archive, name, due date, amount, presence)."""
GONE_ACTIONS: Final = frozenset({"deleteCard", "moveCardFromBoard"})
ACTION_FILTER: Final = ",".join(sorted(CARD_ACTIONS))


def _data(action: Mapping[str, Any]) -> Mapping[str, Any]:
    data = action.get("data")
    return data if isinstance(data, dict) else {}


def card_id_of(action: Mapping[str, Any]) -> str | None:
    """The id of the card an action is about, if any."""
    card = _data(action).get("card")
    card_id = card.get("id") if isinstance(card, dict) else None
    return card_id if isinstance(card_id, str) and card_id else None


def list_after(action: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The list a stage move went to (``data.listAfter``), None for other actions."""
    after = _data(action).get("listAfter")
    return after if isinstance(after, dict) else None


def is_stage_move(action: Mapping[str, Any]) -> bool:
    """``updateCard`` with ``listBefore``/``listAfter`` (or ``old.idList``): a card changed list."""
    if action.get("type") != "updateCard":
        return False
    data = _data(action)
    old = data.get("old")
    return "listAfter" in data or (isinstance(old, dict) and "idList" in old)


def action_time(action: Mapping[str, Any]) -> tuple[str, str]:
    """A sort key: the action's ``date`` (else its id's time) as ISO text, then its id."""
    action_id = str(action.get("id") or "")
    when = parse_time(action.get("date"), "action date") or id_time(action_id)
    return (when.isoformat() if when is not None else "", action_id)


def chronological(actions: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Actions deduplicated by id, oldest first."""
    unique: dict[str, Mapping[str, Any]] = {}
    for action in actions:
        action_id = action.get("id")
        if isinstance(action_id, str) and action_id:
            unique[action_id] = action
    return sorted(unique.values(), key=action_time)
