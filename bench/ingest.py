"""Figure 5: recordings per second pulled from fake Kazoos (tests/fakes/kazoo.py) by the
server's puller, from the sync requests to the jobs' end, beside the same fakes served
directly (same listing, same downloads, as many at a time as the puller's default); and
the server's peak RSS. Then the scaling rows: 1, 4 and 16 providers pulling at once, each
on a fresh server, total recordings/s and peak RSS."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.context import Bench
from bench.load import SHOWN
from bench.report import Row, pct, verdict
from bench.seed import make_tenants
from bench.servers import ServerProcess
from service.config import SyncSettings
from tests.fakes.kazoo import GREGORIAN_OFFSET, FakeKazoo

PER_PROVIDER = SyncSettings().per_provider_concurrency  # the puller's default, used by the limit too
TARGET = 0.6  # of the fakes read directly
RSS_LIMIT_MIB = 150.0
SCALING = (1, 4, 16)  # providers pulling at once
POLL_SECONDS = 0.05
DEADLINE_SECONDS = 300.0
# A scheduled pull would start as soon as a provider exists; with a long tick only the sync
# requests (which wake the loop) start pulls, so the clock starts with them.
ENV = {"CALLVAULT_ALLOW_PRIVATE_NETWORKS": "1", "CALLVAULT_SYNC_TICK_SECONDS": "60"}


@dataclass(frozen=True, slots=True)
class Pulled:
    providers: int
    recordings: int  # expected in all
    rate: float  # recordings/s stored, in all
    limit: float  # recordings/s read directly from the same fakes, in all
    rss_mib: float  # the server's peak RSS
    valid: bool
    note: str


def _list(fake: FakeKazoo, client: httpx.Client) -> tuple[str, list[str]]:
    """Authenticate and list every page of one fake: its token and recording ids."""
    token = client.put("/v2/api_auth", json={"data": {"api_key": fake.api_key}}).json()["auth_token"]
    high = int(datetime.now(UTC).timestamp()) + GREGORIAN_OFFSET
    params: dict[str, Any] = {"created_from": high - 30 * 86_400, "created_to": high, "page_size": 100}
    ids: list[str] = []
    for _ in range(10_000):
        page = client.get(
            f"/v2/accounts/{fake.account_id}/recordings", params=params, headers={"X-Auth-Token": token}
        ).json()
        ids += [row["id"] for row in page["data"]]
        if "next_start_key" not in page:
            break
        params["start_key"] = page["next_start_key"]
    if len(ids) != len(fake.recordings):
        raise RuntimeError(f"fake listed {len(ids)} of {len(fake.recordings)} recordings")
    return token, ids


def _fetch(fake: FakeKazoo, client: httpx.Client, token: str, ids: list[str]) -> int:
    total = 0
    for rec in ids:
        answer = client.get(
            f"/v2/accounts/{fake.account_id}/recordings/{rec}",
            headers={"X-Auth-Token": token, "Accept": "audio/mpeg"},
        )
        answer.raise_for_status()
        total += len(answer.content)
    return total


def _read_directly(fakes: list[FakeKazoo]) -> float:
    """Every fake at once: list it, then fetch every audio, PER_PROVIDER at a time per fake,
    over one kept-alive client per fake (made before the clock starts)."""
    with ExitStack() as stack, ThreadPoolExecutor(len(fakes) * PER_PROVIDER) as pool:
        clients = [stack.enter_context(httpx.Client(base_url=f.base_url, timeout=60)) for f in fakes]
        started = time.perf_counter()
        listed = list(pool.map(_list, fakes, clients))
        jobs = [
            pool.submit(_fetch, fake, client, token, ids[i::PER_PROVIDER])
            for fake, client, (token, ids) in zip(fakes, clients, listed, strict=True)
            for i in range(PER_PROVIDER)
        ]
        for job in jobs:
            job.result()
        seconds = time.perf_counter() - started
    return sum(len(ids) for _, ids in listed) / seconds


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _pull(bench: Bench, providers: int, each: int) -> Pulled:
    """`providers` fakes of `each` recordings, read directly, then pulled by one server."""
    kib = bench.plan.ingest_kib
    data = bench.dir(f"ingest-{providers}")
    (tenant,) = make_tenants(data, [f"Ingest{providers}"])
    SHOWN.secrets[tenant.key] = "$KEY"
    with ExitStack() as stack:
        fakes = [
            stack.enter_context(FakeKazoo(account_id=f"{n:032x}", max_page_size=100))
            for n in range(providers)
        ]
        now = datetime.now(UTC)
        for fake in fakes:
            for i in range(each):
                fake.add_recording(
                    now - timedelta(hours=2) - timedelta(seconds=i * 40),
                    duration=30.0,
                    caller=f"+6681{i:07d}",
                    audio_size=kib * 1024,
                )
        limit = _read_directly(fakes)
        server = stack.enter_context(ServerProcess(data, sync=True, extra_env=ENV))
        client = stack.enter_context(
            httpx.Client(
                base_url=server.http_base, headers={"Authorization": f"Bearer {tenant.key}"}, timeout=60
            )
        )
        bench.report.command("5", server.describe())
        ids = []
        for fake in fakes:
            created = client.post(
                "/api/v1/providers",
                json={
                    "kind": "kazoo",
                    "name": f"Bench Kazoo {fake.account_id[-4:]}",
                    "config": {
                        "baseUrl": fake.base_url,
                        "accountId": fake.account_id,
                        "apiKey": fake.api_key,
                    },
                    "isActive": True,
                },
            )
            created.raise_for_status()
            ids.append(created.json()["id"])
        began = time.perf_counter()
        for provider_id in ids:
            client.post(f"/api/v1/providers/{provider_id}/sync").raise_for_status()
        # Every job counts (a scheduled pull may run beside a requested one); done when each
        # provider has one and none is queued or running.
        deadline = began + DEADLINE_SECONDS
        jobs: list[dict[str, Any]] = []
        while time.perf_counter() < deadline:
            jobs = client.get("/api/v1/sync-jobs", params={"limit": 200}).json()["items"]
            finished = all(j["state"] in ("succeeded", "failed") for j in jobs)
            if finished and {j["providerId"] for j in jobs} == set(ids):
                break
            time.sleep(POLL_SECONDS)
        seconds = time.perf_counter() - began
        rss = server.peak_rss_mib()
        listed = client.get("/api/v1/recordings", params={"limit": 1}).json()
    stored = sum(int(j.get("recordingsStored", 0)) for j in jobs)
    failures = sum(int(j.get("failures", 0)) for j in jobs)
    states = sorted({j["state"] for j in jobs})
    first = min((_instant(j["startedAt"]) for j in jobs if j.get("startedAt")), default=None)
    last = max((_instant(j["finishedAt"]) for j in jobs if j.get("finishedAt")), default=None)
    job_seconds = (last - first).total_seconds() if first and last else float("nan")
    count = providers * each
    rate = stored / seconds if seconds > 0 else 0.0
    valid = states == ["succeeded"] and stored == count and failures == 0 and int(listed["total"]) == count
    note = (
        f"[5] {providers} provider(s) x {each}: {len(jobs)} job(s) {states}, {stored} stored, {failures} "
        f"failures, {listed['total']} recordings listed; timed from the first sync request to every job "
        f"observed finished ({seconds:.2f}s, polled every {POLL_SECONDS:g}s; the jobs' own whole-second "
        f"timestamps say {job_seconds:.0f}s)"
    )
    return Pulled(providers, count, rate, limit, rss, valid and rate > 0, note)


def run(bench: Bench) -> None:
    plan = bench.plan
    count, kib = plan.ingest_recordings, plan.ingest_kib
    bench.say(f"figure 5: ingest of {count} recordings x {kib} KiB from a fake Kazoo")
    one = _pull(bench, 1, count)
    bench.report.add(
        Row(
            "5",
            f"ingest from fake Kazoo ({count} x {kib} KiB)",
            f"{one.rate:,.1f} rec/s",
            f"fake served directly {one.limit:,.1f} rec/s",
            pct(one.rate, one.limit),
            f">= {TARGET:.0%}",
            verdict(one.rate >= TARGET * one.limit, one.valid),
        )
    )
    bench.report.add(
        Row(
            "5",
            "ingest peak RSS (the server's VmHWM)",
            f"{one.rss_mib:,.0f} MiB",
            "",
            "",
            f"< {RSS_LIMIT_MIB:.0f} MiB",
            verdict(one.rss_mib < RSS_LIMIT_MIB, one.valid),
        )
    )
    bench.report.note(one.note)
    each = max(plan.ingest_recordings // 2, 10)
    for providers in SCALING:
        bench.say(f"figure 5: {providers} provider(s) pulling at once, {each} x {kib} KiB each")
        got = _pull(bench, providers, each)
        bench.report.add(
            Row(
                "5",
                f"ingest, {providers} provider(s) at once ({providers} x {each} x {kib} KiB)",
                f"{got.rate:,.1f} rec/s in all, peak RSS {got.rss_mib:,.0f} MiB",
                f"the fakes served directly {got.limit:,.1f} rec/s",
                pct(got.rate, got.limit),
                "(scaling)",
                "" if got.valid else "INVALID",
            )
        )
        bench.report.note(got.note)
    bench.report.command(
        "5",
        "FakeKazoo (one per provider) + POST /api/v1/providers (kind kazoo); POST /api/v1/providers/{id}/sync "
        f"for each; GET /api/v1/sync-jobs every {POLL_SECONDS:g}s",
    )
    bench.report.note(
        f"[5] the limit lists the same fakes and fetches the same audio with httpx, {PER_PROVIDER} at a time per "
        f"fake (the puller's default CALLVAULT_SYNC_PER_PROVIDER_CONCURRENCY), every fake at once; the puller "
        "streams each recording into the blob store while hashing it (fsync of the blob and its folder) and "
        "marks it stored after, the marks of recordings finished together in one transaction"
    )
