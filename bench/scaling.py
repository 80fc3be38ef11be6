"""Scaling: how the hot reads hold up as the data grows. One business's recordings grow
1k -> 100k -> 1M (gRPC GetProvider q/s and the REST list's first-page p99 at each size),
then its providers grow 10 -> 1,000 -> 100,000 (GetProvider q/s). Each size is a fresh
server on the grown database, GetProvider beside Health/Check on that same server.
Rows are added in bulk through the models (bench/seed.py), never through the API."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from bench.checks import combine, server_counted, tool_counted
from bench.context import Bench
from bench.load import GRPC_HEADERS, SHOWN, LoadResult, h2load, wrk
from bench.providers import CHECK, CLIENTS, GET, STREAMS, Frames
from bench.recordings import P99_TARGET_MS
from bench.report import Row, pct, verdict
from bench.seed import Tenant, add_providers, add_recordings, make_tenants, prepare, span_start
from bench.servers import ServerProcess

LIST = "/callvault.v1.RecordingService/ListRecordings"
FULL_RECORDINGS, QUICK_RECORDINGS = (1_000, 100_000, 1_000_000), (1_000, 10_000, 30_000)
FULL_PROVIDERS, QUICK_PROVIDERS = (10, 1_000, 100_000), (10, 100, 1_000)
FIGURE = "S"


@dataclass(frozen=True, slots=True)
class Step:
    recordings: int
    providers: int


def steps(quick: bool) -> tuple[list[Step], list[Step]]:
    """The recordings axis (one provider), then the providers axis (at the largest set)."""
    recordings = QUICK_RECORDINGS if quick else FULL_RECORDINGS
    providers = QUICK_PROVIDERS if quick else FULL_PROVIDERS
    return [Step(n, 1) for n in recordings], [Step(recordings[-1], n) for n in providers]


def _load(bench: Bench, server: ServerProcess, path: str, body: Path, headers: list[str]) -> LoadResult:
    result = h2load(
        f"http://{server.grpc_target}{path}",
        headers=headers,
        body=body,
        clients=CLIENTS,
        streams=STREAMS,
        duration=bench.plan.load_seconds,
        warmup=bench.plan.warmup_seconds,
        workdir=bench.root,
    )
    bench.report.command(FIGURE, result.command)
    return result


def _measure(bench: Bench, data: Path, tenant: Tenant, provider_id: str, step: Step, *, lists: bool) -> None:
    report = bench.report
    frames = Frames(bench.dir("scaling-work"), provider_id)
    auth = f"authorization: Bearer {tenant.key}"
    label = f"{step.recordings:,} recordings, {step.providers:,} provider{'s' if step.providers > 1 else ''}"
    with ServerProcess(data) as server:
        report.command(FIGURE, server.describe())
        check = _load(bench, server, CHECK, frames.check, [*GRPC_HEADERS])
        before = server.calls()
        get = _load(bench, server, GET, frames.get, [*GRPC_HEADERS, auth])
        get_ok = combine(tool_counted(check), server_counted(server, before, GET, "grpc", get))
        report.add(
            Row(
                FIGURE,
                f"{label}: gRPC GetProvider",
                get.brief(),
                f"Check {check.qps:,.0f} q/s",
                pct(get.qps, check.qps),
                "(no target)",
                "" if get_ok.valid else "INVALID",
            )
        )
        if not get_ok.valid:
            report.note(f"[{FIGURE}] {label}, GetProvider: {get_ok.text}")
        if not lists:
            return
        floor = wrk(
            f"{server.http_base}/healthz",
            expect='"SERVING"',
            connections=1,
            duration=bench.plan.page_seconds,
            warmup=1,
            workdir=bench.root,
        )
        report.command(FIGURE, floor.command)
        before = server.calls()
        page = wrk(
            f"{server.http_base}/api/v1/recordings?limit=20",
            headers=[f"Authorization: Bearer {tenant.key}"],
            expect='"dataId":"bench-',
            connections=1,
            duration=bench.plan.page_seconds,
            warmup=1,
            workdir=bench.root,
        )
        report.command(FIGURE, page.command)
        page_ok = server_counted(server, before, LIST, "rest", page)
        report.add(
            Row(
                FIGURE,
                f"{label}: REST list, first page",
                page.brief(),
                f"/healthz p99 {floor.p99_ms:.1f} ms",
                f"p99 = {page.p99_ms / P99_TARGET_MS:.1f}x {P99_TARGET_MS:g} ms",
                f"p99 < {P99_TARGET_MS:g} ms",
                verdict(page.p99_ms < P99_TARGET_MS, page_ok.valid),
            )
        )
        if not page_ok.valid:
            report.note(f"[{FIGURE}] {label}, list: {page_ok.text}")


def run(bench: Bench) -> None:
    by_recordings, by_providers = steps(bench.plan.quick)
    data = bench.dir("scaling")
    url = prepare(data)
    (tenant,) = make_tenants(data, ["Scaling"])
    SHOWN.secrets[tenant.key] = "$KEY_SCALING"
    # The one provider asked for at every size; the others are only there.
    provider_id = add_providers(data, tenant, 0, 1)[0]
    final = by_recordings[-1].recordings
    base, rng = span_start(), random.Random(final)
    held, providers = 0, 1
    bench.say(f"scaling: recordings {', '.join(f'{s.recordings:,}' for s in by_recordings)}")
    for step in by_recordings:
        add_recordings(url, tenant.business_id, held, step.recordings, final, base, rng)
        held = step.recordings
        _measure(bench, data, tenant, provider_id, step, lists=True)
    bench.say(f"scaling: providers {', '.join(f'{s.providers:,}' for s in by_providers)}")
    for step in by_providers:
        add_providers(data, tenant, providers, step.providers)
        providers = step.providers
        _measure(bench, data, tenant, provider_id, step, lists=False)
    bench.report.note(
        f"[{FIGURE}] one business grown in place (bulk inserts through the models, bench/seed.py): recordings "
        f"first, with one provider, then providers at {final:,} recordings; each size on a fresh server. "
        f"GetProvider: h2load -c{CLIENTS} -m{STREAMS}, {bench.plan.load_seconds:g}s after "
        f"{bench.plan.warmup_seconds:g}s warm-up, beside Health/Check on the same server; list: wrk -c1, "
        f"{bench.plan.page_seconds:g}s after 1s warm-up"
    )
    if bench.plan.quick:
        report_sizes = f"{final:,} recordings and {by_providers[-1].providers:,} providers"
        bench.report.note(f"[{FIGURE}] --quick: at most {report_sizes}, not the full table's sizes")
