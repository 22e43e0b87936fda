"""Stored Trello webhook events -> canonical records (:meth:`TrelloConnector.normalise_events`).

A delivery carries the action and the watched board, not the card as it is now
(https://developer.atlassian.com/cloud/trello/guides/rest-api/webhooks/), so:

- ``deleteCard`` / ``moveCardFromBoard`` answer themselves: the stored copy (else what the action
  says) marked deleted;
- an action whose ``idMemberCreator`` is the token's member is the service's own write (an echo);
- the other cards are read together, once per call: one ``/1/batch`` call for up to 10 cards, else
  the board's card list. A card no longer readable is skipped (its ``deleteCard`` will come, or the
  next full pull says it vanished); a card now on another board left this pipeline (deleted here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.trello.convert import deleted_from_action
from connectors.trello.feed import GONE_ACTIONS
from sync_worker.connector import NormaliseContext, Normalised, deleted_record

if TYPE_CHECKING:
    from connectors.trello.client import TrelloConnector
    from sync_worker.store.models import InboxEvent

__all__ = ["normalise_events"]


def normalise_events(
    connector: TrelloConnector, events: Sequence[InboxEvent], ctx: NormaliseContext
) -> Normalised:
    """The records a batch of stored Trello events stands for (see the module docstring)."""
    out = Normalised()
    to_read: dict[str, list[InboxEvent]] = {}
    reads_before = connector.reader.reads

    def gone(event: InboxEvent) -> None:
        fallback = deleted_from_action(event.payload, ctx.mappings, connector.board())
        out.records.append((deleted_record(event, "deal", ctx, fallback) or fallback, (event.id,)))

    for event in events:
        if event.object_type != "card":
            out.skip(event, f"trello {event.action[:40]}: not about a card")
        elif event.action in GONE_ACTIONS:
            gone(event)
        elif connector.is_own(event.change_source, ctx):
            out.echo_ids.append(event.id)
        else:
            to_read.setdefault(event.object_id, []).append(event)
    if to_read:
        cards = connector.reader.cards(list(to_read))
        board = connector.board_for(list(cards.values()))
        for card_id, group in to_read.items():
            card = cards.get(card_id)
            newest = max(group, key=lambda e: e.occurred_at)
            if card is None:
                for event in group:
                    out.skip(event, "trello: card not readable now (deleted or moved off the board)")
                continue
            if card.get("idBoard") not in (None, board.id):
                gone(newest)
                for event in group:
                    if event is not newest:
                        out.skip(event, "trello: card moved to another board")
                continue
            moves = [e.occurred_at for e in group if e.property_name == "idList"]
            record = connector.to_record(
                card,
                board,
                updated_at=newest.occurred_at,
                stage_changed_at=max(moves) if moves else None,
                change_source=newest.change_source,
            )
            out.records.append((record, tuple(e.id for e in group)))
    out.reads = connector.reader.reads - reads_before
    return out
