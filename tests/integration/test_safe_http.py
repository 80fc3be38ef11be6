"""The connector HTTP client against real loopback servers: connect-time address checks,
redirect rules, the total deadline, the JSON size cap, TLS name checks, and ProviderClient's
rule that credentials go to the provider's origin only.

Names other than ``localhost`` are answered by a fake resolver, so no test leaves the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service.connectors.base import (
    AddressNotAllowed,
    OtherOrigin,
    TimedOut,
    TlsFailure,
    UnexpectedAnswer,
    Unreachable,
)
from service.connectors.http import (
    HeaderAuth,
    NetworkPolicy,
    ProviderClient,
    SafeTransport,
    build_client,
    error_for,
    read_json,
)
from service.netsafety import UnsafeAddress, check_url, resolve_checked
from tests.fakes.httpserver import FakeServer, Response

HANG = b""  # a route answer meaning: read the request, then never answer
PRIVATE_OK = NetworkPolicy(allow_private=True)
STRICT = NetworkPolicy(allow_private=False)


def reply(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    """A raw HTTP/1.1 response that closes the connection."""
    head = {"content-length": str(len(body)), "connection": "close", **(headers or {})}
    lines = [f"HTTP/1.1 {status} X", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    return "\r\n".join(lines).encode() + body


@dataclass
class Server:
    """A loopback HTTP server answering each path with a canned raw response."""

    routes: dict[str, bytes]
    port: int = 0
    seen: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            path = head.split(" ")[1]
            host = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in head.split("\r\n")
                    if line.lower().startswith("host:")
                ),
                "",
            )
            self.seen.append((path, host))
            answer = self.routes.get(path, reply(404))
            if answer == HANG:
                await reader.read()  # until the client gives up and closes
            else:
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serve(routes: dict[str, bytes], tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(routes)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


@pytest.fixture
async def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Names tests map to addresses; any other name but localhost fails to resolve."""
    table: dict[str, list[str]] = {}
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> list[Any]:
        if host == "localhost":
            return await real(host, port, **kwargs)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "unknown in tests")
        return [_addrinfo(address, port) for address in table[host]]

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return table


def _addrinfo(address: str, port: int) -> tuple[Any, ...]:
    if ipaddress.ip_address(address).version == 6:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port, 0, 0))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))


async def get(policy: NetworkPolicy, url: str) -> httpx.Response:
    async with build_client(policy) as client:
        return await client.get(url)


# --- connect-time address checks -------------------------------------------------------


async def test_name_resolving_to_loopback_is_refused_at_connect(fake_dns: dict[str, list[str]]) -> None:
    async with serve({"/": reply(200, b"ok")}) as server:
        fake_dns["pbx.example.test"] = ["127.0.0.1"]
        url = f"http://pbx.example.test:{server.port}/"
        check_url(url, allow_private=False)  # passes at save time: no DNS then
        with pytest.raises(AddressNotAllowed, match="loopback"):
            await get(STRICT, url)
        assert server.seen == []


async def test_same_name_is_reachable_with_allow_private(fake_dns: dict[str, list[str]]) -> None:
    async with serve({"/": reply(200, b"ok")}) as server:
        fake_dns["pbx.example.test"] = ["127.0.0.1"]
        response = await get(PRIVATE_OK, f"http://pbx.example.test:{server.port}/")
        assert response.status_code == 200
        assert response.content == b"ok"
        # Connected to the checked IP, but the request still names the host.
        assert server.seen == [("/", f"pbx.example.test:{server.port}")]


async def test_localhost_refused_without_allow_private(fake_dns: dict[str, list[str]]) -> None:
    async with serve({"/": reply(200, b"ok")}) as server:
        with pytest.raises(AddressNotAllowed):
            await get(STRICT, f"http://localhost:{server.port}/")
        assert server.seen == []


async def test_localhost_reachable_with_allow_private(fake_dns: dict[str, list[str]]) -> None:
    async with serve({"/": reply(200, b"ok")}) as server:
        response = await get(PRIVATE_OK, f"http://localhost:{server.port}/")
        assert response.content == b"ok"


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "0x7f.1", "127.1", "0x7f000001", "[::ffff:127.0.0.1]"]
)
async def test_loopback_spellings_refused_before_connecting(
    fake_dns: dict[str, list[str]], host: str
) -> None:
    async with serve({"/": reply(200, b"ok")}) as server:
        with pytest.raises(AddressNotAllowed, match="loopback"):
            await get(STRICT, f"http://{host}:{server.port}/")
        assert server.seen == []


async def test_dotted_octal_is_refused_by_httpx_itself() -> None:
    """httpx rejects a.b.c.d hosts that are not plain dotted decimal before any transport runs."""
    with pytest.raises(httpx.InvalidURL) as caught:
        await get(PRIVATE_OK, "http://0177.0.0.1:9/")
    assert isinstance(error_for(caught.value), UnexpectedAnswer)


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1"])
async def test_odd_spellings_connect_to_the_address_they_spell(
    fake_dns: dict[str, list[str]], host: str
) -> None:
    async with serve({"/": reply(200, b"ok")}) as server:
        response = await get(PRIVATE_OK, f"http://{host}:{server.port}/")
        assert response.content == b"ok"


async def test_metadata_refused_even_with_allow_private(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["innocent.example.test"] = ["169.254.169.254"]
    for url in (
        "http://innocent.example.test/",
        "http://169.254.169.254/",
        "http://metadata.google.internal/",
    ):
        with pytest.raises(AddressNotAllowed, match="metadata"):
            await get(PRIVATE_OK, url)


async def test_userinfo_and_bad_scheme_refused_by_the_client() -> None:
    with pytest.raises(AddressNotAllowed, match="credentials"):
        await get(PRIVATE_OK, "http://user:secret@127.0.0.1:9/")
    with pytest.raises((AddressNotAllowed, httpx.UnsupportedProtocol)):
        await get(PRIVATE_OK, "ftp://127.0.0.1/")


async def test_resolve_checked_refuses_if_any_answer_is_unsafe(fake_dns: dict[str, list[str]]) -> None:
    """DNS rebinding: one public and one private answer must not let the connection pick."""
    fake_dns["mixed.example.test"] = ["93.184.215.14", "10.0.0.7"]
    with pytest.raises(UnsafeAddress, match="private"):
        await resolve_checked("mixed.example.test", 443, allow_private=False)
    assert await resolve_checked("mixed.example.test", 443, allow_private=True) == [
        "93.184.215.14",
        "10.0.0.7",
    ]


async def test_resolve_checked_returns_checked_addresses(fake_dns: dict[str, list[str]]) -> None:
    fake_dns["pbx.example.test"] = ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    assert await resolve_checked("pbx.example.test", 443, allow_private=False) == fake_dns["pbx.example.test"]
    assert await resolve_checked("0x7f.1", 80, allow_private=True) == ["127.0.0.1"]


async def test_unknown_name_is_unreachable(fake_dns: dict[str, list[str]]) -> None:
    with pytest.raises(httpx.ConnectError) as caught:
        await get(STRICT, "http://nowhere.example.test/")
    assert isinstance(error_for(caught.value), Unreachable)


async def test_closed_port_is_unreachable(fake_dns: dict[str, list[str]]) -> None:
    async with serve({}) as server:
        port = server.port
    with pytest.raises(httpx.ConnectError) as caught:
        await get(PRIVATE_OK, f"http://127.0.0.1:{port}/")
    assert isinstance(error_for(caught.value), Unreachable)


# --- redirects -------------------------------------------------------------------------


async def test_same_origin_redirect_is_followed() -> None:
    async with serve(
        {"/start": reply(302, headers={"location": "/final"}), "/final": reply(200, b"done")}
    ) as a:
        response = await get(PRIVATE_OK, f"http://127.0.0.1:{a.port}/start")
        assert response.content == b"done"
        assert [path for path, _ in a.seen] == ["/start", "/final"]


async def test_absolute_same_origin_redirect_is_followed() -> None:
    async with serve({"/final": reply(200, b"done")}) as a:
        a.routes["/start"] = reply(301, headers={"location": f"http://127.0.0.1:{a.port}/final"})
        response = await get(PRIVATE_OK, f"http://127.0.0.1:{a.port}/start")
        assert response.content == b"done"


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:{b}/stolen",  # another port is another origin
        "//127.0.0.1:{b}/stolen",  # protocol-relative
        "http://localhost:{a}/stolen",  # same address, other host name
        "https://127.0.0.1:{a}/stolen",  # other scheme
    ],
)
async def test_redirect_to_another_origin_is_refused(location: str) -> None:
    async with serve({"/stolen": reply(200, b"x")}) as b, serve({}) as a:
        a.routes["/start"] = reply(302, headers={"location": location.format(a=a.port, b=b.port)})
        with pytest.raises(UnexpectedAnswer, match="redirect"):
            await get(PRIVATE_OK, f"http://127.0.0.1:{a.port}/start")
        assert b.seen == []
        assert [path for path, _ in a.seen] == ["/start"]


async def test_cross_origin_redirect_refused_when_streaming_too() -> None:
    async with serve({}) as b, serve({}) as a:
        a.routes["/start"] = reply(307, headers={"location": f"http://127.0.0.1:{b.port}/"})
        async with build_client(PRIVATE_OK) as client:
            with pytest.raises(UnexpectedAnswer):
                async with client.stream("GET", f"http://127.0.0.1:{a.port}/start"):
                    pass
        assert b.seen == []


async def test_redirect_loop_stops() -> None:
    async with serve({"/loop": reply(302, headers={"location": "/loop"})}) as a:
        with pytest.raises(httpx.TooManyRedirects) as caught:
            await get(PRIVATE_OK, f"http://127.0.0.1:{a.port}/loop")
        assert isinstance(error_for(caught.value), UnexpectedAnswer)
        assert len(a.seen) == 4  # the request and three redirects


# --- time bounds -----------------------------------------------------------------------


async def test_total_deadline_against_a_silent_server() -> None:
    policy = NetworkPolicy(allow_private=True, read_timeout=30.0, total_timeout=0.3)
    async with serve({"/": HANG}) as server:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException) as caught:
            await get(policy, f"http://127.0.0.1:{server.port}/")
        assert time.monotonic() - started < 5.0
        assert isinstance(error_for(caught.value), TimedOut)


async def test_read_timeout_against_a_silent_server() -> None:
    policy = NetworkPolicy(allow_private=True, read_timeout=0.2, total_timeout=30.0)
    async with serve({"/": HANG}) as server:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await get(policy, f"http://127.0.0.1:{server.port}/")
        assert isinstance(error_for(caught.value), TimedOut)


# --- JSON size cap ---------------------------------------------------------------------


async def read_json_from(policy: NetworkPolicy, raw: bytes) -> Any:
    async with (
        serve({"/": raw}) as server,
        build_client(policy) as client,
        client.stream("GET", f"http://127.0.0.1:{server.port}/") as response,
    ):
        return await read_json(response, policy)


SMALL_CAP = NetworkPolicy(allow_private=True, max_json_bytes=64)


async def test_read_json_under_the_cap() -> None:
    assert await read_json_from(SMALL_CAP, reply(200, b'{"calls": [1, 2]}')) == {"calls": [1, 2]}


async def test_read_json_refuses_a_long_body() -> None:
    body = b'{"pad": "' + b"x" * 100 + b'"}'
    with pytest.raises(UnexpectedAnswer, match="too large"):
        await read_json_from(SMALL_CAP, reply(200, body))


async def test_read_json_refuses_a_long_body_without_content_length() -> None:
    chunk = b'{"pad": "' + b"x" * 100 + b'"}'
    raw = b"HTTP/1.1 200 X\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    raw += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n"
    with pytest.raises(UnexpectedAnswer, match="too large"):
        await read_json_from(SMALL_CAP, raw)


async def test_read_json_trusts_a_large_content_length_up_front() -> None:
    """The header alone refuses the body: nothing is waited for (the body never comes)."""
    raw = b"HTTP/1.1 200 X\r\ncontent-length: 1000000\r\n\r\n{"
    policy = NetworkPolicy(allow_private=True, max_json_bytes=64, read_timeout=30.0)
    with pytest.raises(UnexpectedAnswer, match="too large"):
        await asyncio.wait_for(read_json_from(policy, raw), timeout=5.0)


async def test_read_json_refuses_non_json() -> None:
    with pytest.raises(UnexpectedAnswer) as caught:
        await read_json_from(SMALL_CAP, reply(200, b"<html>"))
    assert "too large" not in str(caught.value)


# --- TLS: the address is pinned, the certificate is still checked against the name -------


@dataclass
class Pki:
    server: ssl.SSLContext
    client: ssl.SSLContext
    sni_seen: list[str | None]


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: str,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A throwaway CA and a server certificate for pbx.example.test."""
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("callvault test CA", ca_key, "callvault test CA", ca_key, ca=True)
    leaf = _cert("pbx.example.test", leaf_key, "callvault test CA", ca_key, ca=False)
    cert_file, key_file = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    sni_seen: list[str | None] = []
    server.sni_callback = _record_sni(sni_seen)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return Pki(server, client, sni_seen)


def _record_sni(seen: list[str | None]) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], None]:
    def callback(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        seen.append(name)

    return callback


async def tls_get(pki: Pki, url: str) -> httpx.Response:
    async with httpx.AsyncClient(transport=SafeTransport(PRIVATE_OK, ssl_context=pki.client)) as client:
        return await client.get(url)


async def test_tls_verifies_the_name_while_connecting_to_the_checked_ip(
    pki: Pki, fake_dns: dict[str, list[str]]
) -> None:
    async with serve({"/": reply(200, b"secure")}, tls=pki.server) as server:
        fake_dns["pbx.example.test"] = ["127.0.0.1"]
        response = await tls_get(pki, f"https://pbx.example.test:{server.port}/")
        assert response.content == b"secure"
        assert pki.sni_seen == ["pbx.example.test"]


async def test_tls_refuses_a_certificate_for_another_name(pki: Pki, fake_dns: dict[str, list[str]]) -> None:
    async with serve({"/": reply(200, b"secure")}, tls=pki.server) as server:
        fake_dns["other.example.test"] = ["127.0.0.1"]
        with pytest.raises(httpx.ConnectError) as caught:
            await tls_get(pki, f"https://other.example.test:{server.port}/")
        assert isinstance(error_for(caught.value), TlsFailure)
        assert server.seen == []


# --- ProviderClient: credentials go to the provider's origin only ---------------------------

TOKEN = "tok-5e1f9a7c3b"


def provider_client(base_url: str) -> ProviderClient:
    return ProviderClient(PRIVATE_OK, base_url, auth=HeaderAuth("X-Auth-Token", TOKEN))


async def test_provider_client_attaches_its_auth_on_its_own_origin() -> None:
    with FakeServer() as provider:
        client = provider_client(provider.base_url)
        try:
            async with client.stream("GET", "/x", params={"q": "1"}):
                pass
            async with client.stream("GET", f"http://127.0.0.1:{provider.port}/y"):  # absolute, same origin
                pass
        finally:
            await client.aclose()
        assert [(r.path, r.headers.get("x-auth-token")) for r in provider.requests] == [
            ("/x", TOKEN),
            ("/y", TOKEN),
        ]


@pytest.mark.parametrize("where", ["other port", "other host name", "plain http, same port"])
async def test_provider_client_refuses_another_origin_before_sending(where: str) -> None:
    with FakeServer() as provider, FakeServer() as other:
        base, target = {
            "other port": (provider.base_url, f"{other.base_url}/audio"),
            "other host name": (provider.base_url, f"http://localhost:{provider.port}/audio"),
            # An https provider handed a plain-http link to its own host and port: the port
            # is served by `provider` in plain HTTP here, so anything sent would be logged.
            "plain http, same port": (
                f"https://127.0.0.1:{provider.port}",
                f"http://127.0.0.1:{provider.port}/a",
            ),
        }[where]
        client = provider_client(base)
        try:
            for auth in (None, HeaderAuth("Authorization", TOKEN)):
                with pytest.raises(OtherOrigin):
                    await client.send(client.build_request("GET", target, params={"k": TOKEN}), auth=auth)
            # The same URL, fetched as public, does arrive: the refusal above was the rule's.
            async with client.stream_public(target) as response:
                assert response.status_code == 404
        finally:
            await client.aclose()
        [public] = provider.requests + other.requests
        assert TOKEN.encode() not in public.raw and b"x-auth-token" not in public.raw.lower()


async def test_public_fetch_carries_no_auth_headers_or_cookies() -> None:
    with FakeServer() as provider, FakeServer() as other:
        provider.route(
            "GET", "/login", lambda _: Response(200, {"Set-Cookie": "sid=cookie-secret-99; Path=/"})
        )
        other.route("GET", "/file", lambda _: Response(200, {}, b"audio"))
        client = ProviderClient(PRIVATE_OK, provider.base_url, auth=httpx.BasicAuth("user", "pass-secret"))
        try:
            async with client.stream("GET", "/login"):
                pass
            for url in (f"{other.base_url}/file", f"{provider.base_url}/file"):  # even on its own origin
                async with client.stream_public(url) as response:
                    await response.aread()
            async with client.stream("GET", "/again"):
                pass
        finally:
            await client.aclose()
        public = [*other.requests, *(r for r in provider.requests if r.path == "/file")]
        assert len(public) == 2
        for request in public:
            raw = request.raw.lower()
            assert b"authorization" not in raw and b"cookie" not in raw
            assert b"cookie-secret-99" not in raw and b"cGFzcy1zZWNyZXQ" not in request.raw
        again = next(r for r in provider.requests if r.path == "/again")
        assert again.headers["cookie"] == "sid=cookie-secret-99"  # the provider's jar works at home
        assert again.headers["authorization"].startswith("Basic ")


@pytest.mark.parametrize("header", ["Authorization", "cookie", "X-Auth-Token", "Proxy-Authorization"])
def test_credentials_cannot_be_set_as_raw_headers(header: str) -> None:
    client = provider_client("https://pbx.example.test")
    with pytest.raises(ValueError, match="auth="):
        client.build_request("GET", "/x", headers={header: TOKEN})


async def test_public_fetch_still_obeys_the_address_rules() -> None:
    with FakeServer() as server:
        client = ProviderClient(STRICT, "https://pbx.example.test")
        try:
            with pytest.raises(AddressNotAllowed, match="loopback"):
                async with client.stream_public(f"{server.base_url}/file"):
                    pass
            with pytest.raises(AddressNotAllowed, match="credentials"):
                async with client.stream_public(f"http://u:p@127.0.0.1:{server.port}/file"):
                    pass
        finally:
            await client.aclose()
        assert server.requests == []
