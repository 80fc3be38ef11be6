"""``fake`` (a running fake provider) and ``conn`` (a connector to it) for the test's ``kind``.

Each provider's test module names its kind in a ``kind`` fixture; test_contract.py runs over all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.connectors.kinds import Kind


@pytest.fixture
def fake(kind: Kind[Any, Any]) -> Iterator[Any]:
    with kind.new_fake() as server:
        yield server
        assert server.handler_errors == []


@pytest.fixture
async def conn(kind: Kind[Any, Any], fake: Any) -> AsyncIterator[Any]:
    connector = kind.connect(fake)
    yield connector
    await connector.aclose()
