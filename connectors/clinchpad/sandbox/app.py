"""The HTTP face of :class:`~connectors.clinchpad.sandbox.state.ClinchPadSandbox`, under ``/api/v1``.

Auth, the hourly limit and injected faults run before every API endpoint; admin routes under
``/_sandbox`` (call counts, faults, a person's edits) need no auth.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.clinchpad.sandbox.state import ClinchPadApiError, ClinchPadSandbox
from sync_worker.sandbox.common import Handler, admin_routes, counted_route

__all__ = ["create_app"]

_DEFAULT_SIZE = 25


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _credentials(request: Request) -> tuple[str | None, str | None]:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic" or not token:
        return None, None
    try:
        user, sep, password = base64.b64decode(token, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return (user, password) if sep else (None, None)


async def _body(request: Request) -> dict[str, Any]:
    """A JSON object or a form (``application/x-www-form-urlencoded``) body."""
    raw = await request.body()
    if "application/x-www-form-urlencoded" in request.headers.get("content-type", ""):
        return {k: v[-1] for k, v in parse_qs(raw.decode(), keep_blank_values=True).items()}
    try:
        data = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClinchPadApiError(400, "body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ClinchPadApiError(400, "body must be a JSON object")
    return data


def _page(request: Request, items: list[dict[str, Any]]) -> JSONResponse:
    values = []
    for name, default in (("page", 1), ("size", _DEFAULT_SIZE)):
        raw = request.query_params.get(name) or str(default)
        if not raw.isdigit() or int(raw) < 1:
            raise ClinchPadApiError(400, f"{name} must be a positive integer")
        values.append(int(raw))
    page, size = values
    return JSONResponse(items[(page - 1) * size : page * size])


def create_app(sandbox: ClinchPadSandbox) -> Starlette:
    """The Starlette app serving ``sandbox``."""

    async def serve(request: Request, handler: Handler) -> Response:
        if not sandbox.accepts(*_credentials(request)):
            return _error(401, "Invalid API key")
        if not sandbox.limiter.hit("account").allowed:
            return _error(429, "Rate limit exceeded: 1200 calls/hour")
        outcome = await sandbox.faults.apply(request)
        if outcome == "429":
            return _error(429, "Rate limit exceeded: 1200 calls/hour")
        if outcome == "error":
            return _error(sandbox.faults.pick((500, 502, 503)), "Internal server error")
        try:
            return await handler(request)
        except ClinchPadApiError as exc:
            return _error(exc.status, exc.message)

    def api(path: str, handler: Handler, methods: list[str] | None = None) -> Route:
        return counted_route(sandbox.calls, f"/api/v1{path}", serve, handler, methods)

    async def pipelines(request: Request) -> Response:
        return _page(request, [dict(p) for p in sandbox.pipelines.values()])

    async def pipeline(request: Request) -> Response:
        return JSONResponse(sandbox.pipeline(request.path_params["pid"]))

    async def stages(request: Request) -> Response:
        return _page(request, sandbox.stage_list(request.path_params["pid"]))

    async def stage(request: Request) -> Response:
        for item in sandbox.stage_list(request.path_params["pid"]):
            if item["_id"] == request.path_params["sid"]:
                return JSONResponse(item)
        raise ClinchPadApiError(404, "Stage not found")

    async def leads(request: Request) -> Response:
        if request.method == "POST":
            return JSONResponse(sandbox.create_lead(await _body(request)))
        pipeline_id = request.query_params.get("pipeline_id")
        if not pipeline_id:
            raise ClinchPadApiError(400, "pipeline_id is required")
        return _page(request, sandbox.lead_list(pipeline_id))

    async def lead(request: Request) -> Response:
        lead_id = request.path_params["lid"]
        if request.method == "PUT":
            return JSONResponse(sandbox.update_lead(lead_id, await _body(request)))
        if request.method == "DELETE":
            sandbox.delete_lead(lead_id)
            return JSONResponse({})
        found = sandbox.lead(lead_id)
        view = sandbox.lead_view(found)
        view.pop("archived")  # the documented single-lead sample has no archived flag
        return JSONResponse(view)

    async def notes(request: Request) -> Response:
        return JSONResponse(sandbox.add_note(request.path_params["lid"], await _body(request)))

    async def users(request: Request) -> Response:
        return _page(request, [dict(u) for u in sandbox.users])

    async def admin_change(request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
            return JSONResponse(sandbox.simulate_user_change(request.path_params["lid"], **body))
        except ClinchPadApiError as exc:
            return _error(exc.status, exc.message)

    async def admin_delete(request: Request) -> Response:
        try:
            sandbox.simulate_delete(request.path_params["lid"])
        except ClinchPadApiError as exc:
            return _error(exc.status, exc.message)
        return JSONResponse({})

    routes = [
        api("/pipelines", pipelines),
        api("/pipelines/{pid}", pipeline),
        api("/pipelines/{pid}/stages", stages),
        api("/pipelines/{pid}/stages/{sid}", stage),
        api("/leads", leads, ["GET", "POST"]),
        api("/leads/{lid}", lead, ["GET", "PUT", "DELETE"]),
        api("/leads/{lid}/notes", notes, ["POST"]),
        api("/users", users),
        Route("/_sandbox/leads/{lid}/change", admin_change, methods=["POST"]),
        Route("/_sandbox/leads/{lid}/delete", admin_delete, methods=["POST"]),
        *admin_routes(sandbox.calls, sandbox.faults),
    ]
    return Starlette(routes=routes)
