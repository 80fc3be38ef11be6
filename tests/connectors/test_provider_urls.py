"""A URL a provider hands back is held to the same address rules as one a user typed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.connectors.base import AddressNotAllowed
from tests.connectors.kinds import DTAC
from tests.connectors.support import collect
from tests.fakes.dtac import FakeDtac


async def test_recording_url_to_a_refused_address_is_not_fetched() -> None:
    with FakeDtac() as fake:
        now = datetime.now(UTC)
        fake.add_call(now - timedelta(hours=1))
        # 0.0.0.0 (unspecified) stays refused even where private networks are allowed.
        fake.media_base = f"http://0.0.0.0:{fake.port}"
        connector = DTAC.make(fake)
        try:
            (call,) = await collect(connector, now - timedelta(days=1), now)
            assert call.recording_ref is not None and "0.0.0.0" in call.recording_ref
            with pytest.raises(AddressNotAllowed):
                async with connector.open_recording(call.recording_ref):
                    pass
        finally:
            await connector.aclose()
        assert not [r for r in fake.requests if r.path.endswith("/audio")]
