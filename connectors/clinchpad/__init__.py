"""ClinchPad connector (API v1): pipelines and stages, leads as deals, lead writes, webhooks.

- :mod:`connectors.clinchpad.client`: :class:`ClinchPadConnector` and :func:`from_section`.
- :mod:`connectors.clinchpad.convert`: pure :func:`to_canonical` and the lead fingerprint.
- :mod:`connectors.clinchpad.push`: pure lead write bodies and stage resolution.
- :mod:`connectors.clinchpad.snapshot`: the digest of the last listing, carried as the cursor.
- :mod:`connectors.clinchpad.webhooks`: ``handshake_key`` verification and delivery parsing.
- :mod:`connectors.clinchpad.sandbox`: a local ClinchPad that follows the docs.

Docs followed: https://clinchpad.com/api/docs (Basic auth ``api-key:<key>``, 1,200 calls/hour,
429, JSON errors), https://clinchpad.com/api/docs/pipelines, https://clinchpad.com/api/docs/stages,
https://clinchpad.com/api/docs/leads, https://clinchpad.com/api/docs/webhooks. Clients consulted:
PipedreamHQ/pipedream ``components/clinchpad`` (paging from 1 with ``size=100`` until a short page),
``pyclinchpad`` (``move_lead`` as ``PUT /leads/:id`` with ``stage_id``; notes), and
``oberonamsterdam/clinchpad-api-php`` (JSON bodies).

What the docs leave open, and how it is handled (never asserted in tests):

- **Won/lost/open**: not in the documented lead object. A ``status`` of ``won``/``lost`` or
  ``won``/``lost`` booleans are honoured when present; ``archived: true`` is passed to the mapping
  as the status ``archived`` (``clinchpad.yaml`` maps it to ``lost`` by default); a stage mapped
  to canonical won or lost makes the lead won or lost. Writing won/lost is refused unless a stage
  maps to it (the API documents no way).
- **Timestamps**: none on leads. Pulls stamp changes with the listing time; webhooks with the
  activity's ``created_at``; the full-pull snapshot with the ObjectId's creation second, a lower
  bound, so it never re-stamps a stored lead.
- **Error body**: "a descriptive error message in JSON" of no documented shape. Nothing is read
  from it beyond what :class:`~sync_worker.http.ApiClient` takes from a ``message``/``error``
  string; any body (or none) maps by status.
- **Rate-limit window and headers**: not documented; the shared limiter keeps a sliding hour
  (safe under a fixed window too); a 429 is retried with backoff, honouring ``Retry-After`` if sent.
- **Maximum page size**: not documented; 100 by default (``SYNC_CLINCHPAD__PAGE_SIZE``), paging
  until a short page, and stopping when a page repeats.
- **Stage order**: stages carry no order; the position in the answer is used.
- **Webhook activity types** beyond ``lead:created``/``note:created``, and retries: any activity
  naming a lead re-reads it, content activities (notes, tasks, ...) are recorded unhandled, a type
  containing ``delete`` is a deletion; no retries are assumed.
- **Own writes**: ``activity.user._id`` of the key owner (``SYNC_CLINCHPAD__USER_ID``) marks our
  echoes, if ClinchPad attributes API writes to the key owner (not documented); polls rely on the
  core's write memory.
- **Request bodies**: JSON is sent (the PHP client); ``pyclinchpad`` sends form data, which the
  sandbox accepts too. The lead's pipeline is not in the lead object: it is found through its
  stage's pipeline. ``/leads/:id/notes`` is used by clients but its official page was not read.
"""

from connectors.clinchpad.client import STREAM_LEADS, STREAM_SNAPSHOT, ClinchPadConnector, from_section
from connectors.clinchpad.convert import fingerprint, to_canonical
from connectors.clinchpad.settings import ClinchPadSettings
from connectors.clinchpad.spec import SPEC
from connectors.clinchpad.webhooks import parse_body, verify_handshake

__all__ = [
    "SPEC",
    "STREAM_LEADS",
    "STREAM_SNAPSHOT",
    "ClinchPadConnector",
    "ClinchPadSettings",
    "fingerprint",
    "from_section",
    "parse_body",
    "to_canonical",
    "verify_handshake",
]
