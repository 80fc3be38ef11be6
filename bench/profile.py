"""Where a call's time goes, two ways:

- py-spy, sampling the running server process while a load runs (stacks summarised:
  SQL executing in SQLite's worker thread, the event loop's Python by service function);
- in process, the project's own servicer called directly on the same data, with
  SQLAlchemy cursor events timing every SQL statement it issues.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bench.load import SHOWN
from service.config import Settings
from service.server import Service

# Frames that mean "waiting", not working.
_IDLE = (
    "_connection_worker_thread (aiosqlite/core.py:59)",  # the SQLite thread waiting for work
    "EpollSelector.select",
    "Condition.wait",
    "_worker (concurrent/futures/thread.py",
)
BATCHES = 5
_SQL = "_connection_worker_thread (aiosqlite/core.py:63)"  # running a statement in SQLite


def pyspy_binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class SpyProfile:
    command: str
    samples: int
    busy: int
    sql: int
    by_layer: Counter[str] = field(default_factory=Counter)  # the package of the sampled frame
    by_leaf: Counter[str] = field(default_factory=Counter)  # where the sample was taken

    def summary(self, top: int = 4) -> str:
        if not self.busy:
            return "no busy samples"

        def share(counter: Counter[str], n: int = top) -> str:
            return ", ".join(f"{name} {count / self.busy:.0%}" for name, count in counter.most_common(n))

        return (
            f"{self.busy} busy samples of {self.samples}: aiosqlite's thread running a database call {self.sql / self.busy:.0%}; "
            f"other samples by package: {share(self.by_layer, 6)}; hottest frames: {share(self.by_leaf)}"
        )


def _layer(frame: str) -> str:
    """The top-level package (or stdlib module) a frame's file belongs to."""
    match = re.match(r".+? \((.+?):\d+\)", frame)
    if not match:
        return "native"
    path = match.group(1).lstrip("<").split("/")
    return path[0].removesuffix(".py") if path[0] else "?"


def _short(frame: str) -> str:
    match = re.match(r"(.+?) \((.+?):(\d+)\)", frame)
    if not match:
        return frame
    name, path, _line = match.groups()
    return f"{path.rsplit('/', 1)[-1]}:{name}"


def pyspy(pid: int, seconds: float, workdir: Path) -> SpyProfile | None:
    """Sample `pid` for `seconds` (100 Hz, without pausing it) and summarise its busy samples."""
    binary = pyspy_binary()
    if binary is None:
        return None
    out = workdir / f"py-spy-{pid}.txt"
    argv = [binary, "record", "-p", str(pid), "-d", f"{max(1, round(seconds))}", "-r", "100"]
    argv += ["-f", "raw", "--nonblocking", "-o", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0 or not out.exists():
        return SpyProfile(
            command=SHOWN.text(argv) + f"  (failed: {done.stderr.strip()[-200:]})", samples=0, busy=0, sql=0
        )
    return summarise(out.read_text(), SHOWN.text(argv).replace(binary, "py-spy"))


def summarise(raw: str, command: str = "") -> SpyProfile:
    """py-spy's raw (collapsed) stacks: idle samples dropped, the rest counted as SQLite
    executing, else by the package of the frame the sample was taken in; and hottest frames."""
    profile = SpyProfile(command=command, samples=0, busy=0, sql=0)
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        profile.samples += count
        leaf = frames[-1]
        if any(marker in leaf for marker in _IDLE):
            continue
        profile.busy += count
        profile.by_leaf[_short(leaf)] += count
        if any(_SQL in f for f in frames):
            profile.sql += count
            continue
        profile.by_layer[_layer(leaf)] += count
    return profile


# -- SQL statements of one servicer call, in process --------------------------------------


class Metadata:
    """The slice of a gRPC servicer context the servicers read."""

    def __init__(self, key: str) -> None:
        self._metadata = (("authorization", f"Bearer {key}"),)

    def invocation_metadata(self) -> Any:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None


@dataclass
class StatementStats:
    calls: int
    ms_per_call: float
    checkouts_per_call: float
    statements: dict[str, tuple[float, float]]  # statement -> (times per call, ms per call)
    plans: dict[str, str] = field(default_factory=dict)  # statement -> SQLite's query plan

    def summary(self) -> str:
        parts = [
            f"{label} x{per_call:g} {ms:.2f} ms"
            for label, (per_call, ms) in sorted(self.statements.items(), key=lambda kv: -kv[1][1])
        ]
        sql_ms = sum(ms for _, ms in self.statements.values())
        return (
            f"{self.ms_per_call:.2f} ms per call (fastest of {BATCHES} batches), {sql_ms:.2f} ms of it executing SQL; "
            f"{self.checkouts_per_call:g} pool checkouts (each pre-pinged) per call; " + "; ".join(parts)
        )


def _label(statement: str) -> str:
    text = " ".join(statement.split())
    if text.upper().startswith("SELECT COUNT("):
        table = re.search(r"FROM (\w+)", text)
        return f"count(*) of {table.group(1) if table else '?'}"
    table = re.search(r"FROM (\w+)", text)
    tail = " LIMIT/OFFSET" if "LIMIT" in text.upper() else ""
    return f"{text.split(' ', 1)[0]} {table.group(1) if table else ''}{tail}".strip()


async def _plans(service: Service, issued: dict[str, tuple[str, Any]]) -> dict[str, str]:
    """EXPLAIN QUERY PLAN of each SELECT, as SQLite runs it on this database."""
    plans = {}
    async with service.db.engine.connect() as conn:
        for label, (statement, parameters) in list(issued.items()):
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plans[label] = " / ".join(str(row[-1]) for row in rows)
    return plans


def statements_per_call(
    data_dir: Path,
    calls: dict[str, Callable[[Service], Awaitable[Any]]],
    *,
    repeat: int,
    warmup: int = 3,
) -> dict[str, StatementStats]:
    """Run each of `calls` `repeat` times against one Service built on `data_dir` (as the
    server builds it), timing the whole call and each SQL statement it issues through
    SQLAlchemy's cursor events, and counting pool checkouts."""

    per_batch = max(1, repeat // BATCHES)

    async def go() -> dict[str, StatementStats]:
        service = Service(Settings.from_env({"CALLVAULT_DATA_DIR": str(data_dir)}))
        engine = service.db.engine.sync_engine
        timings: dict[str, list[float]] = {}
        started: dict[int, float] = {}
        checkouts = [0]

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            started[id(cursor)] = time.perf_counter()

        issued: dict[str, tuple[str, Any]] = {}

        def after(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
            begun = started.pop(id(cursor), None)
            if begun is not None:
                label = _label(statement)
                timings.setdefault(label, []).append(time.perf_counter() - begun)
                issued[label] = (statement, parameters)

        def checkout(*args: Any) -> None:
            checkouts[0] += 1

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
        event.listen(engine.pool, "checkout", checkout)
        out: dict[str, StatementStats] = {}
        try:
            for name, call in calls.items():
                for _ in range(warmup):
                    await call(service)
                issued.clear()
                # The fastest of a few batches (the machine may be busy with other work),
                # and the statements of that batch.
                best = float("inf")
                kept: dict[str, list[float]] = {}
                kept_checkouts = 0
                for _ in range(BATCHES):
                    timings.clear()
                    checkouts[0] = 0
                    begun = time.perf_counter()
                    for _ in range(per_batch):
                        await call(service)
                    elapsed = (time.perf_counter() - begun) / per_batch
                    if elapsed < best:
                        best, kept, kept_checkouts = elapsed, dict(timings), checkouts[0]
                out[name] = StatementStats(
                    calls=per_batch,
                    ms_per_call=1000 * best,
                    checkouts_per_call=kept_checkouts / per_batch,
                    statements={
                        label: (len(times) / per_batch, 1000 * sum(times) / per_batch)
                        for label, times in kept.items()
                    },
                    plans=await _plans(service, issued) if service.db.dialect == "sqlite" else {},
                )
        finally:
            await service.db.dispose()
        return out

    return asyncio.run(go())
