"""``SYNC_PIPEDRIVE__*``: the Pipedrive connector's settings section (see :mod:`sync_worker.plugins`)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr

__all__ = ["PipedriveSettings"]


class PipedriveSettings(BaseModel):
    api_token: SecretStr | None = Field(
        default=None,
        description="API token, sent as the x-api-token header; unset: OAUTH_TOKEN"
        " (neither set: the connector is disabled)",
    )
    oauth_token: SecretStr | None = Field(
        default=None,
        description="OAuth access token, sent as Authorization: Bearer; used instead of API_TOKEN when set",
    )
    base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://api.pipedrive.com"),
        description="API root URL: the company domain (https://<company>.pipedrive.com) or a sandbox",
    )
    webhook_user: str | None = Field(
        default=None,
        description="HTTP Basic user name Pipedrive sends with webhooks; unset: every webhook is refused",
    )
    webhook_password: SecretStr | None = Field(
        default=None,
        description="HTTP Basic password Pipedrive sends with webhooks; unset: every webhook is refused",
    )
    user_id: str | None = Field(default=None, description="the API user we write as: its changes are ours")
    rate_limit_per_2s: int = Field(
        default=80, gt=0, description="requests per 2-second window for this token, shared by all workers"
    )
    company_domain: str | None = Field(
        default=None, description="the <company>.pipedrive.com subdomain, for links to deals"
    )

    @property
    def enabled(self) -> bool:
        return self.api_token is not None or self.oauth_token is not None
