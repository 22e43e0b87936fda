"""Engines for the state store: URL translation and per-backend connection settings.

``SYNC_DATABASE_URL`` is ``sqlite:///path`` or ``postgresql://...``; PostgreSQL goes through the
psycopg 3 driver (``postgresql+psycopg://``,
https://docs.sqlalchemy.org/en/20/dialects/postgresql.html#module-sqlalchemy.dialects.postgresql.psycopg).

SQLite is set up for a long-running service, after
https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#sqlite-transactions and
https://www.sqlite.org/pragma.html:

- ``journal_mode=WAL`` so readers never block the writer (https://www.sqlite.org/wal.html);
- ``synchronous=FULL``: in WAL mode NORMAL may lose the last commits on power loss, and a webhook
  is acknowledged only after its commit, so commits must be durable;
- ``foreign_keys=ON`` (off by default in SQLite) and ``busy_timeout`` so a writer waits for the
  lock instead of failing at once;
- SQLAlchemy emits ``BEGIN`` itself (the driver's legacy mode skips it before SELECTs): write
  transactions use ``BEGIN IMMEDIATE`` so a read-then-write never fails on lock upgrade, read-only
  ones a plain ``BEGIN`` (see :data:`READ_ONLY`).

PostgreSQL gets ``pool_pre_ping`` (a connection dropped by a restart is replaced, not handed out),
a connect timeout and a bounded pool.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError

__all__ = ["READ_ONLY", "create_engine_for", "describe_failure", "normalise_url", "redacted_url"]

# Execution option a connection carries for read-only work: SQLite then starts a DEFERRED transaction.
READ_ONLY = "sync_worker_read_only"

_SQLITE_BUSY_TIMEOUT_MS = 15_000
_PG_CONNECT_TIMEOUT_S = 5


def normalise_url(url: str | URL) -> URL:
    """The SQLAlchemy URL for ``SYNC_DATABASE_URL``: ``postgresql://`` and ``postgres://`` use psycopg 3.

    ``ValueError`` for other backends (the store supports SQLite and PostgreSQL only).
    """
    parsed = make_url(url) if isinstance(url, str) else url
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed
    raise ValueError(f"unsupported database backend {backend!r}: use sqlite:// or postgresql://")


def redacted_url(url: str | URL) -> str:
    """The URL with any password masked, fit for logs and error messages."""
    parsed = make_url(url) if isinstance(url, str) else url
    return parsed.render_as_string(hide_password=True)


# libpq wraps the reason in where it tried to connect; the host and port are said separately.
_LIBPQ_PREFIX = re.compile(
    r'^(connection failed: )?(connection to server at "[^"]*"( \([^)]*\))?, port \d+ failed: )?'
)


def describe_failure(url: str | URL, exc: BaseException) -> str:
    """Where the store is and why it failed, for an operator: host, database and the driver's reason.

    ``postgresql database 'sync' on db.internal:5432: Connection refused``; for SQLite the file, and
    when its folder is missing, that. The password never appears (it is not in the URL rendered
    here, and any copy of it in the driver's text is masked).
    """
    parsed = make_url(url) if isinstance(url, str) else url
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    reason = _LIBPQ_PREFIX.sub("", text).replace("FATAL:  ", "").strip() or type(orig).__name__
    if parsed.password:
        reason = reason.replace(str(parsed.password), "***")
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ":memory:"
        folder = Path(database).parent
        if database != ":memory:" and not folder.is_dir():
            reason = f"{reason} (the folder {folder} does not exist)"
        return f"SQLite database {database}: {reason}"
    host = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    return f"{parsed.get_backend_name()} database {parsed.database or '(default)'!r} on {host}: {reason}"


def create_engine_for(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url`` configured for the service; ``kwargs`` go to :func:`create_engine`."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, **kwargs)
        _configure_sqlite(engine)
        return engine
    options: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": 5,
        "max_overflow": 10,
        "pool_timeout": 10,
        "pool_recycle": 1800,
        "connect_args": {"connect_timeout": _PG_CONNECT_TIMEOUT_S},
    }
    options.update(kwargs)
    return create_engine(parsed, **options)


def _configure_sqlite(engine: Engine) -> None:
    in_memory = engine.url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the driver; _on_begin emits it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not in_memory:
                cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
