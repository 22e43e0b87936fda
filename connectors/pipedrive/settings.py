"""``SYNC_PIPEDRIVE__*``: the Pipedrive connector's settings section (see :mod:`sync_worker.plugins`)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr

__all__ = ["PipedriveSettings"]


class PipedriveSettings(BaseModel):
    api_token: SecretStr | None = None
    oauth_token: SecretStr | None = None
    base_url: AnyHttpUrl = AnyHttpUrl("https://api.pipedrive.com")
    webhook_user: str | None = None
    webhook_password: SecretStr | None = None
    user_id: str | None = Field(default=None, description="the API user we write as: its changes are ours")
    rate_limit_per_2s: int = Field(default=80, gt=0)
    company_domain: str | None = Field(
        default=None, description="the <company>.pipedrive.com subdomain, for links to deals"
    )

    @property
    def enabled(self) -> bool:
        return self.api_token is not None or self.oauth_token is not None
