"""The real server under test: `python -m service serve` as a subprocess on loopback
ports, and what the bench reads off it (readiness, worker pids, peak RSS, call counts)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0

# A call as the server's own metrics count it: (method, transport, status).
CallKey = tuple[str, str, str]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def server_env(
    data_dir: Path,
    *,
    grpc_port: int,
    http_port: int,
    workers: int = 1,
    sync: bool = False,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The settings of a server under test: only what the bench chooses, nothing inherited."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CALLVAULT_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(
        CALLVAULT_ENV="dev",
        CALLVAULT_DATA_DIR=str(data_dir),
        CALLVAULT_GRPC_HOST=HOST,
        CALLVAULT_HTTP_HOST=HOST,
        CALLVAULT_GRPC_PORT=str(grpc_port),
        CALLVAULT_HTTP_PORT=str(http_port),
        CALLVAULT_RATE_LIMIT_PER_MINUTE="0",
        CALLVAULT_SYNC_ENABLED="1" if sync else "0",
        CALLVAULT_LOG_LEVEL="WARNING",
        CALLVAULT_WORKERS=str(workers),
        CALLVAULT_GRACE_SECONDS="1",
    )
    if os.environ.get("CALLVAULT_BENCH_DATABASE_URL"):  # bench/seed.py's DATABASE_URL_VAR
        env["CALLVAULT_DATABASE_URL"] = os.environ["CALLVAULT_BENCH_DATABASE_URL"]
    env.update(extra or {})
    return env


def proc_status(pid: int, field: str) -> int:
    """A kB figure from /proc/<pid>/status (VmHWM, VmRSS), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                found += [int(p) for p in f.read().split()]
    return found


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def established(pid: int, port: int) -> int:
    """Established TCP connections to local `port` held by process `pid`."""
    inodes: set[str] = set()
    with contextlib.suppress(FileNotFoundError, PermissionError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table, encoding="ascii") as f:
            next(f)
            for line in f:
                cols = line.split()
                local_port = int(cols[1].rsplit(":", 1)[1], 16)
                if local_port == port and cols[3] == "01" and cols[9] in inodes:
                    count += 1
    return count


class ServerProcess:
    """One `python -m service serve` (with its workers), started and stopped by the bench."""

    def __init__(
        self,
        data_dir: Path,
        *,
        workers: int = 1,
        sync: bool = False,
        extra_env: dict[str, str] | None = None,
        grpc_port: int | None = None,
        http_port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.workers = workers
        self.sync = sync
        self.grpc_port = grpc_port or free_port()
        self.http_port = http_port or free_port()
        self.extra_env = dict(extra_env or {})
        self.env = server_env(
            data_dir,
            grpc_port=self.grpc_port,
            http_port=self.http_port,
            workers=workers,
            sync=sync,
            extra=self.extra_env,
        )
        self.log_path = data_dir / f"server-{self.grpc_port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    # -- what is printed ----------------------------------------------------------------

    def describe(self) -> str:
        """The command, with the settings the bench chose (temporary paths elided)."""
        shown = [
            f"CALLVAULT_WORKERS={self.workers}",
            f"CALLVAULT_SYNC_ENABLED={int(self.sync)}",
            "CALLVAULT_RATE_LIMIT_PER_MINUTE=0",
            *(() if "CALLVAULT_LOG_LEVEL" in self.extra_env else ("CALLVAULT_LOG_LEVEL=WARNING",)),
            "CALLVAULT_DATA_DIR=<tmp>",
            "CALLVAULT_GRPC_PORT/HTTP_PORT=<free>",
            *(f"{k}={v}" for k, v in sorted(self.extra_env.items())),
        ]
        return " ".join(shown) + " python -m service serve"

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def http_base(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    # -- life -----------------------------------------------------------------------------

    def start(self) -> Self:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child keeps it)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "serve"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready within {START_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        # Every worker prints its "serving" line once both listeners are up.
        if self.log_path.read_bytes().count(b"callvault serving:") < self.workers:
            return False
        try:
            return httpx.get(f"{self.http_base}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            for pid in [process.pid, *children(process.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            process.wait(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # -- what is read off it -----------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    def serving_pids(self) -> list[int]:
        """The processes that answer calls: the server itself, or its spawned workers."""
        if self.workers <= 1:
            return [self.pid]
        return [p for p in children(self.pid) if "spawn_main" in _cmdline(p)]

    def peak_rss_mib(self) -> float:
        """VmHWM of the (single) serving process: its peak resident set since it started."""
        return proc_status(self.pid, "VmHWM") / 1024

    def calls(self) -> Counter[CallKey]:
        """Calls answered so far, by (method, transport, status), from the server's /metrics."""
        text = httpx.get(f"{self.http_base}/metrics", timeout=10).text
        counted: Counter[CallKey] = Counter()
        for family in text_string_to_metric_families(text):
            if family.name != "callvault_calls":
                continue
            for sample in family.samples:
                if sample.name == "callvault_calls_total":
                    labels = sample.labels
                    key = (labels["method"], labels["transport"], labels["status"])
                    counted[key] += int(sample.value)
        return counted
