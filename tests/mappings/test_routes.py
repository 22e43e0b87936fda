"""Routes (``routes.yaml``): the defaults, the lookups, and every kind of error with file/line/key."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from sync_worker.canonical import RecordStatus, StageKey
from sync_worker.engine.routing import as_route
from sync_worker.errors import MappingError, MappingIssue
from sync_worker.mappings import (
    Mappings,
    MappingsHolder,
    MatchBy,
    OnDelete,
    RouteEvent,
    RouteField,
    Routes,
    StageMode,
    load_mappings,
    validate_directory,
)
from sync_worker.mappings.schema import render_schema, schema_documents

Edit = Callable[[str, str, str], Path]
FindLine = Callable[..., int]

ONE_ROUTE = """\
routes:
  - name: only
    from: pipedrive
    to: hubspot
    when: stage_change
    match: [link]
    stage: mirror
"""


@pytest.fixture(scope="module")
def defaults() -> Mappings:
    return load_mappings(Path(__file__).resolve().parents[2] / "mappings")


def issues_of(directory: Path) -> list[MappingIssue]:
    with pytest.raises(MappingError) as caught:
        load_mappings(directory)
    return caught.value.issues


def only_issue(directory: Path) -> MappingIssue:
    issues = issues_of(directory)
    assert len(issues) == 1, issues
    return issues[0]


def append_route(directory: Path, text: str) -> Path:
    """Add one route (YAML text starting with ``  - name:``) at the end of routes.yaml."""
    path = directory / "routes.yaml"
    path.write_text(path.read_text(encoding="utf-8") + "\n" + text, encoding="utf-8")
    return path


def write_routes(directory: Path, text: str) -> Path:
    path = directory / "routes.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped defaults ------------------------------------------------------------------------


def test_defaults_load_with_four_entries_and_six_directed_routes(defaults_dir: Path) -> None:
    result, errors, _warnings = validate_directory(defaults_dir)
    assert errors == []
    assert result is not None
    routes = result.routes
    assert routes.file == defaults_dir / "routes.yaml"
    assert [(r.name, r.source, r.target) for r in routes] == [
        ("lgm-replies-to-hubspot", "lagrowthmachine", "hubspot"),
        ("lgm-replies-to-pipedrive", "lagrowthmachine", "pipedrive"),
        ("pipedrive-hubspot-mirror", "pipedrive", "hubspot"),
        ("pipedrive-hubspot-mirror", "hubspot", "pipedrive"),
        ("crm-outcome-stops-outreach", "hubspot", "lagrowthmachine"),
        ("crm-outcome-stops-outreach", "pipedrive", "lagrowthmachine"),
    ]


def test_default_lead_reply_creates_or_advances_the_crm_deal_to_contacted(defaults: Mappings) -> None:
    # Given a reply received in LaGrowthMachine
    routes = defaults.routes.routes_from("lagrowthmachine", "reply")
    # Then it reaches both CRMs, creating the deal when none matches, forwards only
    assert {r.target for r in routes} == {"hubspot", "pipedrive"}
    for route in routes:
        assert route.create is True
        assert route.stage is StageMode.ADVANCE_ONLY
        assert route.match[0] is MatchBy.LINK and MatchBy.EMAIL in route.match
    # and the stage a reply stands for is contacted, which both CRMs can show
    assert defaults.reply_stage("lagrowthmachine") is StageKey.CONTACTED
    assert defaults.to_target("hubspot", StageKey.CONTACTED) is not None
    assert defaults.to_target("pipedrive", StageKey.CONTACTED) is not None
    # and nothing else in LaGrowthMachine flows anywhere
    for event in RouteEvent:
        if event is not RouteEvent.REPLY:
            assert defaults.routes.routes_from("lagrowthmachine", event) == ()


@pytest.mark.parametrize(("source", "target"), [("hubspot", "pipedrive"), ("pipedrive", "hubspot")])
@pytest.mark.parametrize("event", ["created", "stage_change", "status_change", "field_change"])
def test_default_crms_mirror_each_other_both_ways(
    defaults: Mappings, source: str, target: str, event: str
) -> None:
    mirror = [r for r in defaults.routes.routes_from(source, event) if r.target == target]
    assert len(mirror) == 1
    route = mirror[0]
    assert route.stage is StageMode.MIRROR
    assert route.create is False
    assert {RouteField.AMOUNT, RouteField.CLOSE_DATE, RouteField.STATUS} <= set(route.fields)
    assert {"stage", "amount", "close_date", "status"} <= route.writes()


@pytest.mark.parametrize("source", ["hubspot", "pipedrive"])
@pytest.mark.parametrize(("status", "stops"), [("won", True), ("lost", True), ("open", False)])
def test_default_crm_outcome_sets_the_lead_status(
    defaults: Mappings, source: str, status: str, stops: bool
) -> None:
    routes = defaults.routes.routes_from(source, "status_change", status)  # type: ignore[arg-type]
    to_lgm = [r for r in routes if r.target == "lagrowthmachine"]
    assert bool(to_lgm) is stops
    if stops:
        assert to_lgm[0].stage is StageMode.MIRROR
        # the canonical won/lost stage has a LaGrowthMachine status to write
        assert defaults.to_target("lagrowthmachine", StageKey(status)) is not None


# --- lookups -------------------------------------------------------------------------------------


def test_two_way_entry_expands_into_both_directions(defaults: Mappings) -> None:
    forward, backward = defaults.routes.named("pipedrive-hubspot-mirror")
    assert (forward.source, forward.target, forward.reverse) == ("pipedrive", "hubspot", False)
    assert (backward.source, backward.target, backward.reverse) == ("hubspot", "pipedrive", True)
    assert dataclasses.replace(backward, source="pipedrive", target="hubspot", reverse=False) == forward


def test_one_way_entry_stays_one_way(mappings_dir: Path) -> None:
    write_routes(mappings_dir, ONE_ROUTE)
    routes = load_mappings(mappings_dir).routes
    assert len(routes) == 1
    assert routes.routes_from("pipedrive", "stage_change")[0].name == "only"
    assert routes.routes_from("hubspot", "stage_change") == ()
    assert routes.targets_of("pipedrive") == ("hubspot",)
    assert routes.targets_of("hubspot") == ()


def test_on_delete_is_carried_to_both_directions_and_to_the_engine(mappings_dir: Path) -> None:
    write_routes(
        mappings_dir,
        ONE_ROUTE
        + """\
  - name: twins
    from: pipedrive
    to: hubspot
    two_way: true
    when: any_change
    match: [link]
    fields: [amount]
    on_delete: archive
""",
    )
    routes = load_mappings(mappings_dir).routes
    assert [r.on_delete for r in routes.named("twins")] == [OnDelete.ARCHIVE, OnDelete.ARCHIVE]
    assert [r.on_delete for r in routes.named("only")] == [OnDelete.MARK]  # the default
    assert {as_route(r).on_delete for r in routes.named("twins")} == {"archive"}
    assert as_route(routes.named("only")[0]).on_delete == "mark"


def test_an_unknown_on_delete_is_reported_at_its_line(mappings_dir: Path) -> None:
    path = write_routes(
        mappings_dir, ONE_ROUTE.replace("    stage: mirror\n", "    stage: mirror\n    on_delete: purge\n")
    )
    issue = only_issue(mappings_dir)
    assert issue.file == str(path) and issue.key == "routes[0].on_delete" and issue.line == 8
    assert "purge" in issue.message


def test_routes_from_filters_on_source_event_and_status(mappings_dir: Path) -> None:
    write_routes(
        mappings_dir,
        ONE_ROUTE
        + """\
  - name: deals-closed
    from: pipedrive
    to: hubspot
    when: [status_change, created]
    only_status: won
    match: [email]
    fields: [amount]
""",
    )
    routes = load_mappings(mappings_dir).routes

    def names(source: str, event: str, status: RecordStatus | None = None) -> list[str]:
        return [r.name for r in routes.routes_from(source, event, status)]

    assert names("pipedrive", "stage_change") == ["only"]
    assert names("pipedrive", "status_change", "won") == ["deals-closed"]
    assert names("pipedrive", "status_change", "lost") == []
    # Status unknown: only_status is not applied
    assert names("pipedrive", "created") == ["deals-closed"]
    assert names("pipedrive", RouteEvent.FIELD_CHANGE) == []
    assert names("hubspot", "status_change", "won") == []
    with pytest.raises(ValueError, match="any_change"):
        routes.routes_from("pipedrive", "any_change")


def test_disabled_route_is_checked_but_inactive(mappings_dir: Path, edit: Edit) -> None:
    edit(
        "routes.yaml", "    only_status: [won, lost]\n", "    only_status: [won, lost]\n    enabled: false\n"
    )
    routes = load_mappings(mappings_dir).routes
    assert "crm-outcome-stops-outreach" not in {r.name for r in routes}
    assert len(routes) == 4
    # ... and still validated
    edit("routes.yaml", "    when: status_change\n", "    when: sometimes\n")
    assert only_issue(mappings_dir).key == "routes[3].when"


def test_directory_without_routes_yaml_has_no_routes(mappings_dir: Path) -> None:
    (mappings_dir / "routes.yaml").unlink()
    mappings = load_mappings(mappings_dir)
    assert mappings.routes == Routes()
    assert len(mappings.routes) == 0
    assert mappings.routes.routes_from("lagrowthmachine", "reply") == ()


def test_empty_routes_list_is_valid(mappings_dir: Path) -> None:
    write_routes(mappings_dir, "routes: []\n")
    routes = load_mappings(mappings_dir).routes
    assert len(routes) == 0 and routes.file == mappings_dir / "routes.yaml"


def test_routes_are_frozen(defaults: Mappings) -> None:
    route = defaults.routes.routes[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.stage = StageMode.MIRROR  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        defaults.routes.routes = ()  # type: ignore[misc]


# --- errors: each names file, line and key -------------------------------------------------------


# (old text, new text, text on the line reported, which occurrence of it, key, part of the message)
ENTRY_ERRORS = [
    (
        "    from: lagrowthmachine\n    to: hubspot\n",
        "    from: nosuchcrm\n    to: hubspot\n",
        "from: nosuchcrm",
        1,
        "routes[0].from",
        "unknown system 'nosuchcrm'; expected one of: ",  # then every registered system
    ),
    (
        "    from: [hubspot, pipedrive]\n",
        "    from: [hubspot, nosuchsystem]\n",
        "from: [hubspot, nosuchsystem]",
        1,
        "routes[3].from[1]",
        "unknown system 'nosuchsystem'",
    ),
    (
        "    to: lagrowthmachine\n",
        "    to: nosuchcrm\n",
        "to: nosuchcrm",
        1,
        "routes[3].to",
        "unknown system 'nosuchcrm'",
    ),
    (
        "    from: pipedrive\n    to: hubspot\n",
        "    from: hubspot\n    to: hubspot\n",
        "to: hubspot",
        2,
        "routes[2].to",
        "a route from 'hubspot' to 'hubspot'",
    ),
    (
        "lost_reason]",
        "probability]",
        "probability]",
        1,
        "routes[2].fields[4]",
        "wrong value 'probability': Input should be 'title', 'amount'",
    ),
    (
        "    when: status_change\n",
        "    when: on_change\n",
        "when: on_change",
        1,
        "routes[3].when",
        "wrong value 'on_change'",
    ),
    (
        "    only_status: [won, lost]\n",
        "    only_status: [won, closed]\n",
        "only_status: [won, closed]",
        1,
        "routes[3].only_status[1]",
        "'closed'",
    ),
    (
        "    two_way: true\n",
        "    two_way: sometimes\n",
        "two_way: sometimes",
        1,
        "routes[2].two_way",
        "'sometimes'",
    ),
    (
        "    match: [link, external_id, email]\n",
        "    match: [link, phone]\n",
        "match: [link, phone]",
        1,
        "routes[2].match[1]",
        "wrong value 'phone'",
    ),
    (
        "    create: false\n    stage: mirror\n    fields",
        "    create: false\n    stage: sideways\n    fields",
        "stage: sideways",
        1,
        "routes[2].stage",
        "wrong value 'sideways'",
    ),
    (
        "    to: lagrowthmachine\n",
        "    to: lagrowthmachine\n    then: stop\n",
        "then: stop",
        1,
        "routes[3].then",
        "unknown field 'then'",
    ),
    (
        "  - name: lgm-replies-to-pipedrive\n",
        "  - name: lgm-replies-to-hubspot\n",
        "name: lgm-replies-to-hubspot",
        2,
        "routes[1].name",
        "route name 'lgm-replies-to-hubspot' is used twice (first at line ",
    ),
    (
        "  - name: lgm-replies-to-pipedrive\n",
        "  - name: LGM replies\n",
        "name: LGM replies",
        1,
        "routes[1].name",
        "String should match pattern",
    ),
    (
        "    match: [link, external_id, email]\n",
        "    match: [link, email, link]\n",
        "match: [link, email, link]",
        1,
        "routes[2].match[2]",
        "'link' is listed twice (first at line ",
    ),
    (
        "    only_status: [won, lost]\n",
        "    only_status: []\n",
        "only_status: []",
        1,
        "routes[3].only_status",
        "empty list",
    ),
    (
        "    when: status_change\n",
        "    when: []\n",
        "when: []",
        1,
        "routes[3].when",
        "when needs at least one value",
    ),
    (
        "    to: lagrowthmachine\n",
        "    to: lagrowthmachine\n    to: hubspot\n",
        "to: hubspot",
        3,
        "routes[3].to",
        "duplicate key 'to'",
    ),
]


@pytest.mark.parametrize(("old", "new", "snippet", "occurrence", "key", "message"), ENTRY_ERRORS)
def test_entry_errors_name_file_line_and_key(
    mappings_dir: Path,
    edit: Edit,
    find_line: FindLine,
    old: str,
    new: str,
    snippet: str,
    occurrence: int,
    key: str,
    message: str,
) -> None:
    path = edit("routes.yaml", old, new)
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.line, issue.key) == (str(path), find_line(path, snippet, occurrence), key)
    assert message in issue.message


def test_outreach_never_moves_a_deal_backwards(mappings_dir: Path, find_line: FindLine) -> None:
    path = append_route(
        mappings_dir,
        "  - name: lgm-status-to-hubspot\n    from: lagrowthmachine\n    to: hubspot\n"
        "    when: status_change\n    match: [link]\n    stage: mirror\n",
    )
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.line, issue.key) == (
        str(path),
        find_line(path, "stage: mirror", 3),
        "routes[4].stage",
    )
    assert "outreach never moves a deal backwards" in issue.message
    assert "advance_only" in issue.message


def test_two_way_route_into_outreach_is_refused_on_its_way_back(mappings_dir: Path, edit: Edit) -> None:
    edit("routes.yaml", "    to: lagrowthmachine\n", "    to: lagrowthmachine\n    two_way: true\n")
    issues = issues_of(mappings_dir)
    assert [i.key for i in issues] == ["routes[3].stage", "routes[3].stage"]
    assert "from 'lagrowthmachine' into 'hubspot'" in issues[0].message
    assert "from 'lagrowthmachine' into 'pipedrive'" in issues[1].message


def test_route_that_writes_nothing(mappings_dir: Path, find_line: FindLine) -> None:
    path = append_route(
        mappings_dir,
        "  - name: idle\n    from: pipedrive\n    to: hubspot\n    when: created\n    match: [link]\n",
    )
    issue = only_issue(mappings_dir)
    assert (issue.line, issue.key) == (find_line(path, "name: idle"), "routes[4]")
    assert "writes nothing" in issue.message


def test_stage_route_needs_stage_mappings_at_both_ends(mappings_dir: Path, find_line: FindLine) -> None:
    # Given a known system without its mapping file, and a route writing its stage
    (mappings_dir / "pipedrive.yaml").unlink()
    path = write_routes(mappings_dir, ONE_ROUTE)
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.line, issue.key) == (
        str(path),
        find_line(path, "from: pipedrive"),
        "routes[0].from",
    )
    assert "'pipedrive' has no stage mapping: add pipedrive.yaml" in issue.message
    # A route that copies fields only needs no stage mapping
    write_routes(mappings_dir, ONE_ROUTE.replace("stage: mirror", "fields: [amount]"))
    assert len(load_mappings(mappings_dir).routes) == 1


def test_reply_route_needs_a_reply_stage_in_the_source(mappings_dir: Path, find_line: FindLine) -> None:
    path = write_routes(mappings_dir, ONE_ROUTE.replace("when: stage_change", "when: [stage_change, reply]"))
    issue = only_issue(mappings_dir)
    assert (issue.line, issue.key) == (find_line(path, "when:"), "routes[0].when")
    assert "pipedrive.yaml has no 'reply:'" in issue.message


def test_any_system_with_a_mapping_file_is_a_valid_end(mappings_dir: Path) -> None:
    (mappings_dir / "zoho.yaml").write_text(
        "statuses:\n  - status: Closed Won\n    canonical: won\n", encoding="utf-8"
    )
    write_routes(mappings_dir, ONE_ROUTE.replace("to: hubspot", "to: zoho"))
    assert load_mappings(mappings_dir).routes.targets_of("pipedrive") == ("zoho",)


def test_two_routes_writing_the_stage_differently_contradict(mappings_dir: Path, find_line: FindLine) -> None:
    # Given the default two-way mirror, and a one-way route pipedrive -> hubspot advancing only
    path = append_route(
        mappings_dir,
        "  - name: pd-advance\n    from: pipedrive\n    to: hubspot\n    when: stage_change\n"
        "    match: [link]\n    stage: advance_only\n",
    )
    issue = only_issue(mappings_dir)
    assert (issue.line, issue.key) == (find_line(path, "stage: advance_only", 3), "routes[4].stage")
    assert issue.message == (
        "the stage of 'hubspot' from 'pipedrive' contradicts route 'pipedrive-hubspot-mirror' "
        f"(line {find_line(path, 'name: pipedrive-hubspot-mirror')}): mirror there, advance_only here, "
        "on stage_change; keep one writer per field"
    )


def test_same_stage_written_by_two_routes(mappings_dir: Path, find_line: FindLine) -> None:
    path = append_route(
        mappings_dir,
        "  - name: lgm-replies-again\n    from: lagrowthmachine\n    to: hubspot\n"
        "    when: [reply, created]\n    match: [email]\n    stage: advance_only\n",
    )
    issue = only_issue(mappings_dir)
    assert (issue.line, issue.key) == (find_line(path, "stage: advance_only", 3), "routes[4].stage")
    assert "is also written by route 'lgm-replies-to-hubspot'" in issue.message
    assert issue.message.endswith("on reply; keep one writer per field")


def test_field_written_twice_on_the_reverse_half_of_a_two_way_route(
    mappings_dir: Path, find_line: FindLine
) -> None:
    path = append_route(
        mappings_dir,
        "  - name: hs-amounts\n    from: hubspot\n    to: pipedrive\n    when: field_change\n"
        "    match: [email]\n    fields: [title, amount]\n",
    )
    issue = only_issue(mappings_dir)
    assert (issue.line, issue.key) == (find_line(path, "fields: [title, amount]"), "routes[4].fields[1]")
    assert "'amount' of 'pipedrive' from 'hubspot' is also written by route 'pipedrive-hubspot-mirror'" in (
        issue.message
    )


def test_no_conflict_when_events_or_statuses_do_not_overlap(mappings_dir: Path) -> None:
    write_routes(
        mappings_dir,
        ONE_ROUTE
        + """\
  - name: advance-on-create
    from: pipedrive
    to: hubspot
    when: created
    match: [link]
    stage: advance_only
  - name: won-only
    from: hubspot
    to: lagrowthmachine
    when: status_change
    only_status: won
    match: [link]
    stage: mirror
  - name: lost-only
    from: hubspot
    to: lagrowthmachine
    when: status_change
    only_status: [lost]
    match: [email]
    stage: advance_only
""",
    )
    assert len(load_mappings(mappings_dir).routes) == 4
    # ... but overlapping statuses do conflict
    text = (mappings_dir / "routes.yaml").read_text(encoding="utf-8")
    write_routes(mappings_dir, text.replace("only_status: [lost]", "only_status: [lost, won]"))
    assert only_issue(mappings_dir).key == "routes[3].stage"


def test_routes_yaml_syntax_error(mappings_dir: Path) -> None:
    path = write_routes(mappings_dir, "routes:\n  - name: [broken\n")
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.key) == (str(path), "(syntax)")


def test_routes_errors_join_the_stage_mapping_errors(
    mappings_dir: Path, edit: Edit, find_line: FindLine
) -> None:
    # Given a broken stage mapping and two broken routes
    hub = edit("hubspot.yaml", "        canonical: won\n", "        canonical: winner\n")
    routes = edit(
        "routes.yaml", "    only_status: [won, lost]\n", "    only_status: [won, lost]\n    enabled: maybe\n"
    )
    edit("routes.yaml", "  - name: lgm-replies-to-pipedrive\n", "  - name: lgm-replies-to-hubspot\n")
    # When the directory is loaded
    with pytest.raises(MappingError) as caught:
        load_mappings(mappings_dir)
    # Then one error lists all three, routes.yaml last: a shape error in one route does not hide the
    # meaning checks of the others, and hubspot stays a known route end though its file is broken
    got = [(Path(i.file).name, i.line, i.key) for i in caught.value.issues]
    assert got == [
        ("hubspot.yaml", find_line(hub, "canonical: winner"), "pipelines[0].stages[5].canonical"),
        ("routes.yaml", find_line(routes, "lgm-replies-to-hubspot", 2), "routes[1].name"),
        ("routes.yaml", find_line(routes, "enabled: maybe"), "routes[3].enabled"),
    ]


def test_holder_reloads_routes_and_keeps_them_on_a_broken_edit(mappings_dir: Path, edit: Edit) -> None:
    holder = MappingsHolder(mappings_dir, interval=60.0, logger=logging.getLogger("test.routes"))
    assert len(holder.current.routes) == 6
    edit("routes.yaml", "    two_way: true\n", "    two_way: false\n")
    assert holder.reload() is True
    assert len(holder.current.routes) == 5
    edit("routes.yaml", "    two_way: false\n", "    two_way: both\n")
    assert holder.reload() is False
    assert len(holder.current.routes) == 5


# --- schema --------------------------------------------------------------------------------------


def test_shipped_routes_schema_equals_generated(defaults_dir: Path) -> None:
    shipped = (defaults_dir / "schema" / "routes.schema.json").read_text(encoding="utf-8")
    document = schema_documents()["routes.schema.json"]
    assert shipped == render_schema(document), "routes.schema.json is stale: run write_schemas()"
    entry = document["$defs"]["RouteSpec"]
    assert entry["additionalProperties"] is False
    assert set(entry["required"]) == {"name", "from", "to", "when", "match"}
    assert document["$defs"]["StageMode"]["enum"] == ["advance_only", "mirror", "none"]
    assert entry["properties"]["when"]["anyOf"][0]["enum"][-1] == "any_change"


def test_routes_yaml_points_editors_at_its_schema(defaults_dir: Path) -> None:
    first = (defaults_dir / "routes.yaml").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=./schema/routes.schema.json"
