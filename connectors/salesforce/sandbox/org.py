"""The sandbox org's data: Opportunities, OpportunityStages, the delete log, users, API usage.

Seeded deterministically from ``seed``/``deals``/``now``. Stages are a new org's stock picklist
(Prospecting ... Closed Lost, default probabilities 10, 10, 20, 50, 60, 70, 75, 90, 100, 0 %).
Timestamps are written the way the REST API renders them, ``2013-05-08T21:20:00.000+0000``.
Field behaviour follows the Object Reference (Opportunity): ``IsClosed``, ``IsWon``,
``Probability`` and ``ForecastCategoryName`` follow the stage; ``SystemModstamp``,
``LastModifiedDate`` and ``LastModifiedById`` move on every write.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from connectors.salesforce.wire import parse_datetime

__all__ = [
    "OPPORTUNITY_FIELDS",
    "STOCK_STAGES",
    "WRITABLE_FIELDS",
    "ItemError",
    "Org",
    "sf_id",
    "sf_time",
]

# (ApiName, DefaultProbability, ForecastCategoryName, IsClosed, IsWon)
STOCK_STAGES: tuple[tuple[str, int, str, bool, bool], ...] = (
    ("Prospecting", 10, "Pipeline", False, False),
    ("Qualification", 10, "Pipeline", False, False),
    ("Needs Analysis", 20, "Pipeline", False, False),
    ("Value Proposition", 50, "Pipeline", False, False),
    ("Id. Decision Makers", 60, "Pipeline", False, False),
    ("Perception Analysis", 70, "Pipeline", False, False),
    ("Proposal/Price Quote", 75, "Pipeline", False, False),
    ("Negotiation/Review", 90, "Pipeline", False, False),
    ("Closed Won", 100, "Closed", True, True),
    ("Closed Lost", 0, "Omitted", True, False),
)
FLAG_FIELD = "Sync_Leak_Flag__c"
WRITABLE_FIELDS = frozenset(
    {"Name", "StageName", "Amount", "CloseDate", "Probability", "Description", "NextStep", "Type", FLAG_FIELD}
)
OPPORTUNITY_FIELDS = WRITABLE_FIELDS | {
    "Id",
    "IsClosed",
    "IsWon",
    "ForecastCategory",
    "ForecastCategoryName",
    "OwnerId",
    "AccountId",
    "Account",
    "CreatedDate",
    "CreatedById",
    "LastModifiedDate",
    "LastModifiedById",
    "SystemModstamp",
    "IsDeleted",
}
STAGE_OBJECT_FIELDS = frozenset(
    {
        "Id",
        "ApiName",
        "MasterLabel",
        "SortOrder",
        "IsActive",
        "IsClosed",
        "IsWon",
        "DefaultProbability",
        "ForecastCategory",
        "ForecastCategoryName",
        "Description",
        "SystemModstamp",
    }
)
_FORECAST = {"Pipeline": "Pipeline", "Closed": "Closed", "Omitted": "Omitted"}
_COMPANIES = (
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Wonka",
    "Soylent",
)


def sf_id(prefix: str, number: int) -> str:
    """An 18-character record id with a key prefix (``006`` Opportunity, ``005`` User...)."""
    return f"{prefix}{number:012d}AAA"


def sf_time(moment: datetime) -> str:
    """``2013-05-08T21:20:00.000+0000``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


@dataclass(frozen=True)
class ItemError:
    """One record a write refuses: ``statusCode``, message and fields, as collections answer."""

    status_code: str
    message: str
    fields: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"statusCode": self.status_code, "message": self.message, "fields": list(self.fields)}


class Org:
    """The sandbox org. Thread-safe; ``now`` is the org's clock."""

    def __init__(self, *, seed: int, deals: int, now: Callable[[], datetime]) -> None:
        self.now = now
        self.lock = threading.RLock()
        self.org_id = sf_id("00D", seed)
        self.integration_user = sf_id("005", 1)
        self.person_user = sf_id("005", 2)
        self.stages: dict[str, dict[str, Any]] = {
            name: {
                "attributes": {"type": "OpportunityStage"},
                "Id": sf_id("01J", i + 1),
                "ApiName": name,
                "MasterLabel": name,
                "SortOrder": i + 1,
                "IsActive": True,
                "IsClosed": closed,
                "IsWon": won,
                "DefaultProbability": probability,
                "ForecastCategory": _FORECAST[forecast],
                "ForecastCategoryName": forecast,
                "Description": None,
                "SystemModstamp": sf_time(now() - timedelta(days=400)),
            }
            for i, (name, probability, forecast, closed, won) in enumerate(STOCK_STAGES)
        }
        self.accounts = {sf_id("001", i + 1): name for i, name in enumerate(_COMPANIES)}
        self.opportunities: dict[str, dict[str, Any]] = {}
        self.delete_log: list[tuple[str, datetime]] = []
        self.log_starts = now() - timedelta(days=15)
        self._next_id = deals + 1
        self._seed(random.Random(seed), deals)

    def _seed(self, rng: random.Random, deals: int) -> None:
        now = self.now()
        names = list(self.stages)
        accounts = list(self.accounts)
        for number in range(1, deals + 1):
            created = now - timedelta(days=rng.randint(20, 200), seconds=rng.randint(0, 86_399))
            modified = created + timedelta(days=rng.randint(0, 19), milliseconds=rng.randint(0, 999))
            account = accounts[number % len(accounts)]
            opp: dict[str, Any] = {
                "Id": sf_id("006", number),
                "Name": f"{self.accounts[account]} - deal {number}",
                "Amount": float(rng.randrange(1_000, 200_000, 500)),
                "CloseDate": (now + timedelta(days=rng.randint(-30, 120))).date().isoformat(),
                "OwnerId": self.person_user,
                "AccountId": account,
                "CreatedDate": sf_time(created),
                "CreatedById": self.person_user,
                "LastModifiedById": self.person_user,
                "IsDeleted": False,
                "Description": None,
                "NextStep": None,
                "Type": "New Customer",
                FLAG_FIELD: None,
            }
            self._set_stage(opp, names[rng.randrange(len(names))])
            self._stamp(opp, modified, self.person_user)
            self.opportunities[opp["Id"]] = opp
        for number in range(1, max(1, deals // 40) + 1):
            opp = self.opportunities[sf_id("006", number * 7 % deals or 1)]
            self._delete(opp, now - timedelta(days=rng.randint(1, 10), minutes=rng.randint(0, 600)))

    # -- helpers --------------------------------------------------------------------------------

    def _set_stage(self, opp: dict[str, Any], name: str) -> None:
        stage = self.stages[name]
        opp["StageName"] = name
        opp["Probability"] = float(stage["DefaultProbability"])
        opp["IsClosed"] = stage["IsClosed"]
        opp["IsWon"] = stage["IsWon"]
        opp["ForecastCategory"] = stage["ForecastCategory"]
        opp["ForecastCategoryName"] = stage["ForecastCategoryName"]

    @staticmethod
    def _stamp(opp: dict[str, Any], moment: datetime, user: str) -> None:
        opp["LastModifiedDate"] = opp["SystemModstamp"] = sf_time(moment)
        opp["LastModifiedById"] = user

    def _delete(self, opp: dict[str, Any], moment: datetime) -> None:
        opp["IsDeleted"] = True
        self._stamp(opp, moment, opp["LastModifiedById"])
        self.delete_log.append((opp["Id"], moment))

    def view(self, opp: Mapping[str, Any]) -> dict[str, Any]:
        """The record as a query sees it: ``attributes`` and the ``Account`` relationship."""
        account = opp.get("AccountId")
        return {
            **opp,
            "attributes": {"type": "Opportunity", "url": f"/sobjects/Opportunity/{opp['Id']}"},
            "Account": None
            if account is None
            else {"attributes": {"type": "Account"}, "Name": self.accounts.get(account)},
        }

    # -- writes ---------------------------------------------------------------------------------

    def check_fields(self, fields: Mapping[str, Any], *, create: bool) -> ItemError | None:
        """Why ``fields`` cannot be written, or None."""
        for name in fields:
            if name not in OPPORTUNITY_FIELDS:
                return ItemError(
                    "INVALID_FIELD", f"No such column '{name}' on sobject of type Opportunity", (name,)
                )
            if name not in WRITABLE_FIELDS:
                code = "INVALID_FIELD_FOR_INSERT_UPDATE"
                return ItemError(code, f"Unable to create/update fields: {name}", (name,))
        stage = fields.get("StageName")
        if stage is not None and stage not in self.stages:
            return ItemError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", f"Stage: bad value: '{stage}'", ("StageName",)
            )
        if create:
            missing = [f for f in ("Name", "StageName", "CloseDate") if not fields.get(f)]
            if missing:
                return ItemError(
                    "REQUIRED_FIELD_MISSING", f"Required fields are missing: {missing}", tuple(missing)
                )
        if "Amount" in fields and fields["Amount"] is not None:
            try:
                Decimal(str(fields["Amount"]))
            except ArithmeticError:
                return ItemError(
                    "INVALID_TYPE_ON_FIELD_IN_RECORD", "Amount: value not of required type", ("Amount",)
                )
        return None

    def apply(self, opp: dict[str, Any], fields: Mapping[str, Any], user: str) -> None:
        """Write checked ``fields`` into ``opp`` as ``user`` (the stage sets its dependent fields)."""
        for name, value in fields.items():
            if name == "StageName":
                self._set_stage(opp, value)
            else:
                opp[name] = value
        self._stamp(opp, self.now(), user)

    def create(self, fields: Mapping[str, Any], user: str) -> dict[str, Any]:
        moment = self.now()
        opp: dict[str, Any] = {
            "Id": sf_id("006", self._next_id),
            "OwnerId": user,
            "AccountId": None,
            "CreatedDate": sf_time(moment),
            "CreatedById": user,
            "IsDeleted": False,
            "Amount": None,
            "Description": None,
            "NextStep": None,
            "Type": None,
            FLAG_FIELD: None,
        }
        self._next_id += 1
        self.apply(opp, fields, user)
        self.opportunities[opp["Id"]] = opp
        return opp

    def delete(self, record_id: str) -> None:
        """A person deletes the Opportunity: it goes to the recycle bin and the delete log."""
        with self.lock:
            self._delete(self.opportunities[record_id], self.now())

    def purge_log(self, before: datetime) -> None:
        """Empty the delete log before ``before`` (Salesforce may purge it early)."""
        with self.lock:
            self.log_starts = max(self.log_starts, before)
            self.delete_log = [(i, at) for i, at in self.delete_log if at >= before]

    def live(self) -> list[dict[str, Any]]:
        with self.lock:
            return [o for o in self.opportunities.values() if not o["IsDeleted"]]

    def changed_between(self, start: datetime, end: datetime) -> list[str]:
        """Ids whose ``SystemModstamp`` is in ``[start, end)`` (``updated/``)."""
        with self.lock:
            return [
                o["Id"]
                for o in self.opportunities.values()
                if not o["IsDeleted"] and start <= (parse_datetime(o["SystemModstamp"]) or start) < end
            ]
