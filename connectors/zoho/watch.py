"""The Deals notification channel: enabled once, renewed before it expires (at most a week ahead).

``GET /crm/v8/actions/watch?channel_id=`` tells whether the channel exists (204: it does not) and
when it expires; ``POST`` enables it, ``PUT`` replaces its details with a new expiry. A channel
whose expiry is omitted or more than a week ahead lives one hour, so the expiry asked for is
``channel_days`` (at most 7) ahead and the channel is renewed once less than a third of that is left.
Checks run at most every ``check_every`` (the pull calls :meth:`WatchChannel.renew_if_due`).
https://www.zoho.com/crm/developer/docs/api/v8/notifications/enable.html,
https://www.zoho.com/crm/developer/docs/api/v8/notifications/get-details.html,
https://www.zoho.com/crm/developer/docs/api/v8/notifications/update-info.html
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from connectors.zoho.convert import parse_time
from connectors.zoho.settings import ZohoSettings
from connectors.zoho.webhooks import watch_body
from sync_worker.errors import PermanentError

if TYPE_CHECKING:
    from connectors.zoho.api import ZohoApi

__all__ = ["WatchChannel"]

_log = logging.getLogger(__name__)


def _expiry(data: Any, channel_id: str) -> datetime | None:
    """The channel's expiry from a ``GET /actions/watch`` answer (None: no such channel)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("watch"), list):
        return None
    for entry in data["watch"]:
        if isinstance(entry, Mapping) and str(entry.get("channel_id")) == channel_id:
            return parse_time(entry.get("channel_expiry"), "channel_expiry")
    return None


def _succeeded(data: Any) -> bool:
    answers = data.get("watch") if isinstance(data, Mapping) else None
    return isinstance(answers, list) and all(
        isinstance(a, Mapping) and a.get("status") == "success" for a in answers
    )


class WatchChannel:
    """Keeps one channel alive; does nothing without a notify URL or a token."""

    def __init__(
        self,
        api: ZohoApi,
        section: ZohoSettings,
        *,
        notify_url: str | None,
        clock: Callable[[], datetime],
        check_every: timedelta = timedelta(hours=1),
    ) -> None:
        self._api = api
        self._section = section
        self._notify_url = notify_url
        self._clock = clock
        self._check_every = check_every
        self._lock = threading.Lock()
        self._checked_at: datetime | None = None
        self.expires_at: datetime | None = None

    def __repr__(self) -> str:
        return f"WatchChannel({self._section.channel_id!r}, expires_at={self.expires_at!r})"

    @property
    def configured(self) -> bool:
        return self._notify_url is not None and self._section.webhook_token is not None

    def _lifetime(self) -> timedelta:
        return timedelta(days=self._section.channel_days)

    def renew_if_due(self) -> None:
        """:meth:`ensure`, at most once per ``check_every``, and only when renewal is near."""
        if not self.configured:
            return
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._check_every:
            if self.expires_at is not None and self.expires_at - now > self._lifetime() / 3:
                return
        self.ensure()

    def ensure(self) -> list[str]:
        """Enable the channel when missing, renew it when a third of its life is left."""
        if not self.configured:
            _log.info("zoho: no notify URL or webhook token; the Deals channel is not enabled (polling only)")
            return []
        assert self._notify_url is not None and self._section.webhook_token is not None
        channel = self._section.channel_id
        with self._lock:
            now = self._clock()
            self._checked_at = now
            current = _expiry(self._api.watch("GET", channel_id=channel, module="Deals"), channel)
            if current is not None and current - now > self._lifetime() / 3:
                self.expires_at = current
                return []
            expiry = now + self._lifetime()
            body = watch_body(
                channel_id=channel,
                notify_url=self._notify_url,
                token=self._section.webhook_token,
                expiry=expiry,
            )
            answer = self._api.watch("POST" if current is None else "PUT", body)
            if not _succeeded(answer):
                raise PermanentError(f"zoho: /actions/watch did not accept channel {channel}")
            self.expires_at = expiry.replace(microsecond=0)
            return [f"watch channel {channel}"] if current is None else []
