"""The grpc-aio ceiling for figure 4: a minimal grpc.aio server that streams one file as
google.api.HttpBody messages of a given size, reading each with pread on the event loop
(the file is in the page cache) and doing nothing else: no auth, no database, no thread.

    python -m bench.ministream FILE --port PORT --message-bytes N [--tuned]

--tuned applies the allocator tuning the real server applies at start
(service/allocator.py), so the ceiling is measured under the same allocator."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from google.api import httpbody_pb2

from service import allocator

METHOD = "/bench.MiniStream/Download"
READY = "ministream ready"


def _handler(path: str, size: int) -> grpc.GenericRpcHandler:
    async def download(_request: bytes, _context: object) -> AsyncIterator[httpbody_pb2.HttpBody]:
        fd = os.open(path, os.O_RDONLY)
        try:
            pos = 0
            while data := os.pread(fd, size, pos):
                pos += len(data)
                yield httpbody_pb2.HttpBody(content_type="audio/wav", data=data)
        finally:
            os.close(fd)

    return grpc.method_handlers_generic_handler(
        "bench.MiniStream",
        {
            "Download": grpc.unary_stream_rpc_method_handler(
                download, response_serializer=httpbody_pb2.HttpBody.SerializeToString
            )
        },
    )


async def _serve(path: str, port: int, size: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(path, size),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(READY, flush=True)
    await server.wait_for_termination()


@contextmanager
def running(path: Path, port: int, message_bytes: int, *, tuned: bool) -> Iterator[str]:
    """The minimal server in a subprocess, until the block ends; yields its URL to call."""
    argv = [sys.executable, "-m", "bench.ministream", str(path), "--port", str(port)]
    argv += ["--message-bytes", str(message_bytes), *(["--tuned"] if tuned else [])]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stderr is not None
        if process.stdout.readline().decode().strip() != READY:
            process.kill()
            raise RuntimeError(f"minimal grpc.aio server did not start: {process.stderr.read()[-2000:]!r}")
        yield f"http://127.0.0.1:{port}{METHOD}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.ministream")
    p.add_argument("file")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--message-bytes", type=int, required=True)
    p.add_argument("--tuned", action="store_true")
    args = p.parse_args()
    if args.tuned:
        allocator.tune(allocator.DEFAULT_MMAP_THRESHOLD)
    try:
        asyncio.run(_serve(args.file, args.port, args.message_bytes))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
