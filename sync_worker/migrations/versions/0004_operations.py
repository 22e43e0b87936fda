"""Day-one operations: pauses, the last run of each poll/push/scan, and dead inbox messages.

- ``pauses``: sources and routes an operator paused (``sync-worker pause``);
- ``activity``: per poll stream, push target and leak scan, the last run, success, error and counts
  (``sync-worker status``);
- ``route_starts``: when the service first ran each route (reply routes act on newer replies only);
- ``dead_letters.inbox_id``: the inbox row a dead ``process_inbox_event`` stood for, so the inbox
  depth counts only rows still pending.

Revision ID: 0004_operations
Revises: 0003_deals
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_operations"
down_revision: str | None = "0003_deals"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("inbox_id", sa.Integer(), nullable=True))
        batch.create_index("ix_dead_letters_inbox_id", ["inbox_id"])
    op.create_table(
        "pauses",
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("scope", "name", name=op.f("pk_pauses")),
        sa.CheckConstraint("scope IN ('source', 'route')", name=op.f("ck_pauses_scope")),
    )
    op.create_table(
        "route_starts",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_route_starts")),
    )
    op.create_table(
        "activity",
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("total_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("failures", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.PrimaryKeyConstraint("kind", "name", name=op.f("pk_activity")),
        sa.CheckConstraint("kind IN ('poll', 'push', 'scan')", name=op.f("ck_activity_kind")),
    )


def downgrade() -> None:
    op.drop_table("activity")
    op.drop_table("route_starts")
    op.drop_table("pauses")
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_index("ix_dead_letters_inbox_id")
        batch.drop_column("inbox_id")
