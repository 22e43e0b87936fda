"""The Pipedrive connector's declaration for the plug-in registry (:mod:`sync_worker.plugins`).

Limits: token-based budgets per 2-second window (https://pipedrive.readme.io/docs/core-api-concepts-rate-limiting).
Deals and deleted deals are pulled with ``updated_since`` (RFC 3339, a time cursor) on API v2.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import SecretStr

from connectors.pipedrive.client import from_section
from connectors.pipedrive.convert import SOURCE
from connectors.pipedrive.settings import PipedriveSettings
from sync_worker.connector import Connector
from sync_worker.plugins import BuildContext, ConnectorSpec, SandboxOptions, SandboxServer, StreamSpec
from sync_worker.ratelimit import Limit

__all__ = ["SPEC"]


def _since(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _limits(section: PipedriveSettings) -> Mapping[str, Limit]:
    return {"default": Limit(section.rate_limit_per_2s, 2.0)}


def _account(section: PipedriveSettings) -> tuple[str, SecretStr | None]:
    return str(section.base_url), section.oauth_token or section.api_token


def _markers(section: PipedriveSettings) -> frozenset[str]:
    # meta.change_source "api" joined with the acting meta.user_id:
    # https://developers.pipedrive.com/changelog/post/new-field-for-webhooks
    if section.user_id is None:
        return frozenset()
    return frozenset({f"api:{section.user_id}"})


def _deal_url(section: PipedriveSettings, external_id: str) -> str | None:
    if section.company_domain is None:
        return None
    return f"https://{section.company_domain}.pipedrive.com/deal/{external_id}"


def _build(ctx: BuildContext) -> Connector:
    return from_section(ctx.section, ctx.mappings, limiter=ctx.limiter)


def _sandbox(options: SandboxOptions) -> SandboxServer:
    from sync_worker.sandbox.plugin import pipedrive_sandbox

    return pipedrive_sandbox(options)


SPEC = ConnectorSpec(
    name=SOURCE,
    title="Pipedrive",
    settings_model=PipedriveSettings,
    enabled=lambda section: section.enabled,
    build=_build,
    streams=(
        StreamSpec("deals", cursor="time", since=_since, full=True),
        StreamSpec("deals_deleted", cursor="time", since=_since),
    ),
    limits=_limits,
    account=_account,
    credential_env="SYNC_PIPEDRIVE__API_TOKEN or SYNC_PIPEDRIVE__OAUTH_TOKEN",
    echo_markers=_markers,
    tie_rank=20,
    deal_url=_deal_url,
    sandbox=_sandbox,
    description="Pipedrive deals over API v2",
)
