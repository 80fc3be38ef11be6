"""Logs as JSON lines: one object per line, with the fields passed as `extra`.

Below WARNING only callvault's own loggers are written. Libraries log what they handle
at DEBUG and INFO: aiosqlite every statement with its parameters (key hashes, phone
numbers, sealed bytes), SQLAlchemy's engine the SQL and result rows, psycopg its
connection details, httpx/httpcore/hpack request URLs and headers (provider tokens),
botocore the S3 request headers, uvicorn's access log every path with its query string
(phone searches). None of that is callvault's to decide to print, so it is not printed.

The calling thread only builds the record and puts it on a queue (`FastQueueHandler`); one
listener thread formats each record once, as JSON, and writes it. So the per-call line
costs the event loop a record and a put, not JSON encoding and a write to stderr.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
from datetime import UTC, datetime

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


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


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


_listener: logging.handlers.QueueListener | None = None


def stop() -> None:
    """Write out what is queued and stop the listener (at exit, and before reconfiguring)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def configure(level: str = "INFO") -> None:
    global _listener
    stop()
    output = logging.StreamHandler()
    output.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = FastQueueHandler(records)
    handler.addFilter(LibraryCap())
    _listener = logging.handlers.QueueListener(records, output)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(LIBRARY_LEVEL, root.level))


atexit.register(stop)
