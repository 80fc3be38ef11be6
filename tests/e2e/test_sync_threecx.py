"""3CX as it really behaves, end to end: the real server pulls from a fake PBX whose token
another login keeps cancelling, and from one whose API role may not see recordings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import BACKENDS
from tests.e2e.test_sync import FAST_SYNC, finished, stored
from tests.fakes.threecx import FakeThreeCX
from tests.support.server import RunningServer, server_settings

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)


@pytest.fixture(scope="module", params=BACKENDS)
def sync_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    url = request.getfixturevalue("database_url_factory")(request.param)
    data_dir: Path = tmp_path_factory.mktemp(f"sync-threecx-{request.param}")
    running = RunningServer(replace(server_settings(data_dir, url), sync=FAST_SYNC)).start()
    yield running
    running.stop()


def config(fake: FakeThreeCX) -> dict[str, str]:
    return {"baseUrl": fake.base_url, "username": fake.client_id, "password": fake.client_secret}


def test_pull_survives_tokens_cancelled_by_other_logins(sync_server: RunningServer) -> None:
    tenant = sync_server.new_tenant()
    with FakeThreeCX() as fake, sync_server.http(tenant.business_key) as client:
        calls = [fake.add_call(T0 + timedelta(minutes=i), size=8_000) for i in range(3)]
        fake.cancel_next(2)  # another integration logs in twice, each time just after us
        provider_id = client.post(
            "/api/v1/providers", json={"kind": "threecx", "name": "PBX", "config": config(fake)}
        ).json()["id"]
        job = finished(client, client.post(f"/api/v1/providers/{provider_id}/sync").json()["id"])
        assert job["state"] == "succeeded"
        assert fake.cancelled_by_rival == 2
        assert sorted(stored(client, provider_id).values()) == sorted(c.audio.sha256() for c in calls)
        assert "lastSyncError" not in client.get(f"/api/v1/providers/{provider_id}").json()
        client.delete(f"/api/v1/providers/{provider_id}")


def test_missing_recordings_role_says_so(sync_server: RunningServer) -> None:
    tenant = sync_server.new_tenant()
    with FakeThreeCX(recordings_role=False) as fake, sync_server.http(tenant.business_key) as client:
        fake.add_call(T0)
        provider_id = client.post(
            "/api/v1/providers", json={"kind": "threecx", "name": "PBX", "config": config(fake)}
        ).json()["id"]
        tested = client.post(f"/api/v1/providers/{provider_id}/test").json()
        assert tested == {"ok": False, "error": "access denied by provider"}
        job = finished(client, client.post(f"/api/v1/providers/{provider_id}/sync").json()["id"])
        assert (job["state"], job["error"]) == ("failed", "access denied by provider")
        read = client.get(f"/api/v1/providers/{provider_id}").json()
        assert read["lastSyncError"] == "access denied by provider"
        client.delete(f"/api/v1/providers/{provider_id}")
