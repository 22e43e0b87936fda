"""Schema migrations run from code, with no ``alembic.ini`` needed in the working directory.

The Alembic scripts ship inside the package (``sync_worker/migrations``); :func:`alembic_config`
builds the :class:`alembic.config.Config` in memory and points ``script_location`` at that folder,
following https://alembic.sqlalchemy.org/en/latest/api/config.html and the cookbook recipe
https://alembic.sqlalchemy.org/en/latest/cookbook.html#sharing-a-connection-across-one-or-more-programmatic-migration-commands.
The URL travels in ``Config.attributes`` (not the ini options), so a ``%`` in a password needs no
escaping and the URL is never written anywhere.
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.engine import URL
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from sync_worker.errors import StoreUnavailableError
from sync_worker.store.engine import create_engine_for, describe_failure

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "head_revision", "upgrade_database"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | URL | None = None, *, connection: Connection | None = None) -> Config:
    """An Alembic config for the packaged migrations; ``connection`` is reused when given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if url is not None:
        config.attributes["database_url"] = url
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest revision the package ships (read once per process)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def upgrade_database(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (idempotent).

    Raises :class:`~sync_worker.errors.StoreUnavailableError` when the database cannot be reached.
    """
    engine = create_engine_for(url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(url, connection=connection), revision)
    except (OperationalError, InterfaceError, PoolTimeoutError) as exc:
        raise StoreUnavailableError(
            f"state store unreachable during migration: {describe_failure(url, exc)}"
        ) from exc
    finally:
        engine.dispose()


def current_revision(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at; None when it was never migrated."""
    engine = create_engine_for(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except (OperationalError, InterfaceError, PoolTimeoutError) as exc:
        raise StoreUnavailableError(f"state store unreachable: {describe_failure(url, exc)}") from exc
    finally:
        engine.dispose()
