"""The pull cursor: the newest ``write_date`` second seen, and the leads already read in it.

``write_date`` reads at second precision (``"YYYY-MM-DD HH:MM:SS"``, UTC, no zone); whether the
database keeps a fraction underneath is not documented, so a second is treated as a bucket
``[s, s + 1)`` in domains, never compared with ``=``. A pull asks for ``write_date >= s`` (so a lead
written later in that same second is still found) minus the ids already read in second ``s`` (so the
lead at the cursor is not counted twice), ordered ``write_date asc, id asc``. Each page moves the
cursor; a lead written while a pull runs moves to the end of the order and is read again later.

Wire form: ``"2025-03-01 10:15:02|7,9-12"`` (the second, then the ids read in it as ranges).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from connectors.odoo.convert import format_time, parse_time
from sync_worker.errors import ConfigError, PermanentError

__all__ = ["PullCursor"]

_SECOND = timedelta(seconds=1)


def _ranges(ids: Iterable[int]) -> str:
    parts: list[str] = []
    ordered = sorted(set(ids))
    start = prev = None
    for value in [*ordered, None]:
        if value is not None and prev is not None and value == prev + 1:
            prev = value
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = value
    return ",".join(parts)


def _parse_ranges(text: str) -> frozenset[int]:
    ids: set[int] = set()
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last < first or last - first > 1_000_000:
            raise ValueError(part)
        ids.update(range(first, last + 1))
    return frozenset(ids)


@dataclass(frozen=True)
class PullCursor:
    """``second``: the newest ``write_date`` (floored to the second); ``seen``: ids read in it."""

    second: datetime
    seen: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, raw: str) -> PullCursor:
        """The cursor from its wire form, or a bare time (``sync --since``)."""
        moment, _, ids = raw.partition("|")
        try:
            second = parse_time(moment, "cursor")
            seen = _parse_ranges(ids)
        except (ValueError, PermanentError) as exc:
            raise ConfigError(f"odoo: cursor {raw[:60]!r} is not 'YYYY-MM-DD HH:MM:SS|ids'") from exc
        if second is None:
            raise ConfigError("odoo: empty cursor")
        return cls(second.replace(microsecond=0), seen)

    def __str__(self) -> str:
        return f"{format_time(self.second)}|{_ranges(self.seen)}"

    def domain(self) -> list[Any]:
        """The ``crm.lead`` domain of leads not yet read: after this second, or in it but unseen."""
        start, end = format_time(self.second), format_time(self.second + _SECOND)
        if not self.seen:
            return [("write_date", ">=", start)]
        return [
            "|",
            ("write_date", ">=", end),
            "&",
            ("write_date", ">=", start),
            ("id", "not in", sorted(self.seen)),
        ]

    def advance(self, second: datetime, lead_id: int) -> PullCursor:
        """The cursor once the lead ``lead_id`` written in ``second`` has been read."""
        floored = second.replace(microsecond=0)
        if floored > self.second:
            return PullCursor(floored, frozenset({lead_id}))
        if floored == self.second:
            return PullCursor(self.second, self.seen | {lead_id})
        return self
