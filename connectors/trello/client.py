"""The Trello connector: one board as a pipeline, its cards as deals.

Calls (all through :class:`~sync_worker.http.ApiClient`; reads in :mod:`connectors.trello.reads`):

- Pull, stream ``cards``: from no cursor, every card of the board (archived ones too) with the
  newest action id as the cursor, taken before the listing so nothing between is missed; from a
  cursor, the board's actions feed since it (:mod:`connectors.trello.feed`), up to 1,000 a call,
  paged back with ``before``; the cards those actions touched are read (one ``/1/batch`` call for
  up to 10, else the board's card list) and a ``deleteCard`` / ``moveCardFromBoard`` is a deletion.
  Pages are in the order of each card's last action; a page's cursor is the last action of its last
  card, so resuming re-reads a little and skips nothing. A feed of more than
  ``max_feed_pages`` pages falls back to a full listing. Vanished cards are found by the core from
  the full listing (``StreamSpec(full=True)``).
- Push: ``PUT /1/cards/{id}`` with ``idList`` (and ``name``, ``due``) as query parameters
  (https://developer.atlassian.com/cloud/trello/rest/api-group-cards/#api-cards-id-put); the amount
  with ``PUT /1/card/{id}/customField/{idCustomField}/item`` ``{"value": {"number": "1500"}}``
  (py-trello ``customfield.py``); a new card with ``POST /1/cards``; a leak flag as a comment,
  ``POST /1/cards/{id}/actions/comments?text=``. There is no batch write: one card per request,
  paced by the shared limiter (:mod:`connectors.trello.access`).
- Webhooks (:mod:`connectors.trello.webhooks`): registered by :meth:`TrelloConnector.prepare` with
  ``POST /1/webhooks`` when none of the member's tokens has one for this board and callback URL
  (``GET /1/members/me/tokens?webhooks=true``: the token never goes into a path).
- Echo: an action whose ``idMemberCreator`` is the token's member (``SYNC_TRELLO__MEMBER_ID``, else
  ``GET /1/members/me``) is the service's own write. Use a token of a member no person works as.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from connectors.trello.access import TrelloPacer
from connectors.trello.convert import (
    SOURCE,
    Board,
    card_to_canonical,
    deleted_from_action,
    parse_time,
    stages_of,
    update_params,
)
from connectors.trello.feed import (
    ACTION_FILTER,
    GONE_ACTIONS,
    MAX_LIMIT,
    action_time,
    card_id_of,
    chronological,
    is_stage_move,
)
from connectors.trello.inbox import normalise_events
from connectors.trello.reads import BoardReader
from connectors.trello.settings import TrelloSettings
from connectors.trello.webhooks import parse_webhook, verify_signature
from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    LeakFlag,
    PullPage,
    SourceStage,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.connector import NormaliseContext, Normalised, WebhookRequest
from sync_worker.errors import ConfigError, PermanentError, SyncWorkerError, TransientError
from sync_worker.http import ApiClient
from sync_worker.mappings import Mappings

if TYPE_CHECKING:
    from sync_worker.store.models import InboxEvent

__all__ = ["STREAM", "TrelloConnector"]

STREAM = "cards"
_PAGE_SIZE = 200
_log = logging.getLogger(__name__)


class TrelloConnector:
    """One Trello board as canonical deals; see the module docstring."""

    name = SOURCE

    def __init__(
        self,
        api: ApiClient,
        settings: TrelloSettings,
        mappings: Callable[[], Mappings],
        *,
        callback_url: str | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_feed_pages: int = 20,
        pacer: TrelloPacer | None = None,
    ) -> None:
        if not settings.board_id:
            raise ConfigError("trello: set SYNC_TRELLO__BOARD_ID")
        self._api = api
        self._settings = settings
        self._mappings = mappings
        self._callback_url = callback_url
        self._clock = clock
        self._max_feed_pages = max_feed_pages
        self._reader = BoardReader(api, settings.board_id)
        self._board: Board | None = None
        self._amount_field: tuple[str | None] | None = None
        self._member: str | None = settings.member_id
        self.pacer = pacer
        """The key/token pacer (``pacer.limited``: 429s by the budget they named), when built so."""

    def __repr__(self) -> str:
        return f"TrelloConnector({self._api!r}, board={self._reader.board_id!r})"

    def close(self) -> None:
        self._api.close()

    # -- board, lists, fields -------------------------------------------------------------

    def board(self, *, refresh: bool = False) -> Board:
        """The board and its lists (cached; refreshed when a card names an unknown list)."""
        if self._board is None or refresh:
            self._board = self._reader.board()
        return self._board

    def board_for(self, cards: Sequence[Mapping[str, Any]]) -> Board:
        board = self.board()
        if any(isinstance(c.get("idList"), str) and c["idList"] not in board.lists for c in cards):
            board = self.board(refresh=True)
        return board

    def _amount_field_id(self) -> str | None:
        if self._amount_field is None:
            found = self._reader.number_field(self._settings.amount_field)
            if found is None:
                _log.warning(
                    "trello: no Number custom field %r: amounts are not read or written",
                    self._settings.amount_field,
                )
            self._amount_field = (found,)
        return self._amount_field[0]

    def member_id(self) -> str:
        """The token's member: its actions are the service's own writes."""
        if self._member is None:
            self._member = self._reader.me()
        return self._member

    def list_stages(self) -> list[SourceStage]:
        """The board's open lists in board order (an archived list is no stage a card can enter;
        cards left on one read as archived)."""
        return [stage for stage in stages_of(self.board(refresh=True)) if not stage.is_closed]

    def to_record(
        self,
        card: Mapping[str, Any],
        board: Board,
        *,
        updated_at: datetime | None = None,
        stage_changed_at: datetime | None = None,
        change_source: str | None = None,
    ) -> CanonicalRecord:
        return card_to_canonical(
            card,
            self._mappings(),
            board,
            amount_field=self._amount_field_id(),
            currency=self._settings.currency,
            archived_status=self._settings.archived_status,
            updated_at=updated_at,
            stage_changed_at=stage_changed_at,
            change_source=change_source,
        )

    # -- pulls ----------------------------------------------------------------------------

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        """Cards changed since ``cursor`` (an action id or ``YYYY-MM-DDThh:mm:ssZ``), or every
        card from no cursor; see the module docstring."""
        if stream != STREAM:
            raise ConfigError(f"trello: unknown stream {stream!r}; expected {STREAM!r}")
        if not cursor:
            yield from self._full()
            return
        actions, complete = self._feed(cursor)
        if not complete:
            yield from self._full()
            return
        fresh = [a for a in actions if a.get("id") != cursor]
        if not fresh:
            yield PullPage(stream=STREAM, records=(), cursor=cursor, done=True)
            return
        yield from self._changed(fresh)

    def _newest_action(self) -> str | None:
        path = f"/1/boards/{self._reader.board_id}/actions"
        data = self._api.request("GET", path, params={"filter": ACTION_FILTER, "limit": 1}).data
        newest = chronological(data if isinstance(data, list) else [])
        return str(newest[-1]["id"]) if newest else None

    def _full(self) -> Iterator[PullPage]:
        cursor = self._newest_action() or self._since_now()
        cards = self._reader.all_cards()
        board = self.board_for(cards)
        records = [self.to_record(card, board) for card in cards]
        yield from self._pages(records, [cursor] * len(records), final=cursor)

    def _since_now(self) -> str:
        return self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _pages(self, records: list[CanonicalRecord], cursors: list[str], *, final: str) -> Iterator[PullPage]:
        """Pages of ``_PAGE_SIZE``; a page carries the cursor of its last record (None in a full
        listing's middle pages: their cursor is only safe once the last page is stored)."""
        if not records:
            yield PullPage(stream=STREAM, records=(), cursor=final, done=True)
            return
        full = len(set(cursors)) == 1
        for start in range(0, len(records), _PAGE_SIZE):
            end = min(start + _PAGE_SIZE, len(records))
            done = end == len(records)
            cursor = final if done else (None if full else cursors[end - 1])
            yield PullPage(stream=STREAM, records=tuple(records[start:end]), cursor=cursor, done=done)

    def _feed(self, since: str) -> tuple[list[Mapping[str, Any]], bool]:
        """Every action since ``since``, oldest first; False when over ``max_feed_pages`` pages."""
        path = f"/1/boards/{self._reader.board_id}/actions"
        collected: list[Mapping[str, Any]] = []
        before: str | None = None
        for _ in range(self._max_feed_pages):
            params: dict[str, Any] = {"filter": ACTION_FILTER, "since": since, "limit": MAX_LIMIT}
            if before is not None:
                params["before"] = before
            data = self._api.request("GET", path, params=params).data
            if not isinstance(data, list):
                raise PermanentError("trello GET /1/boards/{id}/actions: response is not a list")
            batch = [a for a in data if isinstance(a, dict)]
            collected.extend(batch)
            if len(data) < MAX_LIMIT or not batch:
                return chronological(collected), True
            before = str(chronological(batch)[0].get("id"))
        return [], False

    def _changed(self, actions: list[Mapping[str, Any]]) -> Iterator[PullPage]:
        last: dict[str, Mapping[str, Any]] = {}
        moved: dict[str, datetime] = {}
        for action in actions:
            card_id = card_id_of(action)
            if card_id is None:
                continue
            last[card_id] = action
            when = parse_time(action.get("date"), "action date")
            if is_stage_move(action) and when is not None:
                moved[card_id] = when
        live = [cid for cid, action in last.items() if action.get("type") not in GONE_ACTIONS]
        cards = self._reader.cards(live)
        board = self.board_for(list(cards.values()))
        mappings = self._mappings()
        rows: list[tuple[tuple[str, str], CanonicalRecord, str]] = []
        for card_id, action in last.items():
            if action.get("type") in GONE_ACTIONS:
                record = deleted_from_action(action, mappings, board)
            elif card_id in cards:
                when = parse_time(action.get("date"), "action date")
                record = self.to_record(
                    cards[card_id],
                    board,
                    updated_at=when,
                    stage_changed_at=moved.get(card_id),
                    change_source=_creator(action),
                )
            else:
                continue  # not readable now: its deleteCard (or the next full pull) will say
            rows.append((action_time(action), record, str(action["id"])))
        rows.sort(key=lambda row: row[0])
        final = str(actions[-1]["id"])
        yield from self._pages([r for _, r, _ in rows], [c for _, _, c in rows], final=final)

    # -- pushes ---------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        """One card per request (Trello has no batch write); a failure never hides the others."""
        results: list[UpdateResult] = []
        for update in updates:
            try:
                results.append(self._apply(update))
            except SyncWorkerError as exc:
                results.append(
                    UpdateResult(
                        idempotency_key=update.idempotency_key,
                        ok=False,
                        external_id=update.external_id,
                        error=str(exc),
                        retryable=isinstance(exc, TransientError),
                    )
                )
        return results

    def _apply(self, update: CanonicalUpdate) -> UpdateResult:
        if update.kind != "deal":
            raise PermanentError(f"trello: {update.kind} records are not written")
        params = update_params(update, self._mappings(), self.board())
        card_id = update.external_id
        card: Any = None
        if card_id is None:
            card = self._api.request("POST", "/1/cards", params=params).data
            card_id = card.get("id") if isinstance(card, dict) else None
            if not isinstance(card_id, str):
                raise PermanentError("trello POST /1/cards: response has no card id")
        else:
            _check_id(card_id)
            if params:
                card = self._api.request("PUT", f"/1/cards/{card_id}", params=params).data
        if update.amount is not None:
            self._write_amount(card_id, update.amount)
        if update.flag is not None and update.flag.rule is not None:
            self._comment(card_id, update.flag)
        stamp = card.get("dateLastActivity") if isinstance(card, dict) else None
        return UpdateResult(
            idempotency_key=update.idempotency_key,
            ok=True,
            external_id=card_id,
            updated_at=parse_time(stamp, "card dateLastActivity"),
        )

    def _write_amount(self, card_id: str, amount: Decimal) -> None:
        field_id = self._amount_field_id()
        if field_id is None:
            return  # the board cannot hold an amount; the other fields still flow
        path = f"/1/card/{card_id}/customField/{field_id}/item"
        self._api.request("PUT", path, json_body={"value": {"number": format(amount, "f")}})

    def _comment(self, card_id: str, flag: LeakFlag) -> None:
        lines = [f"sync-worker: leak flag ({flag.rule})"]
        if flag.reason:
            lines.append(flag.reason)
        if flag.stage is not None:
            lines.append(f"Stage: {flag.stage.value}")
        if flag.days_in_stage is not None:
            lines.append(f"Days in stage: {flag.days_in_stage}")
        path = f"/1/cards/{card_id}/actions/comments"
        self._api.request("POST", path, params={"text": "\n".join(lines)})

    # -- webhooks -------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> None:
        verify_signature(request, self._settings.app_secret)

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        return parse_webhook(body, now=self._clock)

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        """See :func:`connectors.trello.inbox.normalise_events`."""
        return normalise_events(self, events, ctx)

    @property
    def reader(self) -> BoardReader:
        return self._reader

    def is_own(self, change_source: str | None, ctx: NormaliseContext) -> bool:
        """True when the token's member (or a configured marker) made the change."""
        if change_source is None:
            return False
        return ctx.is_own(change_source) or change_source == self.member_id()

    def prepare(self) -> list[str]:
        """Register the board's webhook at the callback URL when no token of the member has one."""
        if self._callback_url is None or self._settings.app_secret is None:
            return []
        board = self.board()
        for hook in self._reader.webhooks():
            if hook.get("callbackURL") == self._callback_url and hook.get("idModel") in (
                board.id,
                self._reader.board_id,
            ):
                return []
        body = {
            "callbackURL": self._callback_url,
            "idModel": board.id,
            "description": "sync-worker",
            "active": True,
        }
        self._api.request("POST", "/1/webhooks", json_body=body)
        return [f"webhook for board {board.name or board.id}"]


def _creator(action: Mapping[str, Any]) -> str | None:
    creator = action.get("idMemberCreator")
    return creator if isinstance(creator, str) and creator else None


def _check_id(card_id: str) -> None:
    if not card_id.isalnum():
        raise PermanentError(f"trello: card id {card_id[:30]!r} is not an id")
