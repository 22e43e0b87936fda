"""An Odoo server in memory for tests and the demo: JSON-2 and JSON-RPC, archived-lost leads, webhooks.

- :mod:`.state` / :mod:`.crm`: the ORM and CRM behaviour; :mod:`.models`: fields and read format;
  :mod:`.domain`: search domains; :mod:`.app`: the HTTP routes; :mod:`.seed`: the seed data;
  :mod:`.server`: :class:`OdooSandbox` and :func:`start_sandbox` (the spec's factory).
"""

from connectors.odoo.sandbox.server import WEBHOOK_FIELDS, OdooSandbox, start_sandbox

__all__ = ["WEBHOOK_FIELDS", "OdooSandbox", "start_sandbox"]
