"""Leak alerts: one Slack-compatible digest per scan, plus a message per large new flag.

Each scan that raised flags queues ONE digest (:func:`digest_payload`: how many new flags per rule,
the top deals by amount at risk with their owner and a link to each copy in its CRM) and one
message per new flag only when its amount reaches ``SYNC_ALERTS__MIN_AMOUNT`` (in the deal's own
currency; unset: the digest only) (:func:`wants_own_alert`). A first scan over a big pipeline is
one message, not sixty.

Message shape after Slack's incoming webhooks (https://api.slack.com/messaging/webhooks): a JSON
object with ``text`` (the notification fallback) and ``blocks`` (Block Kit ``section`` and
``context`` blocks, https://api.slack.com/reference/block-kit/blocks); ``&``, ``<`` and ``>`` in
record text are escaped as Slack's formatting rules require
(https://api.slack.com/reference/surfaces/formatting#escaping). Mattermost, Teams workflow and
Discord ``/slack`` endpoints accept the same body.

The webhook URL is a secret (``SYNC_ALERTS__WEBHOOK_URL``): its path is the credential. It never
reaches a client's ``base_url`` (which ``repr`` shows), an error message or a log line: the
request goes to a fixed placeholder address and :class:`_WebhookTransport` swaps in the real URL
at the transport, from a private header it removes. Slack answers ``200`` with the plain-text body
``ok``; the transport hands that on as an empty body so :class:`~sync_worker.http.ApiClient` does
not mistake it for a malformed JSON answer.

:func:`push_alerts` drains the outbox items of target ``"alert"`` that the leak scan queued: each
is POSTed once; a transient failure (429, 5xx, timeout) retries the item later with an
exponential back-off (:meth:`~sync_worker.engine.model.EngineConfig.retry_delay`) and stops the
round (the webhook is down: the other items wait without spending attempts); a refusal (4xx) or
the last allowed attempt makes it ``dead`` with the reason. At most one alert goes out per flag:
the key ``<alert key>:sent`` (the item's key without any ``:replay:<n>`` suffix) is claimed in the
store before the POST and released when it fails, so a redelivered push message, two workers
draining at once, or a dead-letter replay of an alert that was already delivered send nothing.
A claim whose outcome is unknown (a crash between the POST and the store write) is never resent:
alerts are at-most-once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from pydantic import SecretStr

from sync_worker.engine.model import DeadItem, EngineConfig, PushStats
from sync_worker.errors import ConfigError, PermanentError, TransientError
from sync_worker.http import ApiClient
from sync_worker.store import OutboxItem, SyncStore
from sync_worker.store.leak_queries import FlaggedRecord
from sync_worker.store.record_queries import DealCopy
from sync_worker.store.types import as_utc

__all__ = [
    "ALERT_TARGET",
    "DIGEST_TOP",
    "alert_client",
    "alert_payload",
    "digest_payload",
    "format_money",
    "push_alerts",
    "send_alert",
    "wants_own_alert",
]

DIGEST_TOP = 5
"""How many deals the digest lists by amount at risk."""

ALERT_TARGET = "alert"
_PLACEHOLDER = "https://alert-webhook.invalid"
_TARGET_HEADER = "x-sync-alert-target"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_money(amount: Decimal | None, currency: str | None) -> str:
    """``4,500.00 EUR``; an amount without a currency says so (``4,500.00 (no currency)``)."""
    if amount is None:
        return "-"
    text = f"{amount.quantize(Decimal('0.01')):,}"
    return f"{text} {currency}" if currency else f"{text} (no currency)"


def _copy_line(copy: DealCopy, deal_links: Mapping[str, Callable[[str], str | None]]) -> str:
    link = deal_links.get(copy.source)
    url = link(copy.external_id) if link is not None else None
    name = f"{copy.source} {copy.kind} {copy.external_id}"
    shown = f"<{_escape(url)}|{_escape(name)}>" if url else _escape(name)
    owner = f" · owner {_escape(copy.owner_id)}" if copy.owner_id else " · no owner"
    return f"{shown}{owner}"


def alert_payload(
    item: FlaggedRecord,
    *,
    stage_label: str | None = None,
    copies: Sequence[DealCopy] = (),
    deal_links: Mapping[str, Callable[[str], str | None]] | None = None,
) -> dict[str, Any]:
    """The Slack message for a newly raised flag: ``{"text": ..., "blocks": [...]}``.

    One message per deal: ``copies`` (the deal's records, from ``deal_copies``) are listed with a
    link to each in its CRM (``deal_links``: source -> external id -> URL) and its owner. Amounts
    print with their currency.
    """
    flag = item.flag
    links = deal_links or {}
    name = _escape(item.title or f"{item.kind} {item.external_id}")
    where = _escape(stage_label or (flag.stage.value if flag.stage is not None else "unknown stage"))
    systems = ", ".join(sorted({copy.source for copy in copies})) or item.source
    text = f"Leak: {name} ({_escape(systems)}) {flag.rule}: {_escape(flag.reason)}"
    facts = [f"*Rule:* {flag.rule}", f"*Stage:* {where}"]
    if flag.days_in_stage is not None:
        facts.append(f"*Days in stage:* {flag.days_in_stage}")
    if flag.amount is not None:
        facts.append(f"*Amount:* {_escape(format_money(flag.amount, item.currency))}")
    if flag.weighted_amount is not None:
        facts.append(f"*Weighted at risk:* {_escape(format_money(flag.weighted_amount, item.currency))}")
    owners = sorted({copy.owner_id for copy in copies if copy.owner_id is not None})
    if not owners and item.owner_id is not None:
        owners = [item.owner_id]
    facts.append(f"*Owner:* {_escape(', '.join(owners)) or 'none'}")
    shown_copies = copies or (
        DealCopy(
            flag.record_id,
            item.source,
            item.kind,
            item.external_id,
            item.title,
            item.owner_id,
            None,
            "open",
            None,
            item.currency,
            False,
        ),
    )
    lines = "\n".join(_copy_line(copy, links) for copy in shown_copies)
    return {
        "text": text,
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Leaked deal:* {name}\n{_escape(flag.reason)}"},
            },
            {"type": "section", "fields": [{"type": "mrkdwn", "text": fact} for fact in facts]},
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Copies:*\n{lines}"}},
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"{_escape(item.source)} {item.kind} {_escape(item.external_id)}"
                        f" · flag {flag.id}",
                    }
                ],
            },
        ],
    }


def wants_own_alert(item: FlaggedRecord, min_amount: Decimal | None) -> bool:
    """Whether a new flag gets a message of its own besides the digest: its amount reaches ``min_amount``."""
    return min_amount is not None and item.flag.amount is not None and item.flag.amount >= min_amount


def digest_payload(
    items: Sequence[FlaggedRecord],
    *,
    copies: Mapping[int, Sequence[DealCopy]],
    deal_links: Mapping[str, Callable[[str], str | None]] | None = None,
    top: int = DIGEST_TOP,
) -> dict[str, Any]:
    """The one Slack message of a scan: new flags counted by rule, then the ``top`` deals by amount.

    Each listed deal shows its rule, stage, amount with currency, and every copy with its owner and a
    link in its CRM (``deal_links``). Amounts in different currencies are listed, never added.
    """
    links = deal_links or {}
    by_rule: dict[str, int] = {}
    for item in items:
        by_rule[item.flag.rule] = by_rule.get(item.flag.rule, 0) + 1
    counts = ", ".join(f"{rule} {n}" for rule, n in sorted(by_rule.items()))
    text = f"Leak scan: {len(items)} new leak flag(s): {counts}"
    ranked = sorted(
        items, key=lambda item: (item.flag.amount is None, -(item.flag.amount or 0), item.flag.id)
    )
    lines = []
    for item in ranked[:top]:
        flag = item.flag
        name = _escape(item.title or f"{item.kind} {item.external_id}")
        stage = flag.stage.value if flag.stage is not None else "unknown stage"
        shown = copies.get(flag.record_id) or ()
        where = "; ".join(_copy_line(copy, links) for copy in shown) or _escape(
            f"{item.source} {item.external_id}"
        )
        amount = _escape(format_money(flag.amount, item.currency))
        lines.append(f"• *{name}*: {flag.rule} in {stage}, {amount} · {where}")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_escape(text)}*"}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{rule}:* {n}"} for rule, n in sorted(by_rule.items())],
        },
    ]
    if lines:
        title = f"*Top {len(lines)} by amount at risk:*"
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": title + "\n" + "\n".join(lines)}}
        )
    if len(items) > len(lines):
        more = f"{len(items) - len(lines)} more: sync-worker leaks, or the report"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    return {"text": text, "blocks": blocks}


class _WebhookTransport(httpx.BaseTransport):
    """Sends to the URL carried in a private header; turns a non-JSON 2xx body into an empty one."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def __repr__(self) -> str:
        return "_WebhookTransport()"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        headers = httpx.Headers(request.headers)
        target = headers.pop(_TARGET_HEADER, None)
        if target is None:
            raise ConfigError("alert request without a webhook URL")
        del headers["host"]
        outgoing = httpx.Request(
            request.method,
            httpx.URL(target),
            headers=headers,
            content=request.read(),
            extensions=request.extensions,
        )
        response = self._inner.handle_request(outgoing)
        body = response.read()
        is_json = "json" in response.headers.get("content-type", "")
        if response.is_success and body and not is_json:
            return httpx.Response(response.status_code, request=request)
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)

    def close(self) -> None:
        self._inner.close()


def alert_client(
    *,
    transport: httpx.BaseTransport | None = None,
    max_attempts: int = 4,
    timeout: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> ApiClient:
    """An :class:`ApiClient` for alert webhooks (build once per worker process).

    It holds no URL: :func:`send_alert` passes the secret one per call.
    """
    inner = transport if transport is not None else httpx.HTTPTransport()
    return ApiClient(
        ALERT_TARGET,
        _PLACEHOLDER,
        transport=_WebhookTransport(inner),
        max_attempts=max_attempts,
        timeout=timeout,
        sleep=sleep,
    )


def send_alert(payload: Mapping[str, Any], url: SecretStr, client: ApiClient) -> None:
    """POST ``payload`` to the webhook at ``url`` through ``client`` (from :func:`alert_client`).

    Transient failures are retried inside the client and then raised as
    :class:`~sync_worker.errors.TransientError` (the outbox retries the item later); a 4xx raises
    :class:`~sync_worker.errors.PermanentError`. Neither message contains the URL.
    """
    raw = url.get_secret_value()
    if not raw.startswith(("https://", "http://")):
        raise ConfigError("SYNC_ALERTS__WEBHOOK_URL: must be an http(s) URL")
    client.request("POST", "/", json_body=dict(payload), headers={_TARGET_HEADER: raw})


def _sent_key(item: OutboxItem) -> str:
    # A dead-letter replay re-queues the item as "<key>:replay:<id>": same flag, same claim.
    return item.idempotency_key.split(":replay:", 1)[0] + ":sent"


def push_alerts(
    store: SyncStore,
    url: SecretStr,
    client: ApiClient,
    *,
    now: datetime,
    limit: int = 100,
    config: EngineConfig | None = None,
) -> PushStats:
    """Send the due ``"alert"`` outbox items (at most ``limit``) once each; see the module docstring.

    ``config`` gives ``max_attempts`` and the back-off (``retry_base`` doubled per attempt, capped
    at ``retry_cap``; a longer ``Retry-After`` wins). Returns :class:`PushStats` with target
    ``"alert"``: ``items`` handled this round, ``writes`` sent, ``skipped`` already sent for that
    flag, ``retried`` failed and due again later, ``dead`` failed for good (for the caller to
    dead-letter). A bad webhook URL raises :class:`~sync_worker.errors.ConfigError`; no message
    carries the URL.
    """
    settings = config if config is not None else EngineConfig()
    when = as_utc(now)
    items = store.due_outbox(when, limit, target=ALERT_TARGET)
    writes = skipped = retried = 0
    dead: list[DeadItem] = []
    for item in items:
        key = _sent_key(item)
        if not store.claim_key(key):
            if store.key_result(key) is not None:
                store.mark_outbox_sent(item.id)  # this flag's alert went out already
                skipped += 1
                continue
            reason = "this flag's alert is being sent by another push (or its outcome is unknown)"
            if item.attempts + 1 < settings.max_attempts:
                store.mark_outbox_failed(item.id, reason, when + settings.retry_delay(item.attempts + 1))
                retried += 1
            else:
                store.mark_outbox_failed(item.id, reason, when, dead=True)
                dead.append(DeadItem(item.id, item.idempotency_key, reason, dict(item.payload)))
            continue
        try:
            if not isinstance(item.payload, Mapping):
                raise PermanentError("alert payload is not a JSON object")
            send_alert(item.payload, url, client)
        except TransientError as exc:
            store.release_key(key)
            attempts = item.attempts + 1
            reason = str(exc)[:500]
            if attempts < settings.max_attempts:
                delay = settings.retry_delay(attempts)
                if exc.retry_after is not None:
                    delay = max(delay, timedelta(seconds=exc.retry_after))
                store.mark_outbox_failed(item.id, reason, when + delay)
                retried += 1
                break  # the webhook is failing: the rest wait for the next round, attempts unspent
            store.mark_outbox_failed(item.id, reason, when, dead=True)
            dead.append(DeadItem(item.id, item.idempotency_key, reason, dict(item.payload)))
            continue
        except PermanentError as exc:
            store.release_key(key)
            reason = str(exc)[:500]
            store.mark_outbox_failed(item.id, reason, when, dead=True)
            dead.append(DeadItem(item.id, item.idempotency_key, reason, dict(item.payload)))
            continue
        except BaseException:
            store.release_key(key)  # a bad URL (ConfigError) or a crash: nothing was sent
            raise
        store.record_result(key, {"outbox_id": item.id, "sent_at": when.isoformat()})
        store.mark_outbox_sent(item.id)
        writes += 1
    handled = writes + skipped + retried + len(dead)  # items left after a transient stop wait
    return PushStats(
        ALERT_TARGET, items=handled, writes=writes, skipped=skipped, retried=retried, dead=tuple(dead)
    )
