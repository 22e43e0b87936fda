"""``SYNC_LAGROWTHMACHINE__*``: the LaGrowthMachine connector's settings (see :mod:`sync_worker.plugins`)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr

__all__ = ["LaGrowthMachineSettings"]


class LaGrowthMachineSettings(BaseModel):
    api_key: SecretStr | None = None
    base_url: AnyHttpUrl = AnyHttpUrl("https://apiv2.lagrowthmachine.com/flow")
    webhook_secret: SecretStr | None = None
    rate_limit_per_10s: int = Field(default=50, gt=0)

    @property
    def enabled(self) -> bool:
        return self.api_key is not None
