"""The small protocol every connector satisfies.

A connector speaks one system's API and turns its payloads into canonical records and back. It
never writes state: :meth:`Connector.pull_changes` yields pages whose cursor the core persists once
the page is durably accepted. It never imports another connector.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sync_worker.canonical import CanonicalUpdate, PullPage, SourceStage, UpdateResult, WebhookEvent

__all__ = ["Connector", "WebhookRequest"]


@dataclass(frozen=True)
class WebhookRequest:
    """What a connector needs to verify a webhook: no framework objects cross this line.

    ``url`` is the URI the provider signed (``SYNC_PUBLIC_URL`` + path + query behind a proxy).
    Header names are lower-case.
    """

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str]


@runtime_checkable
class Connector(Protocol):
    """What the core asks of a system."""

    name: str

    def list_stages(self) -> list[SourceStage]:
        """Every pipeline stage the account has."""
        ...

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        """Pages of records changed since ``cursor`` (None: from the beginning), oldest first."""
        ...

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        """Write the updates, batched as the API allows; one result per update, in order."""
        ...

    def verify_webhook(self, request: WebhookRequest) -> None:
        """Raise :class:`~sync_worker.errors.SignatureError` unless the request is authentic."""
        ...

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        """The events in a webhook body; :class:`~sync_worker.errors.PayloadError` if malformed."""
        ...

    def close(self) -> None:
        """Release the HTTP client."""
        ...
