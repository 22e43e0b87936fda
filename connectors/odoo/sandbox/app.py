"""The sandbox's HTTP face: JSON-2 (Odoo 19+), JSON-RPC ``/jsonrpc`` (every version), ``/web/version``.

- ``POST /json/2/<model>/<method>``: ``Authorization: bearer <api key>`` (401 ``Invalid apikey``
  otherwise), optional ``X-Odoo-Database`` (404 when it names another database), a JSON object of
  ``ids``, ``context`` and named parameters (422 for an unknown one). Success: 200 with the return
  value; failure: 4xx with ``{"name", "message", "arguments", "context", "debug"}``. Served from
  version 19 on; 404 before.
- ``POST /jsonrpc``: ``common.version``, ``common.authenticate(db, login, key, {})`` (uid or False),
  ``object.execute_kw(db, uid, key, model, method, args, kw)``. Failures are **HTTP 200** with
  ``error: {"code": 200, "message": "Odoo Server Error", "data": {"name", "message", ...}}``.
- ``GET /web/version``: ``{"version_info": [...], "version": "19.0"}`` (from 19; 404 before).
- Faults (:class:`~sync_worker.sandbox.common.Faults`): 500/502/503 or 429 with ``Retry-After``.

https://www.odoo.com/documentation/19.0/developer/reference/external_api.html and
https://www.odoo.com/documentation/18.0/developer/reference/external_api.html
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.odoo.sandbox.state import Env, OdooError, OdooState
from sync_worker.sandbox.common import CallCounter, Faults, Handler, admin_routes, counted_route

__all__ = ["OdooAccess", "create_app"]

_RESERVED = frozenset({"ids", "context"})


class OdooAccess:
    """Who may call: API keys by user id, logins by user id; the database name; the version."""

    def __init__(
        self, *, keys: Mapping[str, int], logins: Mapping[str, int], database: str, version: int
    ) -> None:
        self._keys = dict(keys)
        self._logins = dict(logins)
        self.database = database
        self.version = version

    def __repr__(self) -> str:
        return f"OdooAccess(database={self.database!r}, version={self.version}, keys=<{len(self._keys)}>)"

    def uid_for_key(self, key: Any) -> int | None:
        return self._keys.get(key) if isinstance(key, str) else None

    def authenticate(self, database: Any, login: Any, key: Any) -> int | None:
        uid = self._logins.get(login) if isinstance(login, str) else None
        return uid if database == self.database and uid is not None and self.uid_for_key(key) == uid else None

    @property
    def version_info(self) -> list[Any]:
        return [self.version, 0, 0, "final", 0, ""]


def _json2_error(exc: OdooError) -> JSONResponse:
    body = {
        "name": exc.name,
        "message": exc.message,
        "arguments": [exc.message, exc.status],
        "context": {},
        "debug": "",
    }
    return JSONResponse(body, status_code=exc.status)


def _rpc_answer(request_id: Any, result: Any = None, error: OdooError | None = None) -> JSONResponse:
    if error is None:
        return JSONResponse({"jsonrpc": "2.0", "id": request_id, "result": result})
    data = {
        "name": error.name,
        "message": error.message,
        "arguments": [error.message],
        "context": {},
        "debug": f"Traceback (most recent call last):\n{error.name}: {error.message}",
        "exception_type": "internal_error",
    }
    return JSONResponse(
        {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {"code": 200, "message": "Odoo Server Error", "data": data},
        }
    )


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def _object(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (UnicodeDecodeError, ValueError) as exc:
        raise OdooError("werkzeug.exceptions.BadRequest", "The request body is not valid JSON", 400) from exc
    if not isinstance(body, dict):
        raise OdooError("werkzeug.exceptions.BadRequest", "The request body must be a JSON object", 400)
    return body


def create_app(state: OdooState, access: OdooAccess, *, faults: Faults, calls: CallCounter) -> Starlette:
    """The Starlette app serving ``state`` as an Odoo server of ``access.version``."""

    async def serve(request: Request, handler: Handler) -> Response:
        outcome = await faults.apply(request)
        if outcome == "429":
            return JSONResponse(
                {"name": "werkzeug.exceptions.TooManyRequests", "message": "Too Many Requests"},
                status_code=429,
                headers={"Retry-After": "1"},
            )
        if outcome == "error":
            status = faults.pick((500, 502, 503))
            return JSONResponse(
                {"name": "werkzeug.exceptions.InternalServerError", "message": "Internal Server Error"},
                status_code=status,
            )
        return await handler(request)

    def route(path: str, handler: Handler, methods: list[str]) -> Any:
        return counted_route(calls, path, serve, handler, methods)

    def not_found() -> Response:
        return JSONResponse({"name": "werkzeug.exceptions.NotFound", "message": "Not Found"}, status_code=404)

    async def version(request: Request) -> Response:
        if access.version < 19:
            return not_found()
        return JSONResponse({"version_info": access.version_info, "version": f"{access.version}.0"})

    async def json2(request: Request) -> Response:
        if access.version < 19:
            return not_found()
        try:
            scheme, _, key = request.headers.get("authorization", "").partition(" ")
            uid = access.uid_for_key(key.strip()) if scheme.lower() == "bearer" else None
            if uid is None:
                raise OdooError("werkzeug.exceptions.Unauthorized", "Invalid apikey", 401)
            database = request.headers.get("x-odoo-database")
            if database is not None and database != access.database:
                raise OdooError("werkzeug.exceptions.NotFound", f"database {database!r} not found", 404)
            body = await _object(request)
            model, method = request.path_params["model"], request.path_params["method"]
            context = _dict(body.get("context"))
            named = {k: v for k, v in body.items() if k not in _RESERVED}
            ids = body.get("ids")
            args: list[Any] = [] if state.is_model_method(method) else [ids if ids is not None else []]
            result = state.call(Env(uid, context), model, method, args, named)
        except OdooError as exc:
            return _json2_error(exc)
        return JSONResponse(result)

    def _execute_kw(args: list[Any]) -> Any:
        if len(args) < 6:
            raise OdooError(
                "builtins.TypeError", "execute_kw() takes db, uid, password, model, method, args[, kw]"
            )
        database, uid, key, model, method, positional = args[:6]
        kw = args[6] if len(args) > 6 and isinstance(args[6], dict) else {}
        if database != access.database or access.uid_for_key(key) != uid or not isinstance(uid, int):
            raise OdooError("odoo.exceptions.AccessDenied", "Access Denied", 403)
        context = kw.pop("context", None) or {}
        if not isinstance(positional, list):
            raise OdooError("builtins.TypeError", "execute_kw: args must be a list")
        return state.call(Env(uid, context), str(model), str(method), positional, kw)

    services: Mapping[tuple[str, str], Callable[[list[Any]], Any]] = {
        ("common", "version"): lambda a: {
            "server_version": f"{access.version}.0",
            "server_version_info": access.version_info,
            "server_serie": f"{access.version}.0",
            "protocol_version": 1,
        },
        ("common", "authenticate"): lambda a: access.authenticate(*a[:3]) or False if len(a) >= 3 else False,
        ("common", "login"): lambda a: access.authenticate(*a[:3]) or False if len(a) >= 3 else False,
        ("object", "execute_kw"): _execute_kw,
    }

    async def jsonrpc(request: Request) -> Response:
        request_id: Any = None
        try:
            body = await _object(request)
            request_id = body.get("id")
            params = _dict(body.get("params"))
            key = (str(params.get("service")), str(params.get("method")))
            raw_args = params.get("args")
            args: list[Any] = raw_args if isinstance(raw_args, list) else []
            service = services.get(key)
            if service is None:
                raise OdooError("builtins.NameError", f"service method {key[0]}.{key[1]} does not exist")
            return _rpc_answer(request_id, service(list(args)))
        except OdooError as exc:
            return _rpc_answer(request_id, error=exc)

    routes = [
        route("/web/version", version, ["GET"]),
        route("/json/2/{model}/{method}", json2, ["POST"]),
        route("/jsonrpc", jsonrpc, ["POST"]),
        *admin_routes(calls, faults),
    ]
    return Starlette(routes=routes)
