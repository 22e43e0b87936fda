"""The meaning checks of ``routes.yaml``, run after its shape has been validated.

Every issue names the file, the line and the key path; all are gathered before the loader raises.
What is checked, entry by entry and then across entries:

* route names are unique;
* ``from`` and ``to`` name a system that has a stage mapping file in the directory or that the
  project has a connector for (:func:`known_systems`), and never the same system on both ends;
* a route that writes the stage has stage mappings at both ends, and a ``reply`` route that writes
  the stage starts from a system whose mapping says what a reply means;
* outreach never moves a deal backwards: a route from an outreach tool (a system whose mapping
  has ``reply:``) into a CRM writes the stage ``advance_only`` or not at all;
* a route writes something (a stage or fields); no list repeats a value; ``only_status`` is not
  empty;
* across enabled routes, after two-way expansion: no two routes from the same source write the
  same field of the same target on the same event and record status (two writers of one field
  contradict each other, or at best write twice).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from sync_worker.errors import MappingIssue
from sync_worker.mappings._yaml import KeyPath, ParsedYaml
from sync_worker.mappings.lookup import SourceIndex
from sync_worker.mappings.routes import (
    Route,
    RouteEvent,
    Routes,
    RoutesFile,
    RouteSpec,
    StageMode,
    expand_when,
)

__all__ = ["build_routes", "known_systems", "outreach_systems", "written_path"]


def known_systems() -> frozenset[str]:
    """Systems a connector is registered for; valid route ends even without a stage mapping file."""
    from sync_worker.plugins import registry

    return frozenset(registry())


def outreach_systems() -> frozenset[str]:
    """Outreach tools (specs whose records are leads); any mapping with ``reply:`` is one too."""
    from sync_worker.plugins import registry

    return frozenset(name for name, spec in registry().items() if spec.record_kind == "lead")


def written_path(parsed: ParsedYaml, path: KeyPath) -> KeyPath:
    """``path`` as the admin wrote it: ``when[0]`` is ``when`` where a single value stood for a list."""
    if path and path[-1] == 0 and path not in parsed.lines and path[:-1] in parsed.lines:
        return path[:-1]
    return path


@dataclass(frozen=True)
class _Placed:
    index: int
    route: Route


class _Checker:
    def __init__(
        self, parsed: ParsedYaml, sources: Mapping[str, SourceIndex | None], errors: list[MappingIssue]
    ) -> None:
        self._parsed = parsed
        self._sources = sources
        self._errors = errors
        self._known = frozenset(sources) | known_systems()
        self._outreach = outreach_systems() | {
            name for name, index in sources.items() if index is not None and index.reply is not None
        }

    def error(self, path: KeyPath, message: str) -> None:
        self._errors.append(self._parsed.issue(path, message))

    def item_path(self, where: KeyPath, key: str, position: int) -> KeyPath:
        """The path of a list item, or of the key itself when the YAML gave a single value."""
        return written_path(self._parsed, (*where, key, position))

    def line(self, path: KeyPath) -> int | None:
        return self._parsed.line_of(path)

    def check_entry(self, where: KeyPath, spec: RouteSpec) -> bool:
        before = len(self._errors)
        for key, values in (
            ("from", spec.from_),
            ("when", spec.when),
            ("match", spec.match),
            ("fields", spec.fields),
            ("only_status", spec.only_status or ()),
        ):
            self._no_repeats(where, key, [str(v) for v in values])
        for key, values in (("from", spec.from_), ("when", spec.when), ("match", spec.match)):
            if not values:
                self.error((*where, key), f"empty list: {key} needs at least one value")
        if spec.only_status is not None and not spec.only_status:
            self.error((*where, "only_status"), "empty list: leave only_status out to accept any status")
        if spec.stage is StageMode.NONE and not spec.fields:
            self.error(where, "the route writes nothing: set stage to advance_only or mirror, or list fields")
        for j, name in enumerate(spec.from_):
            self._check_system(self.item_path(where, "from", j), name, spec.stage)
        self._check_system((*where, "to"), spec.to, spec.stage)
        if spec.to in spec.from_:
            self.error((*where, "to"), f"a route from {spec.to!r} to {spec.to!r}: pick another target")
        if len(self._errors) == before:
            self._check_directions(where, spec)
        return len(self._errors) == before

    def _no_repeats(self, where: KeyPath, key: str, values: Sequence[str]) -> None:
        first: dict[str, int] = {}
        for j, value in enumerate(values):
            if value in first:
                at = self.line(self.item_path(where, key, first[value]))
                self.error(self.item_path(where, key, j), f"{value!r} is listed twice (first at line {at})")
            else:
                first[value] = j

    def _check_system(self, path: KeyPath, name: str, stage: StageMode) -> None:
        if name not in self._known:
            choices = ", ".join(sorted(self._known))
            self.error(path, f"unknown system {name!r}; expected one of: {choices}")
        elif stage is not StageMode.NONE and name not in self._sources:
            self.error(
                path,
                f"{name!r} has no stage mapping: add {name}.yaml next to canonical.yaml, or set stage: none",
            )

    def _check_directions(self, where: KeyPath, spec: RouteSpec) -> None:
        events = expand_when(spec.when)
        for source, target in _directions(spec):
            index = self._sources.get(source)
            if RouteEvent.REPLY in events and spec.stage is not StageMode.NONE and index is not None:
                if index.reply is None:
                    self.error(
                        (*where, "when"),
                        f"a reply in {source!r} writes the stage, but {source}.yaml has no "
                        "'reply:' canonical stage",
                    )
            if spec.stage is StageMode.MIRROR and source in self._outreach and target not in self._outreach:
                self.error(
                    (*where, "stage"),
                    f"outreach never moves a deal backwards: the route from {source!r} into "
                    f"{target!r} must use stage: advance_only (or none)",
                )

    def check_conflicts(self, placed: Sequence[_Placed], specs: Mapping[int, RouteSpec]) -> None:
        for n, later in enumerate(placed):
            for earlier in placed[:n]:
                a, b = earlier.route, later.route
                if (a.source, a.target) != (b.source, b.target):
                    continue
                events = a.events & b.events
                if not events or not _statuses_overlap(a, b):
                    continue
                shown = ", ".join(sorted(e.value for e in events))
                where: KeyPath = ("routes", later.index)
                other = f"route {a.name!r} (line {a.line})"
                if b.stage is not StageMode.NONE and a.stage is not StageMode.NONE:
                    what = f"the stage of {b.target!r} from {b.source!r}"
                    if a.stage is b.stage:
                        clash = f"{what} is also written by {other} on {shown}"
                    else:
                        clash = (
                            f"{what} contradicts {other}: {a.stage.value} there, "
                            f"{b.stage.value} here, on {shown}"
                        )
                    self.error((*where, "stage"), f"{clash}; keep one writer per field")
                fields = specs[later.index].fields
                for k, field in enumerate(fields):
                    if field in a.fields:
                        self.error(
                            self.item_path(where, "fields", k),
                            f"{field.value!r} of {b.target!r} from {b.source!r} is also written by "
                            f"{other} on {shown}; keep one writer per field",
                        )


def _directions(spec: RouteSpec) -> list[tuple[str, str]]:
    pairs = [(source, spec.to) for source in spec.from_]
    if spec.two_way:
        pairs += [(spec.to, source) for source in spec.from_]
    return pairs


def _statuses_overlap(a: Route, b: Route) -> bool:
    if a.only_status is None or b.only_status is None:
        return True
    return bool(a.only_status & b.only_status)


def _expand(spec: RouteSpec, line: int | None) -> list[Route]:
    events = expand_when(spec.when)
    only = frozenset(spec.only_status) if spec.only_status is not None else None
    return [
        Route(
            name=spec.name,
            source=source,
            target=target,
            events=events,
            match=spec.match,
            create=spec.create,
            stage=spec.stage,
            fields=spec.fields,
            only_status=only,
            on_delete=spec.on_delete,
            reverse=target in spec.from_,
            line=line,
            since=spec.since,
            history=spec.history,
        )
        for source, target in _directions(spec)
    ]


def _entries(
    parsed: ParsedYaml, errors: list[MappingIssue], message: Callable[[ErrorDetails], str]
) -> dict[int, RouteSpec] | None:
    """The entries whose shape is valid, by index; None when the file's root itself is wrong.

    Entries are validated one by one so that the meaning checks still run on the valid ones
    and an admin sees every problem of the file at once.
    """

    def report(exc: ValidationError, prefix: KeyPath) -> None:
        for err in exc.errors(include_url=False):
            path = written_path(parsed, (*prefix, *err["loc"]))
            errors.append(parsed.issue(path, message({**err, "loc": path})))

    data = parsed.data
    raw = data.get("routes") if isinstance(data, dict) else None
    try:
        if isinstance(raw, list):
            RoutesFile.model_validate({**data, "routes": []})
        else:
            RoutesFile.model_validate(data)
    except ValidationError as exc:
        report(exc, ())
        return None
    specs: dict[int, RouteSpec] = {}
    for i, entry in enumerate(raw or ()):
        try:
            specs[i] = RouteSpec.model_validate(entry)
        except ValidationError as exc:
            report(exc, ("routes", i))
    return specs


def build_routes(
    parsed: ParsedYaml,
    sources: Mapping[str, SourceIndex | None],
    errors: list[MappingIssue],
    message: Callable[[ErrorDetails], str],
) -> Routes | None:
    """Validate ``routes.yaml`` (parsed from ``parsed.file``) and expand it into :class:`Routes`.

    ``sources`` maps every stage mapping file of the directory (by stem) to its index, or to None
    when that file has errors of its own. ``message`` words a pydantic error (the stage mappings'
    wording). Issues are appended to ``errors``; the result is None exactly when any was added.
    """
    before = len(errors)
    specs = _entries(parsed, errors, message)
    if specs is None:
        return None
    checker = _Checker(parsed, sources, errors)
    names: dict[str, int] = {}
    placed: list[_Placed] = []
    for i, entry in specs.items():
        where: KeyPath = ("routes", i)
        if entry.name in names:
            first = checker.line(("routes", names[entry.name], "name"))
            checker.error(
                (*where, "name"), f"route name {entry.name!r} is used twice (first at line {first})"
            )
        else:
            names[entry.name] = i
        if checker.check_entry(where, entry) and entry.enabled:
            placed.extend(_Placed(i, route) for route in _expand(entry, checker.line(where)))
    checker.check_conflicts(placed, specs)
    if len(errors) != before:
        return None
    return Routes(routes=tuple(p.route for p in placed), file=Path(parsed.file))
