"""Settings of the Trello connector, read by the core from ``SYNC_TRELLO__*``.

Credentials (https://developer.atlassian.com/cloud/trello/guides/rest-api/authorization/): the
app's API key and a member's token, both sent as the ``key``/``token`` query parameters; the app's
OAuth secret (``APP_SECRET``) signs webhook deliveries
(https://developer.atlassian.com/cloud/trello/guides/rest-api/webhooks/). One board is one pipeline.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr

__all__ = ["TrelloSettings"]


class TrelloSettings(BaseModel):
    """``SYNC_TRELLO__API_KEY``, ``__TOKEN``, ``__BOARD_ID`` enable the connector.

    - ``amount_field``: the Number custom field holding the deal amount, by id or name.
    - ``member_id``: the token's member (``GET /1/members/me``); actions it created are the
      service's own writes. Learned from the API when unset.
    - ``archived_status``: what an archived card (or a card on an archived list) in an open stage is:
      ``deleted`` (dropped from the funnel) or ``lost``.
    - ``callback_url``: the URL Trello posts webhooks to; default ``SYNC_PUBLIC_URL`` +
      ``/webhooks/trello``. ``prepare`` registers it when none is.
    """

    api_key: SecretStr | None = Field(
        default=None,
        description="the app's API key, sent as the key query parameter; unset: the connector is disabled",
    )
    token: SecretStr | None = Field(
        default=None,
        description="a member's token, sent as the token query parameter; unset: the connector is disabled",
    )
    app_secret: SecretStr | None = Field(
        default=None,
        description="the app's OAuth secret: verifies X-Trello-Webhook signatures;"
        " unset: every webhook is refused and no webhook is registered",
    )
    board_id: str | None = Field(
        default=None,
        description="the board (one pipeline), by id or short link; unset: the connector is disabled",
    )
    base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("https://api.trello.com"), description="API root URL (override for a sandbox)"
    )
    amount_field: str = Field(
        default="Amount",
        description="the Number custom field holding the deal amount, by id or name;"
        " missing on the board: amounts are not read or written",
    )
    currency: str | None = Field(
        default=None,
        description="currency code of the amounts (Trello cards carry none); unset: no currency",
    )
    member_id: str | None = Field(
        default=None,
        description="the token's member id: actions it created are our own writes;"
        " unset: learnt from GET /1/members/me",
    )
    archived_status: Literal["deleted", "lost"] = Field(
        default="deleted",
        description="what an archived card (or a card on an archived list) in an open stage is:"
        " deleted (dropped from the funnel) or lost",
    )
    callback_url: AnyHttpUrl | None = Field(
        default=None,
        description="the URL Trello posts webhooks to; unset: SYNC_PUBLIC_URL + /webhooks/trello"
        " (neither set: no webhook is registered)",
    )
    key_rate_limit_per_10s: int = Field(
        default=300,
        gt=0,
        description="requests per 10 seconds for the API key, shared by all its tokens and workers",
    )
    token_rate_limit_per_10s: int = Field(
        default=100, gt=0, description="requests per 10 seconds for this token, shared by all workers"
    )
    members_rate_limit_per_900s: int = Field(
        default=100, gt=0, description="requests to /1/members/ per 900 seconds, shared by all workers"
    )

    @property
    def enabled(self) -> bool:
        return all(
            value is not None and value.get_secret_value() for value in (self.api_key, self.token)
        ) and bool(self.board_id)
