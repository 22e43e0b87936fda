"""The Salesforce connector: Opportunities in and out over the REST API, Outbound Messages in.

Documentation followed (each module cites its pages): REST API Developer Guide (query and
``queryAll``, ``getDeleted``, sObject Collections, errors and limits), the Object Reference
(Opportunity, OpportunityStage) and the Outbound Messaging guide.

- :mod:`connectors.salesforce.api`: instance URL, API version, tokens, limits, query paging;
- :mod:`connectors.salesforce.pull`: ``SystemModstamp`` and ``getDeleted`` pulls;
- :mod:`connectors.salesforce.push`: batched writes through ``/composite/sobjects``;
- :mod:`connectors.salesforce.convert`: pure translation;
- :mod:`connectors.salesforce.webhooks` / :mod:`~connectors.salesforce.inbox`: the SOAP Outbound
  Messages and their normalisation.

The service's own writes are those whose ``LastModifiedById`` is the integration user
(``SYNC_SALESFORCE__USER_ID``, else the user of the token's identity URL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from connectors.salesforce import inbox, pull, push
from connectors.salesforce.api import SalesforceApi
from connectors.salesforce.convert import (
    SOURCE,
    STAGE_QUERY,
    StageFlags,
    from_canonical,
    opportunity_fields,
    stage_from_payload,
    to_canonical,
)
from connectors.salesforce.settings import SalesforceSettings
from connectors.salesforce.webhooks import parse_message, to_events, verify_organization
from connectors.salesforce.wire import DAY_SECONDS, read_limits
from sync_worker.canonical import (
    CanonicalRecord,
    CanonicalUpdate,
    PullPage,
    SourceStage,
    UpdateResult,
    WebhookEvent,
)
from sync_worker.connector import NormaliseContext, Normalised, WebhookRequest
from sync_worker.errors import ConfigError
from sync_worker.http import RateLimiter
from sync_worker.mappings import Mappings
from sync_worker.ratelimit import Limit, LocalRateLimiter

if TYPE_CHECKING:
    from sync_worker.store.models import InboxEvent

__all__ = ["SalesforceConnector", "documented_limits"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def documented_limits(section: SalesforceSettings) -> dict[str, Limit]:
    """The org's rolling 24-hour API allocation (``Sforce-Limit-Info`` lowers it to the real one)."""
    return {"default": Limit(section.daily_api_requests, DAY_SECONDS)}


class SalesforceConnector:
    """Salesforce behind the :class:`~sync_worker.connector.Connector` protocol."""

    name = SOURCE

    def __init__(
        self,
        section: SalesforceSettings,
        mappings: Callable[[], Mappings],
        *,
        limiter: RateLimiter | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 4,
    ) -> None:
        self._section = section
        self._mappings = mappings
        self._clock = clock
        self._fields = opportunity_fields(section.multi_currency)
        if limiter is None:
            limiter = LocalRateLimiter(documented_limits(section), reader=read_limits)
        self.limiter = limiter
        self.api = SalesforceApi(
            section, limiter=limiter, clock=clock, transport=transport, sleep=sleep, max_attempts=max_attempts
        )
        self._lock = threading.Lock()
        self._stages: list[SourceStage] | None = None
        self._flags: dict[str, tuple[bool, bool]] = {}

    def __repr__(self) -> str:
        return f"SalesforceConnector({self.api!r})"

    def close(self) -> None:
        self.api.close()

    # -- stages ---------------------------------------------------------------------------------

    def list_stages(self) -> list[SourceStage]:
        """Every OpportunityStage, active or not, in ``SortOrder`` (one SOQL query)."""
        rows = self.api.query_all(STAGE_QUERY)
        stages = [stage_from_payload(row) for row in rows]
        flags = {
            s.stage_id: (s.is_closed, row.get("IsWon") is True) for s, row in zip(stages, rows, strict=True)
        }
        with self._lock:
            self._stages, self._flags = stages, flags
        return list(stages)

    def _known_stages(self) -> tuple[list[SourceStage], StageFlags]:
        with self._lock:
            if self._stages is not None:
                return list(self._stages), dict(self._flags)
        stages = self.list_stages()
        with self._lock:
            return stages, dict(self._flags)

    # -- pulls ----------------------------------------------------------------------------------

    def to_record(self, opp: Mapping[str, Any], flags: StageFlags | None = None) -> CanonicalRecord:
        return to_canonical(opp, self._mappings(), flags=flags or {})

    def pull_changes(self, stream: str, cursor: str | None) -> Iterator[PullPage]:
        if stream == pull.STREAM:
            return pull.pull_updated(self.api, self._fields, cursor, self.to_record)
        if stream == pull.DELETED_STREAM:
            return pull.pull_deleted(self.api, self._fields, cursor, self.to_record, self._clock())
        raise ConfigError(f"salesforce has no stream {stream!r} ({pull.STREAM}, {pull.DELETED_STREAM})")

    # -- pushes ---------------------------------------------------------------------------------

    def apply_updates(self, updates: Sequence[CanonicalUpdate]) -> list[UpdateResult]:
        if not updates:
            return []
        mappings = self._mappings()
        needs_stages = any(
            (t := mappings.to_target(SOURCE, key)) is not None and t.match_by == "name"
            for key in {u.stage for u in updates if u.stage is not None}
        )
        stages = self._known_stages()[0] if needs_stages else []
        today = self._clock().date()

        def fields_of(update: CanonicalUpdate) -> dict[str, Any]:
            return from_canonical(
                update,
                mappings,
                stages=stages,
                today=today,
                multi_currency=self._section.multi_currency,
                flag_field=self._section.flag_field,
            )

        return push.apply_updates(self.api, updates, fields_of)

    def prepare(self) -> list[str]:
        """Nothing to create: leak flags go to ``SYNC_SALESFORCE__FLAG_FIELD``, which an admin adds
        (custom fields need the Metadata API, outside this connector's REST surface)."""
        return []

    # -- webhooks -------------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest) -> None:
        verify_organization(parse_message(request.body), self._section.organization_id)

    def parse_webhook(self, body: bytes) -> list[WebhookEvent]:
        return to_events(parse_message(body), self._clock)

    def own_user_id(self) -> str | None:
        """The integration user: configured, else the one the current token names."""
        if self._section.user_id:
            return self._section.user_id
        session = self.api.tokens.known()
        return session.user_id if session is not None else None

    def normalise_events(self, events: Sequence[InboxEvent], ctx: NormaliseContext) -> Normalised:
        """See :func:`connectors.salesforce.inbox.normalise_events`."""
        return inbox.normalise_events(
            events,
            ctx,
            to_record=self.to_record,
            stage_flags=lambda: self._known_stages()[1],
            read_rows=lambda ids: pull.read_by_ids(self.api, self._fields, ids, include_deleted=True),
            own_user=self.own_user_id(),
        )
