"""The Odoo connector's :class:`~sync_worker.plugins.ConnectorSpec`, registered as ``odoo``.

Settings: :class:`~connectors.odoo.settings.OdooSettings` (``SYNC_ODOO__*``). One stream,
``deals`` (opportunities), with a time cursor (see :mod:`connectors.odoo.cursor`) whose pull from
no cursor lists every opportunity (Odoo has no deleted-records feed). Odoo documents no API rate
limit, so the default budget is a conservative ``rate_limit_per_10s`` (50) per database and key,
shared by every worker through the core's limiter. Own writes: ``user:<SYNC_ODOO__USER_ID>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import SecretStr

from connectors.odoo.client import OdooConnector
from connectors.odoo.convert import SOURCE, format_time
from connectors.odoo.cursor import PullCursor
from connectors.odoo.settings import OdooSettings
from connectors.odoo.transport import (
    BearerAuth,
    Json2Transport,
    JsonRpcTransport,
    OdooTransport,
    detect_major,
)
from sync_worker.errors import ConfigError
from sync_worker.http import ApiClient, RateLimiter
from sync_worker.mappings import Mappings
from sync_worker.plugins import BuildContext, ConnectorSpec, SandboxOptions, SandboxServer, StreamSpec
from sync_worker.ratelimit import Limit, LocalRateLimiter

__all__ = ["SPEC", "choose_transport", "from_settings", "limits"]

JSON2_SINCE = 19


def limits(section: OdooSettings) -> dict[str, Limit]:
    return {"default": Limit(section.rate_limit_per_10s, 10.0)}


def choose_transport(section: OdooSettings, detect: Callable[[], int]) -> str:
    """``json2`` or ``jsonrpc``: as configured, else by ``version``, else by ``detect()``."""
    if section.transport != "auto":
        return section.transport
    major = section.version if section.version is not None else detect()
    return "json2" if major >= JSON2_SINCE else "jsonrpc"


def from_settings(
    section: OdooSettings,
    mappings: Callable[[], Mappings],
    *,
    transport: httpx.BaseTransport | None = None,
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    max_attempts: int = 4,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> OdooConnector:
    """A connector from its settings; :class:`ConfigError` when the URL or key is missing.

    With ``transport: auto`` and no ``version`` the server is asked its version once, here.
    """
    if section.base_url is None or section.api_key is None:
        raise ConfigError("odoo: set SYNC_ODOO__BASE_URL and SYNC_ODOO__API_KEY")
    key: SecretStr = section.api_key
    shared = limiter or LocalRateLimiter(limits(section), sleep=sleep)

    def client(auth: httpx.Auth | None) -> ApiClient:
        return ApiClient(
            SOURCE,
            str(section.base_url),
            auth=auth,
            limiter=shared,
            transport=transport,
            sleep=sleep,
            max_attempts=max_attempts,
        )

    def detect() -> int:
        probe = client(None)
        try:
            return detect_major(probe)
        finally:
            probe.close()

    chosen: OdooTransport
    if choose_transport(section, detect) == "json2":
        chosen = Json2Transport(client(BearerAuth(key)), database=section.database)
    else:
        if not section.database:
            raise ConfigError("odoo: JSON-RPC needs SYNC_ODOO__DATABASE")
        chosen = JsonRpcTransport(
            client(None), database=section.database, key=key, uid=section.user_id, login=section.login
        )
    return OdooConnector(
        chosen,
        mappings,
        lang=section.lang,
        user_id=section.user_id,
        webhook_secret=section.webhook_secret,
        flag_with=section.flag_with,
        tag_prefix=section.tag_prefix,
        clock=clock,
    )


def _build(ctx: BuildContext) -> OdooConnector:
    return from_settings(ctx.section, ctx.mappings, limiter=ctx.limiter, clock=ctx.clock)


def _account(section: OdooSettings) -> tuple[str, SecretStr | None]:
    base = str(section.base_url or "")
    return (f"{base}#{section.database}" if section.database else base), section.api_key


def _echo_markers(section: OdooSettings) -> frozenset[str]:
    return frozenset({f"user:{section.user_id}"}) if section.user_id is not None else frozenset()


def _deal_url(section: OdooSettings, external_id: str) -> str | None:
    if section.base_url is None or not external_id.isdigit():
        return None
    return f"{str(section.base_url).rstrip('/')}/web#id={external_id}&model=crm.lead&view_type=form"


def _since(moment: datetime) -> str:
    return str(PullCursor.parse(format_time(moment)))


def _sandbox(options: SandboxOptions) -> SandboxServer:
    from connectors.odoo.sandbox import start_sandbox  # the server's dependencies load on demand

    return start_sandbox(options)


def _enabled(section: Any) -> bool:
    return isinstance(section, OdooSettings) and section.enabled


SPEC = ConnectorSpec(
    name=SOURCE,
    title="Odoo CRM",
    settings_model=OdooSettings,
    enabled=_enabled,
    build=_build,
    streams=(StreamSpec("deals", cursor="time", since=_since, full=True),),
    limits=limits,
    account=_account,
    credential_env="SYNC_ODOO__API_KEY",
    echo_markers=_echo_markers,
    record_kind="deal",
    webhooks=True,
    deal_url=_deal_url,
    sandbox=_sandbox,
    description="Odoo 17-19 opportunities (crm.lead) over JSON-2 or JSON-RPC",
)
