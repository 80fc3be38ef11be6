"""callvault as a separate process, as operators run it: `python -m service serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.postgres import free_port


class ServerProcess:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "CALLVAULT_DATA_DIR": str(data_dir),
            "CALLVAULT_GRPC_PORT": str(self.grpc_port),
            "CALLVAULT_HTTP_PORT": str(self.http_port),
            "CALLVAULT_GRACE_SECONDS": "3",
            **env,
        }
        self.proc: subprocess.Popen[str] | None = None
        self.log = data_dir / f"server-{self.http_port}.log"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "service", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def start(self, timeout: float = 30) -> ServerProcess:
        log = self.log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"], env=self.env, stdout=log, stderr=log, text=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.log.read_text()[-3000:]}")
        raise AssertionError("server did not answer /healthz")

    def stop(self) -> int:
        """SIGTERM, then wait: the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text()
