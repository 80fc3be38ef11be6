"""The connection test gives up when the caller's deadline runs out, not only at the
policy's own (longer) limits: gRPC deadlines do not cross into outbound HTTP by themselves."""

from __future__ import annotations

import time

from service.connectors.http import NetworkPolicy
from service.kinds import KINDS
from service.providers.connection import ConnectionChecker
from tests.fakes.httpserver import Fault
from tests.fakes.kazoo import FakeKazoo


async def test_check_stops_at_the_callers_deadline() -> None:
    patient = NetworkPolicy(allow_private=True, connect_timeout=10, read_timeout=10, total_timeout=10)
    checker = ConnectionChecker(patient)
    with FakeKazoo() as fake:
        config = {"baseUrl": fake.base_url, "accountId": fake.account_id, "apiKey": fake.api_key}
        assert await checker.problem(KINDS["kazoo"], config, deadline=5) is None
        fake.faults.add(Fault.slow(delay=3.0), path="/", times=None)
        started = time.monotonic()
        assert await checker.problem(KINDS["kazoo"], config, deadline=0.4) == "timed out"
        assert time.monotonic() - started < 1.5
