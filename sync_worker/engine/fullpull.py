"""When each source's last COMPLETE full pull started: what the "dropped" leak rule compares against.

A deal still open in the store but not returned by a full pull of its source has vanished there
(deleted for good, merged, moved out of the account). The leak scan can only say so when it knows
that a pull from the beginning ran to its last page, and when it started: every record the pull
returned was seen after that instant, so an open deal last seen before it was not returned.

:meth:`~sync_worker.engine.SyncService.poll` records that instant through the store's cursor API,
under the reserved stream name ``"<stream>#full_started"`` (ISO 8601 UTC), only once the pull's
last page has been stored; a pull that fails part-way records nothing. No schema change: the
``cursors`` table holds one value per (source, stream) and ``#`` appears in no connector's stream
names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Final, Protocol

from sync_worker.store.types import as_utc

__all__ = [
    "FULL_PULL_SUFFIX",
    "CursorStore",
    "full_pull_key",
    "full_pull_started",
    "full_streams",
    "last_full_pull",
    "record_full_pull",
]

FULL_PULL_SUFFIX: Final = "#full_started"


def full_streams(sources: Iterable[str]) -> dict[str, str]:
    """Per source, the stream whose complete full pull lists every live deal (its spec's
    ``full_stream``); sources without one (outreach tools, unregistered names) are left out."""
    from sync_worker.plugins import registry

    specs = registry()
    found = {s: specs[s].full_stream for s in sources if s in specs}
    return {source: stream for source, stream in found.items() if stream is not None}


class CursorStore(Protocol):
    """The cursor part of :class:`~sync_worker.store.SyncStore`."""

    def get_cursor(self, source: str, stream: str) -> str | None: ...

    def set_cursor(self, source: str, stream: str, value: str) -> None: ...


def full_pull_key(stream: str) -> str:
    """The reserved cursor stream name holding the start of ``stream``'s last complete full pull."""
    return f"{stream}{FULL_PULL_SUFFIX}"


def record_full_pull(store: CursorStore, source: str, stream: str, started: datetime) -> None:
    """Remember that a full pull of ``source``/``stream`` that started at ``started`` completed."""
    store.set_cursor(source, full_pull_key(stream), as_utc(started).isoformat())


def last_full_pull(store: CursorStore, source: str, stream: str) -> datetime | None:
    """When the last complete full pull of ``source``/``stream`` started; None if none completed."""
    raw = store.get_cursor(source, full_pull_key(stream))
    if not raw:
        return None
    try:
        return as_utc(datetime.fromisoformat(raw))
    except ValueError:
        return None  # not ours: treat as never pulled rather than flag deals on a bad value


def full_pull_started(store: CursorStore, sources: Mapping[str, str]) -> dict[str, datetime]:
    """Per source, the start of the last complete full pull of its deal stream (what
    :func:`sync_worker.leaks.scan_leaks` takes as ``full_pull_started``).

    ``sources`` maps a source to its deal stream (:func:`full_streams`); sources without a
    completed full pull are left out, so their vanished deals are not flagged.
    """
    started: dict[str, datetime] = {}
    for source, stream in sources.items():
        when = last_full_pull(store, source, stream)
        if when is not None:
            started[source] = when
    return started
