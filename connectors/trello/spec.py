"""The Trello connector's :class:`~sync_worker.plugins.ConnectorSpec`.

Settings ``SYNC_TRELLO__*`` (:class:`~connectors.trello.settings.TrelloSettings`); one stream,
``cards`` (a full listing from no cursor, the actions feed from one; the cursor is an action id or
a ``YYYY-MM-DDThh:mm:ssZ`` date, so ``sync --since`` applies); budgets per key and per token
(:mod:`connectors.trello.access`); the token's member id as the echo marker; ``answers_head``:
Trello checks a callback URL with ``HEAD`` before it registers a webhook.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr

from connectors.trello.access import KeyTokenAuth, TrelloPacer, install_log_filter, limits, token_bucket
from connectors.trello.client import STREAM, TrelloConnector
from connectors.trello.convert import format_since
from connectors.trello.settings import TrelloSettings
from sync_worker.connector import Connector
from sync_worker.errors import ConfigError
from sync_worker.http import ApiClient, RateLimiter
from sync_worker.mappings import Mappings
from sync_worker.plugins import BuildContext, ConnectorSpec, SandboxOptions, SandboxServer, StreamSpec
from sync_worker.ratelimit import Limit, LocalRateLimiter

__all__ = ["SPEC", "build", "connect"]

WEBHOOK_PATH = "/webhooks/trello"


def _section(section: Any) -> TrelloSettings:
    if not isinstance(section, TrelloSettings):
        raise ConfigError("trello: the settings section is not TrelloSettings")
    return section


def _callback_url(section: TrelloSettings, settings: Any) -> str | None:
    if section.callback_url is not None:
        return str(section.callback_url)
    public = getattr(settings, "public_url", None)
    return f"{str(public).rstrip('/')}{WEBHOOK_PATH}" if public else None


def connect(
    section: TrelloSettings,
    mappings: Callable[[], Mappings],
    *,
    limiter: RateLimiter | None = None,
    callback_url: str | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int = 4,
) -> TrelloConnector:
    """A connector for ``section``; without ``limiter`` an in-process one with the same budgets.

    Raises :class:`ConfigError` when the key, token or board is missing.
    """
    if not section.enabled:
        raise ConfigError("trello: set SYNC_TRELLO__API_KEY, SYNC_TRELLO__TOKEN and SYNC_TRELLO__BOARD_ID")
    inner = limiter if limiter is not None else LocalRateLimiter(limits(section), sleep=sleep)
    pacer = TrelloPacer(inner, token_bucket(section))
    install_log_filter()
    api = ApiClient(
        "trello",
        str(section.base_url),
        auth=KeyTokenAuth(section, pacer),
        limiter=pacer,
        sleep=sleep,
        max_attempts=max_attempts,
    )
    return TrelloConnector(api, section, mappings, callback_url=callback_url, clock=clock, pacer=pacer)


def build(ctx: BuildContext) -> Connector:
    """The connector on the core's HTTP boundary, paced by ``ctx.limiter`` (or in-process)."""
    section = _section(ctx.section)
    return connect(
        section,
        ctx.mappings,
        limiter=ctx.limiter,
        callback_url=_callback_url(section, ctx.settings),
        clock=ctx.clock,
    )


def _enabled(section: Any) -> bool:
    return _section(section).enabled


def _limits(section: Any) -> dict[str, Limit]:
    return limits(_section(section))


def _account(section: Any) -> tuple[str, SecretStr | None]:
    settings = _section(section)
    return str(settings.base_url), settings.api_key


def _echo_markers(section: Any) -> frozenset[str]:
    member = _section(section).member_id
    return frozenset({member}) if member else frozenset()


def _deal_url(section: Any, external_id: str) -> str | None:
    return f"https://trello.com/c/{external_id}"


def _sandbox(options: SandboxOptions) -> SandboxServer:
    from connectors.trello.sandbox import start_sandbox

    return start_sandbox(options)


SPEC = ConnectorSpec(
    name="trello",
    title="Trello",
    settings_model=TrelloSettings,
    enabled=_enabled,
    build=build,
    streams=(StreamSpec(STREAM, cursor="time", since=format_since, full=True),),
    limits=_limits,
    account=_account,
    credential_env="SYNC_TRELLO__API_KEY and SYNC_TRELLO__TOKEN",
    echo_markers=_echo_markers,
    record_kind="deal",
    webhooks=True,
    deal_url=_deal_url,
    sandbox=_sandbox,
    answers_head=True,
    description="A Trello board as a pipeline: lists are stages, cards are deals.",
)
