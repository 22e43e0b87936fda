"""JSON Schemas for the mapping files, generated from the pydantic models.

Editors that speak the YAML language server pick them up from the first line of each file
(``# yaml-language-server: $schema=./schema/<kind>.schema.json``). The shipped copies in
``mappings/schema/`` must equal :func:`schema_documents`; :func:`write_schemas` regenerates them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sync_worker.canonical import StageModel
from sync_worker.mappings.models import SourceMapping
from sync_worker.mappings.routes import RoutesFile

__all__ = ["SCHEMA_FILES", "render_schema", "schema_documents", "write_schemas"]

_DIALECT = "https://json-schema.org/draft/2020-12/schema"

SCHEMA_FILES: dict[str, str] = {
    "canonical.schema.json": "The canonical stage model (canonical.yaml)",
    "source-mapping.schema.json": "One source's stage mapping (hubspot.yaml, pipedrive.yaml, ...)",
    "routes.schema.json": "What flows from which source to which target, and how (routes.yaml)",
}


def schema_documents() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema document, for every kind of mapping file."""
    models: dict[str, type[BaseModel]] = {
        "canonical.schema.json": StageModel,
        "source-mapping.schema.json": SourceMapping,
        "routes.schema.json": RoutesFile,
    }
    documents: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        body = model.model_json_schema(mode="validation")
        documents[name] = {"$schema": _DIALECT, **body, "description": SCHEMA_FILES[name]}
    return documents


def render_schema(document: dict[str, Any]) -> str:
    """The exact text written to disk (stable key order, trailing newline)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    """Write every schema into ``directory`` (created if needed); return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in schema_documents().items():
        path = directory / name
        path.write_text(render_schema(document), encoding="utf-8")
        written.append(path)
    return written
