"""The log filter: below WARNING only callvault's own loggers are written."""

from __future__ import annotations

import logging

import pytest

from service.logs import LibraryCap


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
