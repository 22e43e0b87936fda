"""Salesforce connector: Opportunities over the REST API (v60+), Outbound Messages as webhooks.

- :mod:`connectors.salesforce.client`: :class:`SalesforceConnector`;
- :mod:`connectors.salesforce.api` / :mod:`~connectors.salesforce.auth` /
  :mod:`~connectors.salesforce.wire`: the REST boundary, OAuth, limits and error arrays;
- :mod:`connectors.salesforce.pull` / :mod:`~connectors.salesforce.push`: pulls and batched writes;
- :mod:`connectors.salesforce.convert`: pure translation; :mod:`~connectors.salesforce.webhooks`:
  the SOAP Outbound Messages; :mod:`connectors.salesforce.sandbox`: a local Salesforce.

Docs: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/ and
https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_om_outboundmessaging.htm
"""

from connectors.salesforce.client import SalesforceConnector
from connectors.salesforce.convert import from_canonical, to_canonical
from connectors.salesforce.settings import SalesforceSettings
from connectors.salesforce.spec import SPEC

__all__ = ["SPEC", "SalesforceConnector", "SalesforceSettings", "from_canonical", "to_canonical"]
