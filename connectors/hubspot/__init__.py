"""HubSpot CRM v3 connector: :class:`HubSpotConnector` and its pure translation functions.

Modules: ``client`` (the connector: pulls, lookups), ``auth`` (private-app or OAuth tokens),
``push`` (batched writes, leak-flag properties), ``convert`` (pure translation), ``webhooks``
(signature verification and event parsing). Doc pages are cited in each module.
"""

from connectors.hubspot.client import HubSpotConnector, from_settings
from connectors.hubspot.convert import from_canonical, to_canonical
from connectors.hubspot.spec import SPEC
from connectors.hubspot.webhooks import parse_events, verify_signature

__all__ = [
    "SPEC",
    "HubSpotConnector",
    "from_canonical",
    "from_settings",
    "parse_events",
    "to_canonical",
    "verify_signature",
]
