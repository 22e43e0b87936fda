"""Held stages: records whose latest source stage no mapping covers, kept until one does.

- ``held_stages``: one row per record, with the raw pipeline and stage (ids and names) the source
  gave, when it was first and last held and how often; listed by ``sync-worker held list`` and
  ``status``, and re-applied once a mapping covers the stage.

Revision ID: 0006_held_stages
Revises: 0005_outbox_kind
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_held_stages"
down_revision: str | None = "0005_outbox_kind"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "held_stages",
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(255), nullable=True),
        sa.Column("pipeline_name", sa.String(255), nullable=True),
        sa.Column("stage", sa.String(255), nullable=True),
        sa.Column("stage_name", sa.String(255), nullable=True),
        sa.Column("stage_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("first_held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_held_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("held_count", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.PrimaryKeyConstraint("record_id", name=op.f("pk_held_stages")),
        sa.ForeignKeyConstraint(
            ["record_id"], ["records.id"], name=op.f("fk_held_stages_record_id_records"), ondelete="CASCADE"
        ),
    )
    op.create_index("ix_held_stages_source_pipeline_stage", "held_stages", ["source", "pipeline", "stage"])


def downgrade() -> None:
    op.drop_index("ix_held_stages_source_pipeline_stage", table_name="held_stages")
    op.drop_table("held_stages")
