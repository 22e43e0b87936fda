"""``SYNC_SALESFORCE__*``: the Salesforce connector's settings section (see :mod:`sync_worker.plugins`).

Credentials, one of (tried in this order):

- ``refresh_token`` + ``client_id`` (+ ``client_secret`` for a confidential connected app): the OAuth
  refresh-token grant;
- ``private_key`` (PEM) + ``client_id`` + ``username``: the OAuth 2.0 JWT bearer flow
  (server to server);
- ``access_token`` + ``instance_url``: a session id used as is until Salesforce refuses it.

``organization_id`` is the org whose Outbound Messages are accepted; ``user_id`` the integration
user the service writes as (its ``LastModifiedById`` marks our own writes; learnt from the token's
identity URL when unset).
"""

from __future__ import annotations

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr

__all__ = ["DEFAULT_API_VERSION", "DEFAULT_LOGIN_URL", "SalesforceSettings"]

DEFAULT_API_VERSION = "62.0"
DEFAULT_LOGIN_URL = "https://login.salesforce.com"


class SalesforceSettings(BaseModel):
    client_id: str | None = Field(default=None, description="the connected app's consumer key")
    client_secret: SecretStr | None = Field(
        default=None,
        description="the connected app's consumer secret, sent with the refresh-token grant;"
        " unset: a public app (no secret sent)",
    )
    refresh_token: SecretStr | None = Field(
        default=None,
        description="OAuth refresh token (with CLIENT_ID): tried first; unset: the JWT bearer flow or"
        " ACCESS_TOKEN",
    )
    username: str | None = Field(default=None, description="the user a JWT bearer assertion names (sub)")
    private_key: SecretStr | None = Field(default=None, description="PEM RSA key signing the JWT (RS256)")
    access_token: SecretStr | None = Field(
        default=None,
        description="a session id used as is (with INSTANCE_URL) until Salesforce refuses it;"
        " only when neither REFRESH_TOKEN nor PRIVATE_KEY is set",
    )
    login_url: AnyHttpUrl = Field(
        default=AnyHttpUrl(DEFAULT_LOGIN_URL),
        description="OAuth token endpoint host and JWT audience: https://test.salesforce.com for a"
        " sandbox org, or the My Domain URL",
    )
    instance_url: AnyHttpUrl | None = Field(
        default=None, description="used until a token answer names the org's instance_url"
    )
    api_version: str = Field(
        default=DEFAULT_API_VERSION,
        pattern=r"^\d{2,3}\.0$",
        description="REST API version, NN.0 (calls go to /services/data/vNN.0/)",
    )
    organization_id: str | None = Field(
        default=None,
        min_length=15,
        max_length=18,
        description="Outbound Messages of other orgs are refused",
    )
    user_id: str | None = Field(default=None, description="the integration user: its changes are ours")
    daily_api_requests: int = Field(
        default=100_000, gt=0, description="the org's rolling 24-hour allocation (the header lowers it)"
    )
    max_concurrent_requests: int = Field(default=5, gt=0, description="requests in flight per process")
    query_batch_size: int = Field(
        default=2000,
        ge=200,
        le=2000,
        description="SOQL records per batch asked for (Sforce-Query-Options batchSize), 200 to 2000",
    )
    multi_currency: bool = Field(default=False, description="the org has CurrencyIsoCode on records")
    flag_field: str | None = Field(
        default=None, description="a custom text field (API name) that receives leak flags"
    )
    lightning_url: AnyHttpUrl | None = Field(default=None, description="https://<domain>.lightning.force.com")

    @property
    def enabled(self) -> bool:
        return self.refresh_token is not None or self.private_key is not None or self.access_token is not None
