"""Agents over REST and gRPC: the agentKey filter, GET /recordings/agents, and keys bound
to agents reading with view_recording_self; `keys create --agent` from the console script."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import httpx
import pytest
from callvault.v1 import recordings_pb2 as pb
from callvault.v1 import recordings_pb2_grpc

from service.auth import Scope
from service.connectors.base import CallRecord, Direction, Outcome
from service.sync.ingest import Origin, unique_rows, upsert
from tests.e2e.test_recordings_api import register, upload
from tests.support.grpc_errors import error_info
from tests.support.server import RunningServer, Tenant

# dataId -> (callcenterNumber, callcenterName, callAt): the agent key is the number when
# there is one, else the name; "none" has neither, so it has no agent.
CALLS = {
    "alice-1": ("1001", "Alice", "2026-05-20T08:00:00+07:00"),
    "bob-1": ("", "Bob", "2026-05-21T09:00:00+07:00"),
    "bob-number": ("1002", "Bob", "2026-05-19T10:00:00+07:00"),
    "none": ("", "", "2026-05-22T11:00:00+07:00"),
    "alice-2": ("1001", "", "2026-05-18T12:00:00+07:00"),
}


@dataclass
class Calls:
    tenant: Tenant
    ids: dict[str, str]  # dataId -> recording id


def seed(server: RunningServer, name: str = "Agents") -> Calls:
    tenant = server.new_tenant(name)
    ids = {}
    with server.http(tenant.business_key) as client:
        for data_id, (number, agent_name, call_at) in CALLS.items():
            created = register(
                client, dataId=data_id, callAt=call_at, callcenterNumber=number, callcenterName=agent_name
            )
            assert upload(client, created["id"], f"RIFF-{data_id}".encode()).status_code == 200
            ids[data_id] = created["id"]
    return Calls(tenant, ids)


def agent_key_for(server: RunningServer, calls: Calls, *agents: str, scopes: tuple[Scope, ...] = ()) -> str:
    created = server.call(
        server.admin().create_key(
            account_id=calls.tenant.account_id,
            business_id=calls.tenant.business_id,
            scopes=scopes or (Scope.VIEW_RECORDING_SELF,),
            agent_keys=agents,
        )
    )
    return created.plaintext


def rest_list(client: httpx.Client, **params: object) -> tuple[list[str], int]:
    response = client.get("/api/v1/recordings", params=params)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    body = response.json()
    return sorted(i["dataId"] for i in body["items"]), body["total"]


def grpc_list(server: RunningServer, key: str, *agents: str) -> tuple[list[str], int]:
    with server.channel() as channel:
        answer = recordings_pb2_grpc.RecordingServiceStub(channel).ListRecordings(
            pb.ListRecordingsRequest(agent_key=list(agents)), metadata=[("authorization", f"Bearer {key}")]
        )
    return sorted(i.data_id for i in answer.items), answer.total


def test_agent_key_filter_rest(server: RunningServer) -> None:
    calls = seed(server)
    with server.http(calls.tenant.business_key) as client:
        assert rest_list(client, agentKey="1001") == (["alice-1", "alice-2"], 2)
        # The name counts only where the number is empty: bob-number is agent 1002.
        assert rest_list(client, agentKey="Bob") == (["bob-1"], 1)
        assert rest_list(client, agentKey="1002") == (["bob-number"], 1)
        assert rest_list(client, agentKey="Alice") == ([], 0)
        assert rest_list(client, agentKey=["1001", "Bob"]) == (["alice-1", "alice-2", "bob-1"], 3)
        # It combines with the other filters.
        assert rest_list(client, agentKey=["1001", "Bob"], callDateFrom="2026-05-20") == (
            ["alice-1", "bob-1"],
            2,
        )
        assert rest_list(client) == (sorted(CALLS), 5)


def test_agent_key_filter_grpc(server: RunningServer) -> None:
    calls = seed(server)
    key = calls.tenant.business_key
    assert grpc_list(server, key, "1001") == (["alice-1", "alice-2"], 2)
    assert grpc_list(server, key, "Bob", "1002") == (["bob-1", "bob-number"], 2)
    assert grpc_list(server, key) == (sorted(CALLS), 5)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ([f"a{i}" for i in range(501)], "agentKey: takes at most 500 values"),
        (["1001"] * 501, "agentKey: takes at most 500 values"),
        ([""], "agentKey: must not be empty"),
        (["1001", " "], "agentKey: must not be empty"),
        (["x" * 201], "agentKey: must be at most 200 characters"),
        # Refused by the transport's rule for every string of every request, before the filter.
        (["10\x0001"], "agentKey[0]: must not contain NUL characters"),
    ],
    ids=["501-values", "501-repeats", "empty", "blank", "too-long", "nul"],
)
def test_agent_key_values_are_checked(server: RunningServer, values: list[str], problem: str) -> None:
    tenant = server.new_tenant("Checked")
    with server.http(tenant.business_key) as client:
        response = client.get("/api/v1/recordings", params={"agentKey": values})
        assert response.status_code == 400
        assert response.json() == {"error": "invalid_argument", "message": problem}
    with server.channel() as channel, pytest.raises(grpc.RpcError) as caught:
        recordings_pb2_grpc.RecordingServiceStub(channel).ListRecordings(
            pb.ListRecordingsRequest(agent_key=values),
            metadata=[("authorization", f"Bearer {tenant.business_key}")],
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == problem
    assert error_info(caught.value).metadata["field"] == problem.partition(":")[0]


def test_five_hundred_agent_keys_are_accepted(server: RunningServer) -> None:
    calls = seed(server, "Many")
    with server.http(calls.tenant.business_key) as client:
        values = ["1001", *(f"agent-{i}" for i in range(499))]
        assert rest_list(client, agentKey=values) == (["alice-1", "alice-2"], 2)


def test_agents_listing_shape_order_counts_and_businesses(server: RunningServer) -> None:
    calls = seed(server, "Listed")
    other = seed(server, "Other")  # the same agents in another business count there only
    with server.http(other.tenant.business_key) as client:
        register(client, dataId="extra", callAt="2026-06-01T00:00:00Z", callcenterNumber="1001")
    with server.http(calls.tenant.business_key) as client:
        answer = client.get("/api/v1/recordings/agents")
        assert answer.status_code == 200, answer.text
        # Newest latest call first; recordings with neither number nor name are no agent's.
        assert answer.json() == {
            "items": [
                {"agentKey": "Bob", "recordingCount": 1, "latestCallAt": "2026-05-21T09:00:00+07:00"},
                {"agentKey": "1001", "recordingCount": 2, "latestCallAt": "2026-05-20T08:00:00+07:00"},
                {"agentKey": "1002", "recordingCount": 1, "latestCallAt": "2026-05-19T10:00:00+07:00"},
            ],
            "total": 3,
            "limit": 20,
            "offset": 0,
        }
        page = client.get("/api/v1/recordings/agents", params={"limit": 1, "offset": 1}).json()
        assert [i["agentKey"] for i in page["items"]] == ["1001"] and page["total"] == 3
        assert client.get("/api/v1/recordings/agents", params={"limit": 201}).status_code == 400
    with server.http(other.tenant.business_key) as client:
        first = client.get("/api/v1/recordings/agents").json()["items"][0]
        assert first == {
            "agentKey": "1001",
            "recordingCount": 3,
            "latestCallAt": "2026-06-01T07:00:00+07:00",
        }
    with server.channel() as channel:
        listed = recordings_pb2_grpc.RecordingServiceStub(channel).ListRecordingAgents(
            pb.ListRecordingAgentsRequest(limit=2),
            metadata=[("authorization", f"Bearer {calls.tenant.business_key}")],
        )
    assert [(a.agent_key, a.recording_count) for a in listed.items] == [("Bob", 1), ("1001", 2)]
    assert (listed.total, listed.limit, listed.offset) == (3, 2, 0)


def test_agents_listing_of_an_account_key_needs_the_business(server: RunningServer) -> None:
    calls = seed(server, "Account")
    with server.http(calls.tenant.account_key) as client:
        assert client.get("/api/v1/recordings/agents").json()["error"] == "business_required"
    with server.http(calls.tenant.account_key, business=calls.tenant.business_id) as client:
        assert client.get("/api/v1/recordings/agents").json()["total"] == 3


def test_self_key_sees_exactly_its_agents_rest(server: RunningServer) -> None:
    calls = seed(server, "Self")
    key = agent_key_for(server, calls, "1001", "Bob")
    mine, theirs = ("alice-1", "alice-2", "bob-1"), ("bob-number", "none")
    with server.http(key) as client:
        assert rest_list(client) == (list(mine), 3)
        assert rest_list(client, agentKey="1002") == ([], 0)  # a filter cannot widen it
        assert rest_list(client, agentKey=["1002", "Bob"]) == (["bob-1"], 1)
        for data_id in mine:
            recording = calls.ids[data_id]
            assert client.get(f"/api/v1/recordings/{recording}").json()["dataId"] == data_id
            audio = client.get(f"/api/v1/recordings/{recording}/audio")
            assert audio.status_code == 200 and audio.content == f"RIFF-{data_id}".encode()
        for data_id in theirs:
            recording = calls.ids[data_id]
            for path in (f"/api/v1/recordings/{recording}", f"/api/v1/recordings/{recording}/audio"):
                got = client.get(path)
                assert (got.status_code, got.json()["error"]) == (404, "recording_not_found"), path
        agents = client.get("/api/v1/recordings/agents").json()
        assert [(a["agentKey"], a["recordingCount"]) for a in agents["items"]] == [
            ("Bob", 1),
            ("1001", 2),
        ]
        assert agents["total"] == 2
    # Bound to no agent, the scope reads nothing; with view_recording_all, everything.
    with server.http(agent_key_for(server, calls)) as client:
        assert rest_list(client) == ([], 0)
        assert client.get("/api/v1/recordings/agents").json()["items"] == []
        assert client.get(f"/api/v1/recordings/{calls.ids['alice-1']}").status_code == 404
    both = agent_key_for(server, calls, "1001", scopes=(Scope.VIEW_RECORDING_SELF, Scope.VIEW_RECORDING_ALL))
    with server.http(both) as client:
        assert rest_list(client) == (sorted(CALLS), 5)


def test_self_key_sees_exactly_its_agents_grpc(server: RunningServer) -> None:
    calls = seed(server, "Self gRPC")
    key = agent_key_for(server, calls, "1002")
    metadata = [("authorization", f"Bearer {key}")]
    assert grpc_list(server, key) == (["bob-number"], 1)
    with server.channel() as channel:
        stub = recordings_pb2_grpc.RecordingServiceStub(channel)
        mine = calls.ids["bob-number"]
        assert stub.GetRecording(pb.GetRecordingRequest(id=mine), metadata=metadata).data_id == "bob-number"
        chunks = stub.DownloadRecording(pb.DownloadRecordingRequest(id=mine), metadata=metadata)
        assert b"".join(c.data for c in chunks) == b"RIFF-bob-number"
        agents = stub.ListRecordingAgents(pb.ListRecordingAgentsRequest(), metadata=metadata)
        assert [(a.agent_key, a.recording_count) for a in agents.items] == [("1002", 1)]
        for data_id in ("bob-1", "alice-1", "none"):
            other = calls.ids[data_id]
            with pytest.raises(grpc.RpcError) as got:
                stub.GetRecording(pb.GetRecordingRequest(id=other), metadata=metadata)
            with pytest.raises(grpc.RpcError) as downloaded:
                list(stub.DownloadRecording(pb.DownloadRecordingRequest(id=other), metadata=metadata))
            for caught in (got, downloaded):
                assert caught.value.code() == grpc.StatusCode.NOT_FOUND
                assert error_info(caught.value).reason == "recording_not_found"


def test_keys_create_with_agents_from_the_cli(server: RunningServer) -> None:
    calls = seed(server, "Console")
    env = {**os.environ, "CALLVAULT_DATABASE_URL": server.settings.resolved_database_url}
    cli = [sys.executable, "-m", "service", "keys"]
    made = subprocess.run(
        [
            *cli,
            "create",
            "--account",
            calls.tenant.account_id,
            "--business",
            calls.tenant.business_id,
            "--scopes",
            "view_recording_self",
            "--agent",
            "Bob",
            "--agent",
            "1002",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    listing = subprocess.run(
        [*cli, "list", "--account", calls.tenant.account_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    (line,) = [entry for entry in listing.splitlines() if key[:12] in entry]
    assert "agents [1002 Bob]" in line and key not in listing
    with server.http(key) as client:
        assert rest_list(client) == (["bob-1", "bob-number"], 2)
    refused = subprocess.run(
        [
            *cli,
            "create",
            "--account",
            calls.tenant.account_id,
            "--scopes",
            "view_recording_self",
            "--agent",
            "",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "--agent: must not be empty" in refused.stderr


def test_pulled_calls_get_their_agent_key_as_the_puller_writes_them(server: RunningServer) -> None:
    """The agent key is computed by the database, so the puller's bulk upsert (which
    knows nothing of it) sets it, and a changed number moves the call to the new agent."""
    tenant = server.new_tenant("Pulled")
    origin = Origin(tenant.business_id, "provider-1", "threecx", "TH")

    def pulled(callee: str) -> CallRecord:
        started = datetime(2026, 5, 20, 1, 0, tzinfo=UTC)
        return CallRecord(
            "cdr-1", started, 30.0, "0812345678", callee, Direction.INBOUND, Outcome.ANSWERED, "1"
        )

    async def pull(callee: str) -> None:
        async with server.service.db.session() as session:
            rows = unique_rows([pulled(callee)], origin, datetime.now(UTC))
            await session.exec(upsert(server.service.db.engine.dialect.name, rows))
            await session.commit()
        server.service.recordings.counts.invalidate(tenant.business_id)  # as the puller's on_change

    with server.http(tenant.business_key) as client:
        server.call(pull("1005"))
        assert rest_list(client, agentKey="1005") == (["cdr-1"], 1)
        server.call(pull("1006"))
        assert rest_list(client, agentKey="1005") == ([], 0)
        agents = client.get("/api/v1/recordings/agents").json()["items"]
        assert [(a["agentKey"], a["recordingCount"]) for a in agents] == [("1006", 1)]
