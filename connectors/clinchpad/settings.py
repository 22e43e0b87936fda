"""``SYNC_CLINCHPAD__*``: the ClinchPad connector's settings section (see :mod:`sync_worker.plugins`)."""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr

__all__ = ["ClinchPadSettings"]


class ClinchPadSettings(BaseModel):
    """The API key (Settings in the ClinchPad app), the webhook Handshake Key, pacing and paging."""

    api_key: SecretStr | None = Field(
        default=None,
        description="API key (Settings in the ClinchPad app), sent as the HTTP Basic password;"
        " unset: the connector is disabled",
    )
    base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://www.clinchpad.com/api/v1"),
        description="API root URL (override for a sandbox)",
    )
    handshake_key: SecretStr | None = Field(
        default=None, description="the Handshake Key set on the webhook in ClinchPad's UI"
    )
    user_id: str | None = Field(
        default=None, description="the API key owner's user _id: activities by this user are our own writes"
    )
    rate_limit_per_hour: int = Field(
        default=1200,
        gt=0,
        description="requests per hour for this API key, shared by all workers (ClinchPad documents 1,200)",
    )
    page_size: int = Field(default=100, ge=1, le=1000, description="leads and pipelines per page")
    currency: str | None = Field(default=None, description="ClinchPad leads carry no currency: the account's")
    flag_notes: bool = Field(default=True, description="write leak flags as notes on the lead")

    @property
    def enabled(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value())
