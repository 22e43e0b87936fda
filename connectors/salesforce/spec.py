"""The Salesforce connector's declaration for the plug-in registry (:mod:`sync_worker.plugins`).

Limits: the org's rolling 24-hour API allocation, read from ``Sforce-Limit-Info`` on every answer
(:func:`connectors.salesforce.wire.read_limits`;
https://developer.salesforce.com/docs/atlas.en-us.salesforce_app_limits_cheatsheet.meta/salesforce_app_limits_cheatsheet/salesforce_app_limits_platform_api.htm).
Opportunities are pulled by ``SystemModstamp`` (a time cursor, ``YYYY-MM-DDThh:mm:ssZ``) and
deletions by ``getDeleted`` (``latestDateCovered``). Webhooks are Outbound Messages, answered in
SOAP (an ``Ack`` once stored, a ``Fault`` otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from connectors.salesforce.client import SalesforceConnector, documented_limits
from connectors.salesforce.convert import SOURCE
from connectors.salesforce.pull import DELETED_STREAM, STREAM
from connectors.salesforce.settings import SalesforceSettings
from connectors.salesforce.webhooks import ack_body, fault_body
from connectors.salesforce.wire import format_datetime, read_limits
from sync_worker.connector import Connector
from sync_worker.plugins import BuildContext, ConnectorSpec, SandboxOptions, SandboxServer, StreamSpec
from sync_worker.ratelimit import Limit

__all__ = ["SPEC"]


def _limits(section: SalesforceSettings) -> Mapping[str, Limit]:
    return documented_limits(section)


def _account(section: SalesforceSettings) -> tuple[str, SecretStr | None]:
    credential = section.refresh_token or section.private_key or section.access_token
    return str(section.instance_url or section.login_url), credential


def _markers(section: SalesforceSettings) -> frozenset[str]:
    # A record's LastModifiedById is the user who wrote it last: ours is the integration user.
    return frozenset({section.user_id}) if section.user_id else frozenset()


def _deal_url(section: SalesforceSettings, external_id: str) -> str | None:
    base = section.lightning_url or section.instance_url
    if base is None:
        return None
    return f"{str(base).rstrip('/')}/lightning/r/Opportunity/{external_id}/view"


def _build(ctx: BuildContext) -> Connector:
    return SalesforceConnector(ctx.section, ctx.mappings, limiter=ctx.limiter, clock=ctx.clock)


def _sandbox(options: SandboxOptions) -> SandboxServer:
    from connectors.salesforce.sandbox import start_sandbox

    return start_sandbox(options)


SPEC = ConnectorSpec(
    name=SOURCE,
    title="Salesforce",
    settings_model=SalesforceSettings,
    enabled=lambda section: section.enabled,
    build=_build,
    streams=(
        StreamSpec(STREAM, cursor="time", since=format_datetime, full=True),
        StreamSpec(DELETED_STREAM, cursor="time", since=format_datetime),
    ),
    limits=_limits,
    account=_account,
    credential_env=(
        "SYNC_SALESFORCE__REFRESH_TOKEN, SYNC_SALESFORCE__PRIVATE_KEY or SYNC_SALESFORCE__ACCESS_TOKEN"
    ),
    read_limits=read_limits,
    echo_markers=_markers,
    tie_rank=30,
    deal_url=_deal_url,
    sandbox=_sandbox,
    webhook_ack=ack_body,
    webhook_fault=fault_body,
    description="Salesforce Opportunities over the REST API; Outbound Messages as webhooks",
)
