"""The removal builder shared by the connectors' ``remove_records`` tests."""

from __future__ import annotations

from sync_worker.canonical import RecordRemoval, RemovalMode

__all__ = ["removal"]


def removal(
    target: str, deal_id: str, mode: RemovalMode = "archive", origin: str = "elsewhere"
) -> RecordRemoval:
    """The removal of deal ``deal_id`` in ``target``, keyed ``remove-<id>``."""
    return RecordRemoval(target, f"remove-{deal_id}", "deal", deal_id, mode, origin, "1")
