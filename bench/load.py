"""The load tools, run as subprocesses and parsed: h2load (nghttp2-client) for gRPC and
downloads, wrk for REST, nghttp to see one gRPC answer's trailers. Every run is bounded
in time (a duration, and a subprocess timeout) and its command is kept for the report."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message

GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")
SLACK_SECONDS = 60.0  # on top of a run's own duration before it is killed


class ToolMissing(RuntimeError):
    pass


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} is not installed (make bench-tools installs nghttp2-client and wrk)")
    return tool


def grpc_frame(message: Message) -> bytes:
    """A gRPC request body: not compressed (0), 4-byte big-endian length, the message."""
    payload = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def grpc_messages(body: bytes) -> list[bytes]:
    """Split a gRPC response body into its messages."""
    out, pos = [], 0
    while pos + 5 <= len(body):
        size = int.from_bytes(body[pos + 1 : pos + 5], "big")
        out.append(body[pos + 5 : pos + 5 + size])
        pos += 5 + size
    return out


@dataclass
class Shown:
    """Turns a command into printable text: secrets and temporary paths elided."""

    secrets: dict[str, str] = field(default_factory=dict)  # value -> placeholder

    def text(self, argv: Sequence[str]) -> str:
        line = shlex.join(argv)
        for value, name in self.secrets.items():
            line = line.replace(value, name)
        return re.sub(r"/[^ ']*/(bench-[^/ ']+)/", "<tmp>/", line)


SHOWN = Shown()


def run(argv: list[str], timeout: float) -> str:
    done = subprocess.run(
        argv, capture_output=True, text=True, errors="replace", timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{SHOWN.text(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    return done.stdout


@dataclass
class LoadResult:
    command: str
    ok: int  # answers the tool counted as good (2xx; for wrk: 200 and the payload checked)
    bad: int  # failed, errored, timed out, non-2xx, or a wrong payload
    seconds: float
    p50_ms: float
    p99_ms: float
    data_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def qps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def brief(self) -> str:
        return f"{self.qps:,.0f} q/s · p50 {self.p50_ms:.1f} ms · p99 {self.p99_ms:.1f} ms"


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[round(q * 10) - 1]


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(f"unknown duration {text!r}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def h2load(
    url: str,
    *,
    headers: Sequence[str] = (),
    body: Path | None = None,
    clients: int = 4,
    streams: int = 4,
    duration: float | None = None,
    warmup: float = 0.0,
    requests: int | None = None,
    h1: bool = False,
    workdir: Path,
) -> LoadResult:
    """One h2load run, one thread (-t1). Either `duration` seconds after `warmup`, or
    `requests` requests; latency percentiles come from its per-request log."""
    log = Path(tempfile.mkstemp(prefix="h2load-", suffix=".tsv", dir=workdir)[1])
    argv = [need("h2load"), "-t1", f"-c{clients}", f"-m{streams}"]
    if h1:
        argv.append("--h1")
    if duration is not None:
        argv += ["-D", f"{duration:g}"]
        if warmup:
            argv.append(f"--warm-up-time={warmup:g}")
        limit = duration + warmup + SLACK_SECONDS
    else:
        assert requests is not None
        argv += ["-n", str(requests)]
        limit = 10 * SLACK_SECONDS
    if body is not None:
        argv += ["-d", str(body)]
    for header in headers:
        argv += ["-H", header]
    argv += [f"--log-file={log}", url]
    out = run(argv, limit)
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout",
        out,
    )
    statuses = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    finished = re.search(r"finished in ([\d.]+\w+),", out)
    traffic = re.search(r"traffic: .*?, [\d.]+\w*B \((\d+)\) data", out)
    if not (counts and statuses and finished):
        raise RuntimeError(f"cannot read h2load output:\n{out[-2000:]}")
    two_xx = int(statuses.group(1))
    failed = int(counts.group(5)) + int(counts.group(6)) + int(counts.group(7))
    non_2xx = sum(int(statuses.group(i)) for i in (2, 3, 4))
    times = []
    for line in log.read_text().splitlines():
        _start, status, elapsed = line.split("\t")
        if status.startswith("2"):
            times.append(int(elapsed) / 1000)
    log.unlink()
    return LoadResult(
        command=SHOWN.text(argv),
        ok=two_xx,
        bad=failed + non_2xx,
        seconds=_seconds(finished.group(1)) if duration is None else duration,
        p50_ms=_percentile(times, 50),
        p99_ms=_percentile(times, 99),
        data_bytes=int(traffic.group(1)) if traffic else 0,
    )


_WRK_SCRIPT = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) good = 0; bad = 0 end
local expect = [==[%s]==]
function response(status, headers, body)
  if status == 200 and string.find(body, expect, 1, true) then good = good + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
  local g, b = 0, 0
  for _, t in ipairs(threads) do g = g + t:get("good"); b = b + t:get("bad") end
  local e = summary.errors
  io.write(string.format('BENCH {"good":%%d,"bad":%%d,"requests":%%d,"duration_us":%%d,' ..
    '"p50_us":%%d,"p99_us":%%d,"errors":%%d}\\n', g, b, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def wrk(
    url: str,
    *,
    headers: Sequence[str] = (),
    expect: str,
    connections: int,
    duration: float,
    warmup: float,
    workdir: Path,
) -> LoadResult:
    """wrk, one thread, after an unmeasured warm-up run. A Lua `response` hook counts an
    answer good only when it is 200 and its body contains `expect`."""
    script = Path(tempfile.mkstemp(prefix="wrk-", suffix=".lua", dir=workdir)[1])
    script.write_text(_WRK_SCRIPT % expect)
    common = [need("wrk"), "-t1", f"-c{connections}"]
    for header in headers:
        common += ["-H", header]
    if warmup:
        run([*common, f"-d{max(1, round(warmup))}s", url], warmup + SLACK_SECONDS)
    argv = [*common, f"-d{max(1, round(duration))}s", "--latency", "-s", str(script), url]
    out = run(argv, duration + SLACK_SECONDS)
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"cannot read wrk output:\n{out[-2000:]}")
    data = json.loads(line[6:])
    script.unlink()
    return LoadResult(
        command=SHOWN.text(argv),
        ok=data["good"],
        bad=data["bad"] + data["errors"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )


@dataclass(frozen=True, slots=True)
class GrpcAnswer:
    command: str
    grpc_status: int | None
    messages: list[bytes]


def nghttp_grpc(url: str, *, headers: Sequence[str], body: Path) -> GrpcAnswer:
    """One request with the very frame file and headers given to h2load, through nghttp,
    which (unlike h2load) shows the trailers: grpc-status, and the answer's messages."""
    argv = [need("nghttp"), "-d", str(body)]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    verbose = run([*argv[:1], "-v", *argv[1:]], SLACK_SECONDS)
    status = re.search(r"recv \(stream_id=\d+\) grpc-status: (\d+)", verbose)
    raw = subprocess.run(argv, capture_output=True, timeout=SLACK_SECONDS, check=True).stdout
    return GrpcAnswer(
        command=SHOWN.text([*argv[:1], "-v", *argv[1:]]),
        grpc_status=int(status.group(1)) if status else None,
        messages=grpc_messages(raw),
    )
