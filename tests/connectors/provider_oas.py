"""HubSpot's and Pipedrive's published OpenAPI documents (``/work/shared/specs``) as validators.

HubSpot's CRM deals v3 document names the deals object by its type id (``/crm/v3/objects/0-3``);
the connector calls the documented alias ``/crm/v3/objects/deals``, so paths are looked up with
``deals`` read as ``0-3``. Pipedrive's v2 subset has paths relative to ``/api/v2``. Schemas are
validated as JSON Schema with the document's ``components`` beside them, so ``$ref`` resolves.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

__all__ = ["validate_request", "validate_response"]

SPEC_DIR = Path(os.environ.get("SYNC_TEST_SPECS", "/work/shared/specs"))
_DOCUMENTS = {"hubspot": "hubspot/deals.json", "pipedrive": "pipedrive/v2-subset.json"}


@cache
def _document(system: str) -> dict[str, Any]:
    path = SPEC_DIR / _DOCUMENTS[system]
    if not path.exists():
        pytest.skip(f"no published spec at {path}")
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _operation(system: str, path: str, method: str) -> dict[str, Any]:
    document = _document(system)
    if system == "hubspot":
        path = path.replace("/crm/v3/objects/deals", "/crm/v3/objects/0-3")
    else:
        path = path.removeprefix("/api/v2")
    operation: dict[str, Any] = document["paths"][path][method.lower()]
    return operation


def _check(system: str, schema: dict[str, Any], body: Any) -> None:
    rooted = {**schema, "components": _document(system).get("components", {})}
    jsonschema.validate(body, rooted)


def validate_request(system: str, path: str, method: str, body: Any) -> None:
    """Raise unless ``body`` is what the published operation accepts as its JSON request body."""
    operation = _operation(system, path, method)
    _check(system, operation["requestBody"]["content"]["application/json"]["schema"], body)


def validate_response(system: str, path: str, method: str, status: int, body: Any) -> None:
    """Raise unless ``status`` is a documented answer of the operation and ``body`` fits it."""
    responses = _operation(system, path, method)["responses"]
    assert str(status) in responses, f"{method} {path}: {status} is not a documented answer"
    content = responses[str(status)].get("content") or {}
    if "application/json" in content:
        _check(system, content["application/json"]["schema"], body)
    else:
        assert body is None, f"{method} {path}: {status} is documented without a body"
