"""Shared helpers of the Odoo respx tests (not a test module)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import respx

from connectors.odoo import OdooConnector, OdooSettings, from_settings
from sync_worker.mappings import Mappings

__all__ = ["BASE", "FIXTURES", "KEY", "REPO", "body", "build", "fixture", "json2", "rpc_result"]

BASE = "https://acme.odoo.example.com"
FIXTURES = Path(__file__).parent / "fixtures" / "odoo"
REPO = Path(__file__).resolve().parents[2]
KEY = "6578616d706c65206a736f6e20617069206b6579"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def build(router: respx.Router, mappings: Mappings, **settings: Any) -> OdooConnector:
    """A connector on ``router`` (JSON-2 unless ``transport`` says otherwise), without sleeping."""
    values: dict[str, Any] = {"base_url": BASE, "api_key": KEY, "database": "acme", "transport": "json2"}
    values.update(settings)
    return from_settings(
        OdooSettings(**values),
        lambda: mappings,
        transport=httpx.MockTransport(router.handler),
        sleep=lambda _: None,
        max_attempts=2,
    )


def json2(router: respx.Router, model: str, method: str, answer: Any, status: int = 200) -> respx.Route:
    return router.post(f"/json/2/{model}/{method}").mock(return_value=httpx.Response(status, json=answer))


def rpc_result(result: Any) -> httpx.Response:
    return httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": result})
