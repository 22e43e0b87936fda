"""LaGrowthMachine (outreach source): lead replies and lead statuses in, lead statuses out.

Provider pages followed:

- API reference (Postman): https://documenter.getpostman.com/view/2071164/TVCmSkH2
- Help centre, using the API: https://help.lagrowthmachine.com/fr/articles/8276597-comment-puis-je-utiliser-l-api-de-la-growth-machine-pour-automatiser-mes-workflows
- Help centre, lead qualification (statuses are per campaign):
  https://help.lagrowthmachine.com/en/articles/7238523-how-to-qualify-my-leads-in-lgm

Documented, and followed as written:

- base URL ``https://apiv2.lagrowthmachine.com/flow``; the API key in the ``apikey`` query parameter
  (the help centre also allows an ``x-api-key`` header; the query parameter is the reference's way);
- ``GET /campaigns`` paged with ``skip`` and ``limit``;
- ``GET /campaigns/:campaignId/statsleads`` paged with the lead-id cursor ``getLeadsAfter``; rows carry
  ``id``, ``firstname``, ``lastname``, ``email``, ``companyName``, ``linkedinUrl``, ``status``, and
  ``hasMore``;
- ``POST /leads/status`` with ``status``, ``campaign[]`` (campaign names), and ``proEmail`` /
  ``persoEmail`` identifying the lead; the answer lists one log per campaign (``campaign``,
  ``leadStatus``, ``leadUpdated``, ``reason``);
- inbox webhooks registered with ``POST /inboxWebhooks`` (``name``, ``url``, ``campaigns[]``);
- a budget of 50 calls per 10 seconds (limiter bucket ``lagrowthmachine``).

Assumed, where the public pages are silent (kept conservative and tolerant):

- the statsleads answer is an object ``{"leads": [...], "hasMore": bool}`` (a bare list whose rows
  carry ``hasMore`` is accepted too); ``GET /campaigns`` answers ``{"campaigns": [...]}`` or a list;
- the conversation search is ``GET /inbox/conversations/search`` with ``limit`` and the opaque
  ``searchAfter`` token, answering ``{"conversations": [...], "searchAfter": token | null}``; each item
  is an inbox message, or a conversation whose ``lastMessage`` is one;
- inbox message fields (webhook body and search items) follow what users capture from real
  deliveries: ``messageId``, ``conversationId``, ``leadId``, ``campaignId``, ``createdAt`` (Unix ms),
  ``received`` / ``sent``, ``lead``; LGM does not sign deliveries, hence the shared ``token``;
- CRM ids on a lead under ``hubspotId`` / ``pipedriveId`` (and close variants), and a lead removed
  from a campaign flagged ``deleted``/``removed``;
- a lead status update is sent for every campaign of the account (the API reports per campaign
  whether the lead was there), since a won or lost deal must stop every sequence the lead is in.
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
