"""Repeatable, realistic seed data for the three sandboxes.

:func:`seed_sandboxes` fills fresh sandboxes from one ``seed``: Pipedrive deals across two pipelines and
all their stages, with amounts, currencies, owners, contact persons with emails and stage ages (some
open deals stalled well beyond 30 days), some won, some lost with a reason, a few deleted; a quarter of
them mirrored in HubSpot (same name and amount, stage translated onto HubSpot's stock pipeline, and
associated with a HubSpot contact bearing the Pipedrive person's e-mail);
LaGrowthMachine leads whose emails match some deal contacts, some of which replied, plus replied leads
with no deal at all (the "unanswered" leak case). Nothing is announced by webhook.

The same ``seed``, ``deals`` and ``now`` on fresh sandboxes built with the same clocks give the same data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sync_worker.sandbox.hubspot import HubSpotSandbox
from sync_worker.sandbox.lagrowthmachine import LaGrowthMachineSandbox
from sync_worker.sandbox.pipedrive import PipedriveSandbox

__all__ = ["LOST_REASONS", "STALLED_AFTER_DAYS", "SeedSummary", "seed_sandboxes"]

STALLED_AFTER_DAYS = 30
LOST_REASONS = (
    "Price too high",
    "Went with a competitor",
    "No budget this year",
    "No decision",
    "Bad timing",
)

_FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Dennis",
    "Frances",
    "John",
    "Radia",
    "Tim",
    "Katherine",
    "Edsger",
    "Hedy",
    "Donald",
    "Sophie",
    "Niklaus",
    "Annie",
    "Bjarne",
)
_LAST = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Ritchie",
    "Allen",
    "McCarthy",
    "Perlman",
    "Berners",
    "Johnson",
    "Dijkstra",
    "Lamarr",
    "Knuth",
    "Wilson",
    "Wirth",
)
_COMPANIES = (
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Aperture",
    "Massive",
    "Pied Piper",
    "Gringotts",
)
_CURRENCIES = ("EUR", "EUR", "EUR", "USD", "USD", "GBP")
_OWNERS = (9001, 9002, 9003)
_SECOND_PIPELINE = ("Partnerships", ("Qualified", "Demo Scheduled", "Proposal Made", "Negotiations Started"))
_ROTTEN_DAYS = {"Proposal Made": 30, "Negotiations Started": 21}
_HUBSPOT_OPEN = (
    "qualifiedtobuy",
    "appointmentscheduled",
    "presentationscheduled",
    "contractsent",
    "decisionmakerboughtin",
)
_CAMPAIGNS = ("Q1 Outbound - SaaS founders", "EMEA heads of sales", "Webinar follow-up")


@dataclass(frozen=True)
class SeedSummary:
    """What was seeded, for tests and the demo's narration."""

    pipedrive_deal_ids: tuple[int, ...]
    hubspot_deal_ids: tuple[str, ...]
    lgm_lead_ids: tuple[str, ...]
    stalled_deal_ids: tuple[int, ...]
    won: int
    lost: int
    deleted: int
    replied_lead_ids: tuple[str, ...]
    replied_without_deal_ids: tuple[str, ...]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def seed_sandboxes(
    hubspot: HubSpotSandbox | None,
    pipedrive: PipedriveSandbox,
    lgm: LaGrowthMachineSandbox | None,
    *,
    deals: int,
    seed: int,
    now: datetime | None = None,
) -> SeedSummary:
    """Fill fresh sandboxes with ``deals`` Pipedrive deals and the matching HubSpot and LGM data.

    ``now`` (default: the current time, to the second) anchors every timestamp, so stage ages are
    relative to it. Pass ``hubspot`` or ``lgm`` as None to leave that sandbox empty.
    """
    if deals < 0:
        raise ValueError("deals must not be negative")
    rng = random.Random(seed)
    anchor = (now or datetime.now(UTC)).replace(microsecond=0)
    stages_by_pipeline = _pipedrive_catalog(pipedrive)
    people: list[tuple[int, str, str, str]] = []  # (person id, first, last, email)
    deal_rows: list[dict[str, Any]] = []
    stalled: list[int] = []
    counts = {"won": 0, "lost": 0, "deleted": 0}

    for index in range(deals):
        first, last, company = rng.choice(_FIRST), rng.choice(_LAST), rng.choice(_COMPANIES)
        email = f"{first}.{last}{index}@{company.lower().replace(' ', '')}.example".lower()
        person = pipedrive.add_person(f"{first} {last}", [email], owner_id=rng.choice(_OWNERS))
        people.append((person["id"], first, last, email))
        pipeline_id = rng.choice(list(stages_by_pipeline)) if rng.random() < 0.3 else min(stages_by_pipeline)
        stages = stages_by_pipeline[pipeline_id]
        stage_index = rng.randrange(len(stages))
        roll = rng.random()
        status = "won" if roll < 0.15 else "lost" if roll < 0.30 else "open"
        is_stalled = status == "open" and rng.random() < 0.25
        days_in_stage = rng.randint(STALLED_AFTER_DAYS + 5, 120) if is_stalled else rng.randint(0, 20)
        stage_changed = anchor - timedelta(days=days_in_stage, hours=rng.randint(0, 23))
        added = stage_changed - timedelta(days=rng.randint(1, 60))
        updated = stage_changed
        fields: dict[str, Any] = {
            "title": f"{company} - {rng.choice(('Platform', 'Pilot', 'Renewal', 'Expansion', 'Licences'))}",
            "value": rng.randint(10, 800) * 100,
            "currency": rng.choice(_CURRENCIES),
            "owner_id": rng.choice(_OWNERS),
            "person_id": person["id"],
            "stage_id": stages[stage_index]["id"],
            "expected_close_date": (added + timedelta(days=rng.randint(30, 120))).date().isoformat(),
        }
        overrides: dict[str, Any] = {}
        if status != "open":
            closed = stage_changed + timedelta(days=rng.randint(0, days_in_stage or 1))
            closed = min(closed, anchor)
            fields["status"] = status
            overrides.update(close_time=_iso(closed), **{f"{status}_time": _iso(closed)})
            if status == "lost":
                fields["lost_reason"] = rng.choice(LOST_REASONS)
            updated = closed
            counts[status] += 1
        deal = pipedrive.create_deal(
            fields,
            notify=False,
            add_time=_iso(added),
            update_time=_iso(updated),
            stage_change_time=_iso(stage_changed),
            **overrides,
        )
        if is_stalled:
            stalled.append(deal["id"])
        if status == "open" and rng.random() < 0.03:
            pipedrive.delete_deal(deal["id"], change_source="app")
            counts["deleted"] += 1
        deal_rows.append({**deal, "stage_index": stage_index, "added": added, "changed": stage_changed})

    contacts = {person_id: (first, last, email) for person_id, first, last, email in people}
    mirrored = deal_rows[: deals // 4]
    hubspot_ids = _seed_hubspot(hubspot, mirrored, rng, contacts) if hubspot is not None else []
    lead_ids: list[str] = []
    replied: list[str] = []
    orphans: list[str] = []
    if lgm is not None:
        lead_ids, replied, orphans = _seed_lgm(lgm, people, rng, anchor)
    return SeedSummary(
        pipedrive_deal_ids=tuple(row["id"] for row in deal_rows),
        hubspot_deal_ids=tuple(hubspot_ids),
        lgm_lead_ids=tuple(lead_ids),
        stalled_deal_ids=tuple(stalled),
        won=counts["won"],
        lost=counts["lost"],
        deleted=counts["deleted"],
        replied_lead_ids=tuple(replied),
        replied_without_deal_ids=tuple(orphans),
    )


def _pipedrive_catalog(pipedrive: PipedriveSandbox) -> dict[int, list[dict[str, Any]]]:
    """Add the second pipeline and rotting limits; return stages per pipeline in order."""
    name, stage_names = _SECOND_PIPELINE
    if not any(p["name"] == name for p in pipedrive.pipelines.values()):
        pipeline = pipedrive.add_pipeline(name)
        for stage_name in stage_names:
            pipedrive.add_stage(pipeline["id"], stage_name, rotten_days=_ROTTEN_DAYS.get(stage_name))
    for option in ("Hot", "Warm", "Cold"):
        if not any(o["label"] == option for o in pipedrive.label_options.values()):
            pipedrive.add_label_option(option)
    catalog: dict[int, list[dict[str, Any]]] = {}
    for stage in sorted(pipedrive.stages.values(), key=lambda s: (s["pipeline_id"], s["order_nr"])):
        catalog.setdefault(stage["pipeline_id"], []).append(stage)
    return catalog


def _seed_hubspot(
    hubspot: HubSpotSandbox,
    rows: list[dict[str, Any]],
    rng: random.Random,
    contacts: dict[int, tuple[str, str, str]],
) -> list[str]:
    """The HubSpot twins of ``rows``, each associated with a contact bearing its Pipedrive person's
    e-mail (``contacts``: person id -> first name, last name, e-mail), as a real account would hold."""
    ids = []
    for row in rows:
        if row["status"] == "won":
            stage = "closedwon"
        elif row["status"] == "lost":
            stage = "closedlost"
        else:
            stage = _HUBSPOT_OPEN[min(row["stage_index"], len(_HUBSPOT_OPEN) - 1)]
        properties = {
            "dealname": row["title"],
            "amount": str(row["value"]),
            "dealstage": stage,
            "pipeline": "default",
            "closedate": f"{row['expected_close_date']}T00:00:00.000Z",
            "hubspot_owner_id": str(rng.choice(_OWNERS)),
        }
        if row["lost_reason"]:
            properties["closed_lost_reason"] = row["lost_reason"]
        stamp = int(row["changed"].timestamp() * 1000)
        deal_id = hubspot.put_deal(properties, created_ms=stamp, modified_ms=stamp)
        person = contacts.get(row["person_id"])
        if person is not None:
            first, last, email = person
            contact_id = hubspot.contacts.add_contact(email, firstname=first, lastname=last, created_ms=stamp)
            hubspot.contacts.associate(deal_id, contact_id)
        ids.append(deal_id)
    return ids


def _seed_lgm(
    lgm: LaGrowthMachineSandbox,
    people: list[tuple[int, str, str, str]],
    rng: random.Random,
    anchor: datetime,
) -> tuple[list[str], list[str], list[str]]:
    campaigns = [lgm.add_campaign(name)["id"] for name in _CAMPAIGNS]
    lead_ids: list[str] = []
    replied: list[str] = []
    orphans: list[str] = []
    contacted = [p for p in people if rng.random() < 0.4]
    strangers = [
        (
            0,
            rng.choice(_FIRST),
            rng.choice(_LAST),
            f"prospect{n}@{rng.choice(_COMPANIES).lower().replace(' ', '')}.example",
        )
        for n in range(max(3, len(people) // 10))
    ]
    for position, (person_id, first, last, email) in enumerate(contacted + strangers):
        campaign_id = rng.choice(campaigns)
        lead = lgm.add_lead(
            firstname=first,
            lastname=last,
            email=email,
            linkedin_url=f"https://www.linkedin.com/in/{first}-{last}-{position}".lower(),
            campaign_id=campaign_id,
        )
        lead_ids.append(lead["id"])
        sent = anchor - timedelta(days=rng.randint(5, 40))
        lgm.add_message(
            lead["id"], f"Hi {first}, quick question about your pipeline", campaign_id=campaign_id, at=sent
        )
        is_stranger = person_id == 0
        first_stranger = position == len(contacted)  # at least one replied lead has no deal
        if rng.random() < (0.6 if is_stranger else 0.5) or first_stranger:
            answered = min(sent + timedelta(days=rng.randint(1, 4), hours=rng.randint(0, 23)), anchor)
            lgm.simulate_reply(
                lead["id"],
                "Happy to chat, send me a slot.",
                campaign_id=campaign_id,
                at=answered,
                notify=False,
            )
            replied.append(lead["id"])
            if is_stranger:
                orphans.append(lead["id"])
    return lead_ids, replied, orphans
