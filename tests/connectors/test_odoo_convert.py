"""Pure pieces of the Odoo connector: translation, the cursor, and the spec's declarations."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from connectors.odoo import SPEC, OdooSettings
from connectors.odoo.convert import LeadWrite, from_canonical, stage_from_payload, to_canonical
from connectors.odoo.cursor import PullCursor
from connectors.odoo.spec import choose_transport
from sync_worker.canonical import CanonicalUpdate, SourceStage, StageKey
from sync_worker.errors import ConfigError, PermanentError
from sync_worker.mappings import Mappings, load_mappings
from sync_worker.ratelimit import Limit
from tests.connectors.odoo_helpers import REPO, fixture


@pytest.fixture(scope="module")
def mappings() -> Mappings:
    return load_mappings(REPO / "mappings")


@pytest.fixture(scope="module")
def stages() -> list[SourceStage]:
    return [stage_from_payload(s) for s in fixture("stages.json")]


def test_stages_carry_won_and_their_team(stages: list[SourceStage]) -> None:
    by_name = {s.stage_label: s for s in stages}
    assert by_name["Won"].is_closed and by_name["Won"].order == 70
    assert not by_name["New"].is_closed and by_name["New"].pipeline_id == "all"
    assert (by_name["Demo"].pipeline_id, by_name["Demo"].pipeline_label) == ("team:2", "Website")


def test_a_team_stage_the_mapping_leaves_out_is_unmapped_not_guessed(
    mappings: Mappings, stages: list[SourceStage]
) -> None:
    lead = {**fixture("leads.json")[0], "stage_id": [9, "Demo"]}
    record = to_canonical(lead, mappings, stages={s.stage_id: s for s in stages})
    assert record.stage is None and record.unmapped is not None and record.status == "open"


def update(**fields: Any) -> CanonicalUpdate:
    return CanonicalUpdate(target="odoo", idempotency_key="k", origin="hubspot", external_id="5", **fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"stage": StageKey.PROSPECT}, LeadWrite({"stage_id": 1})),
        ({"stage": StageKey.WON}, LeadWrite({}, "won")),
        ({"stage": StageKey.LOST, "lost_reason": "Price"}, LeadWrite({}, "lost", "Price")),
        ({"status": "lost"}, LeadWrite({}, "lost")),
        ({"status": "open", "stage": StageKey.PROPOSAL}, LeadWrite({"stage_id": 3}, "open")),
        ({"lost_reason": "ignored when not lost", "title": "T"}, LeadWrite({"name": "T"})),
        (
            {
                "amount": Decimal("10.50"),
                "close_date": date(2025, 5, 1),
                "contact_email": "a@b.c",
                "currency": "EUR",
            },
            LeadWrite({"expected_revenue": 10.5, "date_deadline": "2025-05-01", "email_from": "a@b.c"}),
        ),
    ],
)
def test_from_canonical(
    mappings: Mappings, stages: list[SourceStage], fields: dict[str, Any], expected: LeadWrite
) -> None:
    assert from_canonical(update(**fields), mappings, stages=stages) == expected


@pytest.mark.parametrize(
    "fields", [{"status": "deleted"}, {"stage": StageKey.MEETING}, {"stage": StageKey.CONTACTED}]
)
def test_what_odoo_cannot_hold_is_refused(
    mappings: Mappings, stages: list[SourceStage], fields: dict[str, Any]
) -> None:
    with pytest.raises(PermanentError):
        from_canonical(update(**fields), mappings, stages=stages)
    with pytest.raises(PermanentError, match="title"):
        from_canonical(
            CanonicalUpdate(target="odoo", idempotency_key="k", origin="x", amount=Decimal(1)),
            mappings,
            stages=stages,
        )


def test_cursor_round_trip_and_ranges() -> None:
    cursor = PullCursor(datetime(2025, 3, 1, 10, 15, 2, tzinfo=UTC), frozenset({1, 2, 3, 7, 9, 10}))
    assert str(cursor) == "2025-03-01 10:15:02|1-3,7,9-10"
    assert PullCursor.parse(str(cursor)) == cursor
    assert PullCursor.parse("2025-03-01 10:15:02.75").seen == frozenset()
    later = cursor.advance(datetime(2025, 3, 1, 10, 15, 2, 900_000, tzinfo=UTC), 4)
    assert later.seen == {1, 2, 3, 4, 7, 9, 10}
    assert cursor.advance(datetime(2025, 3, 1, 10, 15, 3, tzinfo=UTC), 8) == PullCursor(
        datetime(2025, 3, 1, 10, 15, 3, tzinfo=UTC), frozenset({8})
    )
    for bad in ("yesterday|1", "2025-03-01 10:15:02|x", "2025-03-01 10:15:02|5-1", ""):
        with pytest.raises(ConfigError):
            PullCursor.parse(bad)


def test_spec_declarations() -> None:
    section = OdooSettings(
        base_url="https://acme.odoo.com", api_key=SecretStr("k"), database="acme", user_id=6
    )
    assert SPEC.enabled(section) and not SPEC.enabled(OdooSettings())
    assert SPEC.limits(section) == {"default": Limit(50, 10.0)}
    assert SPEC.limits(OdooSettings(rate_limit_per_10s=5)) == {"default": Limit(5, 10.0)}
    assert SPEC.account(section) == ("https://acme.odoo.com/#acme", SecretStr("k"))
    assert (
        SPEC.echo_markers(section) == frozenset({"user:6"})
        and SPEC.echo_markers(OdooSettings()) == frozenset()
    )
    assert SPEC.deal_url is not None
    assert SPEC.deal_url(section, "7") == "https://acme.odoo.com/web#id=7&model=crm.lead&view_type=form"
    stream = SPEC.stream("deals")
    assert stream.full and stream.since is not None
    assert stream.since(datetime(2025, 3, 1, 10, 15, 2, 500, tzinfo=UTC)) == "2025-03-01 10:15:02|"
    assert SPEC.credential_env == "SYNC_ODOO__API_KEY"


@pytest.mark.parametrize(
    ("settings", "detected", "expected"),
    [
        ({"transport": "json2"}, 17, "json2"),
        ({"transport": "jsonrpc"}, 19, "jsonrpc"),
        ({"version": 18}, 19, "jsonrpc"),
        ({"version": 19}, 17, "json2"),
        ({}, 17, "jsonrpc"),
        ({}, 20, "json2"),
    ],
)
def test_choose_transport(settings: dict[str, Any], detected: int, expected: str) -> None:
    assert choose_transport(OdooSettings(**settings), lambda: detected) == expected
