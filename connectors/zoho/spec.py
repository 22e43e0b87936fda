"""The Zoho CRM connector's :class:`~sync_worker.plugins.ConnectorSpec` (entry point ``zoho``).

Docs followed are cited in each module: :mod:`connectors.zoho.auth` (OAuth and data centres),
:mod:`connectors.zoho.api` (records, pipelines, deleted list, limits), :mod:`connectors.zoho.watch`
and :mod:`connectors.zoho.webhooks` (notifications), :mod:`connectors.zoho.convert` (record shapes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import SecretStr

from connectors.zoho.api import CREDITS_HEADER, CreditedLimiter, ZohoApi
from connectors.zoho.auth import ZohoAuth, ZohoTokenSource
from connectors.zoho.client import ZohoConnector
from connectors.zoho.convert import format_time
from connectors.zoho.settings import ZohoSettings, zoho_limits
from sync_worker.http import ApiClient
from sync_worker.plugins import BuildContext, ConnectorSpec, SandboxOptions, SandboxServer, StreamSpec
from sync_worker.ratelimit import Limit, LocalRateLimiter, Observation

__all__ = ["SPEC", "build", "read_limits"]

_EXHAUSTED_BLOCK_SECONDS = 300.0
_CREDITS_WINDOW_SECONDS = 86_400.0


def _section(value: Any) -> ZohoSettings:
    return value if isinstance(value, ZohoSettings) else ZohoSettings.model_validate(value or {})


def _notify_url(section: ZohoSettings, settings: Any) -> str | None:
    if section.notify_url is not None:
        return str(section.notify_url)
    public = getattr(settings, "public_url", None)
    return f"{str(public).rstrip('/')}/webhooks/zoho" if public else None


def build(ctx: BuildContext) -> ZohoConnector:
    """The connector on the shared limiter of its account (an in-process one when there is none)."""
    section = _section(ctx.section)
    limiter = ctx.limiter or LocalRateLimiter(zoho_limits(section))
    accounts = ApiClient("zoho-accounts", section.accounts_server(), limiter=limiter)
    tokens = ZohoTokenSource(
        api_domain=section.api_domain(),
        clock=ctx.clock,
        access_token=section.access_token,
        client_id=section.client_id,
        client_secret=section.client_secret,
        refresh_token=section.refresh_token,
        accounts=accounts,
    )
    api = ApiClient("zoho", section.api_domain(), auth=ZohoAuth(tokens), limiter=CreditedLimiter(limiter))
    return ZohoConnector(
        ZohoApi(api, accounts=accounts),
        ctx.mappings,
        section,
        notify_url=_notify_url(section, ctx.settings),
        clock=ctx.clock,
    )


def read_limits(headers: httpx.Headers, window_seconds: float, now_epoch: float) -> Observation:
    """``X-API-CREDITS-REMAINING`` (sent once half the day's credits are used): the credits left,
    kept for ``status``; ``0`` stops every worker for a while (the window is rolling).

    The figure is the ``credits`` bucket's (the only one with a day-long window); the request's own
    bucket gets the block alone.
    """
    raw = (headers.get(CREDITS_HEADER) or "").strip()
    if not raw.isdigit():
        return Observation()
    left = int(raw)
    return Observation(
        block_seconds=_EXHAUSTED_BLOCK_SECONDS if left == 0 else None,
        remaining=left if window_seconds >= _CREDITS_WINDOW_SECONDS else None,
    )


def _limits(section: Any) -> Mapping[str, Limit]:
    return zoho_limits(_section(section))


def _account(section: Any) -> tuple[str, SecretStr | None]:
    zoho = _section(section)
    return zoho.api_domain(), zoho.refresh_token or zoho.access_token


def _echo_markers(section: Any) -> frozenset[str]:
    user = _section(section).user_id
    return frozenset({user}) if user else frozenset()


def _deal_url(section: Any, external_id: str) -> str | None:
    host = _section(section).accounts_server().replace("://accounts.", "://crm.", 1)
    return f"{host}/crm/tab/Potentials/{external_id}" if external_id.isdigit() else None


def _sandbox(options: SandboxOptions) -> SandboxServer:
    from connectors.zoho.sandbox import start_zoho_sandbox

    return start_zoho_sandbox(options)


SPEC = ConnectorSpec(
    name="zoho",
    title="Zoho CRM",
    settings_model=ZohoSettings,
    enabled=lambda section: _section(section).enabled,
    build=build,
    streams=(
        StreamSpec("deals", cursor="time", since=format_time, full=True),
        StreamSpec("deals_deleted", cursor="time", since=format_time),
    ),
    limits=_limits,
    account=_account,
    credential_env="SYNC_ZOHO__REFRESH_TOKEN",
    read_limits=read_limits,
    echo_markers=_echo_markers,
    record_kind="deal",
    webhooks=True,
    tie_rank=30,
    deal_url=_deal_url,
    sandbox=_sandbox,
    description="Zoho CRM Deals over API v8: OAuth, Get Records paging, PUT batches, /actions/watch",
)
