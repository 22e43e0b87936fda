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

    api_key: SecretStr | None = None
    token: SecretStr | None = None
    app_secret: SecretStr | None = None
    board_id: str | None = None
    base_url: AnyHttpUrl = AnyHttpUrl("https://api.trello.com")
    amount_field: str = "Amount"
    currency: str | None = None
    member_id: str | None = None
    archived_status: Literal["deleted", "lost"] = "deleted"
    callback_url: AnyHttpUrl | None = None
    key_rate_limit_per_10s: int = Field(default=300, gt=0)
    token_rate_limit_per_10s: int = Field(default=100, gt=0)
    members_rate_limit_per_900s: int = Field(default=100, gt=0)

    @property
    def enabled(self) -> bool:
        return all(
            value is not None and value.get_secret_value() for value in (self.api_key, self.token)
        ) and bool(self.board_id)
