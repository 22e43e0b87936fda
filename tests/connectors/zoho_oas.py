"""Zoho's own OpenAPI documents (``zoho/crm-oas`` v8.0, in ``/work/shared/specs/zoho``) as validators.

The documents reference each other by their published raw URLs; those six are served from the
shared copy, and the three they reference that are not in it (``users.json``, ``tags.json``,
``modules.json``: minified users, tags, modules) accept any object. Errata, each from Zoho's own
docs or SDK, are applied on top of the published text, since the guide wins where the two differ:

- ``notifications.json`` types ``channel_id`` as an object; the guide's samples and the SDK
  (``Long``) make it a number or numeric string.
- ``record.json`` types ``Info.previous_page_token``/``next_page_token`` as strings; the Get Records
  guide's sample answer has ``"previous_page_token": null``.
- ``notifications.json`` restricts ``notify_url`` to ``www[.][a-z]{5}zoho[.]com``, a sample
  constraint of the SDK, not a rule of the API.

OpenAPI 3.0 ``nullable: true`` is honoured by allowing null where it is set.
"""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["SPEC_DIR", "validate"]

SPEC_DIR = Path(os.environ.get("SYNC_TEST_SPECS", "/work/shared/specs")) / "zoho"
_BASE = "https://raw.githubusercontent.com/Zohocorp-Pvt-Ltd/crm-oas/refs/heads/main/v8.0/"
_LOCAL = ("record", "common", "coql", "notifications", "pipeline", "mass_update")
_ABSENT = ("users", "tags", "modules")


def _nullable(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _nullable(v) for k, v in node.items()}
        if out.pop("nullable", False) is True:
            return {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    return node


def _errata(name: str, document: dict[str, Any]) -> dict[str, Any]:
    if name == "record":
        info = document["components"]["schemas"]["Info"]["properties"]
        for key in ("previous_page_token", "next_page_token"):
            info[key] = {"type": ["string", "null"]}
    if name == "notifications":
        props = document["components"]["schemas"]["Notification"]["properties"]
        props["channel_id"] = {"type": ["string", "integer"], "pattern": "^[0-9]+$"}
        props["notify_url"] = {"type": "string", "format": "uri"}
    return document


@cache
def _registry() -> Registry:
    if not (SPEC_DIR / "record.json").is_file():
        pytest.skip(f"Zoho OpenAPI documents not found in {SPEC_DIR}")
    resources = []
    for name in _LOCAL:
        raw = json.loads((SPEC_DIR / f"{name}.json").read_text())
        document = _nullable(_errata(name, copy.deepcopy(raw)))
        resources.append((_BASE + f"{name}.json", Resource.from_contents(document, DRAFT202012)))
    for name in _ABSENT:
        permissive = {
            "components": {
                "schemas": {k: {"type": "object"} for k in ("Minified_User", "Tag", "Minified_Module")}
            }
        }
        resources.append((_BASE + f"{name}.json", Resource.from_contents(permissive, DRAFT202012)))
    return Registry().with_resources(resources)


def validate(instance: Any, document: str, pointer: str) -> None:
    """Validate ``instance`` against ``<document>.json#<pointer>`` (e.g. ``/components/schemas/Info``)."""
    schema = {"$ref": f"{_BASE}{document}.json#{pointer}"}
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        raise AssertionError(f"{document}.json#{pointer}: " + "; ".join(e.message[:200] for e in errors[:5]))
