"""What the mappings cover of an account's live pipelines and stages (``sync-worker mappings check``).

Each enabled system's connector lists its stages (:meth:`~sync_worker.connector.Connector.list_stages`);
every live stage is resolved through the mappings exactly as a pulled record would be. A stage
that resolves to nothing is *uncovered*: its deals get no canonical stage and stay out of the
funnel, the forecast and the stall rule. A mapped pipeline or stage that names nothing in the
account is *unused*: usually a typo (``id: defualt``) that ``mappings validate`` cannot see.
Pure: the stages come in as values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sync_worker.canonical import SourceStage, UnmappedStage
from sync_worker.mappings.lookup import Mappings, PipelineIndex
from sync_worker.mappings.models import normalise_name

__all__ = ["Coverage", "check_coverage"]


@dataclass(frozen=True)
class Coverage:
    """One system's live stages against its mapping file."""

    source: str
    stages: int
    uncovered: tuple[SourceStage, ...]
    unused: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.uncovered and not self.unused


def _matches(entry: PipelineIndex, stage: SourceStage) -> bool:
    """As :meth:`~sync_worker.mappings.lookup.SourceIndex.find_pipeline`: by id, else by name."""
    if entry.id is not None and entry.id == stage.pipeline_id:
        return True
    return entry.name is not None and normalise_name(entry.name) == normalise_name(stage.pipeline_label)


def _unused_entries(entry: PipelineIndex, live: Sequence[SourceStage]) -> list[str]:
    inside = [stage for stage in live if _matches(entry, stage)]
    if not inside:
        return [f"pipeline {entry.label}: matches no pipeline of the account"]
    ids = {stage.stage_id for stage in inside}
    names = {normalise_name(stage.stage_label) for stage in inside} | {normalise_name(s) for s in ids}
    found = [
        f"pipeline {entry.label} stage id {key!r}: no such stage" for key in entry.stage_ids if key not in ids
    ]
    found += [
        f"pipeline {entry.label} stage {key!r}: no stage of that name"
        for key in entry.stage_names
        if key not in names and key not in {normalise_name(k) for k in entry.stage_ids}
    ]
    return found


def check_coverage(mappings: Mappings, source: str, live: Sequence[SourceStage]) -> Coverage:
    """Which of ``live`` (the account's stages) the mappings leave uncovered, and which mapping
    entries match nothing in it."""
    uncovered = tuple(
        stage
        for stage in live
        if isinstance(
            mappings.to_canonical(
                source,
                pipeline=stage.pipeline_id,
                stage=stage.stage_id,
                pipeline_name=stage.pipeline_label,
                stage_name=stage.stage_label,
            ),
            UnmappedStage,
        )
    )
    index = mappings.index.get(source)
    unused: list[str] = []
    if index is None:
        unused.append(f"{source}: no mapping file")
    else:
        for entry in index.pipelines:
            unused += _unused_entries(entry, live)
    return Coverage(source=source, stages=len(live), uncovered=uncovered, unused=tuple(unused))
