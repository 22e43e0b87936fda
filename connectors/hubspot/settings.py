"""``SYNC_HUBSPOT__*``: the HubSpot connector's settings section (see :mod:`sync_worker.plugins`)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr

__all__ = ["HubSpotSettings"]


class HubSpotSettings(BaseModel):
    token: SecretStr | None = Field(
        default=None,
        description="private-app token or OAuth access token, sent as Authorization: Bearer;"
        " unset: one is obtained with REFRESH_TOKEN (neither set: the connector is disabled)",
    )
    client_secret: SecretStr | None = Field(
        default=None,
        description="the app's client secret: verifies webhook signatures and refreshes OAuth tokens;"
        " unset: every webhook is refused",
    )
    client_id: str | None = Field(
        default=None, description="the OAuth app's client id, needed with REFRESH_TOKEN"
    )
    app_id: str | None = Field(default=None, description="our app's id: webhooks from it are our own writes")
    refresh_token: SecretStr | None = Field(
        default=None,
        description="OAuth refresh token, traded for access tokens before they expire (needs CLIENT_ID and"
        " CLIENT_SECRET); unset: TOKEN is used as is",
    )
    base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://api.hubapi.com"), description="API root URL (override for a sandbox)"
    )
    accept_signature_v1: bool = Field(
        default=False,
        description="also accept webhooks signed with HubSpot's older v1 signature (it signs neither the"
        " URI nor a time, so it can be replayed); false: v3 signatures only",
    )
    rate_limit_per_10s: int = Field(
        default=100, gt=0, description="requests per 10 seconds for this account, shared by all workers"
    )
    search_rate_limit_per_s: int = Field(
        default=5, gt=0, description="CRM search requests per second for this account, shared by all workers"
    )
    link_systems: tuple[str, ...] = Field(
        default=("pipedrive",),
        description="systems whose twin id the service keeps in a sync_worker_<system>_id deal property",
    )
    portal_id: str | None = Field(default=None, description="the account's Hub ID, for links to deals")
    app_url: str = Field(default="https://app.hubspot.com", description="the UI host, for links to deals")

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.refresh_token is not None
