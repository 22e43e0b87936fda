"""The two ways of calling an Odoo model method, behind one small interface.

- :class:`Json2Transport` (Odoo 19 and later): ``POST /json/2/<model>/<method>`` with
  ``Authorization: bearer <api key>``, ``X-Odoo-Database`` when a database is named, and a JSON
  object of ``ids``, ``context`` and every other parameter **by name**; the answer is the method's
  return value; errors are 4xx/5xx with ``{"name", "message", ...}`` (or a bare string, in an
  earlier draft of the page), mapped by :class:`~sync_worker.http.ApiClient` (401 auth, 422 invalid
  request). https://www.odoo.com/documentation/19.0/developer/reference/external_api.html
- :class:`JsonRpcTransport` (Odoo 17 and 18; deprecated from 19): ``POST /jsonrpc`` with
  ``{"jsonrpc": "2.0", "method": "call", "params": {"service": "object", "method": "execute_kw",
  "args": [db, uid, key, model, method, args, kw]}}``. ``args`` is ``[ids]`` for record methods and
  empty for model methods, every other parameter goes by name in ``kw`` (``context`` too). The
  answer is ``result``; a failure is **HTTP 200** with ``error`` (``{"code", "message", "data":
  {"name", "message", ...}}``), turned into the project's errors through :data:`RPC_ERRORS`. The uid
  comes from the settings or ``common.authenticate(db, login, key, {})`` (False: refused).
  https://www.odoo.com/documentation/18.0/developer/reference/external_api.html, ``odoo-client-lib``
  ``odoolib/tools.py`` and OdooRPC ``odoorpc/error.py`` (the error object's shape).
- :func:`detect_major`: ``GET /web/version`` (``{"version_info": [19, 0, ...]}``), else JSON-RPC
  ``common.version`` (``server_version_info``).

The API key travels in a header (JSON-2) or a request body (JSON-RPC), never in a URL, a message or
a repr; error messages carry the model, the method and Odoo's own short message only.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Generator, Mapping, Sequence
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from sync_worker.errors import AuthError, PermanentError, SyncWorkerError, TransientError
from sync_worker.http import ApiClient

__all__ = [
    "RPC_ERRORS",
    "BearerAuth",
    "Json2Transport",
    "JsonRpcTransport",
    "OdooTransport",
    "detect_major",
    "jsonrpc_call",
    "rpc_error",
]

# Odoo exception class (``error.data.name``) -> the project's error; anything else is permanent.
RPC_ERRORS: Mapping[str, type[SyncWorkerError]] = {
    "odoo.exceptions.AccessDenied": AuthError,
    "odoo.exceptions.AccessError": AuthError,
    "odoo.http.SessionExpiredException": AuthError,
    "werkzeug.exceptions.Unauthorized": AuthError,
    "werkzeug.exceptions.Forbidden": AuthError,
    "odoo.exceptions.MissingError": PermanentError,
    "odoo.exceptions.UserError": PermanentError,
    "odoo.exceptions.ValidationError": PermanentError,
    "odoo.exceptions.ConcurrencyError": TransientError,
    "psycopg2.errors.SerializationFailure": TransientError,
    "psycopg2.extensions.TransactionRollbackError": TransientError,
    "psycopg2.errors.LockNotAvailable": TransientError,
    "psycopg2.OperationalError": TransientError,
}
_SESSION_EXPIRED_CODE = 100


class OdooTransport(Protocol):
    """Calls one model method; raises the project's errors."""

    name: str

    def call(
        self,
        model: str,
        method: str,
        *,
        ids: Sequence[int] | None = None,
        params: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Any: ...

    def current_uid(self) -> int | None:
        """The id of the user the key belongs to, when the server says."""
        ...

    def close(self) -> None: ...


class BearerAuth(httpx.Auth):
    """``Authorization: bearer <key>`` added at request time; the repr never shows it."""

    def __init__(self, key: SecretStr) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "BearerAuth('********')"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = "bearer " + self._key.get_secret_value()
        yield request


def _short(text: Any) -> str:
    return " ".join(str(text).split())[:300] if text else ""


def rpc_error(error: Any, where: str) -> SyncWorkerError:
    """The project error for a JSON-RPC ``error`` object (see :data:`RPC_ERRORS`)."""
    if not isinstance(error, Mapping):
        return PermanentError(f"{where}: JSON-RPC error that is not an object")
    data = error.get("data") if isinstance(error.get("data"), Mapping) else {}
    assert isinstance(data, Mapping)
    name = str(data.get("name") or "")
    detail = _short(data.get("message") or error.get("message"))
    message = f"{where}: {name or 'error'}" + (f": {detail}" if detail else "")
    kind = RPC_ERRORS.get(name)
    if kind is None and error.get("code") == _SESSION_EXPIRED_CODE:
        kind = AuthError
    kind = kind or PermanentError
    if issubclass(kind, TransientError):
        return kind(message)
    if issubclass(kind, PermanentError):
        return kind(message, status=200)
    return kind(message)


class Json2Transport:
    """The External JSON-2 API (Odoo 19+)."""

    name = "json2"

    def __init__(self, api: ApiClient, *, database: str | None = None) -> None:
        self._api = api
        self._headers = {"X-Odoo-Database": database} if database else {}

    def __repr__(self) -> str:
        return f"Json2Transport({self._api!r})"

    def call(
        self,
        model: str,
        method: str,
        *,
        ids: Sequence[int] | None = None,
        params: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        body: dict[str, Any] = dict(params or {})
        if ids is not None:
            body["ids"] = list(ids)
        if context:
            body["context"] = dict(context)
        path = f"/json/2/{model}/{method}"
        return self._api.request("POST", path, json_body=body, headers=self._headers).data

    def current_uid(self) -> int | None:
        found = self.call("res.users", "context_get")
        uid = found.get("uid") if isinstance(found, Mapping) else None
        return uid if isinstance(uid, int) and not isinstance(uid, bool) else None

    def close(self) -> None:
        self._api.close()


class JsonRpcTransport:
    """``execute_kw`` over ``/jsonrpc`` (Odoo 17 and 18)."""

    name = "jsonrpc"

    def __init__(
        self,
        api: ApiClient,
        *,
        database: str,
        key: SecretStr,
        uid: int | None = None,
        login: str | None = None,
    ) -> None:
        if uid is None and not login:
            raise PermanentError("odoo jsonrpc: set SYNC_ODOO__USER_ID or SYNC_ODOO__LOGIN")
        self._api = api
        self._database = database
        self._key = key
        self._uid = uid
        self._login = login
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"JsonRpcTransport({self._api!r}, database={self._database!r})"

    def _rpc(self, service: str, method: str, args: list[Any], where: str) -> Any:
        return jsonrpc_call(self._api, service, method, args, where, request_id=next(self._ids))

    def current_uid(self) -> int:
        if self._uid is None:
            key = self._key.get_secret_value()
            uid = self._rpc("common", "authenticate", [self._database, self._login, key, {}], "odoo login")
            if not isinstance(uid, int) or isinstance(uid, bool):
                raise AuthError("odoo jsonrpc: the login and API key were refused")
            self._uid = uid
        return self._uid

    def call(
        self,
        model: str,
        method: str,
        *,
        ids: Sequence[int] | None = None,
        params: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Any:
        kw: dict[str, Any] = dict(params or {})
        if context:
            kw["context"] = dict(context)
        args: list[Any] = [list(ids)] if ids is not None else []
        execute = [self._database, self.current_uid(), self._key.get_secret_value(), model, method, args, kw]
        return self._rpc("object", "execute_kw", execute, f"odoo {model}.{method}")

    def close(self) -> None:
        self._api.close()


def jsonrpc_call(
    api: ApiClient, service: str, method: str, args: list[Any], where: str, *, request_id: int = 0
) -> Any:
    """``result`` of one JSON-RPC ``call``; its ``error`` (inside HTTP 200) raised as ours."""
    payload = {
        "jsonrpc": "2.0",
        "method": "call",
        "params": {"service": service, "method": method, "args": args},
        "id": request_id,
    }
    data = api.request("POST", "/jsonrpc", json_body=payload).data
    if not isinstance(data, Mapping):
        raise TransientError(f"{where}: JSON-RPC answer is not an object")
    if data.get("error") is not None:
        raise rpc_error(data["error"], where)
    return data.get("result")


def _major(value: Any) -> int | None:
    match = re.search(r"\d+", str(value)) if value is not None else None
    return int(match.group()) if match else None


def detect_major(api: ApiClient) -> int:
    """Odoo's major version: ``GET /web/version``, else JSON-RPC ``common.version``."""
    try:
        found = api.request("GET", "/web/version").data
        info = found.get("version_info") if isinstance(found, Mapping) else None
        if isinstance(info, list) and info and (major := _major(info[0])) is not None:
            return major
    except PermanentError as exc:
        if isinstance(exc, AuthError):
            raise
    result = jsonrpc_call(api, "common", "version", [], "odoo common.version")
    info = result.get("server_version_info") if isinstance(result, Mapping) else None
    major = _major(info[0]) if isinstance(info, list) and info else None
    if major is None:
        raise PermanentError("odoo: the server did not say its version; set SYNC_ODOO__VERSION")
    return major
