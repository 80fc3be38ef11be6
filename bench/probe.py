"""A raw look at one kept-alive HTTP/1.1 connection: when the first bytes of each answer
arrive and when the last do. A gap near 40 ms between them is Nagle's algorithm on the
server holding the body until the client's delayed ACK for the headers."""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass

from bench.servers import HOST


@dataclass(frozen=True, slots=True)
class SplitTiming:
    requests: int
    first_byte_ms: float  # median
    last_byte_ms: float  # median

    def text(self) -> str:
        return (
            f"median of {self.requests} requests on one kept-alive connection: first bytes after "
            f"{self.first_byte_ms:.1f} ms, last byte after {self.last_byte_ms:.1f} ms"
        )


def _read_answer(sock: socket.socket, started: float) -> tuple[float, float]:
    data = b""
    first = 0.0
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError("closed")
        first = first or time.perf_counter() - started
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError("closed")
        body += piece
    return first, time.perf_counter() - started


def split_timing(port: int, path: str = "/healthz", requests: int = 20) -> SplitTiming:
    firsts, lasts = [], []
    with socket.create_connection((HOST, port), timeout=10) as sock:
        request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
        for _ in range(requests):
            started = time.perf_counter()
            sock.sendall(request)
            first, last = _read_answer(sock, started)
            firsts.append(first * 1000)
            lasts.append(last * 1000)
    return SplitTiming(requests, statistics.median(firsts), statistics.median(lasts))
