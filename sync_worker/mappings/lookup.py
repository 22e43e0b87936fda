"""The loaded mappings as lookup tables: source stage -> canonical, canonical -> target stage.

Built once by :mod:`sync_worker.mappings.loader` and never changed afterwards, so one
:class:`Mappings` is shared between threads without locks. Pure lookups: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sync_worker.canonical import StageKey, StageModel, UnmappedStage
from sync_worker.errors import ConfigError
from sync_worker.mappings.models import normalise_name
from sync_worker.mappings.routes import Routes

__all__ = ["Mappings", "MappingsSource", "PipelineIndex", "SourceIndex", "TargetStage", "mappings_source"]


@dataclass(frozen=True)
class TargetStage:
    """What to write into a target so that it shows a canonical stage.

    ``match_by`` says how ``stage`` is to be read: ``"id"`` is the stage id as the API takes it,
    ``"name"`` a stage name the connector resolves (case/space-insensitive) in the account's stage
    list. ``pipeline`` is the pipeline's id when the mapping names one, else its name. For a
    status (Pipedrive won/lost, a LaGrowthMachine lead status) ``stage`` is None and ``match_by``
    is ``"id"``: the status value is written as is.
    """

    pipeline: str | None
    stage: str | None
    status: str | None
    match_by: Literal["id", "name"]


@dataclass(frozen=True)
class PipelineIndex:
    """One mapped pipeline: stage ids and normalised stage names to canonical keys, push table."""

    id: str | None
    name: str | None
    stage_ids: Mapping[str, StageKey]
    stage_names: Mapping[str, StageKey]
    push: Mapping[StageKey, TargetStage]
    rows: tuple[tuple[str, StageKey], ...]

    @property
    def label(self) -> str:
        return _label(self.id, self.name)

    def stage_key(self, stage: str | None, stage_name: str | None) -> StageKey | None:
        """The canonical key of a stage given by id, or by name (``stage_name``, then ``stage``)."""
        if stage is not None and stage in self.stage_ids:
            return self.stage_ids[stage]
        for candidate in (stage_name, stage):
            if candidate is not None:
                key = self.stage_names.get(normalise_name(candidate))
                if key is not None:
                    return key
        return None


@dataclass(frozen=True)
class SourceIndex:
    """Everything mapped for one source (one ``<source>.yaml``)."""

    name: str
    pipelines: tuple[PipelineIndex, ...]
    statuses: Mapping[str, StageKey]
    status_push: Mapping[StageKey, TargetStage]
    status_rows: tuple[tuple[str, StageKey], ...]
    reply: StageKey | None

    def find_pipeline(self, pipeline: str | None, pipeline_name: str | None) -> PipelineIndex | None:
        """The pipeline whose id is ``pipeline``, else whose name is ``pipeline_name`` or ``pipeline``."""
        if pipeline is not None:
            for entry in self.pipelines:
                if entry.id == pipeline:
                    return entry
        names = {normalise_name(n) for n in (pipeline_name, pipeline) if n is not None}
        for entry in self.pipelines:
            if entry.name is not None and normalise_name(entry.name) in names:
                return entry
        return None


def _label(id_: str | None, name: str | None) -> str:
    if id_ is not None and name is not None:
        return f"{name} ({id_})"
    return name or id_ or ""


@dataclass(frozen=True)
class Mappings:
    """One complete, validated set of mappings. Frozen; share it freely between threads."""

    model: StageModel
    files: tuple[Path, ...]
    index: Mapping[str, SourceIndex] = field(repr=False)
    routes: Routes = field(default_factory=Routes, repr=False)
    """What flows where (``routes.yaml``); empty when the directory has none."""

    def sources(self) -> tuple[str, ...]:
        """The names of the mapped sources (file stems), sorted."""
        return tuple(sorted(self.index))

    def _source(self, name: str) -> SourceIndex:
        try:
            return self.index[name]
        except KeyError:
            raise ConfigError(
                f"no stage mapping for {name!r}: add {name}.yaml next to canonical.yaml "
                f"(mapped: {', '.join(self.sources()) or 'none'})"
            ) from None

    def to_canonical(
        self,
        source: str,
        *,
        pipeline: str | None,
        stage: str | None,
        pipeline_name: str | None = None,
        stage_name: str | None = None,
        status: str | None = None,
    ) -> StageKey | UnmappedStage:
        """The canonical stage of a source record, or :class:`UnmappedStage` (never a guess).

        A mapped ``status`` wins over the stage (Pipedrive won/lost). With pipelines the stage is
        matched by id or normalised name within the pipeline matched by id or name; with no
        pipeline given, across all pipelines when that is unambiguous. A source without pipelines
        (LaGrowthMachine) reads ``stage`` as its lead status.
        """
        unmapped = UnmappedStage(
            source,
            pipeline if pipeline is not None else pipeline_name,
            stage if stage is not None else stage_name,
            pipeline_name=pipeline_name,
            stage_name=stage_name,
        )
        src = self.index.get(source)
        if src is None:
            return unmapped
        if status is not None:
            key = src.statuses.get(normalise_name(status))
            if key is not None:
                return key
        if not src.pipelines:
            for candidate in (stage, stage_name):
                if candidate is not None:
                    key = src.statuses.get(normalise_name(candidate))
                    if key is not None:
                        return key
            return unmapped
        if pipeline is None and pipeline_name is None:
            candidates = src.pipelines
        else:
            found = src.find_pipeline(pipeline, pipeline_name)
            candidates = (found,) if found is not None else ()
        keys = {key for p in candidates if (key := p.stage_key(stage, stage_name)) is not None}
        if len(keys) == 1:
            return keys.pop()
        return unmapped

    def reply_stage(self, source: str) -> StageKey | None:
        """The canonical stage a reply received in ``source`` stands for (None: not mapped)."""
        return self._source(source).reply

    def to_target(self, target: str, key: StageKey, *, pipeline: str | None = None) -> TargetStage | None:
        """The one stage or status that stands for ``key`` in ``target``; None if it has none.

        ``pipeline`` (id or name) picks the pipeline the deal is in; None means the first pipeline
        of the mapping file. In a pipeline the mapping does not know only statuses can be written.
        Raises :class:`~sync_worker.errors.ConfigError` when ``target`` has no mapping file.
        """
        src = self._source(target)
        wanted = StageKey(key)
        if not src.pipelines:
            return src.status_push.get(wanted)
        chosen = src.pipelines[0] if pipeline is None else src.find_pipeline(pipeline, None)
        if chosen is None:
            return src.status_push.get(wanted)
        return chosen.push.get(wanted)

    def unrepresentable(self, target: str) -> tuple[StageKey, ...]:
        """Canonical stages (in model order) that ``to_target(target, key)`` cannot write."""
        return tuple(stage.key for stage in self.model.ordered() if self.to_target(target, stage.key) is None)

    def table(self) -> list[tuple[str, str, str, str]]:
        """Rows ``(source, pipeline, source stage, canonical)`` for ``mappings show``."""
        rows: list[tuple[str, str, str, str]] = []
        for name in self.sources():
            src = self.index[name]
            for pipeline in src.pipelines:
                rows.extend((name, pipeline.label, label, key.value) for label, key in pipeline.rows)
            rows.extend((name, "(status)", label, key.value) for label, key in src.status_rows)
            if src.reply is not None:
                rows.append((name, "(reply)", "reply received", src.reply.value))
        return rows


MappingsSource = Callable[[], Mappings]
"""A callable returning the mappings in force now (``MappingsHolder.current`` bound)."""


def mappings_source(mappings: Mappings | Callable[[], Mappings]) -> Callable[[], Mappings]:
    """``mappings`` as a callable: connectors translate with the current mappings, reloads included."""
    if isinstance(mappings, Mappings):
        fixed = mappings
        return lambda: fixed
    return mappings
