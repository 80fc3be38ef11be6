"""Ceilings measured on this machine in the same run: bytes through a loopback socket
between two threads, and a blob file streamed chunk by chunk into such a socket."""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.servers import HOST

MIB = 1024 * 1024


def _through_socket(send: Callable[[socket.socket], int]) -> float:
    """Run `send` into a loopback TCP connection whose other end a thread drains;
    returns MiB/s from the first byte sent to the last byte received."""
    with socket.create_server((HOST, 0)) as server:
        port = server.getsockname()[1]
        received = [0]

        def drain() -> None:
            conn, _ = server.accept()
            with conn:
                buf = bytearray(1024 * 1024)
                view = memoryview(buf)
                while n := conn.recv_into(view):
                    received[0] += n

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        with socket.create_connection((HOST, port)) as client:
            started = time.perf_counter()
            sent = send(client)
            client.shutdown(socket.SHUT_WR)
            reader.join(120)
            elapsed = time.perf_counter() - started
    if received[0] != sent:
        raise RuntimeError(f"loopback copy lost bytes: sent {sent}, received {received[0]}")
    return sent / MIB / elapsed


def loopback_copy(total: int, chunk: int = 64 * 1024) -> float:
    """`total` bytes of zeros, `chunk` at a time, through a loopback socket: MiB/s."""
    block = bytes(chunk)

    def send(sock: socket.socket) -> int:
        sent = 0
        while sent < total:
            piece = block if total - sent >= chunk else block[: total - sent]
            sock.sendall(piece)
            sent += len(piece)
        return sent

    return _through_socket(send)


def file_stream(path: Path, chunk: int = 256 * 1024) -> float:
    """The file read with pread `chunk` bytes at a time and sent into a loopback socket:
    what a server doing nothing else could reach. MiB/s."""
    return file_stream_cost(path, chunk)[0]


def file_stream_cost(path: Path, chunk: int = 256 * 1024) -> tuple[float, float]:
    """file_stream's MiB/s, and the sending thread's CPU seconds per GiB sent: a figure
    that other load on the machine moves far less than MiB/s."""
    cpu = [0.0]

    def send(sock: socket.socket) -> int:
        started = time.thread_time()
        fd = os.open(path, os.O_RDONLY)
        try:
            pos = 0
            while data := os.pread(fd, chunk, pos):
                sock.sendall(data)
                pos += len(data)
            return pos
        finally:
            os.close(fd)
            cpu[0] = time.thread_time() - started

    mibs = _through_socket(send)
    return mibs, cpu[0] * 1024 * MIB / max(1, path.stat().st_size)


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))
