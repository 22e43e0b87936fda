"""Read and validate a mappings directory; every problem of every file is reported at once.

A directory holds ``canonical.yaml`` (the stage model) and one ``<source>.yaml`` per system
and optionally ``routes.yaml`` (what flows where, see :mod:`sync_worker.mappings.route_checks`;
a directory without it has no routes). Each file goes through three passes, and all the
issues of all the files are gathered before anything is raised:

1. YAML syntax and duplicate keys (:mod:`sync_worker.mappings._yaml`, with line numbers);
2. shape: the pydantic models (``extra="forbid"``: unknown fields, wrong types, unknown canonical
   keys);
3. meaning: every canonical stage defined exactly once, a source stage or status mapped once, one
   push target per canonical stage and pipeline.

Each :class:`~sync_worker.errors.MappingIssue` names the file, the line and the key path.
Canonical stages a target cannot be pushed are warnings, not errors.

Admin input is bounded: only regular files are read (a symlink to one is fine; a device such as
``/dev/zero``, a FIFO, a directory or a symlink loop is refused without blocking), at most
:data:`MAX_FILE_BYTES` of each, and YAML alias expansion is capped by the parser
(:data:`~sync_worker.mappings._yaml.MAX_VALUES`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sync_worker.canonical import StageKey, StageKind, StageModel
from sync_worker.errors import MappingError, MappingIssue
from sync_worker.mappings._yaml import KeyPath, ParsedYaml, parse_yaml
from sync_worker.mappings.lookup import Mappings, PipelineIndex, SourceIndex, TargetStage
from sync_worker.mappings.models import PipelineMapping, SourceMapping, normalise_name
from sync_worker.mappings.route_checks import build_routes
from sync_worker.mappings.routes import ROUTES_FILE, Routes

__all__ = ["CANONICAL_FILE", "MAX_FILE_BYTES", "NOT_SOURCE_FILES", "load_mappings", "validate_directory"]

MAX_FILE_BYTES = 1024 * 1024
"""The largest mapping file read (the shipped ones are a few kilobytes)."""
CANONICAL_FILE = "canonical.yaml"
NOT_SOURCE_FILES = frozenset({"canonical", "routes"})
_CLOSED_KINDS = {StageKey.WON: StageKind.WON, StageKey.LOST: StageKind.LOST}
# A model defines the stages a team uses; won and lost always. Other stages may be open, hold or
# won (several won-kind stages in order: won, then a post-purchase stage such as retention).
_REQUIRED = (StageKey.WON, StageKey.LOST)
_KEY_FIELDS = {"canonical", "key", "reply"}

_M = TypeVar("_M", bound=BaseModel)


def load_mappings(directory: Path) -> Mappings:
    """Load and validate ``directory``; raise :class:`MappingError` with every issue found."""
    mappings, errors, _warnings = validate_directory(directory)
    if errors or mappings is None:
        raise MappingError(errors or [MappingIssue(str(directory), None, "(directory)", "nothing loaded")])
    return mappings


def validate_directory(directory: Path) -> tuple[Mappings | None, list[MappingIssue], list[str]]:
    """``(mappings or None, errors, warnings)``; mappings is None exactly when there are errors."""
    errors: list[MappingIssue] = []
    warnings: list[str] = []
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except OSError as exc:
        why = "a symlink loop" if exc.errno == errno.ELOOP else (exc.strerror or "cannot be listed")
        errors.append(MappingIssue(str(directory), None, "(directory)", f"not a directory: {why}"))
        return None, errors, warnings
    canonical_path = directory / CANONICAL_FILE
    model: StageModel | None = None
    if _present(canonical_path):
        model = _load_canonical(canonical_path, errors)
    else:
        errors.append(MappingIssue(str(canonical_path), None, "(file)", "missing: the canonical stage model"))
    sources: dict[str, SourceIndex] = {}
    source_paths = [
        directory / name
        for name in names
        if name.endswith(".yaml") and not name.startswith(".") and name[:-5] not in NOT_SOURCE_FILES
    ]
    known = frozenset(stage.key for stage in model.stages) if model is not None else None
    for path in source_paths:
        index = _load_source(path, errors, warnings, known)
        if index is not None:
            sources[path.stem] = index
    routes_path = directory / ROUTES_FILE
    routes = Routes()
    if _present(routes_path):
        stage_files = {path.stem: sources.get(path.stem) for path in source_paths}
        loaded = _load_routes(routes_path, stage_files, errors)
        routes = loaded if loaded is not None else routes
    if errors or model is None:
        return None, _sorted(errors, (canonical_path, *source_paths, routes_path)), warnings
    mappings = Mappings(
        model=model,
        files=(canonical_path, *source_paths),
        index=MappingProxyType(sources),
        routes=routes,
    )
    return mappings, errors, warnings


def _sorted(errors: list[MappingIssue], order: tuple[Path, ...]) -> list[MappingIssue]:
    """Issues grouped by file (canonical first), then by line; unknown lines first."""
    rank = {str(path): i for i, path in enumerate(order)}
    return sorted(errors, key=lambda e: (rank.get(e.file, -1), e.line or 0))


def _present(path: Path) -> bool:
    """The name exists, whatever it is (``is_file()`` would hide a FIFO or a symlink loop)."""
    return os.path.lexists(path)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "an unknown kind of file"


class _UnreadableError(Exception):
    """A mapping file that is not read, and why."""


_OVER_LIMIT = f"over the {MAX_FILE_BYTES}-byte limit for a mapping file"


def _read_text(path: Path) -> str:
    """The file's text; :class:`_UnreadableError` saying why it is refused (see the module docstring).

    The type is checked before opening (opening a FIFO would block) and again on the open
    descriptor (the name may have been swapped in between); O_NONBLOCK keeps even that open from
    waiting on a FIFO's writer.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _UnreadableError("a symlink loop") from exc
        raise _UnreadableError(exc.strerror or str(exc)) from exc
    if not stat.S_ISREG(mode):
        raise _UnreadableError(f"{_kind(mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _UnreadableError(exc.strerror or str(exc)) from exc
    with os.fdopen(fd, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise _UnreadableError(f"{_kind(opened.st_mode)}, not a regular file")
        if opened.st_size > MAX_FILE_BYTES:
            raise _UnreadableError(f"{opened.st_size} bytes, {_OVER_LIMIT}")
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _UnreadableError(f"more bytes than announced, {_OVER_LIMIT}")
    return data.decode("utf-8")


def _read(path: Path, errors: list[MappingIssue]) -> ParsedYaml | None:
    try:
        text = _read_text(path)
    except UnicodeDecodeError as exc:
        errors.append(MappingIssue(str(path), None, "(file)", f"cannot read: not UTF-8 ({exc.reason})"))
        return None
    except _UnreadableError as exc:
        errors.append(MappingIssue(str(path), None, "(file)", f"cannot read: {exc}"))
        return None
    parsed = parse_yaml(text, str(path))
    errors.extend(parsed.issues)
    return parsed if parsed.data is not None else None


def _validate(parsed: ParsedYaml, model_type: type[_M], errors: list[MappingIssue]) -> _M | None:
    try:
        return model_type.model_validate(parsed.data)
    except ValidationError as exc:
        errors.extend(parsed.issue(tuple(err["loc"]), _message(err)) for err in exc.errors(include_url=False))
        return None


def _message(err: Any) -> str:
    loc = tuple(err["loc"])
    last = loc[-1] if loc else ""
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown field {last!r}"
    if kind == "missing":
        return f"required field {last!r} is missing"
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    if kind == "enum" and last in _KEY_FIELDS:
        choices = ", ".join(k.value for k in StageKey)
        return f"unknown canonical stage {shown}; expected one of: {choices}"
    message = str(err["msg"])
    if kind in ("tuple_type", "list_type"):
        message = "Input should be a list"
    return f"wrong value {shown}: {message}"


def _load_routes(
    path: Path, sources: dict[str, SourceIndex | None], errors: list[MappingIssue]
) -> Routes | None:
    parsed = _read(path, errors)
    if parsed is None:
        return None
    return build_routes(parsed, sources, errors, _message)


def _load_canonical(path: Path, errors: list[MappingIssue]) -> StageModel | None:
    parsed = _read(path, errors)
    if parsed is None:
        return None
    model = _validate(parsed, StageModel, errors)
    if model is None:
        return None
    before = len(errors)
    seen: dict[StageKey, int] = {}
    orders: dict[int, int] = {}
    for i, stage in enumerate(model.stages):
        if stage.key in seen:
            errors.append(
                parsed.issue(
                    ("stages", i, "key"),
                    f"canonical stage {stage.key.value!r} is defined twice "
                    f"(first at line {parsed.line_of(('stages', seen[stage.key]))})",
                )
            )
        else:
            seen[stage.key] = i
        expected = _CLOSED_KINDS.get(stage.key)
        if expected is not None and stage.kind is not expected:
            errors.append(
                parsed.issue(("stages", i, "kind"), f"stage {stage.key.value!r} must be kind {expected}")
            )
        if expected is None and stage.kind is StageKind.LOST:
            errors.append(
                parsed.issue(
                    ("stages", i, "kind"), f"stage {stage.key.value!r} must be kind open, hold or won"
                )
            )
        if stage.order in orders:
            errors.append(
                parsed.issue(
                    ("stages", i, "order"),
                    f"order {stage.order} is already used by stages[{orders[stage.order]}]",
                )
            )
        else:
            orders[stage.order] = i
    for key in _REQUIRED:
        if key not in seen:
            errors.append(parsed.issue(("stages",), f"canonical stage {key.value!r} is missing"))
    return model if len(errors) == before else None


@dataclass(frozen=True)
class _Candidate:
    path: KeyPath
    key: StageKey
    push: bool | None
    label: str
    target: TargetStage


class _Duplicates:
    """Remembers the first path of each value, reports later ones."""

    def __init__(self, parsed: ParsedYaml, errors: list[MappingIssue]) -> None:
        self._parsed, self._errors = parsed, errors
        self._seen: dict[tuple[str, str], KeyPath] = {}

    def check(self, group: str, value: str | None, path: KeyPath, what: str) -> bool:
        """True when ``value`` was seen before in ``group`` (and the issue is recorded)."""
        if value is None:
            return False
        first = self._seen.setdefault((group, value), path)
        if first == path:
            return False
        line = self._parsed.line_of(first)
        self._errors.append(self._parsed.issue(path, f"{what} is mapped twice (first at line {line})"))
        return True


def _undefined_keys(
    parsed: ParsedYaml, mapping: SourceMapping, known: frozenset[StageKey], errors: list[MappingIssue]
) -> None:
    """Every canonical key the mapping names must be a stage of ``canonical.yaml``."""
    named: list[tuple[KeyPath, StageKey]] = [
        (("statuses", i, "canonical"), entry.canonical) for i, entry in enumerate(mapping.statuses)
    ]
    for i, pipeline in enumerate(mapping.pipelines):
        named += [
            (("pipelines", i, "stages", j, "canonical"), stage.canonical)
            for j, stage in enumerate(pipeline.stages)
        ]
    if mapping.reply is not None:
        named.append((("reply",), mapping.reply))
    for where, key in named:
        if key not in known:
            errors.append(
                parsed.issue(where, f"canonical stage {key.value!r} is not defined in canonical.yaml")
            )


def _load_source(
    path: Path, errors: list[MappingIssue], warnings: list[str], known: frozenset[StageKey] | None = None
) -> SourceIndex | None:
    parsed = _read(path, errors)
    if parsed is None:
        return None
    mapping = _validate(parsed, SourceMapping, errors)
    if mapping is None:
        return None
    before = len(errors)
    if known is not None:
        _undefined_keys(parsed, mapping, known, errors)
    dupes = _Duplicates(parsed, errors)
    status_candidates: list[_Candidate] = []
    statuses: dict[str, StageKey] = {}
    for i, entry in enumerate(mapping.statuses):
        norm = normalise_name(entry.status)
        if dupes.check("status", norm, ("statuses", i, "status"), f"status {entry.status!r}"):
            continue
        statuses.setdefault(norm, entry.canonical)
        target = TargetStage(pipeline=None, stage=None, status=entry.status, match_by="id")
        status_candidates.append(
            _Candidate(("statuses", i), entry.canonical, entry.push, f"status {entry.status!r}", target)
        )
    pipelines: list[PipelineIndex] = []
    for i, pipeline in enumerate(mapping.pipelines):
        where: KeyPath = ("pipelines", i)
        if pipeline.id is None and pipeline.name is None:
            errors.append(parsed.issue(where, "a pipeline needs an id or a name"))
        dupes.check("pipeline id", pipeline.id, (*where, "id"), f"pipeline id {pipeline.id!r}")
        name = normalise_name(pipeline.name) if pipeline.name is not None else None
        dupes.check("pipeline name", name, (*where, "name"), f"pipeline name {pipeline.name!r}")
        pipelines.append(_index_pipeline(parsed, where, pipeline, status_candidates, errors))
    if not mapping.pipelines:
        status_push = _resolve_push(parsed, "", status_candidates, errors)
    else:
        status_push = _resolve_push(parsed, "", status_candidates, None)
    if len(errors) != before:
        return None
    index = SourceIndex(
        name=path.stem,
        pipelines=tuple(pipelines),
        statuses=MappingProxyType(statuses),
        status_push=MappingProxyType(status_push),
        status_rows=tuple((entry.status, entry.canonical) for entry in mapping.statuses),
        reply=mapping.reply,
    )
    warnings.extend(_push_warnings(path, index, known))
    return index


def _index_pipeline(
    parsed: ParsedYaml,
    where: KeyPath,
    pipeline: PipelineMapping,
    status_candidates: list[_Candidate],
    errors: list[MappingIssue],
) -> PipelineIndex:
    dupes = _Duplicates(parsed, errors)
    ids: dict[str, StageKey] = {}
    names: dict[str, StageKey] = {}
    candidates = list(status_candidates)
    rows: list[tuple[str, StageKey]] = []
    for j, stage in enumerate(pipeline.stages):
        path: KeyPath = (*where, "stages", j)
        if stage.id is None and stage.name is None:
            errors.append(parsed.issue(path, "a stage needs an id or a name"))
            continue
        norm = normalise_name(stage.name) if stage.name is not None else None
        twice = dupes.check("id", stage.id, (*path, "id"), f"source stage id {stage.id!r}")
        if dupes.check("name", norm, (*path, "name"), f"source stage name {stage.name!r}") or twice:
            continue
        if stage.id is not None:
            ids.setdefault(stage.id, stage.canonical)
        if norm is not None:
            names.setdefault(norm, stage.canonical)
        if stage.id is not None:
            target = TargetStage(pipeline.id or pipeline.name, stage.id, None, "id")
        else:
            target = TargetStage(pipeline.name or pipeline.id, stage.name, None, "name")
        label = _stage_label(stage.id, stage.name)
        rows.append((label, stage.canonical))
        candidates.append(_Candidate(path, stage.canonical, stage.push, f"stage {label!r}", target))
    label = pipeline.name or pipeline.id or "?"
    push = _resolve_push(parsed, f" in pipeline {label!r}", candidates, errors)
    return PipelineIndex(
        id=pipeline.id,
        name=pipeline.name,
        stage_ids=MappingProxyType(ids),
        stage_names=MappingProxyType(names),
        push=MappingProxyType(push),
        rows=tuple(rows),
    )


def _stage_label(id_: str | None, name: str | None) -> str:
    if id_ is not None and name is not None:
        return f"{name} ({id_})"
    return name if name is not None else id_ or ""


def _resolve_push(
    parsed: ParsedYaml,
    where: str,
    candidates: Iterable[_Candidate],
    errors: list[MappingIssue] | None,
) -> dict[StageKey, TargetStage]:
    """One push target per canonical key; ambiguity is an error (reported when ``errors`` given)."""
    by_key: dict[StageKey, list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_key[candidate.key].append(candidate)
    chosen: dict[StageKey, TargetStage] = {}
    for key, group in by_key.items():
        explicit = [c for c in group if c.push is True]
        picked = explicit or [c for c in group if c.push is None]
        if len(picked) == 1:
            chosen[key] = picked[0].target
        elif len(picked) > 1 and errors is not None:
            names = ", ".join(f"{c.label} (line {parsed.line_of(c.path)})" for c in picked)
            hint = (
                "keep push: true on one of them only" if explicit else "mark the one to write with push: true"
            )
            path = (*picked[1].path, "push") if explicit else picked[1].path
            errors.append(
                parsed.issue(
                    path,
                    f"ambiguous push target{where}: canonical stage {key.value!r} would be written "
                    f"as {names}; {hint}",
                )
            )
    return chosen


def _push_warnings(path: Path, index: SourceIndex, defined: frozenset[StageKey] | None) -> list[str]:
    """One warning per pipeline (or per source) naming the canonical stages it cannot show."""
    warnings: list[str] = []
    scopes: list[tuple[str, set[StageKey]]] = [
        (f"pipeline {p.label!r}", set(p.push)) for p in index.pipelines
    ] or [("statuses", set(index.status_push))]
    for scope, known in scopes:
        missing = [key.value for key in StageKey if key not in known and (defined is None or key in defined)]
        if missing:
            warnings.append(
                f"{path}: {scope}: canonical stages with nothing to push to {index.name}: "
                + ", ".join(missing)
            )
    return warnings
