"""Logs as JSON lines: one object per line, with the fields passed as `extra`.

Below WARNING only callvault's own loggers are written. Libraries log what they handle
at DEBUG and INFO: aiosqlite every statement with its parameters (key hashes, phone
numbers, sealed bytes), SQLAlchemy's engine the SQL and result rows, psycopg its
connection details, httpx/httpcore/hpack request URLs and headers (provider tokens),
botocore the S3 request headers, uvicorn's access log every path with its query string
(phone searches). None of that is callvault's to decide to print, so it is not printed.

The calling thread only builds the record and puts it on a queue (`FastQueueHandler`); one
writer thread formats each record once, as JSON, and writes what has queued in one write
every few milliseconds (`BatchWriter`). So the per-call line costs the event loop a record
and a put, not JSON encoding and a write to stderr; and the writer takes the interpreter
lock a few hundred times a second under load, not once per line.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
import threading
import time
from typing import IO

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

# Loggers whose every line callvault writes itself (`service.*` is `__name__` in modules).
OWN_LOGGERS = ("callvault", "service")
# The most a library may say: WARNING and above (failures, not the data in flight).
LIBRARY_LEVEL = logging.WARNING
# Libraries known to log data below WARNING, raised to LIBRARY_LEVEL so they do not even
# build those records (aiosqlite would format every statement); the filter below catches
# any other library.
CHATTY_LIBRARIES = (
    "aiosqlite",
    "sqlalchemy",
    "psycopg",
    "alembic",
    "httpx",
    "httpcore",
    "hpack",
    "h2",
    "h11",
    "uvicorn",
    "botocore",
    "aiobotocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "grpc",
    "asyncio",
    "multipart",
)


def is_own(name: str) -> bool:
    return any(name == own or name.startswith(own + ".") for own in OWN_LOGGERS)


class LibraryCap(logging.Filter):
    """Drops library records below LIBRARY_LEVEL; callvault's own pass at any level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= LIBRARY_LEVEL or is_own(record.name)


_ENCODER = json.JSONEncoder(default=str)


class JsonFormatter(logging.Formatter):
    # The formatted second, reused for every record in it ("2026-05-01T10:00:00").
    _second: tuple[int, str] = (-1, "")

    def _timestamp(self, created: float) -> str:
        whole = int(created)
        if whole != self._second[0]:
            self._second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
        return f"{self._second[1]}.{int((created - whole) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


class FastQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the listener without formatting them here. The stock handler
    copies and formats each record in the caller (and the listener formats it again);
    this one only fixes what must be taken now, the message, whose args may change
    later. Not copying leaves the record equivalent for any other handler; a traceback
    is formatted by the listener (its frames stay alive until then)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record.msg = record.getMessage()
        record.args = None
        return record


class BatchWriter:
    """The thread that formats queued records and writes them out: after the first record
    it waits ``BATCH_SECONDS`` for others, then formats all that queued and writes them in
    one write and one flush. A line reaches the stream at most that much later."""

    BATCH_SECONDS = 0.005
    _STOP = None

    def __init__(
        self, records: queue.SimpleQueue[logging.LogRecord | None], stream: IO[str], formatter: JsonFormatter
    ) -> None:
        self._records = records
        self._stream = stream
        self._formatter = formatter
        self._thread = threading.Thread(target=self._run, name="callvault-log-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        records, formatter = self._records, self._formatter
        stopping = False
        while not stopping:
            batch = [records.get()]
            if batch[0] is not self._STOP:
                time.sleep(self.BATCH_SECONDS)
            while not records.empty():
                batch.append(records.get_nowait())
            lines = []
            for record in batch:
                if record is self._STOP:
                    stopping = True
                    continue
                try:
                    lines.append(formatter.format(record))
                except Exception:  # one record that cannot be formatted is not worth the others
                    lines.append(_ENCODER.encode({"level": "error", "msg": "unformattable log record"}))
            if lines:
                try:
                    self._stream.write("\n".join(lines) + "\n")
                    self._stream.flush()
                except (OSError, ValueError):  # stderr closed: nothing left to tell
                    pass

    def stop(self) -> None:
        """Write out what is queued, then end the thread."""
        self._records.put(self._STOP)
        self._thread.join()


_writer: BatchWriter | None = None


def stop() -> None:
    """Write out what is queued and stop the writer (at exit, and before reconfiguring)."""
    global _writer
    if _writer is not None:
        _writer.stop()
        _writer = None


def configure(level: str = "INFO") -> None:
    global _writer
    stop()
    records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
    handler = FastQueueHandler(records)
    handler.addFilter(LibraryCap())
    _writer = BatchWriter(records, sys.stderr, JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(LIBRARY_LEVEL, root.level))


atexit.register(stop)
