"""The sandbox's HTTP surface: Salesforce's token endpoint and the REST resources a sync uses.

Follows the REST API Developer Guide: ``query``/``queryAll`` with ``done``, ``nextRecordsUrl`` and
``attributes`` (batches of 200 to 2,000 as ``Sforce-Query-Options: batchSize`` asks);
``sobjects/Opportunity/updated/`` (30 days) and ``deleted/`` (15 days) with seconds cut from
``start``/``end`` and ``latestDateCovered``; ``composite/sobjects`` (at most 200 records, HTTP 200
with per-item ``success``/``errors``, ``allOrNone`` rollback); single-record ``PATCH`` (204).
Errors are arrays ``[{"message", "errorCode", "fields"}]``; a bad session is 401
``INVALID_SESSION_ID``; every API answer carries ``Sforce-Limit-Info: api-usage=N/M`` and a used-up
allocation is 403 ``REQUEST_LIMIT_EXCEEDED`` (no 429, no ``Retry-After``); injected 429 faults are
answered that way too. Token answers follow "OAuth 2.0 Refresh Token Flow" and "OAuth 2.0 JWT
Bearer Flow" (``access_token``, ``instance_url``, ``id``, ``token_type``, ``issued_at``,
``signature``; refusals ``{"error", "error_description"}``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.salesforce.sandbox.service import ApiError, Service
from connectors.salesforce.wire import LIMIT_HEADER, parse_datetime, truncate_to_minute
from sync_worker.sandbox.common import CallCounter, Faults, admin_routes, counted_route

__all__ = ["build_app"]

Handler = Callable[[Request], Awaitable[Response]]
_ROOT = "/services/data/v{version}"


def _errors(status: int, code: str, message: str, fields: tuple[str, ...] = ()) -> JSONResponse:
    body: dict[str, Any] = {"message": message, "errorCode": code}
    if fields:
        body["fields"] = list(fields)
    return JSONResponse([body], status_code=status)


def build_app(service: Service, calls: CallCounter, faults: Faults) -> Starlette:
    """The Starlette app of one sandbox org."""

    async def serve(request: Request, handler: Handler) -> Response:
        outcome = await faults.apply(request)
        if outcome == "error":
            status = faults.pick([500, 503])
            code = "UNKNOWN_EXCEPTION" if status == 500 else "SERVER_UNAVAILABLE"
            return _errors(status, code, "An unexpected error occurred. Please try again.")
        version = request.path_params.get("version", "")
        if not service.version_ok(version):
            return _errors(404, "NOT_FOUND", "The requested resource does not exist")
        user = service.user_for(request.headers.get("authorization", ""))
        if user is None:
            return _errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
        usage = service.count_call(limited=outcome == "429")
        if usage is None:
            response: Response = _errors(
                403, "REQUEST_LIMIT_EXCEEDED", "You've exceeded API request limits in your org."
            )
        else:
            request.state.user = user
            try:
                response = await handler(request)
            except ApiError as exc:
                response = _errors(exc.status, exc.code, exc.message, exc.fields)
        response.headers[LIMIT_HEADER] = service.usage_header()
        return response

    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        status, body = service.grant(form)
        calls.record("/services/oauth2/token", status)
        return JSONResponse(body, status_code=status)

    async def query(request: Request) -> Response:
        include_deleted = request.url.path.rstrip("/").endswith("queryAll")
        soql = request.query_params.get("q")
        if not soql:
            raise ApiError(400, "MALFORMED_QUERY", "A query string has to be specified")
        batch = service.batch_size(request.headers.get("sforce-query-options", ""))
        version = request.path_params["version"]
        return JSONResponse(
            service.query(soql, include_deleted=include_deleted, batch=batch, version=version)
        )

    async def query_more(request: Request) -> Response:
        version = request.path_params["version"]
        return JSONResponse(service.query_more(request.path_params["locator"], version=version))

    def _window(request: Request, days: int) -> tuple[Any, Any]:
        start = parse_datetime(request.query_params.get("start"))
        end = parse_datetime(request.query_params.get("end"))
        if start is None or end is None:
            raise ApiError(400, "MALFORMED_QUERY", "start and end must be valid dateTime values")
        start, end = truncate_to_minute(start), truncate_to_minute(end)
        if end < start:
            raise ApiError(400, "INVALID_REPLICATION_DATE", "end date must be after the start date")
        if start < truncate_to_minute(service.org.now()) - timedelta(days=days):
            raise ApiError(400, "INVALID_REPLICATION_DATE", f"start date must be within the last {days} days")
        return start, end

    async def updated(request: Request) -> Response:
        start, end = _window(request, 30)
        return JSONResponse(service.updated(start, end))

    async def deleted(request: Request) -> Response:
        start, end = _window(request, 15)
        return JSONResponse(service.deleted(start, end))

    async def one_record(request: Request) -> Response:
        record_id = request.path_params["id"]
        if request.method == "GET":
            return JSONResponse(service.get_one(record_id))
        try:
            fields = json.loads(await request.body())
        except json.JSONDecodeError as exc:
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body is not valid JSON") from exc
        service.patch_one(record_id, fields, request.state.user)
        return Response(status_code=204)

    async def collections(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except json.JSONDecodeError as exc:
            raise ApiError(400, "JSON_PARSER_ERROR", "The request body is not valid JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise ApiError(400, "INVALID_FIELD", "records is required")
        results = service.write_collection(
            body["records"],
            all_or_none=body.get("allOrNone") is True,
            create=request.method == "POST",
            user=request.state.user,
        )
        return JSONResponse(results)

    routes = [
        Route("/services/oauth2/token", token, methods=["POST"]),
        *admin_routes(calls, faults),
        Route("/_sandbox/limits", service.admin_limits, methods=["POST"]),
        Route("/_sandbox/sessions", service.admin_sessions, methods=["DELETE"]),
    ]
    api: list[tuple[str, Handler, list[str]]] = [
        (f"{_ROOT}/query", query, ["GET"]),
        (f"{_ROOT}/queryAll", query, ["GET"]),
        (f"{_ROOT}/query/{{locator}}", query_more, ["GET"]),
        (f"{_ROOT}/queryAll/{{locator}}", query_more, ["GET"]),
        (f"{_ROOT}/sobjects/Opportunity/updated/", updated, ["GET"]),
        (f"{_ROOT}/sobjects/Opportunity/deleted/", deleted, ["GET"]),
        (f"{_ROOT}/sobjects/Opportunity/{{id}}", one_record, ["GET", "PATCH"]),
        (f"{_ROOT}/composite/sobjects", collections, ["PATCH", "POST"]),
    ]
    routes.extend(counted_route(calls, path, serve, handler, methods) for path, handler, methods in api)
    return Starlette(routes=routes)
