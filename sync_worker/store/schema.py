"""The state store's tables (SQLAlchemy Core), the single source the migrations must match.

``sync_worker/migrations/versions/0001_initial.py`` (and ``0003_deals.py``: the ``retention`` stage
and the ``diverged`` rule in the CHECK constraints) are written by hand from this module; the test
suite compares the migrated database against :data:`metadata` with alembic's ``compare_metadata``
on SQLite and PostgreSQL. Change both together.

Constraint names follow :data:`NAMING_CONVENTION` so migrations can refer to them.
Partial indexes (``WHERE``) are supported by both backends:
https://www.sqlite.org/partialindex.html and https://www.postgresql.org/docs/current/indexes-partial.html
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from sync_worker.store.types import Amount, UTCDateTime

__all__ = [
    "ACTIVITY_KINDS",
    "FLAG_RULES",
    "KINDS",
    "NAMING_CONVENTION",
    "OUTBOX_STATUSES",
    "PAUSE_SCOPES",
    "RECORD_STATUSES",
    "STAGE_KEYS",
    "activity",
    "cursors",
    "dead_letters",
    "held_stages",
    "inbox",
    "leak_flags",
    "link_groups",
    "link_members",
    "metadata",
    "outbox",
    "pauses",
    "processed_keys",
    "records",
    "route_starts",
    "stage_history",
    "write_memory",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Kept as literals here (not imported from canonical) so the schema cannot drift from the migration
# silently; tests check they equal the canonical enums.
STAGE_KEYS = (
    "prospect",
    "contacted",
    "qualified",
    "meeting",
    "proposal",
    "negotiation",
    "won",
    "lost",
    "nurture",
    "retention",
)
KINDS = ("deal", "lead")
RECORD_STATUSES = ("open", "won", "lost", "deleted")
OUTBOX_STATUSES = ("pending", "sent", "failed", "dead")
FLAG_RULES = ("stalled", "regressed", "dropped", "unanswered", "diverged")


def _in(column: str, values: tuple[str, ...], *, nullable: bool = False) -> str:
    listed = ", ".join(f"'{v}'" for v in values)
    check = f"{column} IN ({listed})"
    return f"{column} IS NULL OR {check}" if nullable else check


metadata = MetaData(naming_convention=NAMING_CONVENTION)

records = Table(
    "records",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(64), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("pipeline_id", String(255)),
    Column("source_stage", String(255)),
    Column("stage", String(16)),
    Column("status", String(16), nullable=False),
    Column("title", Text),
    Column("amount", Amount),
    Column("currency", String(16)),
    Column("owner_id", String(255)),
    Column("contact_email", String(320)),
    Column("linkedin_url", Text),
    Column("company", Text),
    Column("close_date", Date),
    Column("lost_reason", Text),
    Column("change_source", String(255)),
    Column("source_created_at", UTCDateTime),
    Column("source_updated_at", UTCDateTime, nullable=False),
    Column("stage_entered_at", UTCDateTime),
    Column("replied_at", UTCDateTime),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("deleted", Boolean, nullable=False, server_default=false()),
    UniqueConstraint("source", "kind", "external_id"),
    CheckConstraint(_in("kind", KINDS), name="kind"),
    CheckConstraint(_in("status", RECORD_STATUSES), name="status"),
    CheckConstraint(_in("stage", STAGE_KEYS, nullable=True), name="stage"),
    Index(None, "stage", "stage_entered_at"),
    Index(None, "status"),
    Index(None, "contact_email"),
)

link_groups = Table(
    "link_groups",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", UTCDateTime, nullable=False),
)

link_members = Table(
    "link_members",
    metadata,
    # The primary key on record_id is what keeps a record in at most one group.
    Column("record_id", ForeignKey("records.id", ondelete="CASCADE"), primary_key=True),
    Column("group_id", ForeignKey("link_groups.id", ondelete="CASCADE"), nullable=False),
    Column("linked_at", UTCDateTime, nullable=False),
    Index(None, "group_id"),
)

stage_history = Table(
    "stage_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("record_id", ForeignKey("records.id", ondelete="CASCADE"), nullable=False),
    Column("from_stage", String(16)),
    Column("to_stage", String(16), nullable=False),
    Column("source_stage", String(255)),
    Column("at", UTCDateTime, nullable=False),
    Column("origin", String(64), nullable=False),
    Column("written_by_worker", Boolean, nullable=False, server_default=false()),
    CheckConstraint(_in("from_stage", STAGE_KEYS, nullable=True), name="from_stage"),
    CheckConstraint(_in("to_stage", STAGE_KEYS), name="to_stage"),
    Index(None, "record_id", "at"),
)

cursors = Table(
    "cursors",
    metadata,
    Column("source", String(64), nullable=False),
    Column("stream", String(128), nullable=False),
    Column("value", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("source", "stream"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(64), nullable=False),
    Column("dedupe_key", String(255), nullable=False),
    Column("object_type", String(64), nullable=False),
    Column("object_id", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("property_name", String(255)),
    Column("property_value", Text),
    Column("change_source", String(255)),
    Column("payload", Text, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("enqueued_at", UTCDateTime),
    Column("processed_at", UTCDateTime),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("skip_reason", Text),
    UniqueConstraint("source", "dedupe_key"),
    Index(None, "processed_at"),
)
# "Stored but not enqueued": the sweeper's query, kept small by indexing only those rows.
Index(
    "ix_inbox_not_enqueued",
    inbox.c.received_at,
    sqlite_where=inbox.c.enqueued_at.is_(None),
    postgresql_where=inbox.c.enqueued_at.is_(None),
)

processed_keys = Table(
    "processed_keys",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("processed_at", UTCDateTime, nullable=False),
    Column("result", Text),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("target", String(64), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("kind", String(16), nullable=False, server_default=text("'mirror'")),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    UniqueConstraint("idempotency_key"),
    CheckConstraint(_in("status", OUTBOX_STATUSES), name="status"),
    Index(None, "status", "next_attempt_at"),
)

leak_flags = Table(
    "leak_flags",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("record_id", ForeignKey("records.id", ondelete="CASCADE"), nullable=False),
    Column("rule", String(16), nullable=False),
    Column("reason", Text, nullable=False, server_default=text("''")),
    Column("stage", String(16)),
    Column("since", UTCDateTime),
    Column("days_in_stage", Integer),
    Column("amount", Amount),
    Column("weighted_amount", Amount),
    Column("raised_at", UTCDateTime, nullable=False),
    Column("cleared_at", UTCDateTime),
    Column("written_to_crm_at", UTCDateTime),
    Column("alerted_at", UTCDateTime),
    CheckConstraint(_in("rule", FLAG_RULES), name="rule"),
    CheckConstraint(_in("stage", STAGE_KEYS, nullable=True), name="stage"),
    Index(None, "record_id"),
)


# At most one OPEN flag per (record, rule); cleared flags stay as history.
Index(
    "uq_leak_flags_open",
    leak_flags.c.record_id,
    leak_flags.c.rule,
    unique=True,
    sqlite_where=leak_flags.c.cleared_at.is_(None),
    postgresql_where=leak_flags.c.cleared_at.is_(None),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("queue", String(128), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("message_id", String(255), nullable=False),
    Column("payload", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("error_class", String(255)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("replayed_at", UTCDateTime),
    # The inbox row a dead ``process_inbox_event`` message stood for: no longer pending until replayed.
    Column("inbox_id", Integer),
    Index(None, "created_at"),
    Index(None, "inbox_id"),
)

# What an operator paused without editing YAML (``sync-worker pause``): a source or a route.
PAUSE_SCOPES = ("source", "route")
pauses = Table(
    "pauses",
    metadata,
    Column("scope", String(16), nullable=False),
    Column("name", String(255), nullable=False),
    Column("paused_at", UTCDateTime, nullable=False),
    Column("reason", Text),
    PrimaryKeyConstraint("scope", "name"),
    CheckConstraint(_in("scope", PAUSE_SCOPES), name="scope"),
)

# When the service first ran each route: a reply route acts only on replies after it (unless the
# route says ``history: true`` or its own ``since``), so a first sync never replays a whole history.
route_starts = Table(
    "route_starts",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("started_at", UTCDateTime, nullable=False),
)

# The last run of each piece of work, for ``sync-worker status``: a poll of a source's stream
# (``poll``, ``hubspot/deals``), a push to a target (``push``, ``pipedrive``), a leak scan.
ACTIVITY_KINDS = ("poll", "push", "scan")
activity = Table(
    "activity",
    metadata,
    Column("kind", String(16), nullable=False),
    Column("name", String(255), nullable=False),
    Column("last_run_at", UTCDateTime, nullable=False),
    Column("last_success_at", UTCDateTime),
    Column("last_error_at", UTCDateTime),
    Column("last_error", Text),
    Column("last_count", Integer, nullable=False, server_default=text("0")),
    Column("total_count", Integer, nullable=False, server_default=text("0")),
    Column("failures", Integer, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("kind", "name"),
    CheckConstraint(_in("kind", ACTIVITY_KINDS), name="kind"),
)

write_memory = Table(
    "write_memory",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("target", String(64), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("field", String(128), nullable=False),
    Column("value_hash", String(64), nullable=False),
    Column("written_at", UTCDateTime, nullable=False),
    Index(None, "target", "external_id", "field", "written_at"),
)

# Records whose latest source stage no mapping covers (one row per record): the canonical stage is
# held at its last known value until a mapping names the stage, then the stage is re-applied from
# the raw values kept here. ``pipeline``/``stage`` are the source's ids (else names), the names are
# kept too when the source gave both. The row goes once the record lands on a mapped stage.
held_stages = Table(
    "held_stages",
    metadata,
    Column("record_id", ForeignKey("records.id", ondelete="CASCADE"), primary_key=True),
    Column("source", String(64), nullable=False),
    Column("pipeline", String(255)),
    Column("pipeline_name", String(255)),
    Column("stage", String(255)),
    Column("stage_name", String(255)),
    Column("stage_changed_at", UTCDateTime),
    Column("first_held_at", UTCDateTime, nullable=False),
    Column("last_held_at", UTCDateTime, nullable=False),
    Column("held_count", Integer, nullable=False, server_default=text("1")),
    Index(None, "source", "pipeline", "stage"),
)
