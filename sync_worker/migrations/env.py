"""Alembic environment for the state store, driven by :mod:`sync_worker.store.migrate`.

It runs on the connection passed in ``config.attributes["connection"]`` when there is one,
else it opens its own from ``config.attributes["database_url"]``. Tables come from
:mod:`sync_worker.store.schema`. https://alembic.sqlalchemy.org/en/latest/tutorial.html#the-migration-environment
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.engine import URL

from sync_worker.store.engine import create_engine_for, normalise_url
from sync_worker.store.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str | URL:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if isinstance(url, str | URL) and url:
        return url
    raise RuntimeError("no database URL given to the migration environment")


if context.is_offline_mode():
    context.configure(url=normalise_url(_url()), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (shared := config.attributes.get("connection")) is not None:
    _run(shared)
else:
    engine = create_engine_for(_url())
    try:
        with engine.begin() as own:
            _run(own)
    finally:
        engine.dispose()
