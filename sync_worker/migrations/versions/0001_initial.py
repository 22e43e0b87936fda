"""Initial state store schema, written by hand to match ``sync_worker/store/schema.py``.

Revision ID: 0001
Revises:
Create Date: 2024-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STAGES = (
    "'prospect', 'contacted', 'qualified', 'meeting', 'proposal', 'negotiation', 'won', 'lost', 'nurture'"
)


def _ts(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _amount(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.Numeric(18, 4), nullable=True)


def upgrade() -> None:
    op.create_table(
        "records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("pipeline_id", sa.String(255), nullable=True),
        sa.Column("source_stage", sa.String(255), nullable=True),
        sa.Column("stage", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        _amount("amount"),
        sa.Column("currency", sa.String(16), nullable=True),
        sa.Column("owner_id", sa.String(255), nullable=True),
        sa.Column("contact_email", sa.String(320), nullable=True),
        sa.Column("linkedin_url", sa.Text(), nullable=True),
        sa.Column("company", sa.Text(), nullable=True),
        sa.Column("close_date", sa.Date(), nullable=True),
        sa.Column("lost_reason", sa.Text(), nullable=True),
        sa.Column("change_source", sa.String(255), nullable=True),
        _ts("source_created_at"),
        _ts("source_updated_at", nullable=False),
        _ts("stage_entered_at"),
        _ts("replied_at"),
        _ts("first_seen_at", nullable=False),
        _ts("last_seen_at", nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_records"),
        sa.UniqueConstraint("source", "kind", "external_id", name="uq_records_source_kind_external_id"),
        sa.CheckConstraint("kind IN ('deal', 'lead')", name=op.f("ck_records_kind")),
        sa.CheckConstraint("status IN ('open', 'won', 'lost', 'deleted')", name=op.f("ck_records_status")),
        sa.CheckConstraint(f"stage IS NULL OR stage IN ({_STAGES})", name=op.f("ck_records_stage")),
    )
    op.create_index("ix_records_stage_stage_entered_at", "records", ["stage", "stage_entered_at"])
    op.create_index("ix_records_status", "records", ["status"])
    op.create_index("ix_records_contact_email", "records", ["contact_email"])

    op.create_table(
        "link_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_link_groups"),
    )
    op.create_table(
        "link_members",
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        _ts("linked_at", nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_link_members"),
        sa.ForeignKeyConstraint(
            ["record_id"], ["records.id"], name="fk_link_members_record_id_records", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["link_groups.id"], name="fk_link_members_group_id_link_groups", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_link_members_group_id", "link_members", ["group_id"])

    op.create_table(
        "stage_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("from_stage", sa.String(16), nullable=True),
        sa.Column("to_stage", sa.String(16), nullable=False),
        sa.Column("source_stage", sa.String(255), nullable=True),
        _ts("at", nullable=False),
        sa.Column("origin", sa.String(64), nullable=False),
        sa.Column("written_by_worker", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_stage_history"),
        sa.ForeignKeyConstraint(
            ["record_id"], ["records.id"], name="fk_stage_history_record_id_records", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            f"from_stage IS NULL OR from_stage IN ({_STAGES})", name=op.f("ck_stage_history_from_stage")
        ),
        sa.CheckConstraint(f"to_stage IN ({_STAGES})", name=op.f("ck_stage_history_to_stage")),
    )
    op.create_index("ix_stage_history_record_id_at", "stage_history", ["record_id", "at"])

    op.create_table(
        "cursors",
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _ts("updated_at", nullable=False),
        sa.PrimaryKeyConstraint("source", "stream", name="pk_cursors"),
    )

    op.create_table(
        "inbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("dedupe_key", sa.String(255), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        _ts("occurred_at", nullable=False),
        sa.Column("property_name", sa.String(255), nullable=True),
        sa.Column("property_value", sa.Text(), nullable=True),
        sa.Column("change_source", sa.String(255), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        _ts("received_at", nullable=False),
        _ts("enqueued_at"),
        _ts("processed_at"),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbox"),
        sa.UniqueConstraint("source", "dedupe_key", name="uq_inbox_source_dedupe_key"),
    )
    op.create_index("ix_inbox_processed_at", "inbox", ["processed_at"])
    op.create_index(
        "ix_inbox_not_enqueued",
        "inbox",
        ["received_at"],
        sqlite_where=sa.text("enqueued_at IS NULL"),
        postgresql_where=sa.text("enqueued_at IS NULL"),
    )

    op.create_table(
        "processed_keys",
        sa.Column("key", sa.String(255), nullable=False),
        _ts("processed_at", nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_processed_keys"),
    )

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        _ts("next_attempt_at", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("created_at", nullable=False),
        _ts("sent_at"),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
        sa.UniqueConstraint("idempotency_key", name="uq_outbox_idempotency_key"),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'dead')", name=op.f("ck_outbox_status")),
    )
    op.create_index("ix_outbox_status_next_attempt_at", "outbox", ["status", "next_attempt_at"])

    op.create_table(
        "leak_flags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("stage", sa.String(16), nullable=True),
        _ts("since"),
        sa.Column("days_in_stage", sa.Integer(), nullable=True),
        _amount("amount"),
        _amount("weighted_amount"),
        _ts("raised_at", nullable=False),
        _ts("cleared_at"),
        _ts("written_to_crm_at"),
        _ts("alerted_at"),
        sa.PrimaryKeyConstraint("id", name="pk_leak_flags"),
        sa.ForeignKeyConstraint(
            ["record_id"], ["records.id"], name="fk_leak_flags_record_id_records", ondelete="CASCADE"
        ),
        sa.CheckConstraint(
            "rule IN ('stalled', 'regressed', 'dropped', 'unanswered')", name=op.f("ck_leak_flags_rule")
        ),
        sa.CheckConstraint(f"stage IS NULL OR stage IN ({_STAGES})", name=op.f("ck_leak_flags_stage")),
    )
    op.create_index("ix_leak_flags_record_id", "leak_flags", ["record_id"])
    op.create_index(
        "uq_leak_flags_open",
        "leak_flags",
        ["record_id", "rule"],
        unique=True,
        sqlite_where=sa.text("cleared_at IS NULL"),
        postgresql_where=sa.text("cleared_at IS NULL"),
    )

    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("error_class", sa.String(255), nullable=True),
        _ts("created_at", nullable=False),
        _ts("replayed_at"),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_created_at", "dead_letters", ["created_at"])

    op.create_table(
        "write_memory",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("field", sa.String(128), nullable=False),
        sa.Column("value_hash", sa.String(64), nullable=False),
        _ts("written_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_write_memory"),
    )
    op.create_index(
        "ix_write_memory_target_external_id_field_written_at",
        "write_memory",
        ["target", "external_id", "field", "written_at"],
    )


def downgrade() -> None:
    for table in (
        "write_memory",
        "dead_letters",
        "leak_flags",
        "outbox",
        "processed_keys",
        "inbox",
        "cursors",
        "stage_history",
        "link_members",
        "link_groups",
        "records",
    ):
        op.drop_table(table)
