"""Recording collections over REST and gRPC, as the mirrored API documents them: list,
create, get with items, patch, delete (recordings kept), add 1-1000 recordings by id,
remove by repeated callRecordingId; scopes, businesses and bad input."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import grpc
import httpx
import pytest
from callvault.v1 import collections_pb2 as pb
from callvault.v1 import collections_pb2_grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import create_engine, text

from service.auth import Scope
from service.ids import uuid7
from service.storage.db import install_sqlite_pragmas, sync_url
from service.storage.models import Collection, Recording
from tests.e2e.test_recordings_api import register
from tests.support.grpc_errors import error_info
from tests.support.server import RunningServer, Tenant

COLLECTION_FIELDS = {"id", "name", "description", "color", "itemCount", "createdAt", "updatedAt"}


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/collections", json={"name": "QA Q2", **body})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def recordings(client: httpx.Client, count: int, prefix: str = "c") -> list[str]:
    return [register(client, dataId=f"{prefix}-{i}")["id"] for i in range(count)]


def add(client: httpx.Client, collection_id: str, ids: list[str]) -> httpx.Response:
    return client.post(f"/api/v1/collections/{collection_id}/items", json={"callRecordingIds": ids})


def remove(client: httpx.Client, collection_id: str, ids: list[str]) -> httpx.Response:
    return client.delete(
        f"/api/v1/collections/{collection_id}/items", params=[("callRecordingId", i) for i in ids]
    )


def test_documented_calls_and_answers(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        a, b, c = recordings(client, 3)
        # The docs' example create.
        created = create(client, color="#D6FF3A")
        assert set(created) == COLLECTION_FIELDS
        assert uuid.UUID(created["id"]).version == 7
        assert (created["name"], created["description"], created["color"]) == ("QA Q2", "", "#D6FF3A")
        assert created["itemCount"] == 0 and created["createdAt"].endswith("Z")

        assert add(client, created["id"], [a, b]).json() == {"ok": True, "added": 2, "itemCount": 2}
        # Idempotent: what is already there is no error and is not added twice.
        assert add(client, created["id"], [b, c, c]).json() == {"ok": True, "added": 1, "itemCount": 3}

        listed = client.get("/api/v1/collections").json()
        assert listed["total"] == 1 and (listed["limit"], listed["offset"]) == (20, 0)
        assert [item["id"] for item in listed["items"]] == [created["id"]]
        assert listed["items"][0]["itemCount"] == 3 and set(listed["items"][0]) == COLLECTION_FIELDS

        got = client.get(f"/api/v1/collections/{created['id']}").json()
        assert set(got) == COLLECTION_FIELDS | {"items", "limit", "offset"}
        assert got["itemCount"] == 3
        # Most recently added first; each item names its recording and carries it.
        assert [item["callRecordingId"] for item in got["items"]] == [c, b, a]
        first = got["items"][0]
        assert set(first) == {"callRecordingId", "addedAt", "recording"}
        assert first["recording"]["id"] == c and first["recording"]["dataId"] == "c-2"
        assert first["recording"]["callAt"] == "2026-05-20T08:14:00+07:00"

        patched = client.patch(
            f"/api/v1/collections/{created['id']}",
            json={"name": "Training set", "description": "calls to learn from", "color": "#00aa11"},
        )
        assert patched.status_code == 200 and patched.json() == {"ok": True}
        got = client.get(f"/api/v1/collections/{created['id']}").json()
        assert (got["name"], got["description"], got["color"]) == (
            "Training set",
            "calls to learn from",
            "#00aa11",
        )
        # Only what is sent changes; "" clears the color.
        client.patch(f"/api/v1/collections/{created['id']}", json={"color": ""})
        got = client.get(f"/api/v1/collections/{created['id']}").json()
        assert (
            "color" not in got
            and got["name"] == "Training set"
            and got["description"] == "calls to learn from"
        )

        # ?callRecordingId=A&callRecordingId=B; one not in the collection is no error.
        missing = str(uuid.uuid4())
        assert remove(client, created["id"], [a, c, missing]).json() == {
            "ok": True,
            "removed": 2,
            "itemCount": 1,
        }
        got = client.get(f"/api/v1/collections/{created['id']}").json()
        assert [item["callRecordingId"] for item in got["items"]] == [b]

        assert client.delete(f"/api/v1/collections/{created['id']}").json() == {"ok": True}
        gone = client.get(f"/api/v1/collections/{created['id']}")
        assert gone.status_code == 404 and gone.json()["error"] == "collection_not_found"
        assert client.get("/api/v1/collections").json() == {"items": [], "total": 0, "limit": 20, "offset": 0}
        # Deleting the collection kept its recordings.
        for recording_id in (a, b, c):
            assert client.get(f"/api/v1/recordings/{recording_id}").status_code == 200


def test_a_recording_in_several_collections_leaves_all_when_deleted(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        kept, doomed = recordings(client, 2)
        first, second = create(client, name="First"), create(client, name="Second")
        for collection in (first, second):
            assert add(client, collection["id"], [kept, doomed]).json()["itemCount"] == 2
        assert client.delete(f"/api/v1/recordings/{doomed}").status_code == 200
        for collection in (first, second):
            got = client.get(f"/api/v1/collections/{collection['id']}").json()
            assert got["itemCount"] == 1 and [i["callRecordingId"] for i in got["items"]] == [kept]
        listed = client.get("/api/v1/collections").json()["items"]
        assert [c["itemCount"] for c in listed] == [1, 1]
        # The id is free again: adding it now is an unknown recording.
        refused = add(client, first["id"], [doomed])
        assert refused.status_code == 404 and refused.json()["error"] == "recording_not_found"


def test_another_business_does_not_exist(server: RunningServer) -> None:
    owner = server.new_tenant("Owner")
    stranger = server.new_tenant("Stranger")
    with server.http(owner.business_key) as client:
        (owned,) = recordings(client, 1, "own")
        collection = create(client)
        add(client, collection["id"], [owned])
    with server.http(stranger.account_key, business=stranger.business_id) as client:
        (theirs,) = recordings(client, 1, "theirs")
        assert client.get("/api/v1/collections").json()["total"] == 0
        path = f"/api/v1/collections/{collection['id']}"
        for response in (
            client.get(path),
            client.patch(path, json={"name": "Stolen"}),
            client.delete(path),
            add(client, collection["id"], [theirs]),
            remove(client, collection["id"], [owned]),
        ):
            assert response.status_code == 404 and response.json()["error"] == "collection_not_found"
        # Their own collection cannot take the owner's recording; nothing of the call is kept.
        mine = create(client)
        refused = add(client, mine["id"], [theirs, owned])
        assert refused.status_code == 404
        assert refused.json() == {
            "error": "recording_not_found",
            "message": f"callRecordingIds: no such recording in this business: {owned}",
        }
        assert client.get(f"/api/v1/collections/{mine['id']}").json()["itemCount"] == 0
    with server.http(owner.business_key) as client:
        got = client.get(f"/api/v1/collections/{collection['id']}").json()
        assert got["name"] == "QA Q2" and [i["callRecordingId"] for i in got["items"]] == [owned]


def test_scopes(server: RunningServer) -> None:
    owner = server.new_tenant("Owner")
    with server.http(owner.business_key) as client:
        (rec,) = recordings(client, 1)
    curator = server.new_tenant("Curator", scopes=(Scope.MANAGE_RECORDING_COLLECTION,))
    viewer = server.new_tenant("Viewer", scopes=(Scope.VIEW_RECORDING_ALL,))
    with server.http(curator.business_key) as client:
        # manage_recording_collection alone does all of it (recordings registered by another key).
        (own,) = recordings_as(server, curator)
        collection = create(client)
        assert add(client, collection["id"], [own]).status_code == 200
        assert client.get(f"/api/v1/collections/{collection['id']}").json()["itemCount"] == 1
        assert client.get("/api/v1/collections").status_code == 200
        # ... but it is not a recordings scope.
        assert client.get("/api/v1/recordings").status_code == 403
    # Keys of the curator's own business: a leak would change its collection.
    all_but = tuple(s for s in Scope if s not in (Scope.MANAGE_RECORDING_COLLECTION, Scope.MANAGE_ALL))
    for scopes in (
        (Scope.VIEW_RECORDING_ALL,),
        (Scope.VIEW_RECORDING_SELF,),
        (Scope.MANAGE_PROVIDER_CONFIG,),
        all_but,
    ):
        key = server.call(
            server.admin().create_key(
                account_id=curator.account_id, business_id=curator.business_id, scopes=scopes
            )
        )
        with server.http(key.plaintext) as client:
            readable = Scope.VIEW_RECORDING_ALL in scopes
            listed = client.get("/api/v1/collections")
            assert listed.status_code == (200 if readable else 403)
            if readable:
                assert listed.json()["total"] == 1
            for response in (
                client.post("/api/v1/collections", json={"name": "x"}),
                client.patch(f"/api/v1/collections/{collection['id']}", json={"name": "x"}),
                client.delete(f"/api/v1/collections/{collection['id']}"),
                add(client, collection["id"], [rec]),
                remove(client, collection["id"], [own]),
            ):
                assert response.status_code == 403, (scopes, response.text)
                assert response.json()["error"] == "insufficient_scope"
    with server.http(viewer.business_key) as client:
        assert client.get("/api/v1/collections").json()["total"] == 0
    with server.http(
        server.new_tenant("Config", scopes=(Scope.MANAGE_PROVIDER_CONFIG,)).business_key
    ) as client:
        assert client.get("/api/v1/collections").json()["message"] == (
            "this key lacks the view_recording_all or manage_recording_collection scope"
        )
    with server.http(curator.business_key) as client:
        got = client.get(f"/api/v1/collections/{collection['id']}").json()
        assert (got["name"], got["itemCount"]) == ("QA Q2", 1)
        assert client.get("/api/v1/collections").json()["total"] == 1


def stored_updated_at(server: RunningServer, collection_id: str) -> datetime:
    async def read() -> datetime:
        async with server.service.db.session() as session:
            row = await session.get(Collection, collection_id)
            assert row is not None
            return row.updated_at

    return server.call(read())


def recordings_as(server: RunningServer, tenant: Tenant) -> list[str]:
    """A recording of the tenant's business, registered by a key with manage_call_recording."""
    key = server.call(
        server.admin().create_key(
            account_id=tenant.account_id, business_id=tenant.business_id, scopes=[Scope.MANAGE_CALL_RECORDING]
        )
    )
    with server.http(key.plaintext) as client:
        return recordings(client, 1, "curated")


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "", {"name": ""}, "name"),
        ("POST", "", {"name": "   "}, "name"),
        ("POST", "", {"name": "x" * 101}, "name"),
        ("POST", "", {"name": "ok", "color": "red"}, "color"),
        ("POST", "", {"name": "ok", "color": "#12345"}, "color"),
        ("POST", "", {"name": "ok", "color": "#GGGGGG"}, "color"),
        ("POST", "", {"name": "ok", "description": "d" * 1001}, "description"),
        ("PATCH", "{id}", {"name": ""}, "name"),
        ("PATCH", "{id}", {"color": "D6FF3A"}, "color"),
        ("PATCH", "{id}", {"description": "d" * 1001}, "description"),
        ("POST", "{id}/items", {"callRecordingIds": []}, "callRecordingIds"),
        ("POST", "{id}/items", {}, "callRecordingIds"),
        ("POST", "{id}/items", {"callRecordingIds": ["not-a-uuid"]}, "callRecordingIds"),
        (
            "POST",
            "{id}/items",
            {"callRecordingIds": [str(uuid.uuid4()) for _ in range(1001)]},
            "callRecordingIds",
        ),
        ("DELETE", "{id}/items", None, "callRecordingId"),
        ("DELETE", "{id}/items?callRecordingId=nope", None, "callRecordingId"),
        ("GET", "?limit=0", None, "limit"),
        ("GET", "?limit=201", None, "limit"),
        ("GET", "?offset=-1", None, "offset"),
        ("GET", "{id}?limit=500", None, "limit"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_changes_nothing(
    server: RunningServer, method: str, path: str, body: dict[str, Any] | None, field: str
) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        (rec,) = recordings(client, 1)
        collection = create(client, description="before", color="#000000")
        add(client, collection["id"], [rec])
        before = client.get(f"/api/v1/collections/{collection['id']}").json()
        url = "/api/v1/collections" + (
            "/" + path.format(id=collection["id"]) if path.startswith("{") else path
        )
        response = client.request(method, url, json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_argument"
        assert response.json()["message"].startswith(f"{field}: ")
        assert client.get(f"/api/v1/collections/{collection['id']}").json() == before
        assert client.get("/api/v1/collections").json()["total"] == 1


def test_paging(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        ids = recordings(client, 5)
        made = [create(client, name=f"C{i}")["id"] for i in range(3)]
        page = client.get("/api/v1/collections", params={"limit": 2, "offset": 1}).json()
        assert (page["total"], page["limit"], page["offset"]) == (3, 2, 1)
        assert [c["id"] for c in page["items"]] == [made[1], made[0]]  # newest first
        for recording_id in ids:  # one call each: distinct addedAt order
            add(client, made[0], [recording_id])
        items = client.get(f"/api/v1/collections/{made[0]}", params={"limit": 2, "offset": 2}).json()
        assert (items["itemCount"], items["limit"], items["offset"]) == (5, 2, 2)
        assert [i["callRecordingId"] for i in items["items"]] == [ids[2], ids[1]]
        # 1000 ids in one call is the documented maximum.
        many = [str(uuid.uuid4()) for _ in range(999)] + [ids[0]]
        refused = add(client, made[1], many)
        assert refused.status_code == 404 and refused.json()["message"].endswith("and 994 more")


def test_a_thousand_recordings_in_one_call(server: RunningServer) -> None:
    tenant = server.new_tenant()
    ids = [uuid7() for _ in range(1000)]

    async def seed() -> None:
        async with server.service.db.session() as session:
            session.add_all(
                Recording(
                    id=i,
                    business_id=tenant.business_id,
                    origin="upload",
                    source="upload",
                    external_id=f"bulk-{n}",
                    call_at=datetime(2026, 5, 20, tzinfo=UTC),
                    direction="in",
                )
                for n, i in enumerate(ids)
            )
            await session.commit()

    server.call(seed())
    with server.http(tenant.business_key) as client:
        collection = create(client)
        assert add(client, collection["id"], ids).json() == {"ok": True, "added": 1000, "itemCount": 1000}
        page = client.get(f"/api/v1/collections/{collection['id']}", params={"limit": 200}).json()
        assert len(page["items"]) == 200 and page["itemCount"] == 1000
        assert remove(client, collection["id"], ids).json() == {"ok": True, "removed": 1000, "itemCount": 0}


def test_concurrent_adds_of_the_same_recordings_add_each_once(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        ids = recordings(client, 40)
        collection = create(client)

    def add_all(order: int) -> int:
        with server.http(tenant.business_key) as client:
            response = add(client, collection["id"], ids[::-1] if order % 2 else ids)
            assert response.status_code == 200, response.text
            return int(response.json()["added"])

    with ThreadPoolExecutor(4) as pool:
        added = list(pool.map(add_all, range(4)))
    assert sum(added) == 40
    with server.http(tenant.business_key) as client:
        assert client.get(f"/api/v1/collections/{collection['id']}").json()["itemCount"] == 40
        # A PATCH with nothing in it changes nothing, not even the stored updated_at.
        before = stored_updated_at(server, collection["id"])
        assert client.patch(f"/api/v1/collections/{collection['id']}", json={}).json() == {"ok": True}
        assert stored_updated_at(server, collection["id"]) == before
        client.patch(f"/api/v1/collections/{collection['id']}", json={"name": "Renamed"})
        assert stored_updated_at(server, collection["id"]) > before


def test_a_recording_deleted_while_it_is_added_is_not_found(server: RunningServer) -> None:
    """The add reads the recording, then another transaction deletes it before the insert's
    foreign key check: the answer is 404 naming it (not a 500), and nothing is added."""
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        gone, kept = recordings(client, 2)
        collection = create(client)
    engine = create_engine(sync_url(server.settings.resolved_database_url))
    install_sqlite_pragmas(engine)
    try:
        with engine.connect() as conn, ThreadPoolExecutor(1) as pool:
            deleting = conn.begin()
            conn.execute(text("DELETE FROM recording WHERE id = :id"), {"id": gone})
            with server.http(tenant.business_key) as client:
                adding = pool.submit(add, client, collection["id"], [kept, gone])
                time.sleep(0.5)  # the add now waits on the deleting transaction's lock
                deleting.commit()
                response = adding.result(timeout=20)
    finally:
        engine.dispose()
    assert response.status_code == 404, response.text
    assert response.json()["message"] == f"callRecordingIds: no such recording in this business: {gone}"
    with server.http(tenant.business_key) as client:
        assert client.get(f"/api/v1/collections/{collection['id']}").json()["itemCount"] == 0


def test_the_same_over_grpc(server: RunningServer) -> None:
    tenant = server.new_tenant()
    with server.http(tenant.business_key) as client:
        a, b = recordings(client, 2)
    auth = [("authorization", f"Bearer {tenant.business_key}")]
    with server.channel() as channel:
        stub = collections_pb2_grpc.CollectionServiceStub(channel)
        created = stub.CreateCollection(
            pb.CreateCollectionRequest(name="QA Q2", color="#D6FF3A"), metadata=auth
        )
        assert created.name == "QA Q2" and created.color == "#D6FF3A" and created.item_count == 0
        added = stub.AddCollectionItems(
            pb.AddCollectionItemsRequest(id=created.id, call_recording_ids=[a, b]), metadata=auth
        )
        assert (added.ok, added.added, added.item_count) == (True, 2, 2)
        got = stub.GetCollection(pb.GetCollectionRequest(id=created.id), metadata=auth)
        assert [i.call_recording_id for i in got.items] == [b, a] and got.items[0].recording.id == b
        listed = stub.ListCollections(pb.ListCollectionsRequest(), metadata=auth)
        assert listed.total == 1 and listed.items[0].item_count == 2
        assert stub.UpdateCollection(
            pb.UpdateCollectionRequest(id=created.id, description="for new staff"), metadata=auth
        ).ok
        got = stub.GetCollection(pb.GetCollectionRequest(id=created.id), metadata=auth)
        assert (got.name, got.description, got.color) == ("QA Q2", "for new staff", "#D6FF3A")
        removed = stub.RemoveCollectionItems(
            pb.RemoveCollectionItemsRequest(id=created.id, call_recording_id=[a]), metadata=auth
        )
        assert (removed.removed, removed.item_count) == (1, 1)

        with pytest.raises(grpc.RpcError) as raised:
            stub.AddCollectionItems(
                pb.AddCollectionItemsRequest(id=created.id, call_recording_ids=["x"]), metadata=auth
            )
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(raised.value).reason == "invalid_argument"
        assert _bad_field(raised.value) == "callRecordingIds"

        assert stub.DeleteCollection(pb.DeleteCollectionRequest(id=created.id), metadata=auth).ok
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetCollection(pb.GetCollectionRequest(id=created.id), metadata=auth)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_info(raised.value).reason == "collection_not_found"

        viewer = server.new_tenant("Viewer", scopes=(Scope.VIEW_RECORDING_ALL,))
        with pytest.raises(grpc.RpcError) as raised:
            stub.CreateCollection(
                pb.CreateCollectionRequest(name="x"),
                metadata=[("authorization", f"Bearer {viewer.business_key}")],
            )
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_info(raised.value).reason == "insufficient_scope"


def _bad_field(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return str(bad.field_violations[0].field)
    raise AssertionError("no BadRequest in the status details")


def test_openapi_lists_the_collection_routes(server: RunningServer) -> None:
    with server.http() as client:
        paths = client.get("/openapi.json").json()["paths"]
    assert set(paths["/api/v1/collections"]) == {"get", "post"}
    assert set(paths["/api/v1/collections/{id}"]) == {"get", "patch", "delete"}
    assert set(paths["/api/v1/collections/{id}/items"]) == {"post", "delete"}
