"""Leak alerts: a Slack-compatible incoming-webhook message per new flag, sent from the outbox.

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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from pydantic import SecretStr

from sync_worker.errors import ConfigError
from sync_worker.http import ApiClient
from sync_worker.store.leak_queries import FlaggedRecord

__all__ = ["ALERT_TARGET", "alert_client", "alert_payload", "send_alert"]

ALERT_TARGET = "alert"
_PLACEHOLDER = "https://alert-webhook.invalid"
_TARGET_HEADER = "x-sync-alert-target"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def alert_payload(item: FlaggedRecord, *, stage_label: str | None = None) -> dict[str, Any]:
    """The Slack message for a newly raised flag: ``{"text": ..., "blocks": [...]}``."""
    flag = item.flag
    name = _escape(item.title or f"{item.kind} {item.external_id}")
    where = _escape(stage_label or (flag.stage.value if flag.stage is not None else "unknown stage"))
    text = f"Leak: {name} ({item.source}) {flag.rule}: {_escape(flag.reason)}"
    facts = [f"*Rule:* {flag.rule}", f"*Stage:* {where}"]
    if flag.days_in_stage is not None:
        facts.append(f"*Days in stage:* {flag.days_in_stage}")
    if flag.amount is not None:
        facts.append(f"*Amount:* {flag.amount:.2f}")
    if flag.weighted_amount is not None:
        facts.append(f"*Weighted at risk:* {flag.weighted_amount:.2f}")
    return {
        "text": text,
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*Leaked deal:* {name}\n{_escape(flag.reason)}"},
            },
            {"type": "section", "fields": [{"type": "mrkdwn", "text": fact} for fact in facts]},
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
