"""Odoo CRM connector (Odoo 17, 18 and 19): opportunities over JSON-2 or JSON-RPC.

- :mod:`connectors.odoo.spec`: ``SPEC`` (registered as the ``odoo`` entry point), :func:`from_settings`.
- :mod:`connectors.odoo.client`: :class:`OdooConnector`; :mod:`connectors.odoo.push`: the writes.
- :mod:`connectors.odoo.transport`: JSON-2 and JSON-RPC; :mod:`connectors.odoo.cursor`: the cursor.
- :mod:`connectors.odoo.convert`: pure translation; :mod:`connectors.odoo.webhooks`: the receiver.
- :mod:`connectors.odoo.sandbox`: the local Odoo server.

Docs: https://www.odoo.com/documentation/19.0/developer/reference/external_api.html (JSON-2),
https://www.odoo.com/documentation/18.0/developer/reference/external_api.html (XML-RPC/JSON-RPC),
``odoo/odoo`` ``addons/crm/models/crm_lead.py`` and ``crm_stage.py``.
"""

from connectors.odoo.client import OdooConnector
from connectors.odoo.settings import OdooSettings
from connectors.odoo.spec import SPEC, from_settings

__all__ = ["SPEC", "OdooConnector", "OdooSettings", "from_settings"]
