"""Pulling recordings end to end, against every fake provider, over REST and gRPC:
a first sync stores every recording byte-identical and once, a second finds nothing
new, a call added later arrives with the next scheduled pull."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from callvault.v1 import recordings_pb2 as pb
from callvault.v1 import recordings_pb2_grpc

from service.config import SyncSettings
from service.kinds import KINDS
from tests.conftest import BACKENDS
from tests.e2e.kinds import PROFILES, KindProfile
from tests.fakes.antbuddy import FakeAntBuddy
from tests.fakes.kazoo import FakeKazoo
from tests.fakes.ledger import FakeLedger
from tests.sixth_kind.kind import KIND as LEDGER
from tests.support.sealed import sealed_blob
from tests.support.server import RunningServer, server_settings

FAST_SYNC = SyncSettings(
    enabled=True,
    tick_seconds=0.1,
    default_interval_minutes=0.05,  # a scheduled pull every 3 s
    retry_attempts=4,
    retry_base_seconds=0.05,
    retry_cap_seconds=0.5,
)


@pytest.fixture(scope="module", params=BACKENDS)
def sync_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    url = request.getfixturevalue("database_url_factory")(request.param)
    data_dir: Path = tmp_path_factory.mktemp(f"sync-{request.param}")
    running = RunningServer(replace(server_settings(data_dir, url), sync=FAST_SYNC)).start()
    yield running
    running.stop()


@pytest.fixture(params=PROFILES, ids=[p.kind for p in PROFILES])
def profile(request: pytest.FixtureRequest) -> KindProfile:
    return request.param  # type: ignore[no-any-return]


def eventually(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def finished(client: httpx.Client, job_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/api/v1/sync-jobs/{job_id}").json()
        return job if job["state"] in ("succeeded", "failed") else None

    result: dict[str, Any] = eventually(done)
    return result


def stored(client: httpx.Client, provider_id: str) -> dict[str, str]:
    """dataId -> sha256 of every stored recording of the provider, read back in full."""
    listing = client.get("/api/v1/recordings", params={"limit": 200}).json()
    mine = [
        i
        for i in listing["items"]
        if i.get("providerId") == provider_id and i["processingStatus"] == "completed"
    ]
    return {i["dataId"]: hashlib.sha256(client.get(i["audioUrl"]).content).hexdigest() for i in mine}


def test_sync_every_kind(sync_server: RunningServer, profile: KindProfile) -> None:
    tenant = sync_server.new_tenant()
    now = datetime.now(UTC).replace(microsecond=0)
    with profile.fake() as fake, sync_server.http(tenant.business_key) as client:
        expected = {
            profile.record(fake, now - timedelta(days=d, hours=h)).sha256()
            for d, h in ((0, 2), (1, 3), (1, 9), (2, 1), (4, 5))
        }
        provider_id = client.post(
            "/api/v1/providers", json={"kind": profile.kind, "name": "Synced", "config": profile.config(fake)}
        ).json()["id"]

        job = client.post(f"/api/v1/providers/{provider_id}/sync").json()
        assert job["providerId"] == provider_id and job["trigger"] in ("manual", "schedule")
        assert finished(client, job["id"])["state"] == "succeeded"
        first = eventually(lambda: (s := stored(client, provider_id)) and len(s) >= 5 and s)
        assert sorted(first.values()) == sorted(expected)  # every recording, byte-identical, once
        jobs = client.get("/api/v1/sync-jobs", params={"providerId": provider_id}).json()["items"]
        assert sum(int(j["recordingsStored"]) for j in jobs) == 5
        audio_requests = len(fake.requests)

        again = finished(client, client.post(f"/api/v1/providers/{provider_id}/sync").json()["id"])
        assert again["state"] == "succeeded" and again["recordingsStored"] == 0
        assert again["failures"] == 0  # it lists from the cursor (less the overlap) on
        assert stored(client, provider_id) == first

        late = profile.record(fake, datetime.now(UTC) - timedelta(minutes=1))
        third = eventually(
            lambda: (s := stored(client, provider_id)) and len(s) == 6 and s
        )  # next scheduled pull
        assert sorted(third.values()) == sorted([*expected, late.sha256()])
        assert len(fake.requests) > audio_requests

        # Deleting the provider keeps its recordings, detached from it.
        assert client.delete(f"/api/v1/providers/{provider_id}").json() == {"ok": True}
        kept = client.get("/api/v1/recordings", params={"sourceProvider": profile.kind, "limit": 200}).json()
        assert int(kept["total"]) == 6 and all("providerId" not in i for i in kept["items"])


def test_sync_over_grpc_and_delete_with_recordings(sync_server: RunningServer) -> None:
    profile = next(p for p in PROFILES if p.kind == "kazoo")
    tenant = sync_server.new_tenant()
    md = [("authorization", f"Bearer {tenant.business_key}")]
    with FakeKazoo() as fake, sync_server.http(tenant.business_key) as client:
        for hours in (1, 2, 3):  # sizes no other test uses: blobs are shared by content
            fake.add_recording(datetime.now(UTC) - timedelta(hours=hours), audio_size=77_001 + hours)
        provider_id = client.post(
            "/api/v1/providers", json={"kind": "kazoo", "name": "Kz", "config": profile.config(fake)}
        ).json()["id"]
        with sync_server.channel() as channel:
            stub = recordings_pb2_grpc.RecordingServiceStub(channel)
            job = stub.SyncProvider(pb.SyncProviderRequest(id=provider_id), metadata=md)
            done = eventually(
                lambda: (
                    (j := stub.GetSyncJob(pb.GetSyncJobRequest(id=job.id), metadata=md)).state == "succeeded"
                    and j
                )
            )
            assert done.finished_at.seconds > 0
            listed = stub.ListSyncJobs(pb.ListSyncJobsRequest(provider_id=provider_id), metadata=md)
            assert job.id in {j.id for j in listed.items}
        eventually(lambda: len(stored(client, provider_id)) == 3)
        blobs = [
            sync_server.call(sealed_blob(sync_server.service.db, r["id"]))
            for r in client.get("/api/v1/recordings").json()["items"]
        ]
        response = client.delete(f"/api/v1/providers/{provider_id}", params={"deleteRecordings": "true"})
        assert response.json() == {"ok": True}
        assert client.get("/api/v1/recordings").json()["total"] == 0
        assert sync_server.call(sync_server.service.sweeper.sweep()) >= len(blobs)
        assert all(sync_server.call(sync_server.service.blobs.stat(sha)) is None for sha in blobs)
        assert client.post(f"/api/v1/providers/{provider_id}/sync").status_code == 404


def test_legs_of_one_call_share_call_id_over_rest_and_grpc(sync_server: RunningServer) -> None:
    """A Kazoo call recorded on both legs is two recordings naming one callId; a call
    recorded once has its own."""
    profile = next(p for p in PROFILES if p.kind == "kazoo")
    tenant = sync_server.new_tenant()
    md = [("authorization", f"Bearer {tenant.business_key}")]
    with FakeKazoo() as fake, sync_server.http(tenant.business_key) as client:
        legs = fake.add_call(datetime.now(UTC) - timedelta(hours=2), legs=("a", "b"), audio_size=66_001)
        [alone] = fake.add_call(datetime.now(UTC) - timedelta(hours=1), legs=("a",), audio_size=66_002)
        provider_id = client.post(
            "/api/v1/providers", json={"kind": "kazoo", "name": "Legs", "config": profile.config(fake)}
        ).json()["id"]
        job = finished(client, client.post(f"/api/v1/providers/{provider_id}/sync").json()["id"])
        assert job["state"] == "succeeded"
        items = client.get("/api/v1/recordings", params={"providerId": provider_id}).json()["items"]
        rest = {i["dataId"]: i.get("callId") for i in items}
        with sync_server.channel() as channel:
            stub = recordings_pb2_grpc.RecordingServiceStub(channel)
            listed = stub.ListRecordings(pb.ListRecordingsRequest(provider_id=provider_id), metadata=md)
        grpc = {r.data_id: r.call_id if r.HasField("call_id") else None for r in listed.items}
        client.delete(f"/api/v1/providers/{provider_id}", params={"deleteRecordings": "true"})

    interaction = legs[0].interaction_id
    expected = {legs[0].id: interaction, legs[1].id: interaction, alone.id: alone.interaction_id}
    assert rest == grpc == expected
    assert alone.interaction_id != interaction


def test_an_answer_a_real_kind_cannot_read_names_its_field_in_last_sync_error(
    sync_server: RunningServer,
) -> None:
    """AntBuddy's history in an envelope it does not document fails the pull over REST
    naming the field, and lists no rows rather than taking it for an empty page."""
    profile = next(p for p in PROFILES if p.kind == "antbuddy")
    tenant = sync_server.new_tenant()
    with FakeAntBuddy() as fake, sync_server.http(tenant.business_key) as client:
        fake.add_call(datetime.now(UTC) - timedelta(hours=1), audio_size=48_101)
        fake.envelope = "other"
        provider_id = client.post(
            "/api/v1/providers", json={"kind": "antbuddy", "name": "Odd", "config": profile.config(fake)}
        ).json()["id"]
        job = finished(client, client.post(f"/api/v1/providers/{provider_id}/sync").json()["id"])
        shown = client.get(f"/api/v1/providers/{provider_id}").json()
        listed = client.get("/api/v1/recordings", params={"providerId": provider_id}).json()
        client.delete(f"/api/v1/providers/{provider_id}")

    assert (job["state"], job["error"]) == ("failed", "unexpected answer from provider: data")
    assert shown["lastSyncError"] == "unexpected answer from provider: data"
    assert listed["total"] == 0


def test_failing_provider_is_marked(sync_server: RunningServer) -> None:
    profile = next(p for p in PROFILES if p.kind == "threecx")
    tenant = sync_server.new_tenant()
    with profile.fake() as fake, sync_server.http(tenant.business_key) as client:
        config = {**profile.config(fake), "password": "wrong"}
        provider_id = client.post(
            "/api/v1/providers", json={"kind": "threecx", "name": "Bad", "config": config}
        ).json()["id"]
        job = finished(client, client.post(f"/api/v1/providers/{provider_id}/sync").json()["id"])
        assert (job["state"], job["error"]) == ("failed", "authentication failed")
        assert (
            client.get(f"/api/v1/providers/{provider_id}").json()["lastSyncError"] == "authentication failed"
        )
        client.patch(
            f"/api/v1/providers/{provider_id}",
            json={"config": {"password": profile.config(fake)["password"]}},
        )
        job = finished(client, client.post(f"/api/v1/providers/{provider_id}/sync").json()["id"])
        assert job["state"] == "succeeded"
        assert "lastSyncError" not in client.get(f"/api/v1/providers/{provider_id}").json()
        client.delete(f"/api/v1/providers/{provider_id}")


def test_a_sixth_kind_is_one_connector_and_one_kind_module(
    sync_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test-only "ledger" kind, registered and nothing else, is created, pulled and read
    back over REST like the five real ones; its late rows, audio not ready yet and an
    unreadable answer behave as the README says."""
    monkeypatch.setitem(KINDS, LEDGER.name, LEDGER)
    tenant = sync_server.new_tenant()
    now = datetime.now(UTC)
    with FakeLedger() as fake, sync_server.http(tenant.business_key) as client:
        fake.add_call(now - timedelta(hours=1), size=91_001)
        config = {"baseUrl": fake.base_url, "token": fake.token}
        created = client.post(
            "/api/v1/providers", json={"kind": "ledger", "name": "Ledger", "config": config}
        )
        provider_id = created.json()["id"]
        read = client.get(f"/api/v1/providers/{provider_id}").json()
        assert read["kind"] == "ledger" and read["baseUrl"] == fake.base_url and fake.token not in str(read)
        job = finished(client, client.post(f"/api/v1/providers/{provider_id}/sync").json()["id"])
        assert (job["state"], job["recordingsStored"]) == ("succeeded", 1)

        # A row written late (started three days ago), whose audio is not ready at first.
        late = fake.add_call(now - timedelta(days=3), size=91_002)
        fake.audio_not_ready(late.id, answers=1)
        job = finished(client, client.post(f"/api/v1/providers/{provider_id}/sync").json()["id"])
        assert job["state"] == "succeeded"
        items = client.get("/api/v1/recordings", params={"limit": 200}).json()["items"]
        mine = {i["dataId"]: i["processingStatus"] for i in items if i.get("providerId") == provider_id}
        assert mine[str(late.id)] in ("pending", "completed")  # a scheduled pull may have run since
        eventually(lambda: len(stored(client, provider_id)) == 2)

        fake.unreadable = True
        job = finished(client, client.post(f"/api/v1/providers/{provider_id}/sync").json()["id"])
        assert (job["state"], job["error"]) == ("failed", "unexpected answer from provider: calls")
        shown = client.get(f"/api/v1/providers/{provider_id}").json()
        assert shown["lastSyncError"] == "unexpected answer from provider: calls"
        client.delete(f"/api/v1/providers/{provider_id}")
