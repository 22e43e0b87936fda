"""Pipedrive connector (API v2; v1 for notes and deal labels).

- :mod:`connectors.pipedrive.client`: :class:`PipedriveConnector` and :func:`from_settings`.
- :mod:`connectors.pipedrive.convert`: pure :func:`to_canonical` / :func:`from_canonical`.
- :mod:`connectors.pipedrive.webhooks`: basic-auth verification and v1/v2 webhook parsing.

Docs: https://developers.pipedrive.com/docs/api/v1 (v2 sections),
https://pipedrive.readme.io/docs/guide-for-webhooks-v2
"""

from connectors.pipedrive.client import PipedriveConnector, from_settings
from connectors.pipedrive.convert import from_canonical, to_canonical
from connectors.pipedrive.spec import SPEC
from connectors.pipedrive.webhooks import parse_webhook, verify_basic_auth

__all__ = [
    "SPEC",
    "PipedriveConnector",
    "from_canonical",
    "from_settings",
    "parse_webhook",
    "to_canonical",
    "verify_basic_auth",
]
