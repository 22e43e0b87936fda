"""A local server speaking the documented HubSpot CRM v3 wire format, with state in memory.

Modules: :mod:`.wire` (error bodies, search filters, signatures; pure), :mod:`.catalog` (stock pipeline
and properties), :mod:`.access` (tokens, OAuth, rate limits), :mod:`.state` (:class:`HubSpotSandbox`),
:mod:`.app` (:func:`create_app`). Each module docstring cites the HubSpot doc pages it follows; the
entry points are https://developers.hubspot.com/docs/api-reference/crm-deals-v3/guide and
https://developers.hubspot.com/docs/api-reference/webhooks-webhooks-v3/guide.
"""

from sync_worker.sandbox.hubspot.app import create_app
from sync_worker.sandbox.hubspot.state import (
    DEFAULT_RETRY_DELAYS,
    DEFAULT_SUBSCRIBED_PROPERTIES,
    HubSpotSandbox,
    HubSpotSandboxConfig,
)
from sync_worker.sandbox.hubspot.wire import sign_v1, sign_v3

__all__ = [
    "DEFAULT_RETRY_DELAYS",
    "DEFAULT_SUBSCRIBED_PROPERTIES",
    "HubSpotSandbox",
    "HubSpotSandboxConfig",
    "create_app",
    "sign_v1",
    "sign_v3",
]
