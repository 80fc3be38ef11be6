"""One real server per database for the fuzz tests, with a business that has a provider,
a stored recording and a sync job, so generated calls reach real rows as well as missing ones."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from tests.conftest import BACKENDS
from tests.support.server import RunningServer, Tenant, server_settings

# Examples per REST operation (twice as many per RPC). Bounded so both fuzzers, on both
# databases, take under two minutes; CALLVAULT_FUZZ_EXAMPLES raises it for a longer hunt.
# Generation is derandomised: CI runs the same examples each time.
EXAMPLES = int(os.environ.get("CALLVAULT_FUZZ_EXAMPLES", "40"))


@dataclass(frozen=True)
class Target:
    server: RunningServer
    tenant: Tenant
    provider_id: str
    recording_id: str
    job_id: str
    # A listen link's token for recording_id: the audio GET takes it in place of a key.
    link_token: str

    @property
    def ids(self) -> tuple[str, ...]:
        return (self.provider_id, self.recording_id, self.job_id, self.link_token)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tenant.business_key}"}


@pytest.fixture(scope="package", params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    url = request.getfixturevalue("database_url_factory")(request.param)
    data_dir: Path = tmp_path_factory.mktemp(f"fuzz-{request.param}")
    # No rate limit: the fuzzers send hundreds of calls a minute with one key.
    server = RunningServer(replace(server_settings(data_dir, url), rate_limit_per_minute=0)).start()
    tenant = server.new_tenant("Fuzz")
    with server.http(tenant.business_key) as client:
        provider = client.post(
            "/api/v1/providers",
            json={
                "kind": "threecx",
                "name": "Fuzz PBX",
                # Port 9 on loopback refuses at once: connection tests answer quickly.
                "config": {"baseUrl": "http://127.0.0.1:9", "username": "fuzz", "password": "pw"},
            },
        ).json()["id"]
        recording = client.post(
            "/api/v1/recordings",
            json={"dataId": "fuzz-1", "callAt": "2026-05-20T08:14:00+07:00", "direction": "in"},
        ).json()["id"]
        assert client.put(f"/api/v1/recordings/{recording}/audio", content=b"RIFF" * 256).status_code == 200
        job = client.post(f"/api/v1/providers/{provider}/sync").json()["id"]
        link = client.post(f"/api/v1/recordings/{recording}/audio-link", json={"expiresInSeconds": 3600})
    yield Target(server, tenant, provider, recording, job, link.json()["token"])
    server.stop()
