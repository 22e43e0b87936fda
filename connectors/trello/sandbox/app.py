"""The sandbox's HTTP API: the Trello REST routes the connector uses, with auth, limits and faults.

Every ``/1/…`` request needs ``key`` (the app's API key) and ``token`` (a member's token) in the
query; otherwise 401 ``invalid key`` / ``invalid token`` as text (Trello's 401 body format is not
confirmed). Limits: 300 requests per 10 s per key and 100 per 10 s per token, 100 per 900 s on
``/1/members/``; over them, 429 with ``{"error":"API_KEY_LIMIT_EXCEEDED" | "API_TOKEN_LIMIT_EXCEEDED",
"message":"Rate limit exceeded"}``, and more than 200 429s per key in a window make every request
429 until that window ends. Windows are fixed, not rolling (a simplification). Injected faults
(:class:`~sync_worker.sandbox.common.FaultConfig`) answer 5xx as text or a token 429.

Routes: ``GET /1/members/me``, ``/1/members/me/tokens?webhooks=``, ``/1/boards/{id}``,
``/1/boards/{id}/lists?filter=``, ``/1/boards/{id}/cards[/{filter}]?customFieldItems=``,
``/1/boards/{id}/customFields``, ``/1/boards/{id}/actions?filter&since&before&limit`` (0 to 1000,
default 50), ``/1/cards/{id}``, ``/1/batch?urls=`` (≤ 10 GET routes, no ``/1`` prefix, each answer
wrapped as ``{"<status>": body}``); ``PUT /1/cards/{id}`` (fields as query or JSON),
``PUT /1/cards/{id}/idList`` ``{"value"}``, ``PUT /1/card/{id}/customField/{field}/item``
``{"value":{"number":"…"}}``, ``POST /1/cards``, ``DELETE /1/cards/{id}``,
``POST /1/cards/{id}/actions/comments?text=``, ``POST /1/webhooks`` (after a ``HEAD`` to the
callback URL answers 200), ``DELETE /1/webhooks/{id}``; admin routes under ``/_sandbox``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from connectors.trello.sandbox.state import Member, TrelloSandbox, public_webhook
from sync_worker.sandbox.common import CallCounter, SandboxApiError, WindowRateLimiter, admin_routes

__all__ = ["TrelloApp", "create_app"]

_CARD_FIELDS = {"name", "desc", "due", "closed", "idList", "pos"}
_ROUTE_LABELS = [
    (re.compile(p), label)
    for p, label in (
        (r"^/1/(boards|cards|card|webhooks)/[^/]+", r"/1/\1/{id}"),
        (r"/customField/[^/]+/item$", "/customField/{id}/item"),
    )
]


def _label(path: str) -> str:
    for pattern, label in _ROUTE_LABELS:
        path = pattern.sub(label, path)
    return path


def _text_error(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


def _limited(which: str) -> Response:
    error = "API_KEY_LIMIT_EXCEEDED" if which == "key" else "API_TOKEN_LIMIT_EXCEEDED"
    return JSONResponse({"error": error, "message": "Rate limit exceeded"}, status_code=429)


def _bool(value: Any) -> Any:
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    return value


class TrelloApp:
    """Limits, counters and the GET resolver shared by the HTTP routes and ``/1/batch``."""

    def __init__(self, sandbox: TrelloSandbox) -> None:
        self.sandbox = sandbox
        self.calls = CallCounter()
        self.rate_limited = 0
        self.key_limiter = WindowRateLimiter(300, 10.0)
        self.token_limiter = WindowRateLimiter(100, 10.0)
        self.members_limiter = WindowRateLimiter(100, 900.0)
        self.refusals = WindowRateLimiter(200, 10.0)
        self._locked_until: dict[str, float] = {}

    def check_limits(self, key: str, token: str, path: str) -> Response | None:
        if self._locked_until.get(key, 0.0) > time.monotonic():
            self.rate_limited += 1
            return _limited("key")  # over 200 429s in this window: everything is refused
        if not self.key_limiter.hit(key).allowed:
            return self._refused(key, "key")
        if not self.token_limiter.hit(token).allowed:
            return self._refused(key, "token")
        if path.startswith("/1/members/") and not self.members_limiter.hit(token).allowed:
            return self._refused(key, "token")
        return None

    def _refused(self, key: str, which: str) -> Response:
        self.rate_limited += 1
        counted = self.refusals.hit(key)
        if not counted.allowed:
            self._locked_until[key] = time.monotonic() + counted.reset_seconds
        return _limited(which)

    def read(self, path: str, query: Mapping[str, str], member: Member, token: str) -> Any:
        """The body of one GET route (raises :class:`SandboxApiError`)."""
        box = self.sandbox
        board_id = box.board["id"]
        with_fields = query.get("customFieldItems") == "true"
        parts = path.strip("/").split("/")
        if parts[:2] == ["members", "me"] and len(parts) == 2:
            return dict(member)
        if parts == ["members", "me", "tokens"]:
            mine = [(t, e) for t, e in box.tokens.items() if e["idMember"] == member["id"]]
            out = []
            for value, entry in mine:
                row = {
                    "id": entry["id"],
                    "identifier": "sync-worker",
                    "idMember": member["id"],
                    "permissions": [{"idModel": "*", "modelType": "Board", "read": True, "write": True}],
                }
                if query.get("webhooks") == "true":
                    row["webhooks"] = [
                        public_webhook(h) for h in box.webhooks.values() if h["token"] == value
                    ]
                out.append(row)
            return out
        if len(parts) >= 2 and parts[0] == "boards":
            if parts[1] not in (board_id, box.board["shortLink"]):
                raise SandboxApiError(404, "The requested resource was not found.")
            rest = parts[2:]
            if not rest:
                fields = query.get("fields")
                board = dict(box.board)
                return (
                    {k: v for k, v in board.items() if k == "id" or k in fields.split(",")}
                    if fields
                    else board
                )
            if rest == ["lists"]:
                which = query.get("filter", "open")
                lists = [
                    dict(raw)
                    for raw in box.lists.values()
                    if which == "all" or (which == "closed") == bool(raw["closed"])
                ]
                return sorted(lists, key=lambda raw: raw["pos"])
            if rest[0] == "cards" and len(rest) <= 2:
                cards = box.visible_cards(rest[1] if len(rest) == 2 else "visible")
                return [box.card_json(c, custom_fields=with_fields) for c in cards]
            if rest == ["customFields"]:
                return list(box.custom_fields.values())
            if rest == ["actions"]:
                return self._actions(query)
        if len(parts) == 2 and parts[0] == "cards":
            return box.card_json(box.get_card(parts[1]), custom_fields=with_fields)
        raise SandboxApiError(404, "Cannot GET " + path)

    def _actions(self, query: Mapping[str, str]) -> Any:
        raw_limit = query.get("limit", "50")
        if not raw_limit.isdigit() or not 0 <= int(raw_limit) <= 1000:
            raise SandboxApiError(400, "invalid value for limit")
        kinds = query.get("filter")
        types = None if kinds in (None, "all") else frozenset(kinds.split(","))
        return self.sandbox.board_actions(
            types=types, since=query.get("since"), before=query.get("before"), limit=int(raw_limit)
        )

    def batch(self, query: Mapping[str, str], member: Member, token: str) -> Any:
        urls = [u for u in query.get("urls", "").split(",") if u]
        if not urls or len(urls) > 10:
            raise SandboxApiError(400, "Maximum of 10 routes allowed, at least 1 required")
        out: list[dict[str, Any]] = []
        for url in urls:
            path, _, raw_query = url.partition("?")
            if path.startswith(("/1/", "/batch")) or not path.startswith("/"):
                out.append({"400": {"message": "invalid url", "error": "ERROR"}})
                continue
            sub = dict(httpx.QueryParams(raw_query))
            try:
                out.append({"200": self.read(path, sub, member, token)})
            except SandboxApiError as exc:
                out.append({str(exc.status): {"message": exc.message, "error": "ERROR"}})
        return out


async def _fields(request: Request) -> dict[str, Any]:
    fields: dict[str, Any] = {
        k: _bool(v) for k, v in request.query_params.items() if k not in ("key", "token")
    }
    body = await request.body()
    if body:
        try:
            decoded = json.loads(body)
        except ValueError as exc:
            raise SandboxApiError(400, "invalid JSON") from exc
        if not isinstance(decoded, dict):
            raise SandboxApiError(400, "invalid JSON")
        fields.update(decoded)
    return fields


def create_app(sandbox: TrelloSandbox) -> Starlette:
    """The ASGI app serving ``sandbox`` (see the module docstring)."""
    app_state = TrelloApp(sandbox)
    Handler = Callable[[Request, Member, str], Awaitable[Any]]

    def api(path: str, handler: Handler, methods: list[str]) -> Route:
        async def endpoint(request: Request) -> Response:
            response = await _serve(request, handler)
            app_state.calls.record(_label(request.url.path), response.status_code)
            return response

        return Route(path, endpoint, methods=methods)

    async def _serve(request: Request, handler: Handler) -> Response:
        key, token = request.query_params.get("key"), request.query_params.get("token")
        if key != sandbox.api_key:
            return _text_error(401, "invalid key")
        member = sandbox.member_for(token or "")
        if token is None or member is None:
            return _text_error(401, "invalid token")
        refused = app_state.check_limits(key, token, request.url.path)
        if refused is not None:
            return refused
        fault = await sandbox.faults.apply(request)
        if fault == "error":
            status = sandbox.faults.pick([500, 502, 503])
            return _text_error(status, "Internal Server Error")
        if fault == "429":
            app_state.rate_limited += 1
            return _limited("token")
        try:
            result = await handler(request, member, token)
        except SandboxApiError as exc:
            return _text_error(exc.status, exc.message)
        return result if isinstance(result, Response) else JSONResponse(result)

    async def get_any(request: Request, member: Member, token: str) -> Any:
        path = request.url.path.removeprefix("/1")
        query = dict(request.query_params)
        if path == "/batch":
            return app_state.batch(query, member, token)
        return app_state.read(path, query, member, token)

    async def put_card(request: Request, member: Member, token: str) -> Any:
        fields = await _fields(request)
        unknown = sorted(set(fields) - _CARD_FIELDS)
        if unknown:
            raise SandboxApiError(400, f"invalid key: {unknown[0]}")
        card = sandbox.update_card(member, request.path_params["id"], fields)
        return sandbox.card_json(card, custom_fields=False)

    async def put_id_list(request: Request, member: Member, token: str) -> Any:
        fields = await _fields(request)
        card = sandbox.update_card(member, request.path_params["id"], {"idList": fields.get("value")})
        return sandbox.card_json(card, custom_fields=False)

    async def put_item(request: Request, member: Member, token: str) -> Any:
        fields = await _fields(request)
        value = fields.get("value")
        number = value.get("number") if isinstance(value, dict) else None
        if value not in ("", None) and not isinstance(number, str):
            raise SandboxApiError(400, "Invalid custom field item value.")
        return sandbox.set_number(member, request.path_params["id"], request.path_params["field"], number)

    async def post_card(request: Request, member: Member, token: str) -> Any:
        fields = await _fields(request)
        card = sandbox.create_card(member, fields)
        return sandbox.card_json(card, custom_fields=False)

    async def delete_card(request: Request, member: Member, token: str) -> Any:
        sandbox.delete_card(member, request.path_params["id"])
        return {"limits": {}}

    async def post_comment(request: Request, member: Member, token: str) -> Any:
        text = (await _fields(request)).get("text")
        if not isinstance(text, str) or not text:
            raise SandboxApiError(400, "invalid value for text")
        return sandbox.comment(member, request.path_params["id"], text)

    async def post_webhook(request: Request, member: Member, token: str) -> Any:
        fields = await _fields(request)
        callback, model = fields.get("callbackURL"), fields.get("idModel")
        if not isinstance(callback, str) or not isinstance(model, str):
            raise SandboxApiError(400, "invalid value for callbackURL or idModel")
        async with httpx.AsyncClient(timeout=5.0) as client:
            try:
                status = (await client.head(callback)).status_code
            except httpx.HTTPError:
                status = 0
        if status != 200:
            raise SandboxApiError(400, f"URL ({callback}) did not return 200 status code, got {status}")
        return sandbox.add_webhook(
            token,
            callback,
            model,
            str(fields.get("description") or ""),
            fields.get("active", True) is not False,
        )

    async def delete_webhook(request: Request, member: Member, token: str) -> Any:
        hook = sandbox.webhooks.get(request.path_params["id"])
        if hook is None or hook["token"] != token:
            raise SandboxApiError(404, "The requested resource was not found.")
        del sandbox.webhooks[hook["id"]]
        return {"_value": None}

    async def admin_move(request: Request) -> Response:
        return JSONResponse({"card": simulate(sandbox)})

    routes = [
        api("/1/cards/{id}", put_card, ["PUT"]),
        api("/1/cards/{id}", delete_card, ["DELETE"]),
        api("/1/cards/{id}/idList", put_id_list, ["PUT"]),
        api("/1/card/{id}/customField/{field}/item", put_item, ["PUT"]),
        api("/1/cards", post_card, ["POST"]),
        api("/1/cards/{id}/actions/comments", post_comment, ["POST"]),
        api("/1/webhooks", post_webhook, ["POST"]),
        api("/1/webhooks/{id}", delete_webhook, ["DELETE"]),
        api("/1/{rest:path}", get_any, ["GET"]),
        Route("/_sandbox/move", admin_move, methods=["POST"]),
        *admin_routes(app_state.calls, sandbox.faults),
    ]
    app = Starlette(routes=routes)
    app.state.trello = app_state
    return app


def simulate(sandbox: TrelloSandbox) -> str:
    """A person moves the oldest-moved open card to the next open list, as Trello's UI would."""
    person = next(m for m in sandbox.members.values() if m["username"] != "sync-worker")
    lists = sorted((raw for raw in sandbox.lists.values() if not raw["closed"]), key=lambda r: r["pos"])
    cards = sorted(
        (c for c in sandbox.cards.values() if not c["closed"]), key=lambda c: (c["dateLastActivity"], c["id"])
    )
    if not cards or len(lists) < 2:
        raise SandboxApiError(409, "nothing to move")
    card = cards[0]
    index = (
        next(i for i, raw in enumerate(lists) if raw["id"] == card["idList"])
        if any(raw["id"] == card["idList"] for raw in lists)
        else -1
    )
    target = lists[(index + 1) % len(lists)]
    sandbox.update_card(person, card["id"], {"idList": target["id"]})
    return str(card["id"])
