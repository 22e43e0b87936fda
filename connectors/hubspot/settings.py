"""``SYNC_HUBSPOT__*``: the HubSpot connector's settings section (see :mod:`sync_worker.plugins`)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr

__all__ = ["HubSpotSettings"]


class HubSpotSettings(BaseModel):
    token: SecretStr | None = None
    client_secret: SecretStr | None = None
    client_id: str | None = None
    app_id: str | None = Field(default=None, description="our app's id: webhooks from it are our own writes")
    refresh_token: SecretStr | None = None
    base_url: AnyHttpUrl = AnyHttpUrl("https://api.hubapi.com")
    accept_signature_v1: bool = False
    rate_limit_per_10s: int = Field(default=100, gt=0)
    search_rate_limit_per_s: int = Field(default=5, gt=0)
    link_systems: tuple[str, ...] = Field(
        default=("pipedrive",),
        description="systems whose twin id the service keeps in a sync_worker_<system>_id deal property",
    )
    portal_id: str | None = Field(default=None, description="the account's Hub ID, for links to deals")
    app_url: str = Field(default="https://app.hubspot.com", description="the UI host, for links to deals")

    @property
    def enabled(self) -> bool:
        return self.token is not None or self.refresh_token is not None
