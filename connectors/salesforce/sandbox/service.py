"""The sandbox org's API behaviour behind the routes: sessions, usage, queries, writes, deletions.

See :mod:`connectors.salesforce.sandbox.app` for the documentation followed. Tokens: the
refresh-token grant (client id, optional secret, refresh token) and the JWT bearer grant (an RS256
assertion whose ``iss`` is the client id, ``sub`` the username and ``aud`` a login URL, checked
with the public half of :attr:`Service.jwt_key`) issue a session; sessions can be expired at once
(``DELETE /_sandbox/sessions``) to exercise the 401 ``INVALID_SESSION_ID`` refresh.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.salesforce.auth import JWT_GRANT
from connectors.salesforce.sandbox.messages import OutboundSender
from connectors.salesforce.sandbox.org import OPPORTUNITY_FIELDS, STAGE_OBJECT_FIELDS, ItemError, Org, sf_time
from connectors.salesforce.sandbox.soql import SoqlError, parse_query, run_query

__all__ = ["ApiError", "Service"]

_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_BATCH = re.compile(r"batchSize=(\d+)")


class ApiError(Exception):
    """A refused API request: HTTP ``status`` and one ``errorCode``."""

    def __init__(self, status: int, code: str, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields


class Service:
    """One org's API state. Thread-safe (the org's lock guards records and sessions)."""

    def __init__(self, org: Org, sender: OutboundSender, *, base_url: str, allocation: int = 100_000) -> None:
        self.org = org
        self.sender = sender
        self.base_url = base_url
        self.client_id = "3MVG9sandbox.consumer.key"
        self.client_secret = secrets.token_hex(16)
        self.refresh_token = f"5Aep861{secrets.token_urlsafe(24)}"
        self.username = "integration@sandbox.example.com"
        self.jwt_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.used = 0
        self.allocation = allocation
        self.limited = 0
        self._sessions: dict[str, str] = {}
        self._locators: dict[str, tuple[list[dict[str, Any]], int]] = {}
        self._locator_ids = itertools.count(1)
        self._lock = threading.Lock()

    def private_key_pem(self) -> str:
        return self.jwt_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    # -- sessions and usage ---------------------------------------------------------------------

    @staticmethod
    def version_ok(version: str) -> bool:
        return re.fullmatch(r"\d{2}\.0", version) is not None and 20 <= int(version[:2])

    def user_for(self, authorization: str) -> str | None:
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            return self._sessions.get(token) if scheme.lower() == "bearer" else None

    def count_call(self, *, limited: bool) -> int | None:
        """Count one API call; None when it is refused for the allocation (or an injected limit)."""
        with self._lock:
            if limited or self.used >= self.allocation:
                self.limited += 1
                return None
            self.used += 1
            return self.used

    def usage_header(self) -> str:
        with self._lock:
            return f"api-usage={self.used}/{self.allocation}"

    def _session(self, user: str) -> dict[str, Any]:
        token = f"{self.org.org_id[:15]}!{secrets.token_urlsafe(32)}"
        with self._lock:
            self._sessions[token] = user
        issued = str(int(time.time() * 1000))
        identity = f"{self.base_url}/id/{self.org.org_id}/{user}"
        signature = hmac.new(
            self.client_secret.encode(), (identity + issued).encode(), hashlib.sha256
        ).digest()
        return {
            "access_token": token,
            "instance_url": self.base_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued,
            "signature": base64.b64encode(signature).decode(),
        }

    def grant(self, form: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint's answer to ``form``."""
        if form.get("client_id", self.client_id) != self.client_id:
            return 400, {"error": "invalid_client_id", "error_description": "client identifier invalid"}
        kind = form.get("grant_type")
        if kind == "refresh_token":
            secret = form.get("client_secret")
            if secret is not None and not hmac.compare_digest(secret, self.client_secret):
                return 400, {"error": "invalid_client", "error_description": "invalid client credentials"}
            if not hmac.compare_digest(form.get("refresh_token", ""), self.refresh_token):
                return 400, {"error": "invalid_grant", "error_description": "expired access/refresh token"}
            return 200, {**self._session(self.org.integration_user), "scope": "api refresh_token"}
        if kind == JWT_GRANT:
            try:
                claims = jwt.decode(
                    form.get("assertion", ""),
                    self.jwt_key.public_key(),
                    algorithms=["RS256"],
                    audience=[self.base_url, "https://login.salesforce.com", "https://test.salesforce.com"],
                    # exp is checked against the org's own clock, below.
                    options={"require": ["exp", "iss", "sub", "aud"], "verify_exp": False},
                )
            except jwt.PyJWTError:
                return 400, {"error": "invalid_grant", "error_description": "invalid assertion"}
            if not isinstance(claims.get("exp"), int) or claims["exp"] < self.org.now().timestamp():
                return 400, {"error": "invalid_grant", "error_description": "expired authorization code"}
            if claims.get("iss") != self.client_id or claims.get("sub") != self.username:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "user hasn't approved this consumer",
                }
            return 200, {**self._session(self.org.integration_user), "scope": "api"}
        return 400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"}

    def expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    # -- reads ----------------------------------------------------------------------------------

    @staticmethod
    def batch_size(options: str) -> int:
        match = _BATCH.search(options)
        return 2000 if match is None else min(2000, max(200, int(match.group(1))))

    def _page(
        self, locator: str, rows: list[dict[str, Any]], offset: int, batch: int, version: str
    ) -> dict[str, Any]:
        chunk = rows[offset : offset + batch]
        done = offset + batch >= len(rows)
        page: dict[str, Any] = {"totalSize": len(rows), "done": done, "records": chunk}
        if not done:
            with self._lock:
                self._locators[locator] = (rows, batch)
            page["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{offset + batch}"
        return page

    def query(self, soql: str, *, include_deleted: bool, batch: int, version: str) -> dict[str, Any]:
        try:
            parsed = parse_query(soql)
            with self.org.lock:
                if parsed.object == "Opportunity":
                    source = [
                        self.org.view(o)
                        for o in self.org.opportunities.values()
                        if include_deleted or not o["IsDeleted"]
                    ]
                    known = OPPORTUNITY_FIELDS
                elif parsed.object == "OpportunityStage":
                    source, known = list(self.org.stages.values()), STAGE_OBJECT_FIELDS
                else:
                    raise SoqlError("INVALID_TYPE", f"sObject type '{parsed.object}' is not supported.")
                rows = run_query(parsed, source, known)
        except SoqlError as exc:
            raise ApiError(400, exc.code, exc.message) from exc
        kind = parsed.object
        for row in rows:
            row["attributes"] = {
                "type": kind,
                "url": f"/services/data/v{version}/sobjects/{kind}/{row.get('Id')}",
            }
        locator = f"01gSB{next(self._locator_ids):010d}"
        return self._page(locator, rows, 0, batch, version)

    def query_more(self, locator_path: str, *, version: str) -> dict[str, Any]:
        locator, _, offset = locator_path.rpartition("-")
        with self._lock:
            held = self._locators.get(locator)
        if held is None or not offset.isdigit():
            raise ApiError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(locator, held[0], int(offset), held[1], version)

    def updated(self, start: datetime, end: datetime) -> dict[str, Any]:
        latest = min(end, self._minute_now())
        return {"ids": self.org.changed_between(start, latest), "latestDateCovered": sf_time(latest)}

    def deleted(self, start: datetime, end: datetime) -> dict[str, Any]:
        latest = min(end, self._minute_now())
        with self.org.lock:
            records = [
                {"id": record_id, "deletedDate": sf_time(at)}
                for record_id, at in self.org.delete_log
                if start <= at < latest
            ]
            earliest = self.org.log_starts.replace(second=0, microsecond=0)
        return {
            "deletedRecords": records,
            "earliestDateAvailable": sf_time(earliest),
            "latestDateCovered": sf_time(latest),
        }

    def _minute_now(self) -> datetime:
        return self.org.now().replace(second=0, microsecond=0)

    def get_one(self, record_id: str) -> dict[str, Any]:
        with self.org.lock:
            opp = self.org.opportunities.get(record_id)
            if opp is None or opp["IsDeleted"]:
                raise ApiError(404, "NOT_FOUND", "The requested resource does not exist")
            return self.org.view(opp)

    # -- writes ---------------------------------------------------------------------------------

    def _target(self, record: Mapping[str, Any]) -> tuple[dict[str, Any] | None, ItemError | None]:
        record_id = record.get("id") or record.get("Id")
        if not isinstance(record_id, str):
            return None, ItemError("MISSING_ARGUMENT", "Id not specified in an update call", ("Id",))
        if not _ID.match(record_id) or not record_id.startswith("006"):
            return None, ItemError(
                "MALFORMED_ID", f"Opportunity ID: id value of incorrect type: {record_id}", ("Id",)
            )
        opp = self.org.opportunities.get(record_id)
        if opp is None:
            return None, ItemError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        if opp["IsDeleted"]:
            return None, ItemError("ENTITY_IS_DELETED", "entity is deleted")
        return opp, None

    def patch_one(self, record_id: str, fields: Any, user: str) -> None:
        with self.org.lock:
            opp, error = self._target({"id": record_id})
            if error is None and not isinstance(fields, dict):
                error = ItemError("JSON_PARSER_ERROR", "the body must be an object")
            if error is None:
                error = self.org.check_fields(fields, create=False)
            if error is not None or opp is None:
                status = (
                    404 if error is not None and error.status_code == "INVALID_CROSS_REFERENCE_KEY" else 400
                )
                assert error is not None
                raise ApiError(status, error.status_code, error.message, error.fields)
            self.org.apply(opp, fields, user)
            changed = [dict(opp)]
        self.sender.notify(changed)

    def write_collection(
        self, records: Sequence[Any], *, all_or_none: bool, create: bool, user: str
    ) -> list[dict[str, Any]]:
        """``composite/sobjects``: results in request order; all rolled back on a failure with
        ``allOrNone``."""
        if len(records) > 200:
            raise ApiError(
                400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records"
            )
        with self.org.lock:
            planned: list[tuple[dict[str, Any] | None, dict[str, Any], ItemError | None]] = []
            for record in records:
                if (
                    not isinstance(record, dict)
                    or (record.get("attributes") or {}).get("type") != "Opportunity"
                ):
                    planned.append((None, {}, ItemError("INVALID_TYPE", "Must send a concrete entity type.")))
                    continue
                fields = {k: v for k, v in record.items() if k not in ("attributes", "id", "Id")}
                target, error = (None, None) if create else self._target(record)
                if create and ("id" in record or "Id" in record):
                    error = ItemError("INVALID_FIELD", "cannot specify Id in an insert call", ("Id",))
                planned.append((target, fields, error or self.org.check_fields(fields, create=create)))
            failed = any(error is not None for _, _, error in planned)
            results: list[dict[str, Any]] = []
            changed: list[dict[str, Any]] = []
            for target, fields, error in planned:
                if error is not None:
                    results.append({"success": False, "errors": [error.as_json()]})
                elif failed and all_or_none:
                    rolled = ItemError(
                        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "Record rolled back because not all records were valid and the request was using "
                        "AllOrNone header",
                    )
                    results.append({"success": False, "errors": [rolled.as_json()]})
                else:
                    if target is None:
                        target = self.org.create(fields, user)
                    else:
                        self.org.apply(target, fields, user)
                    changed.append(dict(target))
                    results.append({"id": target["Id"], "success": True, "errors": []})
        self.sender.notify(changed)
        return results

    # -- admin ----------------------------------------------------------------------------------

    async def admin_limits(self, request: Request) -> Response:
        """``POST /_sandbox/limits {"used": N, "allocation": M}``: set the org's API usage."""
        body = await request.json()
        with self._lock:
            self.used = int(body.get("used", self.used))
            self.allocation = int(body.get("allocation", self.allocation))
        return JSONResponse({"used": self.used, "allocation": self.allocation})

    async def admin_sessions(self, request: Request) -> Response:
        """``DELETE /_sandbox/sessions``: every session expires (the next call is a 401)."""
        self.expire_sessions()
        return Response(status_code=204)
