"""`python -m bench` (make bench): start the real server, load it with h2load and wrk, and
print each figure beside its limit measured in the same run, with its target and PASS or
MISS. Exits 0 when it measured everything, whatever the verdicts; 1 when a figure could
not be measured.

    python -m bench                 # everything, full sizes (about 6-10 minutes on 2 cores)
    python -m bench --quick         # a smoke run with small sizes
    python -m bench --only list     # one figure (repeatable): providers, list, audio, ingest, workers, scaling
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.context import Bench, CpuMeter, Plan
from bench.figures import FIGURES, resolve
from bench.load import ToolMissing, need
from bench.seed import DATABASE_URL_VAR


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes and short loads: a smoke run")
    p.add_argument(
        "--only", action="append", metavar="NAME", help=f"run only this figure: {', '.join(FIGURES)} (or 1-6)"
    )
    p.add_argument("--keep", action="store_true", help="keep the scratch folder (databases, logs)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        names = list(dict.fromkeys(resolve(n) for n in args.only)) if args.only else list(FIGURES)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        for tool in ("h2load", "nghttp", "wrk"):
            need(tool)
    except ToolMissing as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    logging.getLogger("callvault").setLevel(logging.ERROR)  # the seeding's "dev key file made" warning
    plan = Plan.smoke() if args.quick else Plan.full()
    root = Path(tempfile.mkdtemp(prefix="bench-"))
    bench = Bench(plan, root)
    meter = CpuMeter()
    started = time.monotonic()
    failed: list[str] = []
    try:
        for name in names:
            try:
                FIGURES[name][1](bench)
            except Exception:
                failed.append(name)
                bench.say(f"figure {name} could not be measured:\n{traceback.format_exc()}")
    finally:
        if args.keep:
            bench.say(f"scratch folder kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    elapsed = time.monotonic() - started
    report = bench.report
    report.note(
        f"machine: {os.cpu_count()} cores; other processes (not the bench, its servers or load tools) used "
        f"{meter.foreign_cores():.2f} cores on average during the run; database "
        + (
            "PostgreSQL ($CALLVAULT_BENCH_DATABASE_URL)"
            if os.environ.get(DATABASE_URL_VAR)
            else "SQLite (WAL)"
        )
    )
    mode = "quick (--quick: reduced sizes)" if plan.quick else "full"
    print()
    print(f"callvault bench: {mode}, {elapsed:.0f}s, figures: {', '.join(names)}")
    print()
    print(report.render())
    if failed:
        print(f"\nNOT MEASURED (errors above): {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
