"""Every kind of mapping error names the file, the line and the key; all are reported at once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sync_worker.errors import MappingError, MappingIssue
from sync_worker.mappings import load_mappings, validate_directory

Edit = Callable[[str, str, str], Path]


def only_issue(directory: Path) -> MappingIssue:
    with pytest.raises(MappingError) as caught:
        load_mappings(directory)
    assert len(caught.value.issues) == 1, caught.value.issues
    return caught.value.issues[0]


def test_yaml_syntax_error_names_file_and_line(
    mappings_dir: Path, edit: Edit, find_line: Callable[..., int]
) -> None:
    path = edit("hubspot.yaml", "      - id: closedlost\n", "      - id: [closedlost\n")
    issue = only_issue(mappings_dir)
    assert issue.file == str(path)
    assert issue.key == "(syntax)"
    assert "syntax" in issue.message
    # The parser notices the unclosed flow sequence at or just after the line that opens it.
    assert issue.line is not None
    assert find_line(path, "[closedlost") <= issue.line <= find_line(path, "[closedlost") + 2


def test_unknown_canonical_key(mappings_dir: Path, edit: Edit, find_line: Callable[..., int]) -> None:
    path = edit("pipedrive.yaml", "canonical: meeting", "canonical: demo")
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.line, issue.key) == (
        str(path),
        find_line(path, "canonical: demo"),
        "pipelines[0].stages[2].canonical",
    )
    assert "unknown canonical stage 'demo'" in issue.message


def test_unknown_field(mappings_dir: Path, edit: Edit, find_line: Callable[..., int]) -> None:
    path = edit("hubspot.yaml", "        canonical: won\n", "        canonical: won\n        colour: green\n")
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.line, issue.key) == (
        str(path),
        find_line(path, "colour: green"),
        "pipelines[0].stages[5].colour",
    )
    assert issue.message == "unknown field 'colour'"


def test_unknown_field_in_canonical(mappings_dir: Path, edit: Edit, find_line: Callable[..., int]) -> None:
    path = edit("canonical.yaml", "reply_sla_days: 3", "reply_sla_days: 3\nreply_sla_hours: 4")
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.line, issue.key) == (
        str(path),
        find_line(path, "reply_sla_hours"),
        "reply_sla_hours",
    )


@pytest.mark.parametrize(
    ("name", "old", "new", "needle", "key"),
    [
        (
            "canonical.yaml",
            "probability: 0.30",
            "probability: high",
            "probability: high",
            "stages[3].probability",
        ),
        (
            "canonical.yaml",
            "probability: 0.50",
            "probability: 1.5",
            "probability: 1.5",
            "stages[4].probability",
        ),
        ("canonical.yaml", "reply_sla_days: 3", "reply_sla_days: [3]", "reply_sla_days", "reply_sla_days"),
        (
            "lagrowthmachine.yaml",
            "    push: false",
            "    push: sometimes",
            "push: sometimes",
            "statuses[1].push",
        ),
        ("hubspot.yaml", "  - id: default", "  - id: [default]", "id: [default]", "pipelines[0].id"),
    ],
)
def test_wrong_type(
    mappings_dir: Path,
    edit: Edit,
    find_line: Callable[..., int],
    name: str,
    old: str,
    new: str,
    needle: str,
    key: str,
) -> None:
    path = edit(name, old, new)
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.line, issue.key) == (str(path), find_line(path, needle), key)
    assert issue.message.startswith("wrong value")


def test_numeric_ids_are_read_as_strings(mappings_dir: Path, edit: Edit) -> None:
    edit("hubspot.yaml", "  - id: default", "  - id: 1234567")
    mappings = load_mappings(mappings_dir)
    assert mappings.to_canonical("hubspot", pipeline="1234567", stage="closedwon") == "won"


def test_source_stage_mapped_twice_by_id(
    mappings_dir: Path, edit: Edit, find_line: Callable[..., int]
) -> None:
    path = edit("hubspot.yaml", "      - id: contractsent", "      - id: closedwon")
    issue = only_issue(mappings_dir)
    assert issue.file == str(path)
    assert issue.line == find_line(path, "- id: closedwon", occurrence=2)
    assert issue.key == "pipelines[0].stages[5].id"
    assert "mapped twice" in issue.message
    assert f"first at line {find_line(path, '- id: closedwon', occurrence=1)}" in issue.message


def test_source_stage_mapped_twice_by_normalised_name(
    mappings_dir: Path, edit: Edit, find_line: Callable[..., int]
) -> None:
    path = edit("pipedrive.yaml", "      - name: Proposal Made", "      - name: '  contact   MADE '")
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.line, issue.key) == (
        str(path),
        find_line(path, "contact   MADE"),
        "pipelines[0].stages[3].name",
    )
    assert "mapped twice" in issue.message


def test_status_mapped_twice(mappings_dir: Path, edit: Edit, find_line: Callable[..., int]) -> None:
    path = edit("lagrowthmachine.yaml", "  - status: WRONG_TARGET", "  - status: not_interested")
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.line, issue.key) == (
        str(path),
        find_line(path, "status: not_interested"),
        "statuses[8].status",
    )


def test_ambiguous_push_target_two_explicit(
    mappings_dir: Path, edit: Edit, find_line: Callable[..., int]
) -> None:
    edit(
        "hubspot.yaml",
        "        name: Decision Maker Bought-In\n        canonical: proposal\n",
        "        name: Decision Maker Bought-In\n        canonical: negotiation\n        push: true\n",
    )
    path = edit(
        "hubspot.yaml",
        "      - id: contractsent\n        name: Contract Sent\n        canonical: negotiation\n",
        "      - id: contractsent\n        name: Contract Sent\n        canonical: negotiation\n"
        "        push: true\n",
    )
    issue = only_issue(mappings_dir)
    assert issue.file == str(path)
    assert issue.key == "pipelines[0].stages[4].push"
    assert issue.line == find_line(path, "        push: true", occurrence=2)
    assert "ambiguous push target" in issue.message and "'negotiation'" in issue.message
    assert "decisionmakerboughtin" in issue.message and "contractsent" in issue.message


def test_ambiguous_push_target_none_marked(
    mappings_dir: Path, edit: Edit, find_line: Callable[..., int]
) -> None:
    path = edit(
        "lagrowthmachine.yaml", "    canonical: negotiation\n    push: true\n", "    canonical: negotiation\n"
    )
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.line, issue.key) == (
        str(path),
        find_line(path, "status: READY_TO_BUY"),
        "statuses[5]",
    )
    assert "push: true" in issue.message


def test_status_and_stage_compete_for_push(
    mappings_dir: Path, edit: Edit, find_line: Callable[..., int]
) -> None:
    path = edit("pipedrive.yaml", "        canonical: negotiation", "        canonical: won")
    issue = only_issue(mappings_dir)
    assert issue.file == str(path)
    assert issue.line == find_line(path, "name: Negotiations Started")
    assert "ambiguous push target in pipeline 'Pipeline'" in issue.message
    assert "status 'won'" in issue.message


def test_duplicate_yaml_key(mappings_dir: Path, edit: Edit, find_line: Callable[..., int]) -> None:
    path = edit(
        "hubspot.yaml", "        canonical: lost\n", "        canonical: lost\n        canonical: won\n"
    )
    issue = only_issue(mappings_dir)
    assert (issue.file, issue.line, issue.key) == (
        str(path),
        find_line(path, "canonical: won", occurrence=2),
        "pipelines[0].stages[6].canonical",
    )
    assert f"duplicate key 'canonical' (first at line {find_line(path, 'canonical: lost')})" == issue.message


def test_missing_canonical_stage(mappings_dir: Path, edit: Edit, find_line: Callable[..., int]) -> None:
    path = edit(
        "canonical.yaml",
        "  - key: lost\n    label: Lost\n    kind: lost\n    order: 7\n    probability: 0.00\n",
        "",
    )
    with pytest.raises(MappingError) as caught:
        load_mappings(mappings_dir)
    issues = {(i.file, i.line, i.key, i.message) for i in caught.value.issues}
    assert (str(path), find_line(path, "stages:"), "stages", "canonical stage 'lost' is missing") in issues


def test_optional_stage_left_out_is_an_error_only_where_a_source_names_it(
    mappings_dir: Path, edit: Edit, find_line: Callable[..., int]
) -> None:
    # Given a model without nurture (a preset may leave stages out)
    edit(
        "canonical.yaml",
        "  - key: nurture\n    label: Nurture\n    kind: hold\n    order: 8\n    probability: 0.02\n",
        "",
    )
    with pytest.raises(MappingError) as caught:
        load_mappings(mappings_dir)
    # Then only the source entries that map onto nurture are reported, at their line
    message = "canonical stage 'nurture' is not defined in canonical.yaml"
    found = {(i.file, i.message) for i in caught.value.issues}
    assert found == {(str(mappings_dir / name), message) for name in ("lagrowthmachine.yaml", "trello.yaml")}
    assert all(i.key.endswith(".canonical") and i.line is not None for i in caught.value.issues)


def test_canonical_stage_defined_twice(mappings_dir: Path, edit: Edit, find_line: Callable[..., int]) -> None:
    path = edit("canonical.yaml", "  - key: nurture", "  - key: prospect")
    with pytest.raises(MappingError) as caught:
        load_mappings(mappings_dir)
    issues = {(i.line, i.key, i.message) for i in caught.value.issues}
    assert (
        find_line(path, "key: prospect", occurrence=2),
        "stages[8].key",
        f"canonical stage 'prospect' is defined twice (first at line {find_line(path, 'key: prospect')})",
    ) in issues
    # nurture is optional now: leaving it out is reported where a source names it, not as missing


def test_won_must_be_kind_won(mappings_dir: Path, edit: Edit, find_line: Callable[..., int]) -> None:
    path = edit("canonical.yaml", "    kind: won", "    kind: open")
    issue = only_issue(mappings_dir)
    assert (issue.line, issue.key) == (find_line(path, "key: won") + 2, "stages[6].kind")


def test_missing_canonical_file(mappings_dir: Path) -> None:
    (mappings_dir / "canonical.yaml").unlink()
    issue = only_issue(mappings_dir)
    assert issue.file == str(mappings_dir / "canonical.yaml")
    assert "missing" in issue.message


def test_empty_file_and_wrong_root(mappings_dir: Path) -> None:
    (mappings_dir / "zoho.yaml").write_text("# nothing yet\n", encoding="utf-8")
    (mappings_dir / "odoo.yaml").write_text("- a\n- b\n", encoding="utf-8")
    _result, errors, _warnings = validate_directory(mappings_dir)
    by_file = {Path(e.file).name: e for e in errors}
    assert by_file["zoho.yaml"].message == "the file is empty"
    assert by_file["odoo.yaml"].key == "(root)" and by_file["odoo.yaml"].line == 1


def test_routes_yaml_is_not_a_source(mappings_dir: Path) -> None:
    (mappings_dir / "routes.yaml").write_text("routes: []\n", encoding="utf-8")
    assert "routes" not in load_mappings(mappings_dir).sources()


def test_all_errors_of_all_files_at_once(
    mappings_dir: Path, edit: Edit, find_line: Callable[..., int]
) -> None:
    # Given problems in three files, two of them in the same file
    hub = edit("hubspot.yaml", "        canonical: won\n", "        canonical: winner\n        colour: x\n")
    pd = edit(
        "pipedrive.yaml",
        "    canonical: lost\n",
        "    canonical: lost\n  - status: LOST\n    canonical: lost\n",
    )
    can = edit("canonical.yaml", "reply_sla_days: 3", "reply_sla_days: 3\nreply_sla_days: 4")
    # When the directory is loaded
    with pytest.raises(MappingError) as caught:
        load_mappings(mappings_dir)
    # Then every problem is in the one error, each with file, line and key
    got = {(i.file, i.line, i.key) for i in caught.value.issues}
    assert got == {
        (str(can), find_line(can, "reply_sla_days: 4"), "reply_sla_days"),
        (str(hub), find_line(hub, "canonical: winner"), "pipelines[0].stages[5].canonical"),
        (str(hub), find_line(hub, "colour: x"), "pipelines[0].stages[5].colour"),
        (str(pd), find_line(pd, "status: LOST"), "statuses[2].status"),
    }
    # and the message lists them all, canonical.yaml first, then by file and line
    text = str(caught.value)
    assert text.splitlines()[0].startswith(f"{can}:")
    assert len(text.splitlines()) == 4
    _result, errors, _warnings = validate_directory(mappings_dir)
    assert errors == caught.value.issues
