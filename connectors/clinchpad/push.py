"""Pure translation of canonical updates into ClinchPad lead writes.

``PUT /leads/:lead_id`` takes ``name``, ``size``, ``user_id`` and ``stage_id`` (the stage move);
``POST /leads`` takes ``name`` (required), ``pipeline_id`` (required), ``size`` and ``user_id``
(https://clinchpad.com/api/docs/leads). There is no batch write: one lead per call.

ClinchPad documents no way to mark a lead won or lost through the API, and no delete is pushed.
A won or lost update is written only when ``clinchpad.yaml`` maps that canonical stage to a stage of
the lead's pipeline (boards that keep "Won" and "Lost" columns); otherwise it is refused as a
permanent error that says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from connectors.clinchpad.convert import SOURCE
from sync_worker.canonical import CanonicalUpdate, LeakFlag, SourceStage, StageKey
from sync_worker.errors import PermanentError
from sync_worker.mappings import Mappings, TargetStage
from sync_worker.mappings.models import normalise_name

__all__ = ["flag_note", "lead_body", "resolve_stage", "wanted_stage"]


def _number(amount: Decimal) -> int | float:
    """``size`` is "numeric only": a JSON number."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def wanted_stage(update: CanonicalUpdate) -> StageKey | None:
    """The canonical stage the update asks for: its stage, else a won/lost status as that stage."""
    if update.status == "deleted":
        raise PermanentError("clinchpad: deleting a lead is not pushed")
    if update.stage is not None:
        return update.stage
    if update.status in ("won", "lost"):
        return StageKey(update.status)
    return None


def _target(
    mappings: Mappings, key: StageKey, pipeline_id: str | None, pipeline_name: str | None
) -> TargetStage:
    found: TargetStage | None = None
    if pipeline_id is None and pipeline_name is None:
        found = mappings.to_target(SOURCE, key)
    for candidate in (pipeline_id, pipeline_name):
        if found is None and candidate is not None:
            found = mappings.to_target(SOURCE, key, pipeline=candidate)
    if found is None or found.stage is None:
        where = f" in pipeline {pipeline_name or pipeline_id!r}" if pipeline_name or pipeline_id else ""
        if key in (StageKey.WON, StageKey.LOST):
            raise PermanentError(
                f"clinchpad: the API documents no way to mark a lead {key.value}, and no stage "
                f"maps to {key.value!r}{where}"
            )
        raise PermanentError(f"clinchpad: canonical stage {key.value!r} has no stage mapping{where}")
    return found


def resolve_stage(
    mappings: Mappings,
    key: StageKey,
    stages: Sequence[SourceStage],
    *,
    pipeline_id: str | None,
) -> SourceStage:
    """The stage of ``pipeline_id`` (None: the mapping's pipeline) that stands for ``key``.

    A mapping entry by id is used as is when the account lists it; one by name is looked up
    (case and spaces ignored) within the pipeline. Never a stage of another pipeline.
    """
    names = {s.pipeline_label for s in stages if s.pipeline_id == pipeline_id}
    pipeline_name = names.pop() if len(names) == 1 else None
    target = _target(mappings, key, pipeline_id, pipeline_name)
    assert target.stage is not None
    if pipeline_id is not None:
        pool = [s for s in stages if s.pipeline_id == pipeline_id]
    elif target.pipeline is not None:
        wanted = normalise_name(target.pipeline)
        pool = [
            s
            for s in stages
            if s.pipeline_id == target.pipeline or normalise_name(s.pipeline_label) == wanted
        ]
    else:
        pool = list(stages)
    if target.match_by == "id":
        matches = [s for s in pool if s.stage_id == target.stage]
    else:
        matches = [s for s in pool if normalise_name(s.stage_label) == normalise_name(target.stage)]
    if len(matches) != 1:
        problem = "no" if not matches else "more than one"
        raise PermanentError(f"clinchpad: {problem} stage {target.stage!r} for {key.value!r} in the account")
    return matches[0]


def lead_body(update: CanonicalUpdate, stage: SourceStage | None) -> dict[str, Any]:
    """The body of ``PUT /leads/:id`` (or, with ``pipeline_id`` added, ``POST /leads``)."""
    body: dict[str, Any] = {}
    if stage is not None:
        body["stage_id"] = stage.stage_id
    if update.title is not None:
        body["name"] = update.title
    if update.amount is not None:
        body["size"] = _number(update.amount)
    return body


def flag_note(flag: LeakFlag) -> str:
    """The plain-text note that records a leak flag on the lead."""
    lines = [f"sync-worker: leak flag ({flag.rule})"]
    if flag.reason:
        lines.append(flag.reason)
    if flag.stage is not None:
        lines.append(f"Stage: {flag.stage.value}")
    if flag.days_in_stage is not None:
        lines.append(f"Days in stage: {flag.days_in_stage}")
    if flag.since is not None:
        lines.append(f"Since: {flag.since.date().isoformat()}")
    return "\n".join(lines)
