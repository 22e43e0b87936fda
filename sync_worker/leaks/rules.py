"""The four leak rules as data: which canonical stages each rule looks at, and their wording.

Pure: nothing here touches the database or the clock. :class:`RuleBook` is derived once per scan
from the admin-edited :class:`~sync_worker.canonical.StageModel` (``mappings/canonical.yaml``) and
hands the SQL layer (:mod:`sync_worker.store.leak_queries`) plain tables: open stages in funnel
order, win probabilities, ``max_days`` limits, labels, and the (from, to) pairs that are
regressions.

- **stalled**: an open deal older in its stage than the stage's ``max_days`` (what Pipedrive calls
  rotting, https://support.pipedrive.com/en/article/rotting-deals).
- **regressed**: the transition that put an open deal in its current stage moved it back to an
  earlier open stage (:meth:`StageModel.is_regression`).
- **dropped**: a deal lost from an open or parked stage, deleted in its source, or no longer returned
  by a full pull of its source.
- **unanswered**: a lead replied in the outreach tool and no linked deal moved within
  ``reply_sla_days``.
- **diverged**: the copies of one deal (its linked records in several CRMs) sit in different
  canonical stages or statuses for longer than a grace period (default
  :data:`DEFAULT_DIVERGED_GRACE`; the runtime passes one poll interval plus the push time).

The deal is the unit: the first four deal rules judge each deal by its newest copy, one flag per
deal, written back to every copy (:mod:`sync_worker.leaks.scan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sync_worker.canonical import LeakFlag, StageKey, StageKind, StageModel
from sync_worker.store.models import FlagRule, StoredFlag

__all__ = ["DEFAULT_DIVERGED_GRACE", "RULES", "RuleBook", "clear_flag", "leak_flag"]

RULES: tuple[FlagRule, ...] = ("stalled", "regressed", "dropped", "unanswered", "diverged")
DEFAULT_DIVERGED_GRACE = timedelta(minutes=15)
"""How long copies of a deal may disagree before ``diverged``, when the caller gives no grace."""


@dataclass(frozen=True)
class RuleBook:
    """The stage tables the rules need, taken from one :class:`StageModel`."""

    labels: dict[str, str]
    probabilities: dict[str, Decimal]
    max_days: dict[str, int]
    open_stages: tuple[str, ...]
    hold_stages: tuple[str, ...]
    lost_stages: tuple[str, ...]
    regressions: tuple[tuple[str, str], ...]
    reply_sla_days: int
    diverged_grace: timedelta = DEFAULT_DIVERGED_GRACE

    @classmethod
    def from_model(cls, model: StageModel, *, diverged_grace: timedelta | None = None) -> RuleBook:
        stages = model.ordered()
        opened = tuple(s.key.value for s in stages if s.kind is StageKind.OPEN)
        return cls(
            labels={s.key.value: s.label for s in stages},
            probabilities={s.key.value: Decimal(str(s.probability)) for s in stages},
            max_days={s.key.value: s.max_days for s in stages if s.kind is StageKind.OPEN and s.max_days},
            open_stages=opened,
            hold_stages=tuple(s.key.value for s in stages if s.kind is StageKind.HOLD),
            lost_stages=tuple(s.key.value for s in stages if s.kind is StageKind.LOST),
            regressions=tuple(
                (before, after) for before in opened for after in opened if model.is_regression(before, after)
            ),
            reply_sla_days=model.reply_sla_days,
            diverged_grace=diverged_grace if diverged_grace is not None else DEFAULT_DIVERGED_GRACE,
        )

    def diverged_cutoff(self, now: datetime) -> datetime:
        """Copies that disagree since before this instant have diverged."""
        return now - self.diverged_grace

    def stall_cutoffs(self, now: datetime) -> dict[str, datetime]:
        """Per open stage with a limit: a deal that entered it before this instant is stalled."""
        return {key: now - timedelta(days=days) for key, days in self.max_days.items()}

    def reply_cutoff(self, now: datetime) -> datetime:
        """A reply before this instant with no deal movement since is unanswered."""
        return now - timedelta(days=self.reply_sla_days)

    def stalled_reason(self, key: str) -> str:
        return f"in {self.labels[key]} longer than {self.max_days[key]} days"

    def label(self, key: str) -> str:
        return self.labels[key]


def leak_flag(flag: StoredFlag) -> LeakFlag:
    """The write-back value for a raised flag."""
    return LeakFlag(
        rule=flag.rule,
        reason=flag.reason,
        stage=StageKey(flag.stage) if flag.stage is not None else None,
        since=flag.since,
        days_in_stage=flag.days_in_stage,
    )


def clear_flag() -> LeakFlag:
    """The write-back value that clears a deal's leak flag."""
    return LeakFlag(rule=None)
