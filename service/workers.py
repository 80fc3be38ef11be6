"""Several server processes on one host: each binds the same gRPC and REST ports with
SO_REUSEPORT (the kernel spreads connections), as in grpc's multiprocessing example.
The puller runs in every worker; its database leases keep one pull per provider."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from types import FrameType

from service.config import Settings


def prepare_metrics_dir() -> None:
    """prometheus_client aggregates across processes through files in this folder; it
    must be set before any worker imports the metrics."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="callvault-metrics-")


def run_workers(settings: Settings, target: Callable[[Settings], None]) -> int:
    """Start `settings.workers` processes and wait; SIGTERM/SIGINT is passed on to all
    of them, and a worker that dies takes the others down (the supervisor restarts us)."""
    if settings.grpc_port == 0 or settings.http_port == 0:
        raise ValueError("several workers need fixed ports (CALLVAULT_GRPC_PORT, CALLVAULT_HTTP_PORT)")
    prepare_metrics_dir()
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=target, args=(settings,), name=f"worker-{i}") for i in range(settings.workers)
    ]
    for process in workers:
        process.start()

    def forward(signum: int, _frame: FrameType | None) -> None:
        for process in workers:
            if process.is_alive() and process.pid:
                os.kill(process.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # reload the master keys, in every worker
    exit_code = 0
    sentinels: dict[object, multiprocessing.process.BaseProcess] = {w.sentinel: w for w in workers}
    while sentinels:
        for sentinel in multiprocessing.connection.wait(list(sentinels)):  # type: ignore[arg-type]
            worker = sentinels.pop(sentinel)
            if worker.exitcode:
                exit_code = worker.exitcode
                print(f"callvault: {worker.name} exited with {worker.exitcode}", file=sys.stderr)
                forward(signal.SIGTERM, None)
    return exit_code
