"""Deterministic seed data for the Odoo sandbox: a stock CRM database with opportunities.

Stages as the project's default mapping expects them (``New``, ``Qualified``, ``Proposition``,
``Negotiation``, ``Won`` with ``is_won``; all shared by every team), the stock lost reasons, one
sales team, the people (``Mitchell Admin``, ``Marc Demo``) and the API bot user. Opportunities are
spread over the sixty days before ``now``: most open, some won (won stage, probability 100), some
lost (archived, probability 0, a lost reason, stage unchanged), plus a few leads (``type`` lead)
that are not opportunities. The same ``seed`` and ``now`` give the same database.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from connectors.odoo.sandbox.state import OdooState

__all__ = ["STOCK_STAGES", "SeededIds", "seed_database"]

STOCK_STAGES: tuple[tuple[str, int, bool], ...] = (
    ("New", 1, False),
    ("Qualified", 2, False),
    ("Proposition", 3, False),
    ("Negotiation", 4, False),
    ("Won", 70, True),
)
_LOST_REASONS = ("Too expensive", "We don't have people/skills", "Not enough stock")
_COMPANIES = (
    "Deco Addict",
    "Azure Interior",
    "Gemini Furniture",
    "Ready Mat",
    "Lumber Inc",
    "Wood Corner",
    "Acme Corporation",
    "Brandon Freeman",
    "Jackson Group",
    "YourCompany",
)
_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Linus")
_PRODUCTS = ("Office Design", "Open Space", "Quote for 12 Tables", "Modern chairs", "Custom desks", "Kitchen")


@dataclass(frozen=True)
class SeededIds:
    """The ids a test needs: users, stages by name, lost reasons by name."""

    system_uid: int
    person_uid: int
    other_person_uid: int
    bot_uid: int
    stages: dict[str, int]
    lost_reasons: dict[str, int]
    team_id: int


def seed_database(state: OdooState, *, seed: int, deals: int, now: datetime) -> SeededIds:
    """Fill ``state``; opportunities are ``deals`` in number (plus ``deals // 10`` leads)."""
    rng = random.Random(seed)
    root = state.insert(
        "res.users", {"name": "OdooBot", "login": "__system__"}, uid=1, at=now - timedelta(days=400)
    )
    person = state.insert("res.users", {"name": "Mitchell Admin", "login": "admin"}, uid=root)
    other = state.insert("res.users", {"name": "Marc Demo", "login": "demo"}, uid=root)
    bot = state.insert("res.users", {"name": "sync-worker", "login": "sync-worker"}, uid=root)
    state.insert("res.currency", {"name": "USD"}, uid=root)
    team = state.insert("crm.team", {"name": "Sales"}, uid=root)
    stages = {
        name: state.insert(
            "crm.stage", {"name": name, "sequence": seq, "is_won": won, "fold": False}, uid=root
        )
        for name, seq, won in STOCK_STAGES
    }
    reasons = {name: state.insert("crm.lost.reason", {"name": name}, uid=root) for name in _LOST_REASONS}
    open_stages = [stages[name] for name, _, won in STOCK_STAGES if not won]
    for number in range(deals + deals // 10):
        written = now - timedelta(days=rng.uniform(0.5, 60), microseconds=rng.randrange(1_000_000))
        created = written - timedelta(days=rng.uniform(0, 30))
        company = rng.choice(_COMPANIES)
        first = rng.choice(_FIRST)
        roll = rng.random()
        stage = rng.choice(open_stages)
        values: dict[str, Any] = {
            "name": f"{company}: {rng.choice(_PRODUCTS)} #{number + 1}",
            "type": "lead" if number >= deals else "opportunity",
            "stage_id": stage,
            "team_id": team,
            "user_id": rng.choice((person, other)),
            "probability": 10.0 + 10 * open_stages.index(stage),
            "expected_revenue": float(rng.randrange(5, 500) * 100),
            "company_currency": 1,
            "partner_name": company,
            "email_from": f"{first.lower()}.{number + 1}@{company.split()[0].lower()}.example.com",
            "date_deadline": (written + timedelta(days=rng.randrange(5, 90))).date().isoformat(),
            "date_last_stage_update": written,
            "lost_reason_id": False,
            "tag_ids": [],
            "create_date": created,
        }
        if number < deals and roll < 0.1:
            values.update(stage_id=stages["Won"], probability=100.0)
        elif number < deals and roll < 0.22:
            values.update(active=False, probability=0.0, lost_reason_id=rng.choice(list(reasons.values())))
        state.insert("crm.lead", values, uid=rng.choice((person, other)), at=written)
    return SeededIds(root, person, other, bot, stages, reasons, team)
