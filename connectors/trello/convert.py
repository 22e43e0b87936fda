"""Pure translation between Trello boards, lists and cards and the canonical model.

Nothing here touches the network or the clock. A board is a pipeline, its lists are the stages
(resolved only through ``mappings/trello.yaml``, by list id or name, within the board matched by id
or name; a board the mapping does not name uses its pipelines when that is unambiguous), a card is
a deal.

Provider facts followed (see section 4 of the project's research notes):

- Card fields ``id, idList, idBoard, pos, closed, dateLastActivity, name, desc, due, idMembers``
  and ``customFieldItems`` (``GET /1/cards/{id}?customFieldItems=true``), list fields ``id, name,
  closed, pos``: py-trello 0.20.1 ``card.py``/``trelloclient.py``, and
  https://developer.atlassian.com/cloud/trello/rest/api-group-cards/
- ``closed`` means archived; a card on an archived list (or board) can still read ``closed:false``,
  so the list's own ``closed`` counts too.
- A Number custom field item is ``{"idCustomField": …, "value": {"number": "1500"}}``: the number
  arrives as a string (py-trello ``customfield.py`` does ``float(value['number'])``).
- Ids are Mongo ObjectIds whose first 4 bytes are the creation time in seconds.
- Times are ISO 8601 UTC with milliseconds (``2024-05-01T10:00:00.000Z``).

Won and lost are lists (their canonical stage's kind); an archived card in an open stage is
``archived_status`` (``deleted`` by default: it left the funnel).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    RecordStatus,
    SourceStage,
    StageKey,
    StageKind,
    UnmappedStage,
)
from sync_worker.errors import PermanentError
from sync_worker.mappings import Mappings, TargetStage, normalise_name

__all__ = [
    "SOURCE",
    "Board",
    "amount_of",
    "card_to_canonical",
    "deleted_from_action",
    "find_target",
    "format_since",
    "id_time",
    "list_id_for",
    "parse_time",
    "resolve_stage",
    "stages_of",
    "update_params",
]

SOURCE = "trello"


@dataclass(frozen=True)
class Board:
    """One board as the connector knows it: id, name, lists by id (raw list objects)."""

    id: str
    name: str | None
    lists: Mapping[str, Mapping[str, Any]]


def parse_time(value: Any, field: str) -> datetime | None:
    """An ISO 8601 time (``…Z``) as aware UTC; None or "" stays None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PermanentError(f"trello: {field} is not a time string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PermanentError(f"trello: {field} is not an ISO 8601 time") from exc
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def id_time(object_id: str) -> datetime | None:
    """The creation time an ObjectId carries (its first 8 hex digits), None if it is not one."""
    if len(object_id) != 24:
        return None
    try:
        return datetime.fromtimestamp(int(object_id[:8], 16), UTC)
    except ValueError:
        return None


def format_since(moment: datetime) -> str:
    """The ``since`` value for ``moment``: "a date string YYYY-MM-DDThh:mm:ssZ"."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PermanentError(f"trello: {field} is missing or not an id")
    return value.strip()


def _object(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _pos(raw: Mapping[str, Any]) -> float:
    pos = raw.get("pos")
    if isinstance(pos, bool) or not isinstance(pos, int | float | str):
        return 0.0
    try:
        return float(pos)
    except ValueError:
        return 0.0


def amount_of(items: Any, field_id: str | None) -> Decimal | None:
    """The Number custom field ``field_id`` of a card's ``customFieldItems`` (a string number)."""
    if field_id is None or not isinstance(items, list):
        return None
    for item in items:
        if not isinstance(item, dict) or item.get("idCustomField") != field_id:
            continue
        value = item.get("value")
        number = value.get("number") if isinstance(value, dict) else None
        if number is None or number == "":
            return None
        if isinstance(number, bool) or not isinstance(number, str | int | float):
            raise PermanentError("trello: the amount custom field is not a number")
        try:
            return Decimal(str(number).strip())
        except InvalidOperation as exc:
            raise PermanentError("trello: the amount custom field is not a number") from exc
    return None


def stages_of(board: Board) -> list[SourceStage]:
    """The board's lists as stages, in board order (``pos``); archived lists are ``is_closed``."""
    ordered = sorted(board.lists.values(), key=lambda raw: (_pos(raw), str(raw.get("id"))))
    return [
        SourceStage(
            source=SOURCE,
            pipeline_id=board.id,
            pipeline_label=board.name or board.id,
            stage_id=_id(raw.get("id"), "list id"),
            stage_label=str(raw.get("name") or raw.get("id")),
            order=order,
            is_closed=raw.get("closed") is True,
        )
        for order, raw in enumerate(ordered)
    ]


def _board_mapped(mappings: Mappings, board: Board) -> bool:
    index = mappings.index.get(SOURCE)
    return index is not None and index.find_pipeline(board.id, board.name) is not None


def resolve_stage(
    mappings: Mappings, board: Board, list_id: str | None, list_name: str | None
) -> StageKey | UnmappedStage:
    """The canonical stage of a list: within the board's pipeline when the mapping names the board,
    else across the mapped pipelines when that is unambiguous."""
    named = _board_mapped(mappings, board)
    return mappings.to_canonical(
        SOURCE,
        pipeline=board.id if named else None,
        pipeline_name=board.name if named else None,
        stage=list_id,
        stage_name=list_name,
    )


def _status(
    key: StageKey | None, archived: bool, mappings: Mappings, archived_status: RecordStatus
) -> RecordStatus:
    kind = mappings.model.get(key).kind if key is not None else None
    if kind is StageKind.WON:
        return "won"
    if kind is StageKind.LOST:
        return "lost"
    return archived_status if archived else "open"


def card_to_canonical(
    card: Mapping[str, Any],
    mappings: Mappings,
    board: Board,
    *,
    amount_field: str | None = None,
    currency: str | None = None,
    archived_status: RecordStatus = "deleted",
    updated_at: datetime | None = None,
    stage_changed_at: datetime | None = None,
    change_source: str | None = None,
) -> CanonicalRecord:
    """A card object as a record. ``updated_at`` (the newest action seen for it) wins over the
    card's ``dateLastActivity`` when later; an unknown list yields ``unmapped``, never a default."""
    card_id = _id(card.get("id"), "card id")
    list_id = _text(card.get("idList"))
    raw_list = board.lists.get(list_id) if list_id is not None else None
    resolved = resolve_stage(mappings, board, list_id, _text(raw_list.get("name")) if raw_list else None)
    key = resolved if isinstance(resolved, StageKey) else None
    archived = card.get("closed") is True or (raw_list is not None and raw_list.get("closed") is True)
    activity = parse_time(card.get("dateLastActivity"), "card dateLastActivity")
    moments = [m for m in (activity, updated_at, id_time(card_id)) if m is not None]
    if not moments:
        raise PermanentError(f"trello: card {card_id} carries no time")
    raw_members = card.get("idMembers")
    members = [m for m in raw_members if isinstance(m, str)] if isinstance(raw_members, list) else []
    due = parse_time(card.get("due"), "card due")
    return CanonicalRecord(
        source=SOURCE,
        kind="deal",
        external_id=card_id,
        updated_at=max(moments),
        stage=key,
        unmapped=resolved if isinstance(resolved, UnmappedStage) else None,
        status=_status(key, archived, mappings, archived_status),
        pipeline_id=_text(card.get("idBoard")) or board.id,
        source_stage=list_id,
        title=_text(card.get("name")),
        amount=amount_of(card.get("customFieldItems"), amount_field),
        currency=currency,
        owner_id=members[0]
        if isinstance(members, list) and members and isinstance(members[0], str)
        else None,
        close_date=due.date() if due is not None else None,
        created_at=id_time(card_id),
        stage_changed_at=stage_changed_at,
        change_source=change_source,
    )


def find_target(mappings: Mappings, key: StageKey, board: Board) -> TargetStage | None:
    """The mapping target for ``key`` on this board (the board's pipeline, else the first one)."""
    if _board_mapped(mappings, board):
        return mappings.to_target(SOURCE, key, pipeline=board.id) or mappings.to_target(
            SOURCE, key, pipeline=board.name
        )
    return mappings.to_target(SOURCE, key)


def list_id_for(target: TargetStage, board: Board) -> str:
    """The open list a target names, by id or by name (case and spaces ignored)."""
    if target.stage is None:
        raise PermanentError("trello: a board has lists, not statuses: map the stage to a list")
    open_lists = [raw for raw in board.lists.values() if raw.get("closed") is not True]
    if target.match_by == "id":
        matches = [raw for raw in open_lists if raw.get("id") == target.stage]
    else:
        wanted = normalise_name(target.stage)
        matches = [raw for raw in open_lists if normalise_name(str(raw.get("name") or "")) == wanted]
    if len(matches) != 1:
        problem = "no" if not matches else "more than one"
        raise PermanentError(f"trello: {problem} open list {target.stage!r} on board {board.id}")
    return _id(matches[0].get("id"), "list id")


def _stage_for(update: CanonicalUpdate) -> StageKey | None:
    if update.stage is not None:
        return update.stage
    if update.status in ("won", "lost"):
        return StageKey(update.status)
    return None


def update_params(update: CanonicalUpdate, mappings: Mappings, board: Board) -> dict[str, str]:
    """The query parameters of ``PUT /1/cards/{id}`` (or ``POST /1/cards``) for ``update``.

    ``idList`` for a stage (or a won/lost status, through the won/lost stage's list), ``name``,
    ``due``. Raises :class:`PermanentError` for what a board cannot hold (an unmapped stage, a
    ``deleted`` status, a card created without a name).
    """
    params: dict[str, str] = {}
    if update.status == "deleted":
        raise PermanentError("trello: deleting a card is not pushed")
    key = _stage_for(update)
    if key is not None:
        target = find_target(mappings, key, board)
        if target is None:
            raise PermanentError(f"trello: canonical stage {key.value!r} has no list on board {board.id}")
        params["idList"] = list_id_for(target, board)
    if update.title is not None:
        params["name"] = update.title
    if update.close_date is not None:
        params["due"] = _due(update.close_date)
    if update.external_id is None and ("name" not in params or "idList" not in params):
        raise PermanentError("trello: a new card needs a title and a stage")
    return params


def _due(day: date) -> str:
    return f"{day.isoformat()}T12:00:00.000Z"


def deleted_from_action(action: Mapping[str, Any], mappings: Mappings, board: Board) -> CanonicalRecord:
    """A ``deleteCard`` action as a deleted record (what the action says about the card)."""
    data = _object(action.get("data"))
    card = _object(data.get("card"))
    card_id = _id(card.get("id"), "action data.card.id")
    raw_list = _object(data.get("list"))
    list_id = _text(raw_list.get("id"))
    resolved = resolve_stage(mappings, board, list_id, _text(raw_list.get("name")))
    when = parse_time(action.get("date"), "action date") or id_time(_id(action.get("id"), "action id"))
    if when is None:
        raise PermanentError("trello: a deleteCard action carries no time")
    return CanonicalRecord(
        source=SOURCE,
        kind="deal",
        external_id=card_id,
        updated_at=when,
        stage=resolved if isinstance(resolved, StageKey) else None,
        status="deleted",
        pipeline_id=board.id,
        source_stage=list_id,
        title=_text(card.get("name")),
        change_source=_text(action.get("idMemberCreator")),
    )
