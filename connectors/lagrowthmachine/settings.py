"""``SYNC_LAGROWTHMACHINE__*``: the LaGrowthMachine connector's settings (see :mod:`sync_worker.plugins`)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr

__all__ = ["LaGrowthMachineSettings"]


class LaGrowthMachineSettings(BaseModel):
    api_key: SecretStr | None = Field(
        default=None,
        description="API key, sent as Authorization: Bearer; unset: the connector is disabled",
    )
    base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://apiv2.lagrowthmachine.com/flow"),
        description="API root URL (override for a sandbox)",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="shared secret the inbox webhook URL carries as ?token= (or an X-Sync-Token header);"
        " unset: every webhook is refused",
    )
    rate_limit_per_10s: int = Field(
        default=50,
        gt=0,
        description="requests per 10 seconds for this API key, shared by all workers (documented: 50)",
    )

    @property
    def enabled(self) -> bool:
        return self.api_key is not None
