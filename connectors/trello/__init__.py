"""Trello connector: a board is a pipeline, its lists are stages, its cards are deals.

- :mod:`connectors.trello.spec`: :data:`SPEC`, registered under the ``sync_worker.connectors``
  entry point.
- :mod:`connectors.trello.client`: :class:`TrelloConnector` (pull, push, webhooks, normalisation).
- :mod:`connectors.trello.convert`, :mod:`connectors.trello.feed`: pure translation.
- :mod:`connectors.trello.access`: key/token auth, the key and token budgets, 429s.
- :mod:`connectors.trello.webhooks`: ``X-Trello-Webhook`` verification and parsing.
- :mod:`connectors.trello.sandbox`: a local Trello that follows the documentation.

Docs: https://developer.atlassian.com/cloud/trello/guides/rest-api/authorization/,
https://developer.atlassian.com/cloud/trello/guides/rest-api/rate-limits/,
https://developer.atlassian.com/cloud/trello/guides/rest-api/webhooks/,
https://developer.atlassian.com/cloud/trello/rest/api-group-cards/ (and section 4 of the
project's research notes for the third-party sources of each fact).
"""

from connectors.trello.client import STREAM, TrelloConnector
from connectors.trello.settings import TrelloSettings
from connectors.trello.spec import SPEC, build, connect

__all__ = ["SPEC", "STREAM", "TrelloConnector", "TrelloSettings", "build", "connect"]
