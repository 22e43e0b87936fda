"""The HubSpot sandbox as a Starlette app: CRM v3 deals, pipelines, properties, OAuth, admin routes.

Follows:
- Deals, list paging (``limit``, ``after``, ``properties``, ``archived``) and batch
  read/create/update/archive (max 100 inputs, 207 multi-status on partial failure); creates accept
  ``associations`` (``to.id`` + ``types`` of HUBSPOT_DEFINED type 3, deal -> contact):
  https://developers.hubspot.com/docs/api-reference/crm-deals-v3/guide
- Contacts and v4 association reads: see :mod:`.contacts_api`.
- Search (``filterGroups``, ``sorts``, ``properties``, ``limit`` up to 200, ``after``, ``total``;
  5 filter groups and 25 filters at most; paging past 10,000 results is a 400):
  https://developers.hubspot.com/docs/api-reference/search/guide
- Pipelines: https://developers.hubspot.com/docs/api-reference/crm-pipelines-v3/guide
- Properties and groups: https://developers.hubspot.com/docs/api-reference/crm-properties-v3/guide
- OAuth token endpoint: https://developers.hubspot.com/docs/api-reference/auth-oauth-v1/guide
- Errors and limits: https://developers.hubspot.com/docs/api-reference/latest/error-handling and
  https://developers.hubspot.com/docs/guides/apps/api-usage/usage-details

Every request outside ``/_sandbox/*`` passes, in order: fault injection, authentication (bearer token),
the per-token rate limit, then the handler; it is counted in ``sandbox.calls`` under its route template
and final status. ``/_sandbox/*`` routes seed data and simulate CRM users; they are neither counted nor
faulted.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_worker.sandbox.common import FaultConfig
from sync_worker.sandbox.hubspot.access import Caller
from sync_worker.sandbox.hubspot.contacts_api import contact_routes
from sync_worker.sandbox.hubspot.state import HubSpotSandbox
from sync_worker.sandbox.hubspot.wire import (
    SEARCH_RESULT_CAP,
    ApiError,
    error_body,
    matches_filter_groups,
    rate_limit_body,
    sort_key,
)

__all__ = ["create_app"]

_BATCH_MAX = 100
_LIST_MAX = 100
_SEARCH_MAX = 200
_MAX_FILTER_GROUPS = 5
_MAX_FILTERS = 25

Handler = Callable[[Request, Caller | None], Awaitable[Response]]


def create_app(sandbox: HubSpotSandbox) -> Starlette:
    """The ASGI app serving ``sandbox``."""
    api = _Api(sandbox)
    admin = _Admin(sandbox)
    routes = [
        Route("/oauth/v1/token", api.wrap("/oauth/v1/token", api.token, auth=False), methods=["POST"]),
        Route("/crm/v3/pipelines/deals", api.wrap("/crm/v3/pipelines/deals", api.pipelines), methods=["GET"]),
        Route(
            "/crm/v3/pipelines/deals/{pipelineId}",
            api.wrap("/crm/v3/pipelines/deals/{pipelineId}", api.pipeline),
            methods=["GET"],
        ),
        Route(
            "/crm/v3/properties/deals/groups",
            api.wrap("/crm/v3/properties/deals/groups", api.groups),
            methods=["GET", "POST"],
        ),
        Route(
            "/crm/v3/properties/deals",
            api.wrap("/crm/v3/properties/deals", api.props),
            methods=["GET", "POST"],
        ),
        Route(
            "/crm/v3/properties/deals/{propertyName}",
            api.wrap("/crm/v3/properties/deals/{propertyName}", api.prop),
            methods=["GET"],
        ),
        Route(
            "/crm/v3/objects/deals/search",
            api.wrap("/crm/v3/objects/deals/search", api.search, search=True),
            methods=["POST"],
        ),
        Route(
            "/crm/v3/objects/deals/batch/{action}",
            api.wrap("/crm/v3/objects/deals/batch/{action}", api.batch),
            methods=["POST"],
        ),
        Route("/crm/v3/objects/deals", api.wrap("/crm/v3/objects/deals", api.deals), methods=["GET", "POST"]),
        Route(
            "/crm/v3/objects/deals/{dealId}",
            api.wrap("/crm/v3/objects/deals/{dealId}", api.deal),
            methods=["GET", "PATCH", "DELETE"],
        ),
        *contact_routes(sandbox, api.wrap, _json),
        Route("/_sandbox/calls", admin.calls, methods=["GET"]),
        Route("/_sandbox/deals", admin.seed, methods=["POST"]),
        Route("/_sandbox/deals/{dealId}", admin.read, methods=["GET"]),
        Route("/_sandbox/deals/{dealId}/user-change", admin.user_change, methods=["POST"]),
        Route("/_sandbox/deals/{dealId}/user-archive", admin.user_archive, methods=["POST"]),
        Route("/_sandbox/faults", admin.faults, methods=["POST"]),
        Route("/_sandbox/oauth/refresh-token", admin.refresh_token, methods=["POST"]),
        Route("/_sandbox/oauth/authorization-code", admin.authorization_code, methods=["POST"]),
        Route("/_sandbox/webhook-target", admin.webhook_target, methods=["POST"]),
    ]
    return Starlette(routes=routes)


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except json.JSONDecodeError as exc:
        message = f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}"
        raise ApiError(400, error_body(message, "VALIDATION_ERROR")) from exc
    if not isinstance(body, dict):
        raise ApiError(400, error_body("Invalid input JSON: expected an object", "VALIDATION_ERROR"))
    return body


def _requested_properties(request: Request) -> list[str] | None:
    values = request.query_params.getlist("properties")
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def _int_param(value: Any, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise ApiError(400, error_body(f"{name} must be an integer", "VALIDATION_ERROR")) from exc


class _Api:
    def __init__(self, sandbox: HubSpotSandbox) -> None:
        self.sandbox = sandbox

    def wrap(
        self, template: str, handler: Handler, *, auth: bool = True, search: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        sandbox = self.sandbox

        async def endpoint(request: Request) -> Response:
            try:
                outcome = await sandbox.faults.apply(request)
                if outcome == "error":
                    status = sandbox.faults.pick((500, 502, 503))
                    raise ApiError(status, error_body("internal error", "INTERNAL_ERROR"))
                if outcome == "429":
                    policy = "SECONDLY" if search else "TEN_SECONDLY_ROLLING"
                    raise ApiError(429, rate_limit_body(policy))
                caller = sandbox.access.authenticate(request.headers.get("authorization")) if auth else None
                headers = sandbox.access.check_rate(caller, search=search) if caller is not None else {}
                response = await handler(request, caller)
                response.headers.update(headers)
            except ApiError as exc:
                response = JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)
            sandbox.calls.record(template, response.status_code)
            return response

        return endpoint

    # -- oauth, pipelines, properties ------------------------------------------------------------------------

    async def token(self, request: Request, caller: Caller | None) -> Response:
        # Form-encoded only, as documented; parsed here so no multipart dependency is needed.
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        return JSONResponse(self.sandbox.access.exchange(form))

    async def pipelines(self, request: Request, caller: Caller | None) -> Response:
        return JSONResponse({"results": self.sandbox.pipelines()})

    async def pipeline(self, request: Request, caller: Caller | None) -> Response:
        pipeline_id = request.path_params["pipelineId"]
        found = self.sandbox.pipeline(pipeline_id)
        if found is None:
            raise ApiError(404, error_body(f"Unable to find pipeline {pipeline_id}", "OBJECT_NOT_FOUND"))
        return JSONResponse(found)

    async def props(self, request: Request, caller: Caller | None) -> Response:
        if request.method == "POST":
            return JSONResponse(self.sandbox.create_property(await _json(request)), status_code=201)
        return JSONResponse({"results": self.sandbox.properties()})

    async def prop(self, request: Request, caller: Caller | None) -> Response:
        name = request.path_params["propertyName"]
        found = next((p for p in self.sandbox.properties() if p["name"] == name), None)
        if found is None:
            raise ApiError(404, error_body(f"Unable to find property {name}", "OBJECT_NOT_FOUND"))
        return JSONResponse(found)

    async def groups(self, request: Request, caller: Caller | None) -> Response:
        if request.method == "POST":
            return JSONResponse(self.sandbox.create_property_group(await _json(request)), status_code=201)
        return JSONResponse({"results": self.sandbox.property_groups()})

    # -- deals -----------------------------------------------------------------------------------------------

    async def deals(self, request: Request, caller: Caller | None) -> Response:
        sandbox = self.sandbox
        if request.method == "POST":
            body = await _json(request)
            props = body.get("properties")
            if not isinstance(props, dict):
                raise ApiError(400, error_body("properties must be an object", "VALIDATION_ERROR"))
            problems = sandbox.contacts.validate_associations(body.get("associations"))
            if problems:
                raise ApiError(400, error_body("; ".join(problems), "VALIDATION_ERROR"))
            source, source_id = sandbox.api_source()
            created = sandbox.create_deal(
                props, source=source, source_id=source_id, contact_ids=_contact_ids(body)
            )
            return JSONResponse(created, status_code=201)
        limit = min(_int_param(request.query_params.get("limit"), "limit", 10), _LIST_MAX)
        after = _int_param(request.query_params.get("after"), "after", 0)
        archived = request.query_params.get("archived", "false").lower() == "true"
        properties = _requested_properties(request)
        ids = [i for i in sandbox.deal_ids(archived=archived) if int(i) >= after]
        results = [w for w in (sandbox.wire(i, properties) for i in ids[:limit]) if w is not None]
        payload: dict[str, Any] = {"results": results}
        if len(ids) > limit:
            next_after = ids[limit]
            link = f"{request.url.path}?after={next_after}&limit={limit}"
            payload["paging"] = {"next": {"after": next_after, "link": link}}
        return JSONResponse(payload)

    async def deal(self, request: Request, caller: Caller | None) -> Response:
        sandbox = self.sandbox
        deal_id = request.path_params["dealId"]
        source, source_id = sandbox.api_source()
        if request.method == "DELETE":
            sandbox.archive_deal(deal_id, source=source, source_id=source_id)
            return Response(status_code=204)
        if request.method == "PATCH":
            body = await _json(request)
            props = body.get("properties")
            if not isinstance(props, dict):
                raise ApiError(400, error_body("properties must be an object", "VALIDATION_ERROR"))
            return JSONResponse(sandbox.update_deal(deal_id, props, source=source, source_id=source_id))
        archived = request.query_params.get("archived", "false").lower() == "true"
        found = sandbox.wire(deal_id, _requested_properties(request))
        if found is None or found["archived"] != archived:
            raise ApiError(404, _object_not_found(deal_id))
        return JSONResponse(found)

    async def search(self, request: Request, caller: Caller | None) -> Response:
        body = await _json(request)
        limit = _int_param(body.get("limit"), "limit", 10)
        if limit > _SEARCH_MAX or limit < 0:
            raise ApiError(
                400, error_body(f"limit must be between 0 and {_SEARCH_MAX}, got {limit}", "VALIDATION_ERROR")
            )
        after = _int_param(body.get("after"), "after", 0)
        if after >= SEARCH_RESULT_CAP:
            raise ApiError(
                400,
                error_body(
                    f"The search API returns at most {SEARCH_RESULT_CAP} results; after={after} is past it.",
                    "VALIDATION_ERROR",
                ),
            )
        groups = body.get("filterGroups") or []
        if len(groups) > _MAX_FILTER_GROUPS or sum(len(g.get("filters", [])) for g in groups) > _MAX_FILTERS:
            raise ApiError(
                400,
                error_body(
                    f"Too many filters: at most {_MAX_FILTER_GROUPS} groups and {_MAX_FILTERS} filters.",
                    "VALIDATION_ERROR",
                ),
            )
        query = str(body.get("query") or "").lower()
        rows = [
            (deal_id, props)
            for deal_id, props in self.sandbox.live_deals()
            if matches_filter_groups(props, groups)
            and (not query or query in props.get("dealname", "").lower())
        ]
        for sort in reversed(body.get("sorts") or []):
            if isinstance(sort, str):
                prop, descending = sort.lstrip("-"), sort.startswith("-")
            else:
                prop, descending = (
                    str(sort.get("propertyName")),
                    str(sort.get("direction", "")).upper() == "DESCENDING",
                )
            rows.sort(key=lambda row, p=prop: sort_key(row[1], p), reverse=descending)  # type: ignore[misc]
        properties = body.get("properties") or None
        page = rows[after : after + limit]
        results = [
            w for w in (self.sandbox.wire(deal_id, properties) for deal_id, _ in page) if w is not None
        ]
        payload: dict[str, Any] = {"total": len(rows), "results": results}
        next_after = after + len(page)
        if next_after < len(rows) and page:
            payload["paging"] = {"next": {"after": str(next_after)}}
        return JSONResponse(payload)

    async def batch(self, request: Request, caller: Caller | None) -> Response:
        action = request.path_params["action"]
        body = await _json(request)
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            raise ApiError(400, error_body("inputs must be an array", "VALIDATION_ERROR"))
        if len(inputs) > _BATCH_MAX:
            raise ApiError(
                400,
                error_body(
                    f"Batch input of {len(inputs)} exceeds the limit of {_BATCH_MAX} inputs.",
                    "VALIDATION_ERROR",
                    context={"limit": [str(_BATCH_MAX)]},
                ),
            )
        started = _now_iso()
        if action == "read":
            return self._batch_read(inputs, body, started)
        if action == "update":
            return self._batch_update(inputs, started)
        if action == "create":
            return self._batch_create(inputs, started)
        if action == "archive":
            source, source_id = self.sandbox.api_source()
            with self.sandbox.batching():
                for item in inputs:
                    self.sandbox.archive_deal(str(item.get("id")), source=source, source_id=source_id)
            return Response(status_code=204)
        raise ApiError(404, error_body(f"Unknown batch action: {action}", "OBJECT_NOT_FOUND"))

    def _batch_read(self, inputs: list[Any], body: dict[str, Any], started: str) -> Response:
        properties = body.get("properties") or None
        archived = bool(body.get("archived", False))
        results, missing = [], []
        for item in inputs:
            deal_id = str(item.get("id"))
            found = self.sandbox.wire(deal_id, properties)
            if found is None or found["archived"] != archived:
                missing.append(deal_id)
            else:
                results.append(found)
        return _batch_response(results, _missing_errors(missing, "get"), started, ok_status=200)

    def _batch_update(self, inputs: list[Any], started: str) -> Response:
        sandbox = self.sandbox
        ids = [str(item.get("id")) for item in inputs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            message = f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique"
            raise ApiError(400, error_body(message, "VALIDATION_ERROR"))
        live, missing = [], []
        for item in inputs:
            deal_id = str(item.get("id"))
            props = item.get("properties")
            if not isinstance(props, dict):
                raise ApiError(400, error_body("every input needs properties", "VALIDATION_ERROR"))
            current = sandbox.deal_properties(deal_id)
            if current is None or sandbox.is_archived(deal_id):
                missing.append(deal_id)
                continue
            problems = sandbox.validate(props, current.get("pipeline"))
            if problems:
                message = "Property values were not valid: " + json.dumps(problems)
                raise ApiError(400, error_body(message, "VALIDATION_ERROR"))
            live.append((deal_id, props))
        source, source_id = sandbox.api_source()
        with sandbox.batching():
            results = [sandbox.update_deal(i, p, source=source, source_id=source_id) for i, p in live]
        return _batch_response(results, _missing_errors(missing, "update"), started, ok_status=200)

    def _batch_create(self, inputs: list[Any], started: str) -> Response:
        sandbox = self.sandbox
        traced = bool(inputs) and all(item.get("objectWriteTraceId") for item in inputs)
        valid, errors = [], []
        for item in inputs:
            props = item.get("properties")
            if not isinstance(props, dict):
                raise ApiError(400, error_body("every input needs properties", "VALIDATION_ERROR"))
            problems = sandbox.validate(props, None)
            wrong = sandbox.contacts.validate_associations(item.get("associations"))
            if not problems and not wrong:
                valid.append((item, props))
                continue
            message = (
                "Property values were not valid: " + json.dumps(problems) if problems else "; ".join(wrong)
            )
            if not traced:
                raise ApiError(400, error_body(message, "VALIDATION_ERROR"))
            errors.append(
                {
                    "status": "error",
                    "category": "VALIDATION_ERROR",
                    "message": message,
                    "context": {"objectWriteTraceId": [str(item["objectWriteTraceId"])]},
                }
            )
        source, source_id = sandbox.api_source()
        results = []
        with sandbox.batching():
            for item, props in valid:
                created = sandbox.create_deal(
                    props, source=source, source_id=source_id, contact_ids=_contact_ids(item)
                )
                if traced:
                    created["objectWriteTraceId"] = str(item["objectWriteTraceId"])
                results.append(created)
        return _batch_response(results, errors, started, ok_status=201)


def _contact_ids(item: dict[str, Any]) -> list[str]:
    """The contact ids of a validated create input's ``associations``."""
    return [str(entry["to"]["id"]) for entry in item.get("associations") or []]


def _object_not_found(deal_id: str) -> dict[str, Any]:
    return error_body(
        "Object not found.  objectId are usually numeric.", "OBJECT_NOT_FOUND", context={"id": [deal_id]}
    )


def _missing_errors(missing: list[str], verb: str) -> list[dict[str, Any]]:
    if not missing:
        return []
    return [
        {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": f"Could not {verb} some DEAL objects, they may be deleted or not exist. "
            "Check that ids are valid.",
            "context": {"ids": missing},
        }
    ]


def _batch_response(
    results: list[dict[str, Any]], errors: list[dict[str, Any]], started: str, *, ok_status: int
) -> Response:
    payload: dict[str, Any] = {"status": "COMPLETE", "results": results}
    if errors:
        payload["numErrors"] = len(errors)
        payload["errors"] = errors
    payload["startedAt"] = started
    payload["completedAt"] = _now_iso()
    return JSONResponse(payload, status_code=207 if errors else ok_status)


class _Admin:
    """``/_sandbox/*``: seeding, simulated CRM users, fault knobs, call counts. Not counted, not faulted."""

    def __init__(self, sandbox: HubSpotSandbox) -> None:
        self.sandbox = sandbox

    async def calls(self, request: Request) -> Response:
        counter = self.sandbox.calls
        return JSONResponse(
            {
                "total": counter.total,
                "by_path": dict(counter.by_path),
                "by_status": {str(k): v for k, v in counter.by_status.items()},
            }
        )

    async def seed(self, request: Request) -> Response:
        body = await request.json()
        deal_id = self.sandbox.put_deal(
            {k: str(v) for k, v in body.get("properties", {}).items()}, deal_id=body.get("id")
        )
        return JSONResponse({"id": deal_id}, status_code=201)

    async def read(self, request: Request) -> Response:
        found = self.sandbox.get_deal(request.path_params["dealId"])
        return JSONResponse(found, status_code=200 if found is not None else 404)

    async def user_change(self, request: Request) -> Response:
        body = await request.json()
        deal_id = request.path_params["dealId"]
        try:
            self.sandbox.simulate_user_change(
                deal_id, body.get("properties", {}), user_id=int(body.get("userId", 9_876_543))
            )
        except ApiError as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        return JSONResponse(self.sandbox.get_deal(deal_id))

    async def user_archive(self, request: Request) -> Response:
        archived = self.sandbox.simulate_user_archive(request.path_params["dealId"])
        return Response(status_code=204 if archived else 404)

    async def faults(self, request: Request) -> Response:
        body = await request.json()
        known = {f.name for f in fields(FaultConfig)}
        unknown = sorted(set(body) - known)
        if unknown:
            return JSONResponse({"error": f"unknown fault knobs: {unknown}"}, status_code=400)
        self.sandbox.faults.config = FaultConfig(**body)
        return JSONResponse({"ok": True})

    async def refresh_token(self, request: Request) -> Response:
        return JSONResponse({"refresh_token": self.sandbox.access.issue_refresh_token()}, status_code=201)

    async def authorization_code(self, request: Request) -> Response:
        return JSONResponse({"code": self.sandbox.access.issue_authorization_code()}, status_code=201)

    async def webhook_target(self, request: Request) -> Response:
        body = await request.json()
        self.sandbox.webhook_url = body.get("url")
        return JSONResponse({"url": self.sandbox.webhook_url})
