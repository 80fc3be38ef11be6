"""Logs as JSON lines: one object per line, with the fields passed as `extra`.

Below WARNING only callvault's own loggers are written. Libraries log what they handle
at DEBUG and INFO: aiosqlite every statement with its parameters (key hashes, phone
numbers, sealed bytes), SQLAlchemy's engine the SQL and result rows, psycopg its
connection details, httpx/httpcore/hpack request URLs and headers (provider tokens),
botocore the S3 request headers, uvicorn's access log every path with its query string
(phone searches). None of that is callvault's to decide to print, so it is not printed.
"""

from __future__ import annotations

import json
import logging
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


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(LibraryCap())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(LIBRARY_LEVEL, root.level))
