"""A tiny raw HTTP/1.1 server for fake providers, with exact, programmable faults.

Why raw asyncio instead of a framework: faults must be byte-exact (reset after N body
bytes, a Content-Length the body never reaches), and the server must be fast enough to
serve as a load peer. It runs its own event loop in a daemon thread, so sync tests,
async tests on any loop, and other processes can all talk to it over loopback.

API (stable; other fakes build on it)::

    server = FakeServer()                     # or subclass it, as the provider fakes do
    server.route("GET", r"/items/(?P<id>\\d+)", handler)   # regex, full match on the path
    with server:                              # or server.start() / server.stop()
        server.base_url                       # "http://127.0.0.1:<port>"
        server.faults.add(Fault.status(500), path="/items", times=2)
        server.requests                       # copy of the log: list[Request]; clear_requests()
        server.connections                    # connections accepted so far (Request.connection)
        server.handler_errors                 # exceptions raised by handlers (answered 500)

    server.tls = ssl_context                  # before start(): serve https (see tests/fakes/tls.py);
                                              # plain http on that port is logged, answered 400

    def handler(req: Request) -> Response:    # runs on the server thread, under server.lock
        req.method, req.path, req.query, req.headers, req.body, req.params
        return Response.json({"ok": True})    # or Response(status, headers, body)

``Response.body`` is bytes or an iterable of byte chunks (streamed; Content-Length is sent
when ``length`` is given, otherwise chunked transfer encoding). ``Blob(seed, size)`` gives
deterministic pseudo-random audio that can be streamed without holding it in memory.
``Tokens(lifetime)`` issues expiring tokens (``issue``, ``valid``, ``known``, ``all``, ``expire_all``).

Faults (matched by method and path prefix, first added first, each used ``times`` times,
``times=None`` for ever): ``Fault.status(code)``, ``Fault.rate_limited(retry_after, status=429)``,
``Fault.reset(after=n)`` (headers and n body bytes, then a TCP reset),
``Fault.truncate(after=n)`` (full Content-Length, n bytes, then close),
``Fault.slow(delay=s, trickle=s)`` (wait before headers, then sleep between small body chunks),
``Fault.drop()`` (close without answering). Body faults apply to the real handler's answer.
Bad credentials and expired tokens are per-fake switches, not faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import json
import random
import re
import secrets
import socket
import ssl
import struct
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Blob", "FakeServer", "Fault", "Faults", "Handler", "Request", "Response", "Tokens"]

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request. Header names are lower-case; repeated query keys keep the last value.
    ``raw`` is the request as it came off the wire (head and body), for tests that search it."""

    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""
    scheme: str = "http"  # "https" when it came over TLS
    connection: int = 0  # which of the server's connections it came on: 1, 2, ... in accept order
    received_at: float = 0.0  # time.monotonic() when it was read

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class Response:
    """An answer; ``body`` may be an iterable of chunks, streamed as it is consumed."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    length: int | None = None

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        data = json.dumps(obj).encode()
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, data)

    @classmethod
    def text(cls, text: str, status: int = 200) -> Response:
        return cls(status, {"Content-Type": "text/plain; charset=utf-8"}, text.encode())

    def body_length(self) -> int | None:
        return len(self.body) if isinstance(self.body, bytes) else self.length


Handler = Callable[[Request], Response]


class Blob:
    """Deterministic pseudo-random bytes of any size, generated chunk by chunk from a seed."""

    CHUNK = 64 * 1024

    def __init__(self, seed: int, size: int) -> None:
        self.seed = seed
        self.size = size

    def chunks(self) -> Iterator[bytes]:
        left, index = self.size, 0
        while left > 0:
            n = min(self.CHUNK, left)
            yield random.Random(self.seed * 1_000_003 + index).randbytes(n)
            left, index = left - n, index + 1

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()


class Tokens:
    """Bearer-style tokens a fake issues: each lives ``lifetime`` seconds or until
    ``expire_all()``; expired tokens stay known so a fake can answer them differently."""

    def __init__(self, lifetime: float = 3600.0) -> None:
        self.lifetime = lifetime
        self._lock = threading.Lock()
        self._until: dict[str, float] = {}
        self.issued = 0

    def issue(self) -> str:
        token = secrets.token_hex(16)
        with self._lock:
            self._until[token] = time.monotonic() + self.lifetime
            self.issued += 1
        return token

    def valid(self, token: str | None) -> bool:
        with self._lock:
            return token is not None and self._until.get(token, 0.0) > time.monotonic()

    def known(self, token: str | None) -> bool:
        with self._lock:
            return token in self._until

    def all(self) -> list[str]:
        """Every token issued so far, live or expired."""
        with self._lock:
            return list(self._until)

    def expire_all(self) -> None:
        with self._lock:
            self._until = dict.fromkeys(self._until, 0.0)


class FaultKind(enum.Enum):
    STATUS = "status"
    RESET = "reset"
    TRUNCATE = "truncate"
    SLOW = "slow"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do instead of (or to) a normal answer. Build with the class methods."""

    kind: FaultKind
    status_code: int = 500
    headers: tuple[tuple[str, str], ...] = ()
    after: int = 0
    delay: float = 0.0
    trickle: float = 0.0

    @classmethod
    def status(cls, code: int = 500, *, headers: dict[str, str] | None = None) -> Fault:
        return cls(FaultKind.STATUS, status_code=code, headers=tuple((headers or {}).items()))

    @classmethod
    def rate_limited(cls, retry_after: float | str = 1, *, status: int = 429) -> Fault:
        value = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
        return cls.status(status, headers={"Retry-After": value})

    @classmethod
    def reset(cls, *, after: int = 1024) -> Fault:
        return cls(FaultKind.RESET, after=after)

    @classmethod
    def truncate(cls, *, after: int = 1024) -> Fault:
        return cls(FaultKind.TRUNCATE, after=after)

    @classmethod
    def slow(cls, *, delay: float = 1.0, trickle: float = 0.0) -> Fault:
        return cls(FaultKind.SLOW, delay=delay, trickle=trickle)

    @classmethod
    def drop(cls) -> Fault:
        return cls(FaultKind.DROP)


@dataclass(slots=True)
class _Rule:
    fault: Fault
    path: str
    method: str | None
    times: int | None


class Faults:
    """The fault schedule of one server; safe to change from any thread."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._rules: list[_Rule] = []

    def add(self, fault: Fault, *, path: str = "/", method: str | None = None, times: int | None = 1) -> None:
        with self._lock:
            self._rules.append(_Rule(fault, path, method.upper() if method else None, times))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The first matching fault, counting one use of it."""
        with self._lock:
            for rule in self._rules:
                if path.startswith(rule.path) and rule.method in (None, method):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    return rule.fault
        return None


class _BadRequest(Exception):
    pass


class FakeServer:
    """An HTTP/1.1 keep-alive server on 127.0.0.1, port chosen by the OS."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults = Faults(self.lock)
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._log: list[Request] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.handler_errors: list[Exception] = []
        self.connections = 0  # accepted so far
        self.port = 0
        self.tls: ssl.SSLContext | None = None
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None

    # -- public API ---------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Serve ``method`` on paths fully matching ``pattern``; named groups land in ``params``."""
        with self.lock:
            self._routes.append((method.upper(), re.compile(pattern), handler))

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[Request]:
        with self.lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self.lock:
            self._log.clear()

    def start(self) -> Self:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name=type(self).__name__, daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        asyncio.run_coroutine_threadsafe(self._listen(), loop).result(timeout=10)
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- server internals --------------------------------------------------------------

    async def _listen(self) -> None:
        if self.tls is None:
            self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0, backlog=1024)
            self.port = self._server.sockets[0].getsockname()[1]
            return
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        listener.setblocking(False)
        self._listener, self.port = listener, listener.getsockname()[1]
        self._acceptor = asyncio.create_task(self._accept(listener, self.tls))

    async def _accept(self, listener: socket.socket, tls: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        sniffers: set[asyncio.Task[None]] = set()
        while True:
            conn, _ = await loop.sock_accept(listener)
            task = loop.create_task(self._sniff(conn, tls))
            sniffers.add(task)
            task.add_done_callback(sniffers.discard)

    async def _sniff(self, conn: socket.socket, tls: ssl.SSLContext) -> None:
        """TLS or plain HTTP on one port, told apart by the first byte (a TLS handshake record
        starts 0x16): a plain request to an https fake is logged, not lost in a failed handshake."""
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(conn.fileno(), ready)
        try:
            await readable
        finally:
            loop.remove_reader(conn.fileno())
        scheme = "https" if conn.recv(1, socket.MSG_PEEK) == b"\x16" else "http"
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader, lambda r, w: self._on_connection(r, w, scheme))
        try:
            await loop.connect_accepted_socket(lambda: protocol, conn, ssl=tls if scheme == "https" else None)
        except (OSError, ssl.SSLError):
            conn.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._acceptor is not None and self._listener is not None:
            self._acceptor.cancel()
            self._listener.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scheme: str = "http"
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        with self.lock:
            self.connections += 1
            number = self.connections
        try:
            while await self._serve_one(reader, writer, scheme, number):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, _BadRequest):
            writer.transport.abort()
        except Exception as exc:  # a crashing body iterator: cut the connection, keep the error
            with self.lock:
                self.handler_errors.append(exc)
            writer.transport.abort()
        except asyncio.CancelledError:  # only stop() cancels: end quietly
            writer.transport.abort()
        finally:
            self._conns.discard(task)
            writer.close()

    async def _serve_one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scheme: str, connection: int
    ) -> bool:
        """Answer one request; False when the connection must end."""
        request = await _read_request(reader)
        if request is None:
            return False
        request = replace(request, scheme=scheme, connection=connection, received_at=time.monotonic())
        with self.lock:
            self._log.append(request)
        if self.tls is not None and scheme == "http":  # as nginx does
            await _write_response(
                writer, Response.text("plain HTTP request sent to HTTPS port", 400), None, False
            )
            return False
        fault = self.faults.take(request.method, request.path)
        if fault is not None and fault.kind is FaultKind.DROP:
            return False
        if fault is not None and fault.kind is FaultKind.STATUS:
            response = _status_answer(fault)
        else:
            if fault is not None and fault.kind is FaultKind.SLOW:
                await asyncio.sleep(fault.delay)
            response = self._dispatch(request)
        keep = request.headers.get("connection", "").lower() != "close"
        if request.method == "HEAD":
            writer.write(_head(response, response.body_length(), keep))
            await writer.drain()
            return keep
        return await _write_response(writer, response, fault, keep) and keep

    def _dispatch(self, request: Request) -> Response:
        with self.lock:
            routes = list(self._routes)
        allowed = False
        for method, pattern, handler in routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            allowed = True
            if method == request.method:
                return self._call(handler, replace(request, params=match.groupdict()))
        return Response.text("method not allowed", 405) if allowed else Response.text("not found", 404)

    def _call(self, handler: Handler, request: Request) -> Response:
        """Run a handler under the lock; a crash answers 500 and is kept for the test to see."""
        try:
            with self.lock:
                return handler(request)
        except Exception as exc:
            with self.lock:
                self.handler_errors.append(exc)
            traceback.print_exc()
            return Response.text("fake handler crashed", 500)


def _status_answer(fault: Fault) -> Response:
    return Response.json({"error": _phrase(fault.status_code)}, fault.status_code, dict(fault.headers))


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError as exc:
        raise _BadRequest from exc
    if len(head) > _MAX_HEAD:
        raise _BadRequest
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise _BadRequest
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await _read_body(reader, headers)
    url = urlsplit(target)
    query = dict(parse_qsl(url.query, keep_blank_values=True))
    return Request(method.upper(), target, url.path, query, headers, body, raw=head + body)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return bytes(body)
            body += await reader.readexactly(size + 2)
            del body[-2:]
    length = int(headers.get("content-length", "0") or 0)
    return await reader.readexactly(length) if length else b""


async def _write_response(
    writer: asyncio.StreamWriter, response: Response, fault: Fault | None, keep: bool
) -> bool:
    """Send the answer, applying a body fault; False when the connection was cut."""
    kind = fault.kind if fault is not None else None
    length = response.body_length()
    cut: int | None = None
    if fault is not None and kind in (FaultKind.RESET, FaultKind.TRUNCATE):
        length = max(length or 0, fault.after + 1)  # a truncation must promise more than it sends
        cut = min(fault.after, length - 1)
    trickle = fault.trickle if fault is not None and kind is FaultKind.SLOW else 0.0
    chunked = length is None
    writer.write(_head(response, length, keep))
    sent = 0
    for chunk in _pieces(response.body, 1024 if trickle else 0):
        if cut is not None and sent + len(chunk) >= cut:
            chunk = chunk[: cut - sent]
        writer.write(_frame(chunk, chunked))
        sent += len(chunk)
        await writer.drain()
        if cut is not None and sent >= cut:
            break
        if trickle:
            await asyncio.sleep(trickle)
    if cut is not None:
        await _cut(writer, reset=kind is FaultKind.RESET)
        return False
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


def _head(response: Response, length: int | None, keep: bool) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {_phrase(response.status)}"]
    skip = {"content-length", "transfer-encoding", "connection"}
    lines += [f"{name}: {value}" for name, value in response.headers.items() if name.lower() not in skip]
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    lines.append("Connection: keep-alive" if keep else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _pieces(body: bytes | Iterable[bytes], size: int) -> Iterator[bytes]:
    """The body as non-empty chunks, re-cut to ``size`` bytes when trickling."""
    source: Iterable[bytes] = [body] if isinstance(body, bytes) else body
    for chunk in source:
        if not size:
            if chunk:
                yield chunk
            continue
        for start in range(0, len(chunk), size):
            yield chunk[start : start + size]


def _frame(chunk: bytes, chunked: bool) -> bytes:
    if not chunked or not chunk:
        return chunk
    return b"%x\r\n%s\r\n" % (len(chunk), chunk)


async def _cut(writer: asyncio.StreamWriter, *, reset: bool) -> None:
    """End the connection after flushing what was written: an RST (linger 0) for a
    reset, a plain FIN for a truncation."""
    writer.transport.set_write_buffer_limits(0)
    await writer.drain()
    sock = writer.get_extra_info("socket")
    if reset and sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
