"""Figure 5: recordings per second pulled from a fake Kazoo (tests/fakes/kazoo.py) by the
server's puller, from `POST /providers/{id}/sync` to the job's end, beside the fake
served directly (same listing, same downloads, two at a time like the puller)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.context import Bench
from bench.load import SHOWN
from bench.report import Row, pct
from bench.seed import make_tenants
from bench.servers import ServerProcess
from tests.fakes.kazoo import GREGORIAN_OFFSET, FakeKazoo

PER_PROVIDER = 2  # the puller's default downloads at a time per provider
POLL_SECONDS = 0.05
DEADLINE_SECONDS = 300.0


def _direct(fake: FakeKazoo) -> float:
    """The fake alone: authenticate, list every page, fetch every audio (2 at a time)."""
    base = fake.base_url
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=60) as client:
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

    def fetch(chunk: list[str]) -> int:
        total = 0
        with httpx.Client(base_url=base, timeout=60) as c:
            for rec in chunk:
                answer = c.get(
                    f"/v2/accounts/{fake.account_id}/recordings/{rec}",
                    headers={"X-Auth-Token": token, "Accept": "audio/mpeg"},
                )
                answer.raise_for_status()
                total += len(answer.content)
        return total

    with ThreadPoolExecutor(PER_PROVIDER) as pool:
        list(pool.map(fetch, [ids[i::PER_PROVIDER] for i in range(PER_PROVIDER)]))
    seconds = time.perf_counter() - started
    if len(ids) != len(fake.recordings):
        raise RuntimeError(f"fake listed {len(ids)} of {len(fake.recordings)} recordings")
    return len(ids) / seconds


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run(bench: Bench) -> None:
    plan = bench.plan
    data = bench.dir("ingest")
    (tenant,) = make_tenants(data, ["Ingest"])
    SHOWN.secrets[tenant.key] = "$KEY"
    count = plan.ingest_recordings
    bench.say(f"figure 5: ingest of {count} recordings x {plan.ingest_kib} KiB from a fake Kazoo")
    with FakeKazoo() as fake:
        now = datetime.now(UTC)
        for i in range(count):
            fake.add_recording(
                now - timedelta(hours=2) - timedelta(seconds=i * 40),
                duration=30.0,
                caller=f"+6681{i:07d}",
                audio_size=plan.ingest_kib * 1024,
            )
        limit = _direct(fake)
        env = {"CALLVAULT_ALLOW_PRIVATE_NETWORKS": "1", "CALLVAULT_SYNC_TICK_SECONDS": "0.5"}
        with (
            ServerProcess(data, sync=True, extra_env=env) as server,
            httpx.Client(
                base_url=server.http_base, headers={"Authorization": f"Bearer {tenant.key}"}, timeout=60
            ) as client,
        ):
            bench.report.command("5", server.describe())
            created = client.post(
                "/api/v1/providers",
                json={
                    "kind": "kazoo",
                    "name": "Bench Kazoo",
                    "config": {
                        "baseUrl": fake.base_url,
                        "accountId": fake.account_id,
                        "apiKey": fake.api_key,
                    },
                    "isActive": True,
                },
            )
            created.raise_for_status()
            provider_id = created.json()["id"]
            began = time.perf_counter()
            requested = client.post(f"/api/v1/providers/{provider_id}/sync")
            requested.raise_for_status()
            # Every job of the provider counts: a scheduled pull may have started between
            # creating the provider and the request. Done when none is queued or running.
            deadline = began + DEADLINE_SECONDS
            jobs: list[dict[str, Any]] = []
            while time.perf_counter() < deadline:
                jobs = client.get(
                    "/api/v1/sync-jobs", params={"providerId": provider_id, "limit": 50}
                ).json()["items"]
                if jobs and all(j["state"] in ("succeeded", "failed") for j in jobs):
                    break
                time.sleep(POLL_SECONDS)
            seconds = time.perf_counter() - began
            listed = client.get("/api/v1/recordings", params={"providerId": provider_id, "limit": 1}).json()
    stored = sum(int(j.get("recordingsStored", 0)) for j in jobs)
    failures = sum(int(j.get("failures", 0)) for j in jobs)
    states = sorted({j["state"] for j in jobs})
    first = min((_instant(j["startedAt"]) for j in jobs if j.get("startedAt")), default=None)
    last = max((_instant(j["finishedAt"]) for j in jobs if j.get("finishedAt")), default=None)
    job_seconds = (last - first).total_seconds() if first and last else float("nan")
    rate = stored / seconds if seconds > 0 else 0.0
    valid = states == ["succeeded"] and stored == count and failures == 0 and int(listed["total"]) == count
    valid = valid and rate > 0
    bench.report.add(
        Row(
            "5",
            f"ingest from fake Kazoo ({count} x {plan.ingest_kib} KiB)",
            f"{rate:,.1f} rec/s",
            f"fake served directly {limit:,.1f} rec/s",
            pct(rate, limit),
            "(no target)",
            "" if valid else "INVALID",
        )
    )
    bench.report.command(
        "5",
        "FakeKazoo + POST /api/v1/providers (kind kazoo); POST /api/v1/providers/{id}/sync; "
        f"GET /api/v1/sync-jobs?providerId={{id}} every {POLL_SECONDS:g}s",
    )
    bench.report.note(
        f"[5] {len(jobs)} job(s) {states}: {stored} stored, {failures} failures, {listed['total']} recordings listed; "
        f"timed from the sync request to every job observed finished ({seconds:.2f}s, polled every {POLL_SECONDS:g}s; "
        f"the jobs' own whole-second timestamps say {job_seconds:.0f}s); the limit fetches the same list and audio "
        f"from the fake with httpx, {PER_PROVIDER} at a time"
    )
