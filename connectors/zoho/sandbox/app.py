"""The Zoho CRM sandbox's HTTP API (Starlette), over :class:`~connectors.zoho.sandbox.state.ZohoSandbox`.

Documented behaviour reproduced (API v8):

- ``POST /oauth/v2/token`` (form; ``api_domain`` in the answer; ``error`` when refused):
  https://www.zoho.com/crm/developer/docs/api/v8/refresh.html
- ``Authorization: Zoho-oauthtoken``; 401 ``INVALID_TOKEN`` otherwise; error bodies
  ``{"code", "details", "message", "status": "error"}``:
  https://www.zoho.com/crm/developer/docs/api/v8/status-codes.html
- ``GET /crm/v8/settings/layouts?module=Deals``, ``GET /crm/v8/settings/pipeline?layout_id=``
  (``layout_id`` mandatory): https://www.zoho.com/crm/developer/docs/api/v8/get-pipelines.html
- ``GET /crm/v8/Deals``: ``fields`` mandatory (400 ``REQUIRED_PARAM_MISSING``), ``per_page`` at most
  200, ``page`` only up to 2,000 records (400 ``DISCRETE_PAGINATION_LIMIT_EXCEEDED``), ``page_token``
  bound to the other parameters (400 ``TOKEN_BOUND_DATA_MISMATCH``) and exclusive with ``page``,
  ``info`` with ``more_records``/``next_page_token``, ``If-Modified-Since``, ``ids``; 204 with an
  empty body when there are no rows: https://www.zoho.com/crm/developer/docs/api/v8/get-records.html
- ``PUT``/``POST /crm/v8/Deals``: 1 to 100 records, per-record answers in input order:
  https://www.zoho.com/crm/developer/docs/api/v8/update-records.html
- ``GET /crm/v8/Deals/deleted``: https://www.zoho.com/crm/developer/docs/api/v8/get-deleted-records.html
- ``/crm/v8/actions/watch`` GET/POST/PUT/DELETE:
  https://www.zoho.com/crm/developer/docs/api/v8/notifications/enable.html
- 429 ``TOO_MANY_REQUESTS`` once the 24 h credits are spent, ``X-API-CREDITS-REMAINING`` once half
  of them are: https://www.zoho.com/crm/developer/docs/api/v8/api-limits.html

Where Zoho does not document an answer the sandbox picks one and the connector must survive both:
``If-Modified-Since`` is compared with ``>=`` on ``Modified_Time``; a batch whose records all fail is
answered 400 (a mixed one 200). The 429 body is the documented error envelope.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.zoho.sandbox.state import ZohoApiError, ZohoSandbox, iso
from sync_worker.sandbox.common import Handler, admin_routes, counted_route

__all__ = ["create_app"]

_MAX_PER_PAGE = 200
_DISCRETE_LIMIT = 2000


def _error(exc: ZohoApiError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=dict(headers or {}))


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"param_name": name})
    return int(raw)


def _since(request: Request) -> datetime | None:
    raw = request.headers.get("if-modified-since")
    if raw is None:
        return None
    try:
        return datetime.fromisoformat(raw.strip().replace("Z", "+00:00")).astimezone(UTC)
    except ValueError as exc:
        raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"param_name": "If-Modified-Since"}) from exc


def _token_for(offset: int, bound: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "b": bound}).encode()).decode().rstrip("=")


def _offset(token: str, bound: str) -> int:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, was = int(decoded["o"]), str(decoded["b"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"param_name": "page_token"}) from exc
    if was != bound:
        raise ZohoApiError(400, "TOKEN_BOUND_DATA_MISMATCH", "invalid data", {"param_name": "page_token"})
    return offset


def _listing(sandbox: ZohoSandbox, request: Request) -> Response:
    params = request.query_params
    ids = [i for i in (params.get("ids") or "").split(",") if i]
    fields = [f for f in (params.get("fields") or "").split(",") if f]
    if not fields and not ids:
        raise ZohoApiError(
            400,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            {"param_name": "fields"},
        )
    if len(fields) > 50:
        raise ZohoApiError(
            400, "LIMIT_EXCEEDED", "Max field limit exceeded", {"param_name": "fields", "limit": 50}
        )
    per_page = _int(request, "per_page", _MAX_PER_PAGE)
    if per_page > _MAX_PER_PAGE:
        raise ZohoApiError(
            400, "INVALID_DATA", "invalid data", {"param_name": "per_page", "maximum_length": "200"}
        )
    if "page" in params and "page_token" in params:
        raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"param_name": "page_token"})
    sort_by = params.get("sort_by", "id")
    descending = params.get("sort_order", "desc") == "desc"
    since = _since(request)
    with sandbox._lock:
        rows = [dict(d) for d in sandbox.deals.values() if not ids or d["id"] in ids]
    if since is not None:
        rows = [d for d in rows if datetime.fromisoformat(d["Modified_Time"]) >= since]
    rows.sort(key=lambda d: (d.get(sort_by) or "", d["id"]), reverse=descending)
    bound = hashlib.sha256(
        json.dumps(sorted((k, v) for k, v in params.items() if k not in ("page", "page_token"))).encode()
    ).hexdigest()[:16]
    if "page_token" in params:
        start = _offset(params["page_token"], bound)
        page = start // per_page + 1
    else:
        page = _int(request, "page", 1)
        start = (page - 1) * per_page
        if start + per_page > _DISCRETE_LIMIT:
            raise ZohoApiError(
                400, "DISCRETE_PAGINATION_LIMIT_EXCEEDED", "invalid data", {"limit": _DISCRETE_LIMIT}
            )
    chunk = rows[start : start + per_page]
    if not chunk:
        return Response(status_code=204)
    keep = {"id", *fields} if fields else None
    data = [{k: v for k, v in d.items() if keep is None or k in keep} for d in chunk]
    more = start + per_page < len(rows)
    info: dict[str, Any] = {
        "call": False,
        "per_page": per_page,
        "count": len(data),
        "sort_by": sort_by,
        "page": page,
        "sort_order": "desc" if descending else "asc",
        "email": False,
        "more_records": more,
        "previous_page_token": None,
        "next_page_token": _token_for(start + per_page, bound) if more else None,
        "page_token_expiry": iso(sandbox.now().replace(year=sandbox.now().year + 1)),
    }
    return JSONResponse({"data": data, "info": info})


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise ZohoApiError(400, "INVALID_DATA", "body", {}) from exc
    if not isinstance(body, dict):
        raise ZohoApiError(400, "INVALID_DATA", "body", {})
    return body


def _write(sandbox: ZohoSandbox, method: str, body: Mapping[str, Any]) -> Response:
    items = body.get("data")
    if not isinstance(items, list) or not items:
        raise ZohoApiError(400, "MANDATORY_NOT_FOUND", "required field not found", {"api_name": "data"})
    if len(items) > 100:
        raise ZohoApiError(400, "LIMIT_EXCEEDED", "Record count exceeded", {"limit": 100})
    answers: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"json_path": f"$.data[{index}]"})
            record_id = item.get("id") if method == "PUT" else None
            if method == "PUT" and not isinstance(record_id, str):
                raise ZohoApiError(
                    400,
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    {"api_name": "id", "json_path": f"$.data[{index}].id"},
                )
            details = sandbox.write(record_id, item, sandbox.integration, index)
            message = "record updated" if method == "PUT" else "record added"
            answers.append({"code": "SUCCESS", "details": details, "message": message, "status": "success"})
        except ZohoApiError as exc:
            answers.append(exc.body())
    ok = any(a["status"] == "success" for a in answers)
    return JSONResponse({"data": answers}, status_code=(200 if method == "PUT" else 201) if ok else 400)


def _deleted(sandbox: ZohoSandbox, request: Request) -> Response:
    kind = request.query_params.get("type", "all")
    if kind not in ("all", "recycle", "permanent"):
        raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"param_name": "type"})
    per_page = min(_int(request, "per_page", _MAX_PER_PAGE), _MAX_PER_PAGE)
    page = _int(request, "page", 1)
    since = _since(request)
    with sandbox._lock:
        rows = [dict(e) for e in reversed(sandbox.deleted) if kind in ("all", e["type"])]
    if since is not None:
        rows = [e for e in rows if datetime.fromisoformat(e["deleted_time"]) >= since]
    chunk = rows[(page - 1) * per_page : page * per_page]
    if not chunk:
        return Response(status_code=204)
    more = page * per_page < len(rows)
    info = {"per_page": per_page, "count": len(chunk), "page": page, "more_records": more}
    return JSONResponse({"data": chunk, "info": info})


def create_app(sandbox: ZohoSandbox) -> Starlette:
    """The sandbox app: ``/oauth/v2/token``, ``/crm/v8/...`` and the ``/_sandbox`` admin routes."""

    async def serve(request: Request, handler: Handler) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth[len("Zoho-oauthtoken ") :] if auth.startswith("Zoho-oauthtoken ") else None
        if not sandbox.accepts(token):
            return _error(ZohoApiError(401, "INVALID_TOKEN", "invalid oauth token"))
        allowed, remaining = sandbox.spend_credit()
        headers = (
            {"X-API-CREDITS-REMAINING": str(remaining)} if remaining <= sandbox.credits_per_day // 2 else {}
        )
        over = ZohoApiError(429, "TOO_MANY_REQUESTS", "Number of API requests per day exceeded")
        if not allowed:
            return _error(over, headers)
        outcome = await sandbox.faults.apply(request)
        if outcome == "429":
            sandbox.rate_limited += 1
            return _error(over, headers)
        if outcome == "error":
            status = sandbox.faults.pick((500, 502, 503))
            return _error(ZohoApiError(status, "INTERNAL_ERROR", "Internal server error occurred."), headers)
        try:
            response = await handler(request)
        except ZohoApiError as exc:
            return _error(exc, headers)
        response.headers.update(headers)
        return response

    def api(path: str, handler: Handler, methods: list[str]) -> Route:
        return counted_route(sandbox.calls, path, serve, handler, methods)

    async def token(request: Request) -> Response:
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode()).items()}
        return JSONResponse(sandbox.refresh(form))

    async def layouts(request: Request) -> Response:
        if request.query_params.get("module") != "Deals":
            raise ZohoApiError(400, "INVALID_MODULE", "The module name given seems to be invalid")
        return JSONResponse({"layouts": [{"id": sandbox.layout_id, "name": "Standard", "status": "active"}]})

    async def pipeline(request: Request) -> Response:
        layout = request.query_params.get("layout_id")
        if layout is None:
            raise ZohoApiError(
                400,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                {"param_name": "layout_id"},
            )
        if layout != sandbox.layout_id:
            raise ZohoApiError(400, "INVALID_DATA", "invalid data", {"param_name": "layout_id"})
        return JSONResponse({"pipeline": [sandbox.pipeline()]})

    async def deals(request: Request) -> Response:
        if request.method == "GET":
            return _listing(sandbox, request)
        return _write(sandbox, request.method, await _json(request))

    async def deleted(request: Request) -> Response:
        return _deleted(sandbox, request)

    async def contacts(request: Request) -> Response:
        ids = [i for i in (request.query_params.get("ids") or "").split(",") if i]
        with sandbox._lock:
            rows = [dict(sandbox.contacts[i]) for i in ids if i in sandbox.contacts]
        return (
            JSONResponse({"data": rows, "info": {"count": len(rows), "more_records": False}})
            if rows
            else Response(status_code=204)
        )

    async def watch(request: Request) -> Response:
        if request.method == "GET":
            wanted = request.query_params.get("channel_id")
            with sandbox._lock:
                rows = [
                    {k: v for k, v in c.items() if k != "return_affected_field_values"}
                    for c in sandbox.channels.values()
                    if wanted in (None, c["channel_id"])
                ]
            if not rows:
                return Response(status_code=204)
            return JSONResponse(
                {
                    "watch": rows,
                    "info": {"per_page": 200, "page": 1, "count": len(rows), "more_records": False},
                }
            )
        if request.method == "DELETE":
            for channel in (request.query_params.get("channel_ids") or "").split(","):
                sandbox.channels.pop(channel, None)
            message = "Successfully un-subscribed from actions-watch"
            return JSONResponse(
                {"watch": [{"code": "SUCCESS", "details": {}, "message": message, "status": "success"}]}
            )
        entries = (await _json(request)).get("watch")
        if not isinstance(entries, list) or not entries:
            raise ZohoApiError(400, "MANDATORY_NOT_FOUND", "required field not found", {"api_name": "watch"})
        answers = []
        for entry in entries:
            events = sandbox.watch(entry if isinstance(entry, dict) else {}, replace=request.method == "PUT")
            message = (
                "Successfully subscribed for actions-watch of the given module"
                if request.method == "POST"
                else "Successfully updated the subscribe details"
            )
            answers.append(
                {"code": "SUCCESS", "details": {"events": [events]}, "message": message, "status": "success"}
            )
        return JSONResponse({"watch": answers}, status_code=201 if request.method == "POST" else 200)

    async def user_change(request: Request) -> Response:
        try:
            details = sandbox.write(request.path_params["id"], await _json(request), sandbox.person)
        except ZohoApiError as exc:
            return _error(exc)
        return JSONResponse(details)

    routes = [
        Route("/oauth/v2/token", token, methods=["POST"]),
        api("/crm/v8/settings/layouts", layouts, ["GET"]),
        api("/crm/v8/settings/pipeline", pipeline, ["GET"]),
        api("/crm/v8/Deals", deals, ["GET", "PUT", "POST"]),
        api("/crm/v8/Deals/deleted", deleted, ["GET"]),
        api("/crm/v8/Contacts", contacts, ["GET"]),
        api("/crm/v8/actions/watch", watch, ["GET", "POST", "PUT", "DELETE"]),
        Route("/_sandbox/deals/{id}/user-change", user_change, methods=["POST"]),
        *admin_routes(sandbox.calls, sandbox.faults),
    ]
    return Starlette(routes=routes)
