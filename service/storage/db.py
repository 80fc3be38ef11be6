"""Engine and sessions. SQLite (aiosqlite) by default, PostgreSQL (psycopg) by URL; and
the short-read path hot calls use instead of a session (`ShortReads`)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import set_json_loads
from sqlalchemy import Select, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.sql import sqltypes
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
        self.reads = ShortReads(self.url, self.engine)

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
        await self.reads.close()
        await self.engine.dispose()


Row = tuple[Any, ...]
Processor = Callable[[Any], Any] | None
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A SELECT compiled once for one dialect: its SQL, where its parameters go, and how
    each column's raw driver value becomes what SQLAlchemy would have returned."""

    sql: str
    positions: tuple[str, ...] | None  # parameter names in order (SQLite's qmark); None: by name
    defaults: dict[str, Any]  # literal values compiled into the statement
    processors: tuple[Processor, ...]
    # How a typed parameter becomes what the driver is given (an instant, as the engine
    # stores it); parameters of types the driver takes as they are have none.
    binders: tuple[tuple[str, Callable[[Any], Any]], ...] = ()

    @classmethod
    def of(cls, stmt: Select[Any], dialect: Dialect, *, json_as_text: bool = False) -> _Compiled:
        """json_as_text: the driver hands JSON columns over as text (see ShortReads)."""
        compiled = stmt.compile(dialect=dialect)
        processors = tuple(
            json.loads
            if json_as_text and isinstance(column.type, sqltypes.JSON)
            else _result_processor(column.type, dialect)
            for column in stmt.selected_columns
        )
        positions = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
        defaults = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
        binders = tuple(
            (name, binder)
            for name, bind in compiled.binds.items()
            if not bind.expanding and (binder := bind.type.dialect_impl(dialect).bind_processor(dialect))
        )
        return cls(compiled.string, positions, defaults, processors, binders)

    def parameters(self, params: dict[str, Any]) -> Sequence[Any] | dict[str, Any]:
        values = {**self.defaults, **params}
        for name, binder in self.binders:
            if name in values:
                values[name] = binder(values[name])
        return values if self.positions is None else tuple(values[name] for name in self.positions)

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[Row]:
        typed = [(i, p) for i, p in enumerate(self.processors) if p is not None]
        if not typed:
            return [tuple(row) for row in raw]
        out: list[Row] = []
        for row in raw:  # only the few typed columns are touched (a list row has two of 25)
            values = list(row)
            for i, process in typed:
                values[i] = process(values[i])
            out.append(tuple(values))
        return out


def _result_processor(column_type: Any, dialect: Dialect) -> Processor:
    impl = column_type.dialect_impl(dialect)
    if isinstance(impl, sqltypes.Float) and not impl.asdecimal:
        # Both drivers hand a double over as a float; psycopg's numeric processor would
        # want the column's type oid, which a statement compiled ahead does not have.
        return None
    processor: Processor = impl.result_processor(dialect, None)
    return processor


def _json_text(data: bytes | bytearray | memoryview | str) -> str:
    """psycopg's JSON loader on short-read connections: the text, decoded by the column's
    processor, so a raw row stays hashable (``ShortReads.each`` keys on it)."""
    return data if isinstance(data, str) else bytes(data).decode()


class ShortReads:
    """Short indexed reads (a row or a few hundred by key, one statement) for hot calls,
    without an AsyncSession: a session costs about a millisecond of thread hops and
    adapter work around SQLite's few microseconds. Statements are SQLAlchemy Core
    SELECTs, compiled once per dialect and run on the driver:

    - SQLite: synchronously on the calling (event-loop) thread, on a plain ``sqlite3``
      connection per thread in autocommit and ``query_only`` mode. In WAL mode a reader
      never waits for a writer (it reads the last committed snapshot, which includes
      other processes' commits), so an indexed read takes microseconds and cannot stall
      the loop. The connection has no busy timeout: in the rare cases SQLite does make a
      reader wait (WAL recovery, a database not in WAL mode) the read is retried once
      in a worker thread, with the engine's 5 s timeout, off the loop.
    - PostgreSQL: psycopg's async connection in autocommit, one round trip per read
      (no BEGIN, no ROLLBACK, no pre-ping: a dropped connection is replaced and the read
      retried once). A read waiting on the network or a lock never blocks the loop. JSON
      arrives as text and is decoded here, as on SQLite.
    - Anything else (SQLite in memory or by URI): the async engine, as sessions do.

    Writes, and reads that can take long (scans, searches), stay on sessions."""

    SQLITE, POSTGRES, ENGINE = "sqlite-sync", "psycopg-async", "engine"
    MAX_CONNECTIONS = 10  # PostgreSQL connections for short reads, beside the engine's pool

    def __init__(self, url: str, engine: AsyncEngine) -> None:
        parsed = make_url(url)
        self._engine = engine
        self._dialect = engine.dialect
        self._compiled: dict[int, tuple[Select[Any], _Compiled]] = {}
        self._built: dict[tuple[int, Row], Any] = {}
        self._sqlite_path: str | None = None
        self._pg_conninfo = ""
        if parsed.drivername.startswith("sqlite"):
            memory = parsed.database in (None, "", ":memory:") or bool(parsed.query.get("uri"))
            self.mode = self.ENGINE if memory else self.SQLITE
            self._sqlite_path = None if memory else parsed.database
        elif parsed.drivername == "postgresql+psycopg":
            self.mode = self.POSTGRES
            self._pg_conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        else:
            self.mode = self.ENGINE
        self._local = threading.local()
        self._sqlite_connections: list[sqlite3.Connection] = []
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None

    def __repr__(self) -> str:
        return f"ShortReads({self.mode})"

    def compiled(self, stmt: Select[Any]) -> _Compiled:
        found = self._compiled.get(id(stmt))
        if found is None or found[0] is not stmt:
            found = (stmt, _Compiled.of(stmt, self._dialect, json_as_text=self.mode == self.POSTGRES))
            self._compiled[id(stmt)] = found
        return found[1]

    MAX_BUILT = 20_000  # objects `each` keeps, by the row they were built from

    async def all(self, stmt: Select[Any], **params: Any) -> list[Row]:
        """Every row of ``stmt`` (bind parameters by name), values as SQLAlchemy types them."""
        compiled, raw = await self._raw(stmt, params)
        return raw if compiled is None else compiled.rows(raw)

    async def each(self, stmt: Select[Any], build: Callable[[Row], T], **params: Any) -> list[T]:
        """``build`` of every row, reusing what it built before from a row with the very
        same raw values (so ``build`` must depend on the row alone). A long list that
        barely changes, such as a business's providers, then costs the read, not the
        decoding and shaping of every row on every call."""
        compiled, raw = await self._raw(stmt, params)
        if compiled is None:
            return [build(row) for row in raw]
        built = self._built
        out: list[T] = []
        for values in raw:
            key = (id(stmt), tuple(values))
            try:
                found = built.get(key)
            except TypeError:  # a driver value that cannot be a key (psycopg's decoded JSON)
                out.append(build(compiled.rows([values])[0]))
                continue
            if found is None:
                if len(built) >= self.MAX_BUILT:
                    built.clear()
                found = built[key] = build(compiled.rows([values])[0])
            out.append(found)
        return out

    async def _raw(self, stmt: Select[Any], params: dict[str, Any]) -> tuple[_Compiled | None, list[Any]]:
        """The driver's rows, and how to process them (None: the engine processed them)."""
        if self.mode == self.ENGINE:
            async with self._engine.connect() as conn:
                return None, [tuple(row) for row in (await conn.execute(stmt, params)).all()]
        compiled = self.compiled(stmt)
        values = compiled.parameters(params)
        if self.mode == self.SQLITE:
            try:
                raw = self._sqlite_connection().execute(compiled.sql, values).fetchall()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                raw = await asyncio.to_thread(self._sqlite_waiting, compiled.sql, values)
        else:
            raw = await self._postgres(compiled.sql, values)
        return compiled, raw

    async def first(self, stmt: Select[Any], **params: Any) -> Row | None:
        rows = await self.all(stmt, **params)
        return rows[0] if rows else None

    # -- SQLite ---------------------------------------------------------------------------

    def _open_sqlite(self, busy_ms: int) -> sqlite3.Connection:
        assert self._sqlite_path is not None
        conn = sqlite3.connect(self._sqlite_path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={busy_ms}")
        conn.execute("PRAGMA query_only=ON")
        return conn

    def _sqlite_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open_sqlite(0)
            self._local.conn = conn
            self._sqlite_connections.append(conn)
        return conn

    def _sqlite_waiting(self, sql: str, values: Any) -> list[Any]:
        """The same read off the loop, allowed to wait as the engine's connections do."""
        conn = self._open_sqlite(5000)
        try:
            return conn.execute(sql, values).fetchall()
        finally:
            conn.close()

    # -- PostgreSQL -----------------------------------------------------------------------

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots[0] is not loop:
            self._idle.clear()  # connections of another (finished) loop are not reused
            self._slots = (loop, asyncio.Semaphore(self.MAX_CONNECTIONS))
        return self._slots[1]

    async def _postgres(self, sql: str, values: Any) -> list[Any]:
        async with self._semaphore():
            for attempt in (1, 2):
                conn = self._idle.pop() if self._idle else None
                if conn is None:
                    conn = await psycopg.AsyncConnection.connect(self._pg_conninfo, autocommit=True)
                    set_json_loads(_json_text, conn)
                try:
                    cursor = await conn.execute(sql, values)
                    rows = await cursor.fetchall()
                except psycopg.OperationalError:
                    await conn.close()
                    if attempt == 2 or not conn.broken:
                        raise
                    continue  # a connection the server dropped while idle: once more, afresh
                except BaseException:
                    await conn.close()
                    raise
                self._idle.append(conn)
                return rows
        raise AssertionError("unreachable")

    async def close(self) -> None:
        for conn in self._sqlite_connections:
            conn.close()
        self._sqlite_connections.clear()
        self._local = threading.local()
        idle, self._idle = self._idle, []
        for pg in idle:
            await pg.close()


def insert_for(dialect: str, model: type[SQLModel]) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can take ON CONFLICT, on the two databases callvault runs on."""
    if dialect == "postgresql":
        return postgresql.insert(model)
    if dialect == "sqlite":
        return sqlite.insert(model)
    raise ValueError(f"unsupported database dialect {dialect!r}")
