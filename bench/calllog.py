"""Figure 7: what the per-call log line costs. In process: `log_call` under the server's
logging setup writing to a file (the caller's share, and all CPU per line including the
listener thread's formatting). Under load: gRPC GetProvider at the default INFO level
beside the same server at WARNING (no call lines), on the same seeded data."""

from __future__ import annotations

import json
import subprocess
import sys

from bench.context import Bench
from bench.load import GRPC_HEADERS, SHOWN
from bench.providers import CHECK, CLIENTS, GET, STREAMS, Frames, _grpc_load
from bench.report import Row, pct, verdict
from bench.servers import ServerProcess

CALLS = 20_000

# Run in a child so the bench's own logging is left alone; stderr is the log file.
_TIMEIT = f"""
import json, sys, time, timeit
from service import logs
from service.transport.calls import CallRecord, log_call
logs.configure("INFO")
call = CallRecord(method="{GET}", transport="grpc", business_id="b" * 36, key_id="k" * 36)
cpu = time.process_time()
wall = timeit.timeit(lambda: log_call(call, "OK"), number={CALLS})
logs.stop()
cpu = time.process_time() - cpu
print(json.dumps({{"caller_us": wall / {CALLS} * 1e6, "cpu_us": cpu / {CALLS} * 1e6}}))
"""


def run(bench: Bench) -> None:
    bench.say("figure 7: the call log line, in process and under GetProvider load")
    log_file = bench.dir("calllog") / "calls.log"
    with log_file.open("w") as stderr:
        out = subprocess.run(
            [sys.executable, "-c", _TIMEIT], stdout=subprocess.PIPE, stderr=stderr, text=True, check=True
        )
    cost = json.loads(out.stdout)
    lines = sum(1 for _ in log_file.open())
    bench.report.command(
        "7", f"python -c '<timeit of {CALLS:,} log_call under logs.configure(INFO)>' 2>calls.log"
    )

    data, tenant, ids = bench.providers
    frames = Frames(bench.dir("calllog-work"), ids[len(ids) // 2])
    SHOWN.secrets[tenant.key] = "$KEY"
    auth = f"authorization: Bearer {tenant.key}"
    qps: dict[str, float] = {}
    briefs: dict[str, str] = {}
    check = None
    for level in ("WARNING", "INFO"):
        with ServerProcess(data, extra_env={"CALLVAULT_LOG_LEVEL": level}) as server:
            if level == "INFO":
                bench.report.command("7", server.describe())
                check = _grpc_load(bench, server, CHECK, frames.check, [*GRPC_HEADERS], figure="7")
            load = _grpc_load(bench, server, GET, frames.get, [*GRPC_HEADERS, auth], figure="7")
            qps[level], briefs[level] = load.qps, load.brief()
    assert check is not None

    report = bench.report
    report.add(
        Row(
            "7",
            "log_call, in process (caller / all CPU per line)",
            f"{cost['caller_us']:.1f} / {cost['cpu_us']:.1f} µs",
            "",
            "",
            "(no target)",
            "" if lines == CALLS else "INVALID",
        )
    )
    report.add(
        Row(
            "7",
            "gRPC GetProvider at INFO (one call line each)",
            briefs["INFO"],
            f"at WARNING {qps['WARNING']:,.0f} q/s; Check {check.qps:,.0f}",
            f"{pct(qps['INFO'], qps['WARNING'])} ({pct(qps['INFO'], check.qps)} of Check)",
            ">= 90% of WARNING",
            verdict(qps["INFO"] >= 0.9 * qps["WARNING"]),
        )
    )
    report.note(f"[7] {lines:,} of {CALLS:,} lines written; load {CLIENTS} connections x {STREAMS} streams")
