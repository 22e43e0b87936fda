"""HTTP details of a webhook request: the bounded body read, the signed URI, JSON errors.

The body limit is enforced twice, as an oversized upload must cost neither memory nor the time to
receive it: a ``Content-Length`` over the limit is refused before a byte is read, and a streamed
(chunked) body is counted while it arrives and refused as soon as it passes the limit. The whole
body must arrive within a deadline (:class:`BodyTimeoutError`, a 408 that closes the connection),
so a client trickling its body does not hold a connection and a worker slot forever.

The URI a provider signs is the one it called. Behind a proxy that is ``SYNC_PUBLIC_URL`` + path +
query; otherwise the URL the request arrived at, rebuilt from the scheme, the ``Host`` header and the
raw (still percent-encoded) path and query, because decoding them would change what HubSpot signed:
https://developers.hubspot.com/docs/apps/legacy-apps/authentication/validating-requests
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import JSONResponse

from sync_worker.connector import WebhookRequest
from sync_worker.errors import PayloadError, PayloadTooLargeError

__all__ = ["BodyTimeoutError", "error_response", "read_body", "signed_url", "webhook_request"]

_MAX_LENGTH_DIGITS = 18


class BodyTimeoutError(Exception):
    """The request body did not arrive within its deadline (answered 408, connection closed)."""


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, or :class:`PayloadTooLargeError` once it is known to exceed ``limit`` bytes,
    or :class:`BodyTimeoutError` when it has not all arrived ``timeout`` seconds after the head."""
    declared = request.headers.get("content-length")
    if declared is not None:
        digits = declared.strip()
        if not (digits.isascii() and digits.isdigit()):
            raise PayloadError("Content-Length is not a number")
        if len(digits) > _MAX_LENGTH_DIGITS or int(digits) > limit:
            raise PayloadTooLargeError(f"body of {digits[:24]} bytes is over the {limit}-byte limit")
    try:
        async with asyncio.timeout(timeout):
            return await _read_stream(request, limit)
    except TimeoutError as exc:
        raise BodyTimeoutError(f"the request body did not arrive within {timeout:g} s") from exc


async def _read_stream(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        return raw.decode("latin-1")
    return str(request.scope.get("root_path", "")) + str(request.scope["path"])


def signed_url(request: Request, public_url: AnyHttpUrl | None) -> str:
    """The URI the provider signed: ``public_url`` + raw path + raw query, or the arrival URL."""
    path = _raw_path(request)
    query = request.scope.get("query_string", b"")
    suffix = path + ("?" + query.decode("latin-1") if query else "")
    if public_url is not None:
        return str(public_url).rstrip("/") + suffix
    scheme = str(request.scope.get("scheme", "http"))
    host = request.headers.get("host")
    if not host:
        server = request.scope.get("server")
        if server:
            name, port = server
            default = {"http": 80, "https": 443}.get(scheme)
            host = name if port == default else f"{name}:{port}"
        else:
            host = "localhost"
    return f"{scheme}://{host}{suffix}"


def webhook_request(request: Request, body: bytes, public_url: AnyHttpUrl | None) -> WebhookRequest:
    """What a connector verifies: method, signed URI, lower-case headers, raw body, query."""
    headers: Mapping[str, str] = {name.lower(): value for name, value in request.headers.items()}
    return WebhookRequest(
        method=request.method,
        url=signed_url(request, public_url),
        headers=headers,
        body=body,
        query=dict(request.query_params),
    )


def error_response(
    status: int, error: str, detail: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """``{"error": <machine word>, "detail": <what is wrong>}`` with ``status``."""
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=dict(headers or {}))
