"""LaGrowthMachine inbox webhook events (stored in the inbox) -> canonical lead records.

Inbox events carry the message and the lead: a received message is a reply (no API call).
https://documenter.getpostman.com/view/2071164/TVCmSkH2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from connectors.lagrowthmachine.convert import reply_to_canonical
from sync_worker.connector import NormaliseContext, Normalised

if TYPE_CHECKING:
    from sync_worker.store.models import InboxEvent

__all__ = ["REPLY_ACTION", "normalise_events"]

REPLY_ACTION = "reply_received"


def normalise_events(events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
    """One lead record per reply; other events (outgoing messages, unrecognised shapes) skipped."""
    out = Normalised()
    for event in events:
        if event.action != REPLY_ACTION:
            out.skip(event, f"unhandled action {event.action!r}")
            continue
        out.records.append((reply_to_canonical(event.payload, ctx.mappings), (event.id,)))
    return out
