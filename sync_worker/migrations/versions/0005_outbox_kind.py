"""Typed outbox items: ``outbox.kind`` says which producer queued an item and how it is pushed.

``mirror`` (a route's field writes, lead statuses included), ``flag`` (a leak-flag write-back or
clear: a serialised :class:`~sync_worker.canonical.CanonicalUpdate`) and ``alert`` (a message for
the alert webhook). Rows queued before this revision get their kind from what queued them: the
alert target, or a leak scan's idempotency key (``leak:<flag id>:raise|clear:<record id>``).

Revision ID: 0005_outbox_kind
Revises: 0004_operations
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_outbox_kind"
down_revision: str | None = "0004_operations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default=sa.text("'mirror'")))
    op.execute("UPDATE outbox SET kind = 'alert' WHERE target = 'alert'")
    op.execute("UPDATE outbox SET kind = 'flag' WHERE target <> 'alert' AND idempotency_key LIKE 'leak:%'")


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("kind")
