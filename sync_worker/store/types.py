"""Column types that behave the same on SQLite and PostgreSQL.

- :class:`UTCDateTime`: timezone-aware UTC in and out. PostgreSQL stores ``timestamptz`` and
  returns it in the session time zone, which is converted back to UTC. SQLite has no time zone
  type: SQLAlchemy's ``DATETIME`` string drops ``tzinfo``, so values are converted to naive UTC
  before storing and marked UTC when read. A naive value is refused (``ValueError``) rather than
  guessed at. https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#date-and-time-types
- :class:`Amount`: :class:`~decimal.Decimal` in and out. PostgreSQL ``NUMERIC`` is exact. SQLite
  has no decimal storage (NUMERIC affinity keeps REAL or INTEGER,
  https://www.sqlite.org/datatype3.html#type_affinity), so the value is bound as text and read
  back through ``str(float)`` and quantized to the column's scale: exact for amounts up to 15
  significant digits, which covers every deal amount the CRMs accept. Doing it here avoids
  SQLAlchemy's Decimal-on-SQLite warning.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Dialect, Numeric
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["AMOUNT_PRECISION", "AMOUNT_SCALE", "Amount", "UTCDateTime", "as_utc"]

AMOUNT_PRECISION = 18
AMOUNT_SCALE = 4
_QUANTUM = Decimal(1).scaleb(-AMOUNT_SCALE)


def as_utc(value: datetime) -> datetime:
    """``value`` converted to UTC; ``ValueError`` if it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: the store takes timezone-aware UTC timestamps only")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is timezone-aware UTC in Python on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = as_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Amount(TypeDecorator[Decimal]):
    """A money amount: ``NUMERIC(18, 4)``, Decimal in and out."""

    impl = Numeric(AMOUNT_PRECISION, AMOUNT_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(AMOUNT_PRECISION, AMOUNT_SCALE, asdecimal=False))
        return dialect.type_descriptor(Numeric(AMOUNT_PRECISION, AMOUNT_SCALE))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"amounts are Decimal, got {type(value).__name__}")
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        if isinstance(value, Decimal):
            return value
        # Same scale as PostgreSQL returns, so both backends give equal reprs.
        return Decimal(str(value)).quantize(_QUANTUM)
