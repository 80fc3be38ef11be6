"""What every connector must do, checked against each fake over loopback: refuse bad
credentials, name an unreachable host and a slow answer, map throttling and server errors,
stream a recording byte for byte, fail a cut transfer, and never put a secret in a message."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.connectors.base import (
    AuthenticationFailed,
    Connector,
    ConnectorError,
    RateLimited,
    RecordingNotFound,
    TimedOut,
    UnexpectedAnswer,
    Unreachable,
)
from tests.connectors.kinds import KINDS, Kind
from tests.connectors.support import POLICY, SLOW_POLICY, assert_secret_free, closed_port, digest, ids
from tests.fakes.httpserver import Fault

T0 = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture(params=KINDS, ids=[k.name for k in KINDS])
def kind(request: pytest.FixtureRequest) -> Kind[Any, Any]:
    chosen: Kind[Any, Any] = request.param
    return chosen


def each(cases: Callable[[Kind[Any, Any]], Iterable[object]]) -> list[Any]:
    """Params (kind, case) for every case each kind lists, with ids such as ``dtac-0``."""
    return [pytest.param(k, case, id=f"{k.name}-{i}") for k in KINDS for i, case in enumerate(cases(k))]


# -- check ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "wrong"), each(lambda k: k.bad_credentials))
async def test_check_refuses_bad_credentials_without_leaking_them(
    kind: Kind[Any, Any], fake: Any, wrong: dict[str, Any]
) -> None:
    connector = kind.make(fake, **wrong)
    with pytest.raises(AuthenticationFailed) as caught:
        await connector.check()
    await connector.aclose()
    assert (
        str(caught.value) == caught.value.message == AuthenticationFailed.message == "authentication failed"
    )
    given = {v for case in kind.bad_credentials for v in case.values() if isinstance(v, str)}
    assert_secret_free(caught.value, [*given, *kind.leaks(fake)])


async def test_check_reports_a_closed_port_as_unreachable(kind: Kind[Any, Any]) -> None:
    connector = kind.build({"baseUrl": f"http://127.0.0.1:{closed_port()}", **kind.dummy_config}, POLICY)
    with pytest.raises(Unreachable):
        await connector.check()
    await connector.aclose()


async def test_check_times_out_on_a_slow_answer(kind: Kind[Any, Any], fake: Any) -> None:
    fake.faults.add(Fault.slow(delay=1.5), path=kind.paths(fake).check)
    connector = kind.make(fake, policy=SLOW_POLICY)
    with pytest.raises(TimedOut):
        await connector.check()
    await connector.aclose()


# -- listing -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
async def test_listing_rate_limit_carries_retry_after(
    kind: Kind[Any, Any], fake: Any, conn: Connector, status: int
) -> None:
    kind.add_call(fake, T0 + timedelta(hours=1))
    fake.faults.add(Fault.rate_limited(7, status=status), path=kind.paths(fake).listing)
    with pytest.raises(RateLimited) as caught:
        await ids(conn, T0, T0 + timedelta(days=1))
    assert caught.value.retry_after == 7
    assert_secret_free(caught.value, kind.leaks(fake))


@pytest.mark.parametrize("status", [500, 502])
async def test_listing_server_error_is_unexpected_answer(
    kind: Kind[Any, Any], fake: Any, conn: Connector, status: int
) -> None:
    fake.faults.add(Fault.status(status), path=kind.paths(fake).listing)
    with pytest.raises(UnexpectedAnswer) as caught:
        await ids(conn, T0, T0 + timedelta(days=1))
    assert_secret_free(caught.value, kind.leaks(fake))


# -- recordings ------------------------------------------------------------------------------


async def test_recording_streams_byte_identical(kind: Kind[Any, Any], fake: Any, conn: Connector) -> None:
    ref, blob = await kind.add_recording(fake, conn, T0, 3 * 1024 * 1024 + 17)
    got = await digest(conn, ref)
    assert (got.sha256, got.length, got.content_type) == (blob.sha256(), blob.size, kind.content_type)
    assert got.chunks > 1


@pytest.mark.parametrize("fault", [Fault.reset(after=70_000), Fault.truncate(after=70_000)])
async def test_cut_recording_raises(kind: Kind[Any, Any], fake: Any, conn: Connector, fault: Fault) -> None:
    ref, blob = await kind.add_recording(fake, conn, T0, 512 * 1024)
    fake.faults.add(fault, path=kind.paths(fake).recording)
    received = 0
    with pytest.raises(ConnectorError) as caught:
        async with conn.open_recording(ref) as audio:
            async for chunk in audio.chunks:
                received += len(chunk)
    assert received < blob.size
    assert_secret_free(caught.value, kind.leaks(fake))


@pytest.mark.parametrize(("kind", "ref"), each(lambda k: k.missing_refs))
async def test_unknown_or_malformed_ref_is_not_found(
    kind: Kind[Any, Any], fake: Any, conn: Connector, ref: str
) -> None:
    await kind.add_recording(fake, conn, T0, 4096)
    with pytest.raises(RecordingNotFound) as caught:
        await digest(conn, ref.replace("{base}", fake.base_url))
    assert_secret_free(caught.value, kind.leaks(fake))
