"""LaGrowthMachine (outreach source): lead replies and lead statuses in, lead statuses out.

Provider pages followed:

- API reference (Postman): https://documenter.getpostman.com/view/2071164/TVCmSkH2
- The vendor's n8n node: https://github.com/LaGrowthMachine/n8n-nodes-lagrowthmachine
- The vendor's MCP server: https://github.com/LaGrowthMachine/lgm-mcp-server
- Help centre, using the API: https://help.lagrowthmachine.com/fr/articles/8276597-comment-puis-je-utiliser-l-api-de-la-growth-machine-pour-automatiser-mes-workflows
- Help centre, lead qualification (statuses are per campaign):
  https://help.lagrowthmachine.com/en/articles/7238523-how-to-qualify-my-leads-in-lgm

Followed as the vendor's own clients speak it (facts; files cited in ``client.py``,
``convert.py`` and ``webhooks.py``): ``LaGrowthMachine/n8n-nodes-lagrowthmachine`` and
``LaGrowthMachine/lgm-mcp-server``.

- base URL ``https://apiv2.lagrowthmachine.com/flow``; the API key as ``Authorization: Bearer``
  (``x-api-key`` and ``?apikey=`` are equivalent);
- ``GET /campaigns`` (``skip``/``limit`` <= 25) answering ``{"campaigns": [...]}``;
- ``GET /campaigns/:campaignId/statsleads`` paged with ``getLeadsAfter``, answering ``{"leads":
  [...], "hasMore"}``; rows carry ``id``, ``firstname``, ``lastname``, ``email``, ``companyName``,
  ``linkedinUrl``, ``status``;
- ``GET /conversations/search`` paged with ``searchAfter=<nextToken>``, answering ``{"data": [...],
  "hasMore", "nextToken"}``; ``GET /conversations/:id/messages`` (``page``) answering ``{"data",
  "total"}``;
- ``POST /leads/status`` form-encoded with ``status``, ``campaign`` (a name, repeated, or ``all``)
  and ``proEmail``; the answer ``{"logs": [...]}``, one log per campaign;
- inbox webhooks registered with ``POST /inboxWebhooks``; the ``INBOX_MESSAGE`` body;
- a budget of 50 calls per 10 seconds (limiter bucket ``lagrowthmachine``).

Assumed, where the vendor is silent (kept tolerant, never asserted as fact in tests):

- the fields of a conversation search item (named after the node's filters: ``lastMessageAt``,
  ``lastMessageStatus``, ``leadReplied``, ``leadId``, ``campaignId``) and of a conversation message
  (``id``, ``direction``, ``createdAt``);
- the flat inbox message shape read before the published one; LGM does not sign deliveries, hence
  the shared ``token``;
- CRM ids on a lead under ``hubspotId`` / ``pipedriveId`` (and close variants), and a lead removed
  from a campaign flagged ``deleted``/``removed``.
"""

from connectors.lagrowthmachine.client import (
    LEAD_STATUSES,
    RATE_LIMIT_BUCKET,
    STREAM_LEAD_STATUSES,
    STREAM_REPLIES,
    LaGrowthMachineConnector,
    from_settings,
)
from connectors.lagrowthmachine.convert import (
    from_canonical,
    lead_to_canonical,
    reply_to_canonical,
    to_canonical,
)
from connectors.lagrowthmachine.spec import SPEC

__all__ = [
    "LEAD_STATUSES",
    "RATE_LIMIT_BUCKET",
    "SPEC",
    "STREAM_LEAD_STATUSES",
    "STREAM_REPLIES",
    "LaGrowthMachineConnector",
    "from_canonical",
    "from_settings",
    "lead_to_canonical",
    "reply_to_canonical",
    "to_canonical",
]
