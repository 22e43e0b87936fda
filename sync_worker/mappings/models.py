"""The shapes of the mapping files, as pydantic models (also the source of the JSON Schemas).

``canonical.yaml`` loads into :class:`~sync_worker.canonical.StageModel` directly. Every other
``<source>.yaml`` loads into :class:`SourceMapping`:

* ``pipelines``: for systems whose deals sit in pipelines of stages (HubSpot, Pipedrive). A
  pipeline and a stage are each matched by ``id`` (exact string) and/or ``name`` (case- and
  whitespace-insensitive, see :func:`normalise_name`).
* ``statuses``: a record status that decides the canonical stage on its own and wins over the
  stage (Pipedrive deal ``status`` won/lost, LaGrowthMachine lead status).
* ``reply``: the canonical stage a received reply stands for (outreach sources).

``push`` picks the one source stage or status written when a canonical stage is pushed to this
system; it may be left out when only one entry maps to that canonical stage.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sync_worker.canonical import StageKey

__all__ = [
    "PipelineMapping",
    "SourceMapping",
    "StageMapping",
    "StatusMapping",
    "normalise_name",
]


def normalise_name(name: str) -> str:
    """A name as it is compared: case-folded, inner whitespace collapsed, ends stripped."""
    return " ".join(name.split()).casefold()


_ENTRY_CONFIG = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

_PUSH_DESCRIPTION = (
    "true: this entry is the one written when the canonical stage is pushed here; false: never "
    "written; unset: written when it is the only entry mapping to that canonical stage"
)


class StageMapping(BaseModel):
    """One source stage and the canonical stage it stands for."""

    model_config = _ENTRY_CONFIG

    id: str | None = Field(default=None, min_length=1, description="the stage id exactly as the API sends it")
    name: str | None = Field(
        default=None, min_length=1, description="the stage name (case/space-insensitive)"
    )
    canonical: StageKey
    push: bool | None = Field(default=None, description=_PUSH_DESCRIPTION)


class PipelineMapping(BaseModel):
    """One pipeline of a source, matched by id or by name, with its stages."""

    model_config = _ENTRY_CONFIG

    id: str | None = Field(
        default=None, min_length=1, description="the pipeline id exactly as the API sends it"
    )
    name: str | None = Field(
        default=None, min_length=1, description="the pipeline name (case/space-insensitive)"
    )
    stages: tuple[StageMapping, ...] = ()


class StatusMapping(BaseModel):
    """A record status that decides the canonical stage regardless of the stage."""

    model_config = _ENTRY_CONFIG

    status: str = Field(min_length=1, description="the status value (case-insensitive)")
    canonical: StageKey
    push: bool | None = Field(default=None, description=_PUSH_DESCRIPTION)


class SourceMapping(BaseModel):
    """One ``<source>.yaml``: how a system's stages and statuses map onto the canonical stages."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="SourceMapping")

    pipelines: tuple[PipelineMapping, ...] = ()
    statuses: tuple[StatusMapping, ...] = ()
    reply: StageKey | None = Field(default=None, description="canonical stage a received reply stands for")
