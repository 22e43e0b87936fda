"""The Odoo connector's settings section, read by the core from ``SYNC_ODOO__*``.

- ``base_url`` (``SYNC_ODOO__BASE_URL``): the database's web address, e.g. ``https://mycompany.odoo.com``.
- ``api_key``: an API key of the (bot) user the service writes as (Preferences > Account Security).
  JSON-2 sends it as ``Authorization: bearer``; JSON-RPC passes it where the password goes.
- ``database``: the database name. Needed by JSON-RPC (``execute_kw``'s first argument); on JSON-2
  sent as ``X-Odoo-Database`` when set (several databases behind one host).
- ``transport``: ``json2`` (Odoo 19+), ``jsonrpc`` (17, 18), or ``auto`` (default): ``version`` when
  set, else detected once from ``GET /web/version`` or JSON-RPC ``common.version``.
- ``login`` / ``user_id``: JSON-RPC needs the uid; ``user_id`` gives it, else ``login`` is
  authenticated once. ``user_id`` is also the echo marker of the service's own writes (``write_uid``).
- ``webhook_secret``: the secret the "Send Webhook Notification" URL carries as ``?token=``.
- ``rate_limit_per_10s``: Odoo documents no API limit; a conservative budget shared by all workers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AnyHttpUrl, BaseModel, Field, SecretStr

__all__ = ["FlagMode", "OdooSettings", "TransportName"]

TransportName = Literal["auto", "json2", "jsonrpc"]
FlagMode = Literal["note", "tag", "both"]


class OdooSettings(BaseModel):
    """``SYNC_ODOO__*``; see the module docstring."""

    base_url: AnyHttpUrl | None = Field(
        default=None,
        description="the database's web address, e.g. https://mycompany.odoo.com;"
        " unset: the connector is disabled",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="API key of the user the service writes as (Preferences > Account Security);"
        " unset: the connector is disabled",
    )
    database: str | None = Field(
        default=None,
        description="the database name: required by JSON-RPC; on JSON-2 sent as X-Odoo-Database when set",
    )
    transport: TransportName = Field(
        default="auto",
        description="json2 (Odoo 19+), jsonrpc (17, 18) or auto: chosen by VERSION when set,"
        " else by asking the server once",
    )
    version: int | None = Field(default=None, ge=8, description="Odoo's major version, when known")
    login: str | None = Field(default=None, description="the API user's login (JSON-RPC authenticate)")
    user_id: int | None = Field(default=None, gt=0, description="the API user's id: its writes are ours")
    webhook_secret: SecretStr | None = Field(
        default=None,
        description='the secret the "Send Webhook Notification" URL carries as ?token=;'
        " unset: every webhook is refused",
    )
    lang: str = Field(default="en_US", description="context lang: stage names are read in it")
    rate_limit_per_10s: int = Field(
        default=50,
        gt=0,
        description="requests per 10 seconds, shared by all workers (Odoo documents no limit:"
        " a conservative budget)",
    )
    flag_with: FlagMode = Field(
        default="both",
        description="how a leak flag is written on the lead: note (in the chatter), tag (crm.tag) or both",
    )
    tag_prefix: str = Field(
        default="Leak: ",
        min_length=1,
        description="start of the leak tags' names, followed by the rule (e.g. Leak: stalled)",
    )

    @property
    def enabled(self) -> bool:
        return self.base_url is not None and self.api_key is not None
