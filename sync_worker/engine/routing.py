"""What flows where: the routes the engine follows, read from ``mappings.routes``.

The routes are admin-edited YAML (``mappings/routes.yaml``) loaded with the stage mappings and
reachable as ``mappings.routes`` with ``routes_from(source, event)`` (two-way routes already
expanded into both directions). The engine reads each route through :func:`as_route`, which only
looks at attributes, so the YAML model can grow without touching the engine. A mappings set
without routes routes nothing: which systems flow into which is the admin's to say (the shipped
``routes.yaml`` holds the defaults).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sync_worker.engine.model import (
    ANY_CHANGE_EVENTS,
    EVENT_ANY_CHANGE,
    SYNCED_FIELDS,
)

__all__ = ["EngineRoute", "MatchBy", "OnDelete", "RoutesSource", "StageMode", "as_route", "routes_for"]

MatchBy = Literal["link", "external_id", "email"]
StageMode = Literal["advance_only", "mirror", "none"]
OnDelete = Literal["delete", "archive", "mark", "ignore"]

_MATCHES: frozenset[str] = frozenset({"link", "external_id", "email"})
_STAGE_MODES: frozenset[str] = frozenset({"advance_only", "mirror", "none"})
_ON_DELETE: frozenset[str] = frozenset({"delete", "archive", "mark", "ignore"})


@dataclass(frozen=True)
class EngineRoute:
    """One direction of one route: ``source`` changes flow to ``target``.

    ``events`` the change kinds that trigger it (``any_change`` is expanded on the way in);
    ``match`` how the target record is found, in order; ``create`` make the target record when
    none matches; ``stage`` how the canonical stage is written; ``fields`` the other fields
    copied; ``only_status`` when set, only records in one of these statuses flow; ``since`` and
    ``history`` bound the replies a reply route acts on (:func:`sync_worker.engine.router.held_routes`);
    ``on_delete`` what a deletion of the source record does to its twin (``delete`` and
    ``archive`` remove it through the target connector, ``mark`` writes nothing and reports it,
    ``ignore`` does nothing; :func:`sync_worker.engine.router.route_observation`).
    """

    name: str
    source: str
    target: str
    events: frozenset[str]
    match: tuple[MatchBy, ...] = ("link", "external_id", "email")
    create: bool = False
    stage: StageMode = "mirror"
    fields: frozenset[str] = frozenset()
    only_status: frozenset[str] | None = None
    since: datetime | None = None
    history: bool = False
    on_delete: OnDelete = "mark"

    def triggered_by(self, events: Iterable[str]) -> bool:
        return bool(self.events & set(events))


class RoutesSource(Protocol):
    """The part of the routes model the engine calls."""

    def routes_from(self, source: str, event: str) -> tuple[Any, ...]: ...


def _text(value: Any) -> str:
    inner = getattr(value, "value", value)
    return str(inner)


def _strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(_text(v) for v in value)


def _first(route: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if hasattr(route, name):
            return getattr(route, name)
    return default


def as_route(route: Any) -> EngineRoute:
    """An :class:`EngineRoute` from a routes-model route (read by attribute, tolerant of naming).

    Raises ``ValueError`` for a value the engine cannot follow (unknown match or stage mode).
    A hashable route (the routes model's are frozen dataclasses) is converted once: every routed
    change asks.
    """
    if isinstance(route, EngineRoute):
        return route
    try:
        return _convert_once(route)
    except TypeError:  # unhashable: convert every time
        return _convert(route)


@functools.lru_cache(maxsize=1024)
def _convert_once(route: Any) -> EngineRoute:
    return _convert(route)


def _convert(route: Any) -> EngineRoute:
    source = _text(_first(route, "source", "from_", "from_system"))
    target = _text(_first(route, "target", "to", "to_system"))
    raw_events = _strings(_first(route, "events", "when", "event", default=(EVENT_ANY_CHANGE,)))
    events: set[str] = set()
    for event in raw_events:
        events |= ANY_CHANGE_EVENTS if event == EVENT_ANY_CHANGE else {event}
    match = _strings(_first(route, "match", default=("link", "external_id", "email")))
    unknown = [m for m in match if m not in _MATCHES]
    if unknown:
        raise ValueError(f"route {_first(route, 'name')!r}: unknown match {unknown}")
    stage = _text(_first(route, "stage", "stage_mode", default="mirror") or "none")
    if stage not in _STAGE_MODES:
        raise ValueError(f"route {_first(route, 'name')!r}: unknown stage mode {stage!r}")
    on_delete = _text(_first(route, "on_delete", default="mark") or "mark")
    if on_delete not in _ON_DELETE:
        raise ValueError(f"route {_first(route, 'name')!r}: unknown on_delete {on_delete!r}")
    fields = frozenset(f for f in _strings(_first(route, "fields", default=())) if f in SYNCED_FIELDS)
    only = _first(route, "only_status", "statuses")
    return EngineRoute(
        name=_text(_first(route, "name", default=f"{source}->{target}")),
        source=source,
        target=target,
        events=frozenset(events),
        match=tuple(m for m in match if m in _MATCHES),  # type: ignore[misc]
        create=bool(_first(route, "create", default=False)),
        stage=stage,  # type: ignore[arg-type]
        fields=fields,
        only_status=frozenset(_strings(only)) if only else None,
        since=_first(route, "since"),
        history=bool(_first(route, "history", default=False)),
        on_delete=on_delete,  # type: ignore[arg-type]
    )


def routes_for(mappings: object, source: str, events: Iterable[str]) -> tuple[EngineRoute, ...]:
    """The routes ``source`` changes of these kinds follow, each (name, target) once, in order."""
    wanted = tuple(e for e in dict.fromkeys(events) if e != EVENT_ANY_CHANGE)
    if not wanted:
        return ()
    routes_model = getattr(mappings, "routes", None)
    found: list[EngineRoute] = []
    if routes_model is not None and hasattr(routes_model, "routes_from"):
        for event in wanted:
            found.extend(as_route(r) for r in routes_model.routes_from(source, event))
    unique: dict[tuple[str, str], EngineRoute] = {}
    for route in found:
        if route.source == source and route.triggered_by(wanted):
            unique.setdefault((route.name, route.target), route)
    return tuple(unique.values())
