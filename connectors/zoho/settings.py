"""Settings of the Zoho CRM connector (``SYNC_ZOHO__*``) and the documented request budgets.

Data centres (API domain and accounts server) follow Zoho's SDK ``zohocrmsdk8_0``
(``crm/api/dc/*.py``); the API host actually used is the ``api_domain`` of each token answer.
https://www.zoho.com/crm/developer/docs/api/v8/multi-dc.html

Budgets: API credits over a rolling 24-hour window (Free 5,000; Standard 50,000 + 250 per user;
Professional 50,000 + 500; Enterprise 50,000 + 1,000; Ultimate 50,000 + 2,000) and concurrent calls
per org per app (Free 5, Standard 10, Professional 15, Enterprise 20, Ultimate 25).
https://www.zoho.com/crm/developer/docs/api/v8/api-limits.html. The edition maxima are not agreed
between Zoho's pages, so ``credits_per_day`` overrides the computed figure. Concurrency is held as a
per-second pace, since the shared limiter counts requests in a window, not requests in flight.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr

from sync_worker.ratelimit import Limit

__all__ = [
    "CONCURRENCY",
    "DATA_CENTRES",
    "DataCentre",
    "Edition",
    "ZohoSettings",
    "credits_per_day",
    "zoho_limits",
]

DataCentre = Literal["us", "eu", "in", "au", "cn", "jp", "ca", "sa"]
Edition = Literal["free", "standard", "professional", "enterprise", "ultimate"]

DATA_CENTRES: Final[Mapping[str, tuple[str, str]]] = {
    "us": ("https://www.zohoapis.com", "https://accounts.zoho.com"),
    "eu": ("https://www.zohoapis.eu", "https://accounts.zoho.eu"),
    "in": ("https://www.zohoapis.in", "https://accounts.zoho.in"),
    "au": ("https://www.zohoapis.com.au", "https://accounts.zoho.com.au"),
    "cn": ("https://www.zohoapis.com.cn", "https://accounts.zoho.com.cn"),
    "jp": ("https://www.zohoapis.jp", "https://accounts.zoho.jp"),
    "ca": ("https://www.zohoapis.ca", "https://accounts.zohocloud.ca"),
    "sa": ("https://www.zohoapis.sa", "https://accounts.zoho.sa"),
}
"""Data centre -> (production API domain, accounts server)."""

_BASE_CREDITS: Final[Mapping[str, tuple[int, int, int | None]]] = {
    "free": (5_000, 0, 5_000),
    "standard": (50_000, 250, 100_000),
    "professional": (50_000, 500, None),
    "enterprise": (50_000, 1_000, None),
    "ultimate": (50_000, 2_000, None),
}
"""Edition -> (base credits, credits per user license, cap when documented consistently)."""

CONCURRENCY: Final[Mapping[str, int]] = {
    "free": 5,
    "standard": 10,
    "professional": 15,
    "enterprise": 20,
    "ultimate": 25,
}


class ZohoSettings(BaseModel):
    """``SYNC_ZOHO__*``. The connector is enabled once a refresh token (or access token) is set."""

    client_id: str | None = Field(
        default=None, description="the OAuth client id (Zoho API Console), needed to refresh tokens"
    )
    client_secret: SecretStr | None = Field(
        default=None, description="the OAuth client secret, needed to refresh tokens"
    )
    refresh_token: SecretStr | None = Field(
        default=None,
        description="OAuth refresh token (with CLIENT_ID and CLIENT_SECRET), traded for access tokens;"
        " unset: ACCESS_TOKEN (neither set: the connector is disabled)",
    )
    access_token: SecretStr | None = Field(
        default=None,
        description="a ready access token (tests, short jobs); refreshed when a refresh token is set",
    )
    data_centre: DataCentre = Field(
        default="us",
        description="the account's data centre (us, eu, in, au, cn, jp, ca or sa):"
        " picks the API domain and the accounts server",
    )
    accounts_url: AnyHttpUrl | None = Field(
        default=None, description="overrides the data centre's accounts server"
    )
    base_url: AnyHttpUrl | None = Field(
        default=None, description="API domain until a token answer names one (sandbox override)"
    )
    user_id: str | None = Field(default=None, description="the integration user's id: its changes are ours")
    webhook_token: SecretStr | None = Field(
        default=None, description="the token given to /actions/watch, echoed in every callback"
    )
    channel_id: str = Field(
        default="1000000068001",
        pattern=r"^[0-9]{1,18}$",
        description="the Deals notification channel's id (digits, at most 18);"
        " callbacks for another channel are refused",
    )
    notify_url: AnyHttpUrl | None = Field(
        default=None, description="default: SYNC_PUBLIC_URL + /webhooks/zoho"
    )
    channel_days: float = Field(
        default=6.0, gt=0, le=7, description="watch channel lifetime (at most a week)"
    )
    layout_id: str | None = Field(default=None, description="Deals layout of the pipelines (default: all)")
    flag_field: str = Field(default="Leak_Flag", min_length=1, description="single-line text field for flags")
    edition: Edition = Field(
        default="standard",
        description="the CRM edition (free, standard, professional, enterprise or ultimate):"
        " sets the documented API credits and concurrency",
    )
    user_licenses: int = Field(
        default=1, ge=1, description="user licenses of the org: each adds API credits per day (none on Free)"
    )
    credits_per_day: int | None = Field(
        default=None,
        gt=0,
        description="API credits per rolling 24 hours; unset: computed from EDITION and USER_LICENSES",
    )
    concurrency: int | None = Field(
        default=None,
        gt=0,
        description="requests per second (Zoho's concurrent-call limit, held as a pace);"
        " unset: the edition's (5 to 25)",
    )

    @property
    def enabled(self) -> bool:
        return self.refresh_token is not None or self.access_token is not None

    def api_domain(self) -> str:
        return str(self.base_url).rstrip("/") if self.base_url else DATA_CENTRES[self.data_centre][0]

    def accounts_server(self) -> str:
        return str(self.accounts_url).rstrip("/") if self.accounts_url else DATA_CENTRES[self.data_centre][1]


def credits_per_day(section: ZohoSettings) -> int:
    """API credits per rolling 24 h for the edition and licenses (or the configured override)."""
    if section.credits_per_day is not None:
        return section.credits_per_day
    base, per_user, cap = _BASE_CREDITS[section.edition]
    total = base + per_user * section.user_licenses
    return min(total, cap) if cap is not None else total


def zoho_limits(section: ZohoSettings) -> dict[str, Limit]:
    """Limiter buckets: ``default`` (concurrency as calls per second), ``credits`` (24 h), ``oauth``.

    ``oauth``: "up to ten access tokens in a span of ten minutes" per refresh token
    (https://www.zoho.com/accounts/protocol/oauth/web-apps/access-token-expiry.html).
    """
    concurrency = section.concurrency or CONCURRENCY[section.edition]
    return {
        "default": Limit(concurrency, 1.0),
        "credits": Limit(credits_per_day(section), 86_400.0),
        "oauth": Limit(10, 600.0),
    }
