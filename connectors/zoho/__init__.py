"""Zoho CRM connector (API v8): Deals pulled, pushed and watched.

- :mod:`connectors.zoho.spec`: ``SPEC``, the entry point ``zoho``.
- :mod:`connectors.zoho.client`: :class:`ZohoConnector`; :mod:`connectors.zoho.api` its calls.
- :mod:`connectors.zoho.auth`: OAuth refresh, ``Zoho-oauthtoken``, the token's ``api_domain``.
- :mod:`connectors.zoho.convert`: pure translation; :mod:`connectors.zoho.webhooks` and
  :mod:`connectors.zoho.watch`: notifications.
- :mod:`connectors.zoho.sandbox`: a local Zoho CRM for tests and the demo.

Docs: https://www.zoho.com/crm/developer/docs/api/v8/ and the SDK ``zohocrmsdk8_0``.
"""

from connectors.zoho.client import ZohoConnector
from connectors.zoho.settings import ZohoSettings
from connectors.zoho.spec import SPEC

__all__ = ["SPEC", "ZohoConnector", "ZohoSettings"]
