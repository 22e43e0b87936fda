"""The HubSpot connector's declaration for the plug-in registry (:mod:`sync_worker.plugins`).

Limits: 100 requests per 10 s per private app and 5 search requests per second
(https://developers.hubspot.com/docs/api/usage-details). Deals are pulled by search on
``hs_lastmodifieddate`` (a time cursor, epoch milliseconds) and archived deals by list paging.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pydantic import SecretStr

from connectors.hubspot.client import from_section
from connectors.hubspot.convert import SOURCE
from connectors.hubspot.limits import read_limits
from connectors.hubspot.settings import HubSpotSettings
from sync_worker.connector import Connector
from sync_worker.plugins import BuildContext, ConnectorSpec, SandboxOptions, SandboxServer, StreamSpec
from sync_worker.ratelimit import Limit

__all__ = ["SPEC"]


def _since_ms(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


def _limits(section: HubSpotSettings) -> Mapping[str, Limit]:
    return {
        "default": Limit(section.rate_limit_per_10s, 10.0),
        "search": Limit(section.search_rate_limit_per_s, 1.0),
    }


def _account(section: HubSpotSettings) -> tuple[str, SecretStr | None]:
    return str(section.base_url), section.token or section.refresh_token


def _markers(section: HubSpotSettings) -> frozenset[str]:
    # Webhook events say changeSource and sourceId (the writing app), joined by the connector.
    if section.app_id is None:
        return frozenset()
    return frozenset({f"INTEGRATION:{section.app_id}"})


def _deal_url(section: HubSpotSettings, external_id: str) -> str | None:
    if section.portal_id is None:
        return None
    return f"{section.app_url.rstrip('/')}/contacts/{section.portal_id}/record/0-3/{external_id}"


def _build(ctx: BuildContext) -> Connector:
    return from_section(ctx.section, ctx.mappings, limiter=ctx.limiter, clock=ctx.clock)


def _sandbox(options: SandboxOptions) -> SandboxServer:
    from sync_worker.sandbox.plugin import hubspot_sandbox

    return hubspot_sandbox(options)


SPEC = ConnectorSpec(
    name=SOURCE,
    title="HubSpot",
    settings_model=HubSpotSettings,
    enabled=lambda section: section.enabled,
    build=_build,
    streams=(
        StreamSpec("deals", cursor="time", since=_since_ms, full=True),
        StreamSpec("deals_archived", cursor="opaque"),
    ),
    limits=_limits,
    account=_account,
    credential_env="SYNC_HUBSPOT__TOKEN or SYNC_HUBSPOT__REFRESH_TOKEN",
    read_limits=read_limits,
    echo_markers=_markers,
    tie_rank=10,
    deal_url=_deal_url,
    sandbox=_sandbox,
    description="HubSpot CRM v3 deals",
)
