"""The only way connectors reach the network.

Every connection is made by ``SafeTransport``: it resolves the host itself, checks every
address (``service.netsafety``), connects to a checked address and still verifies TLS
against the hostname. Redirects are followed only within one origin, and each request has
a total deadline on top of httpx's connect and read timeouts.

A connector holds a ``ProviderClient``, the one place where credentials meet URLs: whatever
it sends goes only to the provider's own origin, and a URL elsewhere is fetched bare or not
at all (see ``ProviderClient``).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import json
import math
import os
import select
import socket
import ssl
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Generator,
    Iterable,
    Iterator,
    Mapping,
)
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Final

import httpcore
import httpx

from service.connectors.base import (
    AddressNotAllowed,
    AudioStream,
    AuthenticationFailed,
    ConnectorError,
    OtherOrigin,
    RateLimited,
    TimedOut,
    TlsFailure,
    UnexpectedAnswer,
    Unreachable,
)
from service.netsafety import UnsafeAddress, check_url, parse_host_literal, resolve_checked

MAX_REDIRECTS: Final = 3
MAX_RETRY_AFTER: Final = 86_400.0  # a day: a provider's Retry-After cannot park a sync for longer


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """Which addresses user-given URLs may reach, and how long and how much to wait for."""

    allow_private: bool = False
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    total_timeout: float = 60.0
    max_json_bytes: int = 8 * 1024 * 1024


def build_client(
    policy: NetworkPolicy, *, base_url: str = "", cookies: httpx.Cookies | None = None
) -> httpx.AsyncClient:
    """An httpx client with connection reuse, bounded waits and safe addresses; connectors get
    a ``ProviderClient`` built on it, never the bare client.

    Read timeouts apply per network read, so a long streamed recording is bounded per chunk,
    not in total; ``policy.total_timeout`` bounds each request up to its response headers.
    """
    return httpx.AsyncClient(
        base_url=base_url,
        cookies=cookies,
        transport=SafeTransport(policy),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        event_hooks={"response": [refuse_cross_origin_redirect]},
        timeout=httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout),
        trust_env=False,  # no proxies or .netrc credentials from the environment
    )


async def refuse_cross_origin_redirect(response: httpx.Response) -> None:
    """Response hook: a redirect may stay on its origin (scheme, host, port) and nowhere else.

    A provider that can send us elsewhere could send us inward, or take our credentials along.
    """
    if not response.has_redirect_location:
        return
    request_url = response.request.url
    try:
        target = httpx.URL(response.headers["location"])
        if target.scheme and not target.host:
            target = target.copy_with(host=request_url.host)  # as httpx itself reads it
        target = request_url.join(target)
    except httpx.InvalidURL:
        target = None
    if target is None or (there := origin_of(target)) is None or there != origin_of(request_url):
        await response.aclose()
        raise UnexpectedAnswer("redirect to another host refused")


# -- origins: where credentials may go ----------------------------------------------------

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Headers that carry credentials: only an auth object (see ProviderClient) may set them.
CREDENTIAL_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-auth-token", "x-api-key"}
)


@dataclass(frozen=True, slots=True)
class Origin:
    """Scheme, host and port: what a URL must share with the provider's to get its secrets."""

    scheme: str
    host: str
    port: int


def origin_of(url: httpx.URL | str) -> Origin | None:
    """The origin ``url`` reaches; None when it has none a secret may go to (not absolute
    http(s), unparseable, or with userinfo, which httpx would turn into a Basic header).

    Default ports are filled in, so ``https://h`` and ``https://h:443`` are one origin and
    ``http://h`` another; the host is compared lower-case in its ASCII (IDNA) form, and IP
    literals in their canonical spelling (``[0:0::1]`` is ``[::1]``, ``127.1`` is
    ``127.0.0.1``). A trailing dot is kept: ``pbx.`` is absolute while ``pbx`` can go through
    the resolver's search domains, so they may be different hosts.
    """
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        host = parsed.raw_host.decode("ascii").lower()
        literal = parse_host_literal(host) if host else None
    except (httpx.InvalidURL, TypeError, UnicodeDecodeError, UnsafeAddress):
        return None
    port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme)
    if not host or port is None or parsed.userinfo:
        return None
    return Origin(parsed.scheme, host if literal is None else str(literal), port)


class HeaderAuth(httpx.Auth):
    """One header holding a credential (a session or API token), set by ``ProviderClient.send``
    once the request's origin has been checked. Its repr names the header, never the value."""

    def __init__(self, name: str, value: str) -> None:
        self._name = name
        self._value = value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self._name] = self._value
        yield request

    def __repr__(self) -> str:
        return f"HeaderAuth({self._name!r}, <hidden>)"


def _refuse_all_cookies() -> httpx.Cookies:
    return httpx.Cookies(CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))


class ProviderClient:
    """A connector's HTTP client: credentials reach the provider's own origin and nowhere else.

    The provider origin is that of the configured base URL (scheme, host, port; see
    ``origin_of``). Anything a connector puts in a request (auth, headers, query, body) may
    hold a secret, so ``send`` refuses (``OtherOrigin``, before any byte leaves) a request whose
    URL is on another origin: a provider-given next-page link or download URL elsewhere, or on
    ``http://`` for an ``https://`` provider, never carries a token. Credentials are attached by
    ``send`` from an ``httpx.Auth`` (the client's own, or one given per call), never as raw
    headers: ``build_request`` refuses credential headers. Cookies a provider sets live in this
    client's jar and so only ever go back to its origin. ``stream_public`` is the one way to
    another origin: a bare GET of the URL, with no auth, headers, body or cookies. Every
    request, either way, goes through the network-safety checks of ``build_client``.
    """

    def __init__(self, policy: NetworkPolicy, base_url: str, *, auth: httpx.Auth | None = None) -> None:
        self._policy = policy
        self._auth = auth
        self._client = build_client(policy, base_url=base_url)
        self._public: httpx.AsyncClient | None = None
        self.origin = origin_of(self._client.base_url)

    @property
    def base_url(self) -> httpx.URL:
        return self._client.base_url

    def resolve(self, url: object) -> httpx.URL:
        """A provider-given URL made absolute against the base URL (a bare path is on the
        provider's host); UnexpectedAnswer unless it is an http(s) URL with a host."""
        if not isinstance(url, str | httpx.URL):
            raise UnexpectedAnswer()
        try:
            joined = self._client.base_url.join(url)
        except httpx.InvalidURL:
            raise UnexpectedAnswer() from None
        if joined.scheme not in _DEFAULT_PORTS or not joined.host:
            raise UnexpectedAnswer()
        return joined

    def build_request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
    ) -> httpx.Request:
        """A request for ``send``; credential headers are refused, they go in ``auth``."""
        if any(name.lower() in CREDENTIAL_HEADERS for name in headers or {}):
            raise ValueError("credentials go in auth=, not in headers")
        with connector_errors():
            return self._client.build_request(
                method, url, params=params, headers=headers, json=json, data=data
            )

    async def send(self, request: httpx.Request, *, auth: httpx.Auth | None = None) -> httpx.Response:
        """The request, streamed, with ``auth`` (else the client's own) attached, if its URL is
        on the provider's origin; ``OtherOrigin`` otherwise. The caller closes the response."""
        self._check_address(request.url)
        if self.origin is None or origin_of(request.url) != self.origin:
            raise OtherOrigin()
        with connector_errors():
            return await self._client.send(request, stream=True, auth=auth or self._auth)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """``send`` of a new request, closed on exit."""
        request = self.build_request(method, url, params=params, headers=headers, json=json, data=data)
        response = await self.send(request, auth=auth)
        try:
            yield response
        finally:
            await response.aclose()

    @contextlib.asynccontextmanager
    async def stream_public(self, url: httpx.URL | str) -> AsyncIterator[httpx.Response]:
        """A GET of ``url`` on any origin, carrying nothing of the provider's: for URLs meant
        to be public, such as a signed storage link. Closed on exit."""
        self._check_address(url)
        if self._public is None:
            self._public = build_client(self._policy, cookies=_refuse_all_cookies())
        with connector_errors():
            request = self._public.build_request("GET", url)
            response = await self._public.send(request, stream=True, auth=None)
        try:
            yield response
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._public is not None:
            await self._public.aclose()

    def _check_address(self, url: httpx.URL | str) -> None:
        """The save-time rules first, so a refused address says so rather than "other origin"."""
        try:
            check_url(str(url), allow_private=self._policy.allow_private)
        except UnsafeAddress as exc:
            raise AddressNotAllowed(str(exc)) from None


def default_ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (its CA bundle, or SSL_CERT_FILE/SSL_CERT_DIR), made
    once per CA setting: loading the bundle costs more CPU than a whole small pull's
    requests, and every pull builds a client. A context is safe to share between clients."""
    return _ssl_context_for(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _ssl_context_for(_cert_file: str | None, _cert_dir: str | None) -> ssl.SSLContext:
    return httpx.create_ssl_context()


class SafeTransport(httpx.AsyncBaseTransport):
    """httpx transport over an httpcore pool whose every connection goes to a checked address.

    Refused addresses raise ``AddressNotAllowed``; the total deadline raises
    ``httpx.TimeoutException``; httpcore failures become the matching httpx exceptions.
    """

    def __init__(self, policy: NetworkPolicy, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self._policy = policy
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or default_ssl_context(),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=CheckedBackend(allow_private=policy.allow_private),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        with _httpx_errors(request):
            check_url(str(request.url), allow_private=self._policy.allow_private)
            async with asyncio.timeout(self._policy.total_timeout):
                response = await self._pool.handle_async_request(_core_request(request))
        assert isinstance(response.stream, AsyncIterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream, request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def _core_request(request: httpx.Request) -> httpcore.Request:
    url = request.url
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
        headers=request.headers.raw,
        content=request.stream,
        extensions=request.extensions,
    )


class _ResponseStream(httpx.AsyncByteStream):
    """The body, with httpcore errors turned into httpx ones as it is read."""

    def __init__(self, stream: AsyncIterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            async for chunk in self._stream:
                yield chunk

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()


# Most specific first: the first match wins.
_HTTPX_ERROR_FOR: Final[tuple[tuple[type[Exception], type[httpx.TransportError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    """What httpx's own transport does with httpcore errors, plus our two refusals."""
    try:
        yield
    except UnsafeAddress as exc:
        raise AddressNotAllowed(str(exc)) from exc
    except TimeoutError as exc:  # only asyncio.timeout raises it here; httpcore wraps its own
        raise httpx.TimeoutException("total deadline exceeded", request=request) from exc
    except Exception as exc:
        mapped = next((to for frm, to in _HTTPX_ERROR_FOR if isinstance(exc, frm)), None)
        if mapped is None:
            raise
        raise mapped(str(exc), request=request) from exc


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Network backend that resolves and checks the host, then connects to a checked address.

    httpcore still starts TLS with the original hostname, so SNI and certificate checks are
    unchanged; only the address is pinned.
    """

    def __init__(self, *, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  # httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
                return _PooledStream(stream)
            except httpcore.ConnectError as exc:
                failure = exc
        assert failure is not None  # resolve_checked never returns an empty list
        raise failure

    async def _resolve(self, host: str, port: int, limit: float | None) -> list[str]:
        try:
            async with asyncio.timeout(limit):
                return await resolve_checked(host, port, allow_private=self._allow_private)
        except TimeoutError:
            raise httpcore.ConnectTimeout("name resolution timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError("name resolution failed") from exc

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _PooledStream(httpcore.AsyncNetworkStream):
    """A connection whose keep-alive check is cheap. On every request and every release the
    pool asks each of its idle connections whether the peer closed it ("is_readable");
    anyio answers by rebuilding its attribute table (with a getpeername call) each time,
    which made a pull's HTTP cost grow with its concurrency. The socket is read once here."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  # httpcore's signature
    ) -> httpcore.AsyncNetworkStream:
        # TLS runs over the same socket, so its readability still says whether the peer closed.
        return _PooledStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._socket)
        return self._inner.get_extra_info(info)


def _readable(sock: socket.socket | None) -> bool:
    """Whether a read would not block: data, or the peer's close. A socket gone counts as closed."""
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


async def read_json(response: httpx.Response, policy: NetworkPolicy) -> Any:
    """The JSON body of a streamed or plain response, refusing bodies over the cap.

    The cap counts decoded bytes, so a small compressed body cannot expand past it either.
    """
    if _declared_length(response) > policy.max_json_bytes:
        await response.aclose()
        raise UnexpectedAnswer("answer too large")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body.extend(chunk)
        if len(body) > policy.max_json_bytes:
            await response.aclose()
            raise UnexpectedAnswer("answer too large")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise UnexpectedAnswer() from exc


def _declared_length(response: httpx.Response) -> int:
    try:
        return int(response.headers.get("content-length", "0"))
    except ValueError:
        return 0


def error_for(exc: httpx.HTTPError | httpx.InvalidURL) -> ConnectorError:
    """The short, secret-free ConnectorError that an httpx failure means.

    Never built from the exception's text, which can hold URLs with tokens in the query.
    ``httpx.InvalidURL`` (a provider handing back a URL httpx cannot parse) is accepted too,
    since it is not an ``httpx.HTTPError``.
    """
    if _caused_by(exc, UnsafeAddress):
        return AddressNotAllowed()
    if isinstance(exc, httpx.TimeoutException):
        return TimedOut()
    if isinstance(exc, httpx.UnsupportedProtocol):
        return AddressNotAllowed("must be an http(s) URL")
    if isinstance(exc, httpx.ConnectError) and _is_tls_failure(exc):
        return TlsFailure()
    if isinstance(exc, httpx.ProtocolError):
        return UnexpectedAnswer()
    if isinstance(exc, httpx.TransportError):
        return Unreachable()
    return UnexpectedAnswer()


def _is_tls_failure(exc: BaseException) -> bool:
    text = str(exc)
    return _caused_by(exc, ssl.SSLError) or "SSL" in text or "certificate" in text


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is anywhere in the chain of causes (httpx wraps httpcore wraps ssl)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


# -- answers: what every connector does with a response ---------------------------------


@contextlib.contextmanager
def connector_errors() -> Iterator[None]:
    """Turns httpx failures raised inside into ``error_for``'s ConnectorError.

    Chained to nothing: the httpx text can hold URLs with tokens, and tracebacks get logged.
    """
    try:
        yield
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise error_for(exc) from None


def raise_for_status(response: httpx.Response, *, not_found: type[ConnectorError] = UnexpectedAnswer) -> None:
    """The ConnectorError a non-2xx answer means, for providers that use status codes plainly.

    A provider whose codes mean more (say, 400 for bad credentials) checks those first.
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    if status in (401, 403):
        raise AuthenticationFailed()
    if status == 404:
        raise not_found()
    if status in (429, 503):
        raise RateLimited(retry_after=retry_after(response.headers.get("retry-after")))
    raise UnexpectedAnswer()


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), within
    [0, ``MAX_RETRY_AFTER``]; None when absent, unreadable or not finite."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if math.isfinite(seconds) else None


async def checked_json(response: httpx.Response, policy: NetworkPolicy) -> Any:
    """``read_json`` of a 2xx answer (``raise_for_status`` otherwise); closes the response."""
    try:
        with connector_errors():
            raise_for_status(response)
            return await read_json(response, policy)
    finally:
        await response.aclose()


def media_type(response: httpx.Response) -> str:
    """The Content-Type without parameters, lower-case; empty when absent."""
    return str(response.headers.get("content-type", "")).split(";")[0].strip().lower()


def content_length(response: httpx.Response) -> int | None:
    """The declared body length; None when absent, malformed, or when httpx decodes a
    Content-Encoding, since what arrives then is not what was declared."""
    raw = response.headers.get("content-length", "")
    if not (raw.isascii() and raw.isdigit()) or "content-encoding" in response.headers:
        return None
    return int(raw)


async def body_chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The body as it arrives; a cut or short body raises a ConnectorError, never ends quietly."""
    with connector_errors():
        async for chunk in response.aiter_bytes():
            yield chunk


@contextlib.asynccontextmanager
async def audio_stream(response: httpx.Response, content_type: str) -> AsyncIterator[AudioStream]:
    """The (status-checked) response's body as an AudioStream.

    The chunk generator is closed on exit, so a reader that stops early does not leave it
    to the garbage collector; the response itself is the caller's to close.
    """
    chunks = body_chunks(response)
    try:
        yield AudioStream(content_type, content_length(response), chunks)
    finally:
        await chunks.aclose()
