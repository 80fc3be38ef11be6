"""Engine and sessions. SQLite (aiosqlite) by default, PostgreSQL (psycopg) by URL."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

log = logging.getLogger("callvault.storage")

# The database holds key hashes, sealed secrets and call data: owner only, like the key
# file. Folders it creates are closed to others but open to the group, like the blob store's.
SQLITE_FILE_MODE = 0o600
SQLITE_DIR_MODE = 0o750
# SQLite gives these the database file's mode when it creates them.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def normalise_url(url: str) -> str:
    """Accept the plain spellings people paste (postgres://, postgresql://, sqlite:///) and
    pick the async drivers callvault ships with."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername in ("postgresql", "postgresql+psycopg2", "postgresql+asyncpg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    return parsed.render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """The same database for synchronous tools (migrations)."""
    parsed = make_url(normalise_url(url))
    if parsed.drivername == "sqlite+aiosqlite":
        parsed = parsed.set(drivername="sqlite")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def install_sqlite_pragmas(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)


def _make_dirs(path: Path) -> None:
    """Each missing folder, outermost first, with SQLITE_DIR_MODE whatever the umask;
    folders that exist are not touched."""
    if path.is_dir():
        return
    _make_dirs(path.parent)
    try:
        os.mkdir(path, SQLITE_DIR_MODE)
    except FileExistsError:
        return
    os.chmod(path, SQLITE_DIR_MODE)


def _tighten(path: Path) -> None:
    """Take group and other access away from an existing file (its owner's bits stay)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, mode & 0o700)
            log.warning("database file was open to others; made owner-only", extra={"path": str(path)})
    except FileNotFoundError:
        return
    except OSError as error:  # not ours to chmod: say so, and run with it as it is
        log.warning("database file is open to others", extra={"path": str(path), "error": str(error)})


def prepare_sqlite_file(url: str) -> None:
    """Make a SQLite database's folders and the (empty) file itself, owner-only, before
    any driver opens it: SQLite then creates its -wal and -shm files with the same mode.
    An existing database (and its side files) loses group and other access."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return
    if parsed.query.get("uri"):  # a file: URI is SQLite's to resolve
        return
    path = Path(parsed.database)
    _make_dirs(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, SQLITE_FILE_MODE)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, SQLITE_FILE_MODE)  # whatever the umask
        os.close(fd)
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDE_FILES)):
        _tighten(candidate)


class Database:
    """The process's one engine and its session factory."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        parsed = make_url(self.url)
        prepare_sqlite_file(self.url)
        # Statement parameters stay out of error messages: they can hold recording refs.
        kwargs: dict[str, Any] = {"hide_parameters": True}
        if not parsed.drivername.startswith("sqlite"):
            # A network database drops idle connections; a local file does not, and the
            # probe would cost a round trip to aiosqlite's thread on every checkout.
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        self.engine: AsyncEngine = create_async_engine(self.url, **kwargs)
        install_sqlite_pragmas(self.engine.sync_engine)
        self._sessions = async_sessionmaker(self.engine, class_=AsyncSession, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            yield session

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()


def insert_for(dialect: str, model: type[SQLModel]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can take ON CONFLICT, on the two databases callvault runs on."""
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise ValueError(f"unsupported database dialect {dialect!r}")
