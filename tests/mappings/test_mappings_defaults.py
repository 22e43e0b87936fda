"""The shipped defaults: they load, translate both ways, and their schemas are up to date."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync_worker.canonical import StageKey, StageKind, UnmappedStage
from sync_worker.errors import ConfigError
from sync_worker.mappings import (
    Mappings,
    TargetStage,
    load_mappings,
    schema_documents,
    validate_directory,
    write_schemas,
)
from sync_worker.mappings.schema import render_schema
from sync_worker.plugins import registry

# The shipped model uses every key but the optional post-purchase one.
_DEFAULT_KEYS = tuple(key for key in StageKey if key is not StageKey.RETENTION)


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(Path(__file__).resolve().parents[2] / "mappings")


def test_defaults_validate_without_errors_and_warn_about_unpushable_stages(defaults_dir: Path) -> None:
    result, errors, warnings = validate_directory(defaults_dir)
    assert errors == []
    assert result is not None
    # Every registered connector ships its default mapping, and only those are there.
    specs = registry()
    assert result.sources() == tuple(sorted(specs))
    expected_files = ["canonical.yaml", *(specs[name].mapping_file for name in sorted(specs))]
    assert [p.name for p in result.files] == expected_files
    joined = "\n".join(warnings)
    assert "hubspot.yaml" in joined and "prospect, nurture" in joined
    assert "pipedrive.yaml" in joined and "qualified, nurture" in joined
    assert "zoho.yaml" in joined and "prospect, contacted, nurture" in joined
    assert "clinchpad.yaml" in joined and "qualified, meeting, won, lost, nurture" in joined
    assert "salesforce.yaml" in joined and "salesforce: nurture" in joined


def test_canonical_model_defaults(mappings: Mappings) -> None:
    model = mappings.model
    assert model.reply_sla_days == 3
    expected = {
        "prospect": ("open", 0.05),
        "contacted": ("open", 0.10),
        "qualified": ("open", 0.15),
        "meeting": ("open", 0.30),
        "proposal": ("open", 0.50),
        "negotiation": ("open", 0.75),
        "won": ("won", 1.00),
        "lost": ("lost", 0.00),
        "nurture": ("hold", 0.02),
    }
    assert {s.key.value: (s.kind.value, s.probability) for s in model.stages} == expected
    assert [s.key for s in model.ordered()] == list(_DEFAULT_KEYS)
    for stage in model.stages:
        assert (stage.max_days is not None) == (stage.kind is StageKind.OPEN)


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ("appointmentscheduled", StageKey.CONTACTED),
        ("qualifiedtobuy", StageKey.QUALIFIED),
        ("presentationscheduled", StageKey.MEETING),
        ("decisionmakerboughtin", StageKey.PROPOSAL),
        ("contractsent", StageKey.NEGOTIATION),
        ("closedwon", StageKey.WON),
        ("closedlost", StageKey.LOST),
    ],
)
def test_hubspot_stock_pipeline(mappings: Mappings, stage: str, expected: StageKey) -> None:
    assert mappings.to_canonical("hubspot", pipeline="default", stage=stage) == expected


def test_hubspot_unknown_stage_and_pipeline_are_unmapped(mappings: Mappings) -> None:
    assert mappings.to_canonical("hubspot", pipeline="default", stage="12345") == UnmappedStage(
        "hubspot", "default", "12345"
    )
    # A stage id of the default pipeline is not found in a pipeline the mapping does not know.
    assert isinstance(mappings.to_canonical("hubspot", pipeline="999", stage="closedwon"), UnmappedStage)
    assert isinstance(mappings.to_canonical("zoho", pipeline=None, stage="x"), UnmappedStage)


@pytest.mark.parametrize(
    ("stage_name", "expected"),
    [
        ("Qualified", StageKey.PROSPECT),
        ("contact made", StageKey.CONTACTED),
        ("  DEMO   scheduled ", StageKey.MEETING),
        ("Proposal\tMade", StageKey.PROPOSAL),
        ("negotiations started", StageKey.NEGOTIATION),
    ],
)
def test_pipedrive_matches_names_ignoring_case_and_spaces(
    mappings: Mappings, stage_name: str, expected: StageKey
) -> None:
    got = mappings.to_canonical(
        "pipedrive", pipeline="1", stage="7", pipeline_name=" pipeline ", stage_name=stage_name
    )
    assert got == expected


def test_pipedrive_pipeline_must_match(mappings: Mappings) -> None:
    got = mappings.to_canonical(
        "pipedrive", pipeline="2", stage="9", pipeline_name="Renewals", stage_name="Contact Made"
    )
    assert got == UnmappedStage("pipedrive", "2", "9")


@pytest.mark.parametrize(("status", "expected"), [("won", StageKey.WON), ("LOST", StageKey.LOST)])
def test_pipedrive_status_wins_over_stage(mappings: Mappings, status: str, expected: StageKey) -> None:
    got = mappings.to_canonical(
        "pipedrive",
        pipeline="1",
        stage="3",
        pipeline_name="Pipeline",
        stage_name="Demo Scheduled",
        status=status,
    )
    assert got == expected


@pytest.mark.parametrize("status", ["open", "deleted", None])
def test_pipedrive_other_statuses_leave_the_stage_in_charge(mappings: Mappings, status: str | None) -> None:
    got = mappings.to_canonical(
        "pipedrive",
        pipeline="1",
        stage="3",
        pipeline_name="Pipeline",
        stage_name="Demo Scheduled",
        status=status,
    )
    assert got == StageKey.MEETING


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("CONTACTED", StageKey.CONTACTED),
        ("INTERESTED", StageKey.QUALIFIED),
        ("CALL_BOOKED", StageKey.MEETING),
        ("NEGOTIATING", StageKey.NEGOTIATION),
        ("READY_TO_BUY", StageKey.NEGOTIATION),
        ("CONVERTED", StageKey.WON),
        ("NOT_INTERESTED", StageKey.LOST),
        ("WRONG_TARGET", StageKey.LOST),
        ("WRONG_TIMING", StageKey.NURTURE),
        ("OUT_OF_OFFICE", StageKey.CONTACTED),
        ("COMPLETED_WITHOUT_REPLY", StageKey.NURTURE),
        ("converted", StageKey.WON),
    ],
)
def test_lagrowthmachine_lead_statuses(mappings: Mappings, status: str, expected: StageKey) -> None:
    assert mappings.to_canonical("lagrowthmachine", pipeline=None, stage=status) == expected


def test_lagrowthmachine_unknown_status_and_reply(mappings: Mappings) -> None:
    assert mappings.to_canonical("lagrowthmachine", pipeline=None, stage="SOMETHING_NEW") == UnmappedStage(
        "lagrowthmachine", None, "SOMETHING_NEW"
    )
    assert mappings.reply_stage("lagrowthmachine") == StageKey.CONTACTED
    assert mappings.reply_stage("hubspot") is None
    assert mappings.reply_stage("zoho") is None
    with pytest.raises(ConfigError, match="nosuchsystem"):
        mappings.reply_stage("nosuchsystem")


def _hub(stage: str) -> TargetStage:
    return TargetStage(pipeline="default", stage=stage, status=None, match_by="id")


def _pd(stage: str) -> TargetStage:
    return TargetStage(pipeline="Pipeline", stage=stage, status=None, match_by="name")


def _status(status: str) -> TargetStage:
    return TargetStage(pipeline=None, stage=None, status=status, match_by="id")


PUSH_TABLE: dict[str, dict[StageKey, TargetStage | None]] = {
    "hubspot": {
        StageKey.PROSPECT: None,
        StageKey.CONTACTED: _hub("appointmentscheduled"),
        StageKey.QUALIFIED: _hub("qualifiedtobuy"),
        StageKey.MEETING: _hub("presentationscheduled"),
        StageKey.PROPOSAL: _hub("decisionmakerboughtin"),
        StageKey.NEGOTIATION: _hub("contractsent"),
        StageKey.WON: _hub("closedwon"),
        StageKey.LOST: _hub("closedlost"),
        StageKey.NURTURE: None,
    },
    "pipedrive": {
        StageKey.PROSPECT: _pd("Qualified"),
        StageKey.CONTACTED: _pd("Contact Made"),
        StageKey.QUALIFIED: None,
        StageKey.MEETING: _pd("Demo Scheduled"),
        StageKey.PROPOSAL: _pd("Proposal Made"),
        StageKey.NEGOTIATION: _pd("Negotiations Started"),
        StageKey.WON: _status("won"),
        StageKey.LOST: _status("lost"),
        StageKey.NURTURE: None,
    },
    "lagrowthmachine": {
        StageKey.PROSPECT: None,
        StageKey.CONTACTED: _status("CONTACTED"),
        StageKey.QUALIFIED: _status("INTERESTED"),
        StageKey.MEETING: _status("CALL_BOOKED"),
        StageKey.PROPOSAL: None,
        StageKey.NEGOTIATION: _status("NEGOTIATING"),
        StageKey.WON: _status("CONVERTED"),
        StageKey.LOST: _status("NOT_INTERESTED"),
        StageKey.NURTURE: _status("WRONG_TIMING"),
    },
}


@pytest.mark.parametrize(
    ("target", "key"), [(target, key) for target in sorted(PUSH_TABLE) for key in _DEFAULT_KEYS]
)
def test_to_target_for_every_canonical_key(mappings: Mappings, target: str, key: StageKey) -> None:
    assert mappings.to_target(target, key) == PUSH_TABLE[target][key]


@pytest.mark.parametrize("target", sorted(PUSH_TABLE))
def test_unrepresentable_lists_exactly_the_keys_without_target(mappings: Mappings, target: str) -> None:
    expected = tuple(key for key in _DEFAULT_KEYS if PUSH_TABLE[target][key] is None)
    assert mappings.unrepresentable(target) == expected


def test_round_trip_source_to_canonical_to_target(mappings: Mappings) -> None:
    for target in ("hubspot", "pipedrive"):
        for key in _DEFAULT_KEYS:
            pushed = mappings.to_target(target, key)
            if pushed is None:
                continue
            pipe = pushed.pipeline
            back = mappings.to_canonical(
                target,
                pipeline=pipe if pushed.match_by == "id" else None,
                stage=pushed.stage if pushed.match_by == "id" else None,
                pipeline_name=pipe if pushed.match_by == "name" else None,
                stage_name=pushed.stage if pushed.match_by == "name" else None,
                status=pushed.status,
            )
            assert back == key, (target, key, pushed)


def test_to_target_with_pipeline(mappings: Mappings) -> None:
    assert mappings.to_target("hubspot", StageKey.WON, pipeline="default") == _hub("closedwon")
    assert mappings.to_target("hubspot", StageKey.WON, pipeline="Sales Pipeline") == _hub("closedwon")
    # In a pipeline the mapping does not know there is no stage to write ...
    assert mappings.to_target("hubspot", StageKey.WON, pipeline="555") is None
    # ... but a status can still be written (Pipedrive won/lost apply to any pipeline).
    assert mappings.to_target("pipedrive", StageKey.WON, pipeline="42") == _status("won")
    assert mappings.to_target("pipedrive", StageKey.MEETING, pipeline="42") is None
    with pytest.raises(ConfigError, match="nosuchsystem"):
        mappings.to_target("nosuchsystem", StageKey.WON)


def test_table_lists_every_mapped_entry(mappings: Mappings) -> None:
    rows = mappings.table()
    assert ("hubspot", "Sales Pipeline (default)", "Contract Sent (contractsent)", "negotiation") in rows
    assert ("pipedrive", "Pipeline", "Contact Made", "contacted") in rows
    assert ("pipedrive", "(status)", "won", "won") in rows
    assert ("lagrowthmachine", "(reply)", "reply received", "contacted") in rows
    assert len([r for r in rows if r[0] == "hubspot"]) == 7
    assert len([r for r in rows if r[0] == "lagrowthmachine"]) == 13


def test_default_files_point_editors_at_their_schema(defaults_dir: Path) -> None:
    for path in sorted(defaults_dir.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        kind = {"canonical": "canonical", "routes": "routes"}.get(path.stem, "source-mapping")
        assert first == f"# yaml-language-server: $schema=./schema/{kind}.schema.json", path.name


def test_shipped_schemas_equal_generated(defaults_dir: Path) -> None:
    documents = schema_documents()
    assert set(documents) == {p.name for p in (defaults_dir / "schema").glob("*.json")}
    for name, document in documents.items():
        shipped = (defaults_dir / "schema" / name).read_text(encoding="utf-8")
        assert shipped == render_schema(document), f"{name} is stale: run write_schemas()"


def test_write_schemas_round_trip(tmp_path: Path) -> None:
    written = write_schemas(tmp_path / "schema")
    assert sorted(p.name for p in written) == [
        "canonical.schema.json",
        "routes.schema.json",
        "source-mapping.schema.json",
    ]
    source = json.loads((tmp_path / "schema" / "source-mapping.schema.json").read_text(encoding="utf-8"))
    assert source["additionalProperties"] is False
    assert source["$defs"]["StageKey"]["enum"] == [k.value for k in StageKey]


def test_mappings_is_frozen(mappings: Mappings) -> None:
    with pytest.raises(AttributeError):
        mappings.model = mappings.model  # type: ignore[misc]
    with pytest.raises(TypeError):
        mappings.index["x"] = mappings.index["hubspot"]  # type: ignore[index]
