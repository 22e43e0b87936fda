"""Deals: the ``retention`` stage key and the ``diverged`` leak rule in the CHECK constraints.

Revision ID: 0003_deals
Revises: 0002
Create Date: 2026-12-03

Only CHECK constraints change, and only to accept more values, so no stored row can fail them.
PostgreSQL drops and re-adds each constraint. SQLite cannot alter a constraint; rebuilding
``records`` would cascade deletes into its children, so the table text in ``sqlite_schema`` is
edited instead, the procedure SQLite documents for loosening a CHECK constraint
(https://www.sqlite.org/lang_altertable.html#otheralter: ``PRAGMA writable_schema``, then bump
``schema_version``), followed by ``PRAGMA integrity_check``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_deals"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STAGES = (
    "'prospect', 'contacted', 'qualified', 'meeting', 'proposal', 'negotiation', 'won', 'lost', 'nurture'"
)
_NEW_STAGES = _OLD_STAGES + ", 'retention'"
_OLD_RULES = "'stalled', 'regressed', 'dropped', 'unanswered'"
_NEW_RULES = _OLD_RULES + ", 'diverged'"

# (table, constraint name, column expression prefix, old list, new list)
_CHECKS = (
    ("records", "ck_records_stage", "stage IS NULL OR stage IN", _OLD_STAGES, _NEW_STAGES),
    (
        "stage_history",
        "ck_stage_history_from_stage",
        "from_stage IS NULL OR from_stage IN",
        _OLD_STAGES,
        _NEW_STAGES,
    ),
    ("stage_history", "ck_stage_history_to_stage", "to_stage IN", _OLD_STAGES, _NEW_STAGES),
    ("leak_flags", "ck_leak_flags_stage", "stage IS NULL OR stage IN", _OLD_STAGES, _NEW_STAGES),
    ("leak_flags", "ck_leak_flags_rule", "rule IN", _OLD_RULES, _NEW_RULES),
)


def _swap(old: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _sqlite_swap(bind, old)
        return
    for table, name, prefix, before, after in _CHECKS:
        values = before if old else after
        op.drop_constraint(op.f(name), table, type_="check")
        op.create_check_constraint(op.f(name), table, sa.text(f"{prefix} ({values})"))


def _sqlite_swap(bind: sa.Connection, old: bool) -> None:
    version = int(bind.exec_driver_sql("PRAGMA schema_version").scalar_one())
    bind.exec_driver_sql("PRAGMA writable_schema = ON")
    for table, _name, _prefix, before, after in _CHECKS:
        find, put = (after, before) if old else (before, after)
        bind.execute(
            sa.text(
                "UPDATE sqlite_master SET sql = replace(sql, :find, :put)"
                " WHERE type = 'table' AND name = :table"
            ),
            {"find": f"IN ({find})", "put": f"IN ({put})", "table": table},
        )
    bind.exec_driver_sql(f"PRAGMA schema_version = {version + 1}")
    bind.exec_driver_sql("PRAGMA writable_schema = OFF")
    problems = [row[0] for row in bind.exec_driver_sql("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise RuntimeError(f"integrity check failed after the CHECK constraint edit: {problems[:3]}")


def upgrade() -> None:
    _swap(old=False)


def downgrade() -> None:
    _swap(old=True)
