"""Routes: what flows from which source to which target, and how (``routes.yaml``).

A route reads "when ``event`` happens to a record in ``from``, find the matching record in ``to``
(by ``match``), create it if allowed (``create``), and write its stage (``stage``) and ``fields``".
The file shape is :class:`RoutesFile` (also the source of ``routes.schema.json``); the loader turns
it into a frozen :class:`Routes` of directed :class:`Route` values, a ``two_way`` entry becoming two
routes. The checks live in :mod:`sync_worker.mappings.route_checks`.

Provider facts the field names and defaults follow:

* HubSpot deal properties ``dealstage``, ``pipeline``, ``amount``, ``closedate``, ``dealname``;
  a deal is won or lost through its stage: https://developers.hubspot.com/docs/api/crm/deals
* Pipedrive deal ``value``, ``currency``, ``expected_close_date``, ``status`` (open, won, lost,
  deleted) and ``lost_reason`` (used when status is lost):
  https://developers.pipedrive.com/docs/api/v1/Deals
* LaGrowthMachine leads carry one status and replies arrive as lead events:
  https://documenter.getpostman.com/view/2071164/TVCmSkH2 and https://help.lagrowthmachine.com/en/
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from sync_worker.canonical import RecordStatus

__all__ = [
    "ANY_CHANGE",
    "ROUTES_FILE",
    "MatchBy",
    "OnDelete",
    "Route",
    "RouteEvent",
    "RouteField",
    "RouteSpec",
    "Routes",
    "RoutesFile",
    "StageMode",
    "expand_when",
]

ROUTES_FILE = "routes.yaml"


class RouteEvent(StrEnum):
    """What happened to a record in the source; the engine asks :meth:`Routes.routes_from` per event."""

    CREATED = "created"
    STAGE_CHANGE = "stage_change"
    STATUS_CHANGE = "status_change"
    FIELD_CHANGE = "field_change"
    REPLY = "reply"


ANY_CHANGE = "any_change"
"""Shorthand in ``when`` for every event except ``reply``."""

_ANY_CHANGE_EVENTS = frozenset(
    {RouteEvent.CREATED, RouteEvent.STAGE_CHANGE, RouteEvent.STATUS_CHANGE, RouteEvent.FIELD_CHANGE}
)


class StageMode(StrEnum):
    """How the canonical stage is written into the target."""

    ADVANCE_ONLY = "advance_only"
    """Written only when it is later in the funnel than the target's (never moves a deal back)."""
    MIRROR = "mirror"
    """Written as it is, forwards or backwards."""
    NONE = "none"
    """Not written."""


class OnDelete(StrEnum):
    """What a route does to the target record when the source record is deleted or archived."""

    DELETE = "delete"
    """Delete the twin as the target's API deletes (HubSpot: archive; Pipedrive: soft delete)."""
    ARCHIVE = "archive"
    """Archive the twin where the target can (HubSpot: archive; Pipedrive: ``is_archived``)."""
    MARK = "mark"
    """Write nothing to the target: the twin stays live, the deletion is logged and the deleted
    record stays in the store (the leak scan's ``dropped`` rule reports a deal deleted in a
    live stage)."""
    IGNORE = "ignore"
    """Do nothing about the deletion."""


class MatchBy(StrEnum):
    """How the target record is found, tried in the order listed."""

    LINK = "link"
    """The link between the two records kept in the state store."""
    EXTERNAL_ID = "external_id"
    """The source's id carried in a property of the target record."""
    EMAIL = "email"
    """The contact e-mail of the record."""


class RouteField(StrEnum):
    """Record fields a route may copy into the target (the stage has its own setting)."""

    TITLE = "title"
    AMOUNT = "amount"
    CURRENCY = "currency"
    CLOSE_DATE = "close_date"
    STATUS = "status"
    LOST_REASON = "lost_reason"
    CONTACT_EMAIL = "contact_email"


When = Literal["created", "stage_change", "status_change", "field_change", "reply", "any_change"]


def _as_list(value: Any) -> Any:
    """A single value where a list is expected is read as a list of one."""
    return [value] if isinstance(value, str) else value


_SYSTEM = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", description="a system name (file stem)")]
_SYSTEMS_IN = _SYSTEM | Annotated[list[_SYSTEM], Field(min_length=1)]
_WHEN_IN = When | Annotated[list[When], Field(min_length=1)]


class RouteSpec(BaseModel):
    """One entry of ``routes.yaml`` as written by an admin."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, title="Route")

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=80, description="unique route name (lower case, -, _)"
    )
    from_: Annotated[
        tuple[_SYSTEM, ...],
        BeforeValidator(_as_list, json_schema_input_type=_SYSTEMS_IN),
    ] = Field(alias="from", description="source system, or a list of them")
    to: _SYSTEM = Field(description="target system")
    two_way: bool = Field(default=False, description="also route the other way (to -> from)")
    when: Annotated[
        tuple[When, ...],
        BeforeValidator(_as_list, json_schema_input_type=_WHEN_IN),
    ] = Field(description="events that trigger the route; any_change = all but reply")
    only_status: Annotated[
        tuple[RecordStatus, ...] | None,
        BeforeValidator(_as_list, json_schema_input_type=RecordStatus | list[RecordStatus] | None),
    ] = Field(default=None, description="only records whose status is one of these (default: any)")
    match: tuple[MatchBy, ...] = Field(
        description="how the target record is found, in order", json_schema_extra={"minItems": 1}
    )
    create: bool = Field(default=False, description="create the target record when none matches")
    stage: StageMode = Field(default=StageMode.NONE, description="how the canonical stage is written")
    fields: tuple[RouteField, ...] = Field(default=(), description="other fields copied to the target")
    on_delete: OnDelete = Field(
        default=OnDelete.MARK,
        description="when the source record is deleted or archived: delete or archive the target"
        " record, mark (write nothing, log and report; default) or ignore",
    )
    enabled: bool = Field(default=True, description="false keeps the route validated but inactive")
    since: AwareDatetime | None = Field(
        default=None,
        description="reply routes: act on replies from this time on (default: when the service first"
        " ran the route); never on older ones unless history is true",
    )
    history: bool = Field(
        default=False,
        description="reply routes: also act on replies older than the route's start (a whole history:"
        " on a production CRM this creates and moves deals for every past reply)",
    )
    description: str | None = Field(default=None, description="free text for the admins")


class RoutesFile(BaseModel):
    """The whole ``routes.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Routes")

    routes: tuple[RouteSpec, ...] = Field(default=(), description="the routes, in any order")


def expand_when(when: tuple[str, ...]) -> frozenset[RouteEvent]:
    """The concrete events a ``when`` list stands for (``any_change`` expanded)."""
    events: set[RouteEvent] = set()
    for item in when:
        events |= _ANY_CHANGE_EVENTS if item == ANY_CHANGE else {RouteEvent(item)}
    return frozenset(events)


@dataclass(frozen=True)
class Route:
    """One directed route: ``source`` -> ``target`` on ``events``.

    ``only_status`` None means any record status. ``reverse`` is True for the ``to -> from`` half
    of a ``two_way`` entry. ``line`` is where the entry starts in ``routes.yaml`` (for messages).
    ``since`` and ``history`` bound which replies a reply route acts on (first-run safety: by
    default only replies after the route's recorded start, see :mod:`sync_worker.engine.router`).
    ``on_delete`` says what a deletion of the source record does to the target record.
    """

    name: str
    source: str
    target: str
    events: frozenset[RouteEvent]
    match: tuple[MatchBy, ...]
    create: bool
    stage: StageMode
    fields: tuple[RouteField, ...]
    only_status: frozenset[RecordStatus] | None = None
    on_delete: OnDelete = OnDelete.MARK
    reverse: bool = False
    line: int | None = None
    since: datetime | None = None
    history: bool = False

    def accepts(self, event: RouteEvent | str, status: RecordStatus | None = None) -> bool:
        """True when ``event`` triggers this route for a record in ``status`` (None: not known)."""
        if RouteEvent(event) not in self.events:
            return False
        return self.only_status is None or status is None or status in self.only_status

    def writes(self) -> frozenset[str]:
        """The target fields this route writes: ``stage`` when it writes the stage, plus ``fields``."""
        written = {field.value for field in self.fields}
        if self.stage is not StageMode.NONE:
            written.add("stage")
        return frozenset(written)


@dataclass(frozen=True)
class Routes:
    """Every enabled, directed route of one ``routes.yaml`` (empty when there is none)."""

    routes: tuple[Route, ...] = ()
    file: Path | None = None

    def __iter__(self) -> Iterator[Route]:
        return iter(self.routes)

    def __len__(self) -> int:
        return len(self.routes)

    def routes_from(
        self, source: str, event: RouteEvent | str, status: RecordStatus | None = None
    ) -> tuple[Route, ...]:
        """Routes triggered by ``event`` on a record of ``source``, in file order.

        ``status`` (the record's status after the event) filters on ``only_status``; None skips
        that filter. Raises ``ValueError`` for an event that is not a :class:`RouteEvent`.
        """
        wanted = RouteEvent(event)
        return tuple(r for r in self.routes if r.source == source and r.accepts(wanted, status))

    def targets_of(self, source: str) -> tuple[str, ...]:
        """The systems ``source`` feeds through any route, sorted."""
        return tuple(sorted({r.target for r in self.routes if r.source == source}))

    def named(self, name: str) -> tuple[Route, ...]:
        """The directed routes of one entry (two for a ``two_way`` entry)."""
        return tuple(r for r in self.routes if r.name == name)
