"""The LaGrowthMachine connector's declaration for the plug-in registry (:mod:`sync_worker.plugins`).

An outreach tool: its records are leads. Lead statuses are swept campaign by campaign and replies
paged by token (opaque cursors: ``--since`` does not apply).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

from connectors.lagrowthmachine.client import from_section
from connectors.lagrowthmachine.convert import SOURCE
from connectors.lagrowthmachine.settings import LaGrowthMachineSettings
from sync_worker.connector import Connector
from sync_worker.plugins import BuildContext, ConnectorSpec, SandboxOptions, SandboxServer, StreamSpec
from sync_worker.ratelimit import Limit

__all__ = ["SPEC"]


def _limits(section: LaGrowthMachineSettings) -> Mapping[str, Limit]:
    return {"default": Limit(section.rate_limit_per_10s, 10.0)}


def _account(section: LaGrowthMachineSettings) -> tuple[str, SecretStr | None]:
    return str(section.base_url), section.api_key


def _build(ctx: BuildContext) -> Connector:
    return from_section(ctx.section, ctx.mappings, limiter=ctx.limiter)


def _sandbox(options: SandboxOptions) -> SandboxServer:
    from sync_worker.sandbox.plugin import lagrowthmachine_sandbox

    return lagrowthmachine_sandbox(options)


SPEC = ConnectorSpec(
    name=SOURCE,
    title="LaGrowthMachine",
    settings_model=LaGrowthMachineSettings,
    enabled=lambda section: section.enabled,
    build=_build,
    streams=(StreamSpec("lead_statuses", cursor="opaque"), StreamSpec("replies", cursor="opaque")),
    limits=_limits,
    account=_account,
    credential_env="SYNC_LAGROWTHMACHINE__API_KEY",
    record_kind="lead",
    tie_rank=90,
    sandbox=_sandbox,
    description="LaGrowthMachine leads and inbox replies",
)
