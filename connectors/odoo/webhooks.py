"""Receiving Odoo's "Send Webhook Notification" server action.

An ``ir.actions.server`` of ``state='webhook'`` (run by an automation rule, e.g. "on update" of
``crm.lead``) POSTs ``json.dumps(payload, sort_keys=True, default=str)`` with only
``Content-Type: application/json``, a one-second timeout, after the transaction commits, once: no
retry, no signature, no custom header. ``payload`` holds ``_id``, ``_model``, ``_action``
(``"<action name>(#<action id>)"``) and the fields chosen on the action, read with ``load=None``
(a many2one is a bare id). Odoo 18/19 ``odoo/addons/base/models/ir_actions.py``,
``_run_action_webhook``.

So the secret can only travel in the URL: the action's URL is
``{public url}/webhooks/odoo?token=<SYNC_ODOO__WEBHOOK_SECRET>``, checked in constant time. The
receiver must answer within the second; polling stays the safety net, since a missed delivery is
never sent again. A delivery has no id: the dedupe key is the model, the record, its
``write_date`` when the action sends it, and a digest of the body.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from datetime import datetime

from pydantic import SecretStr

from connectors.odoo.convert import SOURCE, change_source, many2one_id, parse_time
from sync_worker.canonical import WebhookEvent
from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, PermanentError, SignatureError
from sync_worker.payloads import decode_json

__all__ = ["HANDLED_MODEL", "TOKEN_PARAM", "parse_webhook", "verify_token"]

TOKEN_PARAM = "token"  # noqa: S105 - a parameter name, not a secret
HANDLED_MODEL = "crm.lead"


def verify_token(request: WebhookRequest, secret: SecretStr | None) -> None:
    """Raise :class:`SignatureError` unless the query carries ``token=<secret>``."""
    if secret is None or not secret.get_secret_value():
        raise SignatureError("odoo webhook: SYNC_ODOO__WEBHOOK_SECRET is not configured")
    presented = request.query.get(TOKEN_PARAM)
    if not presented:
        raise SignatureError("odoo webhook: the URL carries no token")
    if not hmac.compare_digest(presented.encode("utf-8"), secret.get_secret_value().encode("utf-8")):
        raise SignatureError("odoo webhook: the token does not match")


def parse_webhook(body: bytes, *, now: Callable[[], datetime]) -> list[WebhookEvent]:
    """The one event of a server-action delivery; :class:`PayloadError` when it is not one."""
    payload = decode_json(body, "odoo webhook")
    if not isinstance(payload, dict):
        raise PayloadError("odoo webhook: body is not a JSON object")
    model = payload.get("_model")
    record_id = many2one_id(payload.get("_id"))
    if not isinstance(model, str) or not model or record_id is None:
        raise PayloadError("odoo webhook: _model or _id is missing")
    try:
        written = parse_time(payload.get("write_date"), "write_date")
    except (PermanentError, OverflowError) as exc:  # OverflowError: year 1 or 9999 moved into UTC
        raise PayloadError("odoo webhook: write_date is not a YYYY-MM-DD HH:MM:SS time") from exc
    digest = hashlib.sha256(body).hexdigest()[:16]
    stamp = written.isoformat() if written else "-"
    stage = many2one_id(payload.get("stage_id"))
    handled = model == HANDLED_MODEL and payload.get("type", "opportunity") == "opportunity"
    return [
        WebhookEvent(
            source=SOURCE,
            dedupe_key=f"{model}:{record_id}:{stamp}:{digest}",
            object_type=model,
            object_id=str(record_id),
            action=str(payload.get("_action") or "webhook"),
            occurred_at=written or now(),
            raw=payload,
            property_name="stage_id" if stage is not None else None,
            property_value=str(stage) if stage is not None else None,
            change_source=change_source(payload.get("write_uid")),
            handled=handled,
            reason=None if handled else f"{model} {payload.get('type') or ''}".strip() + " is not synced",
        )
    ]
