"""The ClinchPad connector's declaration for the plug-in registry (:mod:`sync_worker.plugins`).

Limit: 1,200 calls an hour per account, 429 beyond (https://clinchpad.com/api/docs). ClinchPad
documents no timestamps and no deleted feed, so the source is **polled by snapshot**: both streams
list every lead; ``leads`` yields what changed since the listing its cursor carries, and
``leads_snapshot`` is the full pull whose vanished leads the leak scan flags ``dropped``
(:mod:`connectors.clinchpad.client`). ``extra["polling"] == "snapshot"`` says so to ``status``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import SecretStr

from connectors.clinchpad.client import STREAM_LEADS, STREAM_SNAPSHOT, from_section, limits
from connectors.clinchpad.convert import SOURCE
from connectors.clinchpad.settings import ClinchPadSettings
from connectors.clinchpad.webhooks import owner_marker
from sync_worker.connector import Connector
from sync_worker.plugins import BuildContext, ConnectorSpec, SandboxOptions, SandboxServer, StreamSpec

__all__ = ["POLLING", "SPEC"]

POLLING: Mapping[str, Any] = MappingProxyType(
    {
        "polling": "snapshot",
        "change_detection": "each listing of every lead is compared with the previous one (a fingerprint "
        "per lead, carried in the leads stream's cursor); leads missing from a complete leads_snapshot "
        "pull are flagged dropped",
        "streams": {
            STREAM_LEADS: "full listing; yields new and changed leads; cursor = digest of the last listing",
            STREAM_SNAPSHOT: "full listing; marks every live lead seen; no cursor",
        },
    }
)


def _account(section: ClinchPadSettings) -> tuple[str, SecretStr | None]:
    return str(section.base_url), section.api_key


def _markers(section: ClinchPadSettings) -> frozenset[str]:
    # activity.user._id of the API key's owner (attribution of API writes is not documented)
    return frozenset({owner_marker(section.user_id)}) if section.user_id else frozenset()


def _build(ctx: BuildContext) -> Connector:
    return from_section(ctx.section, ctx.mappings, limiter=ctx.limiter, clock=ctx.clock)


def _sandbox(options: SandboxOptions) -> SandboxServer:
    from connectors.clinchpad.sandbox import clinchpad_sandbox

    return clinchpad_sandbox(options)


SPEC = ConnectorSpec(
    name=SOURCE,
    title="ClinchPad",
    settings_model=ClinchPadSettings,
    enabled=lambda section: section.enabled,
    build=_build,
    streams=(
        StreamSpec(STREAM_LEADS, cursor="opaque"),
        StreamSpec(STREAM_SNAPSHOT, cursor="opaque", full=True, polled=False),
    ),
    limits=limits,
    account=_account,
    credential_env="SYNC_CLINCHPAD__API_KEY",
    echo_markers=_markers,
    tie_rank=60,
    sandbox=_sandbox,
    description="ClinchPad leads over API v1, polled by snapshot (no timestamps or deleted feed: "
    "each full listing is compared with the last one)",
    extra=POLLING,
)
