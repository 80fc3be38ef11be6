"""URLs a provider hands back (DTAC's ``recordingURL`` and ``nextPageUri``, AntBuddy's media
URL) get the provider's credentials only on its own origin: elsewhere they are refused
(DTAC) or fetched bare (AntBuddy), and always under the same address rules as a typed URL.

``elsewhere`` is a second loopback server: another port, so another origin. It records every
request as it arrived, and the tests search those raw bytes for every secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.connectors.base import AddressNotAllowed, OtherOrigin, UnexpectedAnswer
from tests.connectors.kinds import ANTBUDDY, DTAC, KINDS, Kind
from tests.connectors.support import collect, digest, ids
from tests.fakes.antbuddy import FakeAntBuddy
from tests.fakes.dtac import FakeDtac
from tests.fakes.httpserver import FakeServer, Fault, Request
from tests.fakes.tls import loopback_tls

T0 = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
def elsewhere() -> Iterator[FakeServer]:
    with FakeServer() as server:  # no routes: every request is logged and answered 404
        yield server


def dtac_secrets(fake: FakeDtac) -> list[str]:
    return [fake.password, *fake.tokens.all()]


def antbuddy_secrets(fake: FakeAntBuddy) -> list[str]:
    hashes = [r.query["hash"] for r in fake.requests if "hash" in r.query]
    assert hashes  # the API was called, so there were signatures to leak
    return [fake.app_secret, fake.app_id, *hashes]


def assert_none_reached(requests: list[Request], secrets: list[str]) -> None:
    for request in requests:
        raw = request.raw.lower()
        for secret in secrets:
            assert secret.lower().encode() not in raw
        for name in (b"authorization:", b"cookie:", b"x-auth-token:", b"hash=", b"appid="):
            assert name not in raw


# -- DTAC: the token goes with every request, so another origin is refused ----------------


async def test_dtac_recording_url_on_another_port_is_refused_without_the_token(
    elsewhere: FakeServer,
) -> None:
    with FakeDtac() as fake:
        fake.add_call(T0)
        fake.media_base = elsewhere.base_url
        connector = DTAC.make(fake)
        try:
            (call,) = await collect(connector, T0, T0 + timedelta(hours=1))
            assert call.recording_ref is not None and call.recording_ref.startswith(elsewhere.base_url)
            with pytest.raises(OtherOrigin) as caught:
                await digest(connector, call.recording_ref)
        finally:
            await connector.aclose()
        assert caught.value.message == "provider URL on another origin refused"
        assert elsewhere.requests == []
        assert not [r for r in fake.requests if r.path.endswith("/audio")]


async def test_dtac_next_page_on_another_port_is_never_followed(elsewhere: FakeServer) -> None:
    """Pages are asked by number from the configured origin (as public OrkTrack clients
    do), so a ``nextPageUri`` elsewhere gets nothing, the token least of all."""
    with FakeDtac() as fake:
        for minute in range(10):
            fake.add_call(T0 + timedelta(minutes=minute))
        fake.link_base = elsewhere.base_url
        connector = DTAC.connect(fake)  # pages of 7: there is a next page
        try:
            assert len(await collect(connector, T0, T0 + timedelta(hours=1))) == 10
        finally:
            await connector.aclose()
        assert elsewhere.requests == []
        assert [r.query["page"] for r in fake.requests if r.path == DTAC.LIST] == ["1", "2"]


@pytest.mark.parametrize("link", ["recordingURL", "nextPageUri"])
async def test_dtac_plain_http_link_to_its_own_https_host_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: str
) -> None:
    """Same host, same port, but ``http://``: the token would cross the network in clear text."""
    tls = loopback_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca_file))
    fake = FakeDtac()
    fake.tls = tls.server
    with fake:
        for minute in range(10):
            fake.add_call(T0 + timedelta(minutes=minute))
        plain = f"http://127.0.0.1:{fake.port}"
        connector = DTAC.connect(fake)  # pages of 7
        try:
            assert str(connector._client.base_url).startswith("https://127.0.0.1:")
            if link == "recordingURL":
                fake.media_base = plain
                calls = await collect(connector, T0, T0 + timedelta(hours=1))
                assert len(calls) == 10  # listing over TLS works
                with pytest.raises(OtherOrigin):
                    await digest(connector, str(calls[0].recording_ref))
            else:
                fake.link_base = plain  # never followed: pages are asked by number
                assert len(await collect(connector, T0, T0 + timedelta(hours=1))) == 10
        finally:
            await connector.aclose()
        assert fake.requests and all(r.scheme == "https" for r in fake.requests)
        # The fake does see plain requests on that port, so none came:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{plain}/orktrack/rest/recordings")).status_code == 400
        assert [r.scheme for r in fake.requests][-1] == "http"


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


# -- AntBuddy: the media URL is meant to be public, so it is fetched bare ------------------


@pytest.mark.parametrize("shape", ["text", "json_url"])
async def test_antbuddy_media_on_another_port_gets_nothing_of_ours(elsewhere: FakeServer, shape: str) -> None:
    with FakeAntBuddy() as fake:
        fake.mount_media(elsewhere)
        fake.media_base = elsewhere.base_url
        fake.play_shape = shape
        fake.cookie = "AWSALB=sticky-cookie-value-7f3e"  # the provider's cookie stays with the provider
        row = fake.add_call(T0, audio_size=200_000)
        connector = ANTBUDDY.make(fake)
        try:
            await ids(connector, T0, T0 + timedelta(hours=1))  # the client now holds the cookie
            got = await digest(connector, row["recording"])
        finally:
            await connector.aclose()
        assert got.sha256 == fake.media[row["recording"]].sha256()
        [media] = elsewhere.requests
        assert list(media.query) == ["sig"]  # the storage link, untouched
        assert_none_reached(elsewhere.requests, [*antbuddy_secrets(fake), "sticky-cookie-value-7f3e"])
        # The provider's own origin got its cookie back: the jar works, it just stays home.
        assert any("sticky-cookie-value-7f3e" in r.headers.get("cookie", "") for r in fake.requests)
        assert not [r for r in fake.requests if r.path.startswith("/media/")]


async def test_antbuddy_media_url_to_a_refused_address_is_not_fetched() -> None:
    with FakeAntBuddy() as fake:
        fake.media_base = f"http://0.0.0.0:{fake.port}"
        row = fake.add_call(T0)
        connector = ANTBUDDY.make(fake)
        try:
            with pytest.raises(AddressNotAllowed):
                await digest(connector, row["recording"])
        finally:
            await connector.aclose()
        assert not [r for r in fake.requests if r.path.startswith("/media/")]


# -- every connector: a redirect from the provider's origin carries nothing away ----------


@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
@pytest.mark.parametrize("status", [302, 307])
async def test_redirect_to_another_origin_carries_no_credentials(
    kind: Kind[Any, Any], elsewhere: FakeServer, status: int
) -> None:
    with kind.new_fake() as fake:
        kind.add_call(fake, T0 + timedelta(minutes=5))
        location = f"{elsewhere.base_url}{kind.paths(fake).listing}?page=2"
        fake.faults.add(Fault.status(status, headers={"Location": location}), path=kind.paths(fake).listing)
        connector = kind.make(fake)
        try:
            with pytest.raises(UnexpectedAnswer, match="redirect"):
                await ids(connector, T0, T0 + timedelta(hours=1))
        finally:
            await connector.aclose()
        redirected = [r for r in fake.requests if r.path == kind.paths(fake).listing]
        assert redirected  # the provider was asked, with credentials, and answered the redirect
        assert elsewhere.requests == []
