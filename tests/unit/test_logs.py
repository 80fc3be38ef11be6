"""The log filter (below WARNING only callvault's own loggers are written) and the call
log behind a queue: one JSON line per record, formatted once, by the listener thread."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from service import logs
from service.logs import LibraryCap
from service.transport.calls import CallRecord, log_call


def _record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "executing %r", ("secret-param",), None)


@pytest.mark.parametrize("name", ["aiosqlite", "sqlalchemy.engine.Engine", "hpack.hpack", "somelib"])
def test_library_records_below_warning_are_dropped(name: str) -> None:
    cap = LibraryCap()
    assert not cap.filter(_record(name, logging.DEBUG))
    assert not cap.filter(_record(name, logging.INFO))
    assert cap.filter(_record(name, logging.WARNING))


@pytest.mark.parametrize("name", ["callvault.sync", "service.blobs.s3", "callvault"])
def test_own_records_pass_at_any_level(name: str) -> None:
    assert LibraryCap().filter(_record(name, logging.DEBUG))


def test_a_lookalike_name_is_not_ours() -> None:
    assert not LibraryCap().filter(_record("callvaultish", logging.DEBUG))


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """logs.configure() writing to a file as stderr, the root logger restored after."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out = tmp_path / "stderr.log"
    with out.open("w") as stream:
        monkeypatch.setattr(sys, "stderr", stream)
        logs.configure("INFO")
        try:
            yield out
        finally:
            logs.stop()
            root.handlers[:], root.level = saved


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_json_line_per_call_formatted_once_off_the_calling_thread(
    configured: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    formatted_on: list[str] = []
    plain = logs.JsonFormatter.format

    def spy(self: logs.JsonFormatter, record: logging.LogRecord) -> str:
        formatted_on.append(threading.current_thread().name)
        return plain(self, record)

    monkeypatch.setattr(logs.JsonFormatter, "format", spy)
    call = CallRecord(method="/callvault.v1.ProviderService/GetProvider", transport="grpc", key_id="k-1")
    call.business_id = "b-1"
    log_call(call, "OK")
    logs.stop()  # drains the queue
    (line,) = lines(configured)
    assert {k: line[k] for k in ("level", "logger", "msg", "rpc_method", "transport", "status")} == {
        "level": "info",
        "logger": "callvault.calls",
        "msg": "call",
        "rpc_method": "/callvault.v1.ProviderService/GetProvider",
        "transport": "grpc",
        "status": "OK",
    }
    assert (line["request_id"], line["business_id"], line["key_id"]) == (call.request_id, "b-1", "k-1")
    assert isinstance(line["duration_ms"], float)
    assert len(formatted_on) == 1 and formatted_on[0] != threading.current_thread().name


def test_the_message_is_taken_when_logged_and_a_traceback_kept(configured: Path) -> None:
    state = ["before"]
    log = logging.getLogger("callvault.test")
    log.info("state %s", state)
    state[0] = "after"
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed")
    logs.stop()
    first, second = lines(configured)
    assert first["msg"] == "state ['before']"
    assert second["msg"] == "failed" and "RuntimeError: boom" in str(second["exc"])


def test_library_chatter_is_still_capped_behind_the_queue(configured: Path) -> None:
    logging.getLogger("somelib").info("executing %r", "secret-param")
    logging.getLogger("callvault.test").info("ours")
    logs.stop()
    assert [line["msg"] for line in lines(configured)] == ["ours"]
