"""Master key rotation on a live fleet, with real server processes on one database and one
key file: add, re-seal and retire while a client writes and reads, with no failed call;
reloads on SIGHUP; bad key files refused while the server keeps serving; a wrong key
refused at start by its canary."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import delete, select

from service.processes import LiveProcess, ProcessRegistry
from service.sealing import Keyring, create_key_file, generate_key, write_key_file
from service.storage.db import Database
from service.storage.models import KeyCanary, ProviderSecret, RecordingKey
from tests.e2e.test_crash_and_replicas import tenant_key
from tests.fakes.threecx import FakeThreeCX
from tests.support.process import ServerProcess

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    make: Callable[[str], str] = request.getfixturevalue("database_url_factory")
    return make(request.param)


@pytest.fixture
def pbx() -> Iterator[FakeThreeCX]:
    with FakeThreeCX() as fake:
        yield fake


def fleet_env(database_url: str, key_file: Path, **extra: str) -> dict[str, str]:
    return {
        "CALLVAULT_DATABASE_URL": database_url,
        "CALLVAULT_KEY_FILE": str(key_file),
        "CALLVAULT_ALLOW_PRIVATE_NETWORKS": "1",
        "CALLVAULT_SYNC_ENABLED": "0",
        "CALLVAULT_RATE_LIMIT_PER_MINUTE": "0",
        "CALLVAULT_LOG_LEVEL": "INFO",
        **extra,
    }


def servers(tmp_path: Path, count: int, env: dict[str, str]) -> list[ServerProcess]:
    made = []
    for i in range(count):
        (tmp_path / f"s{i}").mkdir()
        made.append(ServerProcess(tmp_path / f"s{i}", **env))
    return made


def run_db(database_url: str, work: Callable[[Database], Any]) -> Any:
    async def run() -> Any:
        db = Database(database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def live(database_url: str) -> dict[int, LiveProcess]:
    """The fleet as the registry sees it, by pid."""
    return {p.pid: p for p in run_db(database_url, lambda db: ProcessRegistry(db).live())}


def secret_key_ids(database_url: str) -> list[int]:
    async def read(db: Database) -> list[int]:
        async with db.session() as session:
            return list((await session.exec(select(ProviderSecret.key_id))).all())

    return sorted(run_db(database_url, read))


def wait_until(check: Callable[[], object], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def primary_of(database_url: str, server: ServerProcess) -> int | None:
    process = live(database_url).get(server.pid)
    return process.primary_key_id if process else None


def threecx(fake: FakeThreeCX, name: str) -> dict[str, Any]:
    config = {"baseUrl": fake.base_url, "username": fake.client_id, "password": fake.client_secret}
    return {"kind": "threecx", "name": name, "config": config}


class Api:
    """One tenant's REST client for one server process."""

    def __init__(self, server: ServerProcess, key: str) -> None:
        self.client = httpx.Client(
            base_url=f"{server.base_url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def create(self, body: dict[str, Any]) -> str:
        answer = self.client.post("/providers", json=body)
        assert answer.status_code == 200, answer.text
        provider_id: str = answer.json()["id"]
        return provider_id

    def test(self, provider_id: str) -> httpx.Response:
        return self.client.post(f"/providers/{provider_id}/test")

    def close(self) -> None:
        self.client.close()


@dataclass
class Traffic:
    """A client writing and reading through every server for the whole rotation."""

    apis: list[Api]
    fake: FakeThreeCX
    providers: list[str]
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def call(self, step: str, api: Api, target: str, n: int) -> httpx.Response:
        if step == "patch":  # the same password again: sealed anew, under this process's primary
            body = {"config": {"password": self.fake.client_secret}}
            return api.client.patch(f"/providers/{target}", json=body)
        if step == "test":  # through the other process: it opens what this one sealed
            return self.apis[(self.apis.index(api) + 1) % len(self.apis)].test(target)
        if step == "get":
            return api.client.get(f"/providers/{target}")
        return api.client.post("/providers", json=threecx(self.fake, f"P{n}"))

    def run(self) -> None:
        n = 0
        pick = random.Random(4)  # any provider through any server, reproducibly
        while not self.stop.is_set():
            api = self.apis[n % len(self.apis)]
            target = pick.choice(self.providers)
            for step in ("patch", "test", "get", "create") if n % 10 == 0 else ("patch", "test", "get"):
                try:
                    answer = self.call(step, api, target, n)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{step}: {exc!r}")
                    continue
                self.calls += 1
                ok = answer.status_code == 200 and (step != "test" or answer.json() == {"ok": True})
                if not ok:
                    self.failures.append(
                        f"{step} at {answer.request.url}: {answer.status_code} {answer.text}"
                    )
                elif step == "create":
                    self.providers.append(answer.json()["id"])
            n += 1


def test_rotation_on_a_live_fleet_fails_no_call(tmp_path: Path, database_url: str, pbx: FakeThreeCX) -> None:
    key_file = tmp_path / "master-keys.json"
    create_key_file(key_file)
    env = fleet_env(database_url, key_file)
    # The second looks at the file less often: the first seals under the new key before it.
    first, second = servers(tmp_path, 2, env)
    second.env["CALLVAULT_KEY_RELOAD_SECONDS"] = "8"
    first.cli("migrate")
    key = tenant_key(database_url)
    first.start()
    second.start()
    apis = [Api(first, key), Api(second, key)]
    traffic = Traffic(
        apis, pbx, [apis[0].create(threecx(pbx, "First")), apis[1].create(threecx(pbx, "Second"))]
    )
    client = threading.Thread(target=traffic.run, name="traffic")
    client.start()
    try:
        time.sleep(1)
        assert "key 2 is now primary" in first.cli("master-keys", "add").stdout
        resealed = first.cli("master-keys", "reseal")
        assert "every live process seals with key 2" in resealed.stdout, resealed.stdout
        fleet = live(database_url)
        assert {fleet[s.pid].primary_key_id for s in (first, second)} == {2}
        time.sleep(1)
        refused_primary = first.cli("master-keys", "retire", "2", check=False)
        assert refused_primary.returncode != 0 and "primary" in refused_primary.stderr
        assert "retired key 1" in first.cli("master-keys", "retire", "1").stdout
        wait_until(
            lambda: all(p.key_ids == (2,) for p in live(database_url).values()),
            what="both processes to drop key 1",
        )
        time.sleep(1)  # traffic on the retired keyring
    finally:
        traffic.stop.set()
        client.join(30)
    assert traffic.failures == []
    assert traffic.calls > 50 and len(traffic.providers) > 2  # the client was busy all along
    assert set(secret_key_ids(database_url)) == {2}
    assert list(json.loads(key_file.read_text())["keys"]) == ["2"]

    # Every secret opens on both processes: the fake accepts only the right password.
    for api in apis:
        for provider_id in traffic.providers:
            assert api.test(provider_id).json() == {"ok": True}
    # And after a restart, which the issue saw fail.
    assert first.stop() == 0
    first.start()
    restarted = Api(first, key)
    for provider_id in traffic.providers:
        assert restarted.test(provider_id).json() == {"ok": True}
    for api in [*apis, restarted]:
        api.close()
    output = first.output() + second.output()
    assert "master keys reloaded" in output
    for raw in json.loads(key_file.read_text())["keys"].values():
        assert raw not in output
    assert first.stop() == 0 and second.stop() == 0


def test_a_value_under_a_key_not_loaded_yet_makes_the_process_read_the_file(
    tmp_path: Path, database_url: str, pbx: FakeThreeCX
) -> None:
    """The issue's 500: one process had the new key and sealed with it, the other had not."""
    key_file = tmp_path / "master-keys.json"
    create_key_file(key_file)
    # Nothing reloads on its own here: only SIGHUP and an unknown key id.
    first, second = servers(
        tmp_path, 2, fleet_env(database_url, key_file, CALLVAULT_KEY_RELOAD_SECONDS="3600")
    )
    first.cli("migrate")
    key = tenant_key(database_url)
    first.start()
    second.start()
    try:
        one, two = Api(first, key), Api(second, key)
        provider_id = one.create(threecx(pbx, "Shared"))
        first.cli("master-keys", "add")
        assert first.proc is not None
        first.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: primary_of(database_url, first) == 2, what="the first process to load key 2")
        assert primary_of(database_url, second) == 1
        patched = one.client.patch(
            f"/providers/{provider_id}", json={"config": {"password": pbx.client_secret}}
        )
        assert patched.json() == {"ok": True}
        assert secret_key_ids(database_url) == [2]

        assert two.test(provider_id).json() == {"ok": True}
        wait_until(lambda: primary_of(database_url, second) == 2, what="the second process to report key 2")
        one.close()
        two.close()
    finally:
        first.stop()
        second.stop()
    assert "a stored value is sealed with key 2" in second.output()


def test_sighup_reloads_and_bad_key_files_are_refused(
    tmp_path: Path, database_url: str, pbx: FakeThreeCX
) -> None:
    key_file = tmp_path / "master-keys.json"
    create_key_file(key_file)
    (server,) = servers(tmp_path, 1, fleet_env(database_url, key_file, CALLVAULT_KEY_RELOAD_SECONDS="3600"))
    server.cli("migrate")
    key = tenant_key(database_url)
    server.start()
    proc = server.proc
    assert proc is not None
    api = Api(server, key)
    try:
        kept = api.create(threecx(pbx, "Kept under key 1"))
        server.cli("master-keys", "add")
        time.sleep(0.5)
        assert primary_of(database_url, server) == 1  # no reload without SIGHUP here
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: primary_of(database_url, server) == 2, what="SIGHUP to load key 2")
        patched = api.create(threecx(pbx, "Sealed under key 2"))
        assert secret_key_ids(database_url) == [1, 2]
        good = json.loads(key_file.read_text())

        def refused(content: str, why: str) -> None:
            before = server.output().count("refused key file")
            key_file.write_text(content)
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda: server.output().count("refused key file") > before, what=why)
            assert why in server.output().rsplit("refused key file", 1)[1]
            assert proc.poll() is None
            process = live(database_url)[server.pid]
            assert (process.primary_key_id, process.key_ids) == (2, (1, 2))
            for provider_id in (kept, patched):
                assert api.test(provider_id).json() == {"ok": True}
            assert api.client.patch(f"/providers/{patched}", json={"name": "Still writing"}).json() == {
                "ok": True
            }

        refused('{"primary": 2, "keys": {"1": ', "is not valid JSON")
        refused(json.dumps({**good, "keys": {**good["keys"], "2": "bm90IGEga2V5"}}), "key must be 32 bytes")
        refused(
            json.dumps({"primary": 2, "keys": {"2": good["keys"]["2"]}}), "key 1 still seals 1 stored secrets"
        )
        other = base64.b64encode(generate_key()).decode()
        refused(json.dumps({**good, "keys": {**good["keys"], "2": other}}), "key 2 of this key source is not")
        output = server.output()
        for raw in [*good["keys"].values(), other]:
            assert raw not in output

        key_file.write_text(json.dumps(good))  # mended: the same keys again, nothing lost
        os.utime(key_file)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert api.test(kept).json() == {"ok": True}
        api.close()
    finally:
        assert server.stop() == 0, server.output()[-3000:]


def test_env_keys_are_fixed_and_say_so(tmp_path: Path, database_url: str) -> None:
    keys = "1:" + base64.b64encode(generate_key()).decode()
    env = fleet_env(database_url, tmp_path / "unused.json", CALLVAULT_MASTER_KEYS=keys)
    (server,) = servers(tmp_path, 1, env)
    server.cli("migrate")
    server.start()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "need a restart" in server.output(), what="SIGHUP to be answered")
    assert server.proc.poll() is None
    assert server.stop() == 0
    output = server.output()
    assert "they are not reloaded; changing them needs a restart" in output
    assert keys.split(":")[1] not in output


def test_a_wrong_key_under_a_known_id_refuses_to_start(
    tmp_path: Path, database_url: str, pbx: FakeThreeCX
) -> None:
    key_file = tmp_path / "master-keys.json"
    right = create_key_file(key_file)
    (server,) = servers(tmp_path, 1, fleet_env(database_url, key_file))
    server.cli("migrate")
    key = tenant_key(database_url)
    server.start()
    api = Api(server, key)
    api.create(threecx(pbx, "Sealed"))
    api.close()
    assert server.stop() == 0

    # `master-keys add` on a key file that is not the fleet's: refused, the file untouched.
    stray = tmp_path / "stray.json"
    write_key_file(stray, Keyring({1: generate_key()}, 1))
    before = stray.read_text()
    added = ServerProcess(tmp_path, **fleet_env(database_url, stray)).cli("master-keys", "add", check=False)
    assert added.returncode != 0 and "key 1 of this key source is not" in added.stderr
    assert stray.read_text() == before

    wrong = Keyring({1: generate_key()}, 1)
    write_key_file(key_file, wrong)
    refused = server.cli("serve", "--no-migrate", check=False)
    assert refused.returncode != 0
    assert "key 1 of this key source is not the key 1 that sealed its canary" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert json.loads(key_file.read_text())["keys"]["1"] not in refused.stderr

    # A database from before canaries: the stored secrets are the witness.
    async def forget(db: Database) -> None:
        async with db.session() as session:
            await session.exec(delete(KeyCanary))
            await session.commit()

    run_db(database_url, forget)
    refused = server.cli("serve", "--no-migrate", check=False)
    assert (
        refused.returncode != 0
        and "key 1 of this key source is not the key 1 that sealed the stored secrets" in (refused.stderr)
    )

    async def canaries(db: Database) -> list[int]:
        async with db.session() as session:
            return list((await session.exec(select(KeyCanary.key_id))).all())

    assert run_db(database_url, canaries) == []  # nothing was written for the wrong key
    write_key_file(key_file, right)
    server.start()  # the right key starts, and writes its canary again
    try:
        assert run_db(database_url, canaries) == [1]
    finally:
        assert server.stop() == 0


def test_retire_and_reseal_wait_for_a_process_that_still_seals_with_the_old_key(
    tmp_path: Path, database_url: str
) -> None:
    key_file = tmp_path / "master-keys.json"
    create_key_file(key_file)
    (server,) = servers(tmp_path, 1, fleet_env(database_url, key_file, CALLVAULT_KEY_RELOAD_SECONDS="3600"))
    server.cli("migrate")
    server.start()
    assert server.proc is not None
    try:
        server.cli("master-keys", "add")
        (process,) = live(database_url).values()
        assert process.primary_key_id == 1  # it has not reloaded: no SIGHUP, no poll

        retire = server.cli("master-keys", "retire", "1", check=False)
        assert retire.returncode != 0
        assert f"process {process.id} still seals new secrets with key 1" in retire.stderr
        assert "1" in json.loads(key_file.read_text())["keys"]

        reseal = server.cli("master-keys", "reseal", "--wait", "1", check=False)
        assert reseal.returncode != 0
        assert "still do not seal with key 2" in reseal.stderr and process.id in reseal.stderr
        assert "waiting for 1 of 1 live processes to load key 2" in reseal.stdout

        server.proc.send_signal(signal.SIGHUP)
        assert "every live process seals with key 2" in server.cli("master-keys", "reseal").stdout
        assert "retired key 1" in server.cli("master-keys", "retire", "1").stdout
        server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: live(database_url)[server.pid].key_ids == (2,), what="key 1 to be dropped")
    finally:
        assert server.stop() == 0


def test_rotation_leaves_every_recording_playable(tmp_path: Path, database_url: str) -> None:
    """add -> reseal -> retire on two processes sharing the database, key file and blob store,
    with recordings uploaded before and during it: every one plays byte-identical through
    both processes, its data key re-wrapped under key 2, its audio never rewritten."""
    key_file = tmp_path / "master-keys.json"
    create_key_file(key_file)
    first, second = servers(
        tmp_path, 2, fleet_env(database_url, key_file, CALLVAULT_BLOB_DIR=str(tmp_path / "blobs"))
    )
    first.cli("migrate")
    key = tenant_key(database_url)
    first.start()
    second.start()
    clients = [
        httpx.Client(base_url=f"{s.base_url}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        for s in (first, second)
    ]
    stored: dict[str, bytes] = {}

    def upload(n: int) -> None:
        client = clients[n % 2]
        made = client.post(
            "/recordings", json={"dataId": f"r{n}", "callAt": "2026-05-20T08:14:00+07:00", "direction": "in"}
        )
        assert made.status_code == 200, made.text
        audio = random.Random(n).randbytes(300_000 + n)
        put = client.put(
            f"/recordings/{made.json()['id']}/audio", content=audio, headers={"Content-Type": "audio/wav"}
        )
        assert put.status_code == 200, put.text
        stored[made.json()["id"]] = audio

    def blobs() -> dict[str, tuple[int, str]]:
        async def read(db: Database) -> dict[str, tuple[int, str]]:
            async with db.session() as session:
                return {
                    k.recording_id: (k.key_id, k.blob_sha256)
                    for k in (await session.exec(select(RecordingKey))).all()
                }

        return dict(run_db(database_url, read))

    try:
        for n in range(4):
            upload(n)
        assert "key 2 is now primary" in first.cli("master-keys", "add").stdout
        for n in range(4, 8):  # while the processes swap keys
            upload(n)
        before = blobs()
        assert "every live process seals with key 2" in first.cli("master-keys", "reseal").stdout
        assert "retired key 1" in first.cli("master-keys", "retire", "1").stdout
        wait_until(
            lambda: all(p.key_ids == (2,) for p in live(database_url).values()),
            what="both processes to drop key 1",
        )
        after = blobs()
        assert set(after) == set(stored) and {kid for kid, _ in after.values()} == {2}
        assert {rid: sha for rid, (_, sha) in after.items()} == {rid: sha for rid, (_, sha) in before.items()}
        for client in clients:
            for recording_id, audio in stored.items():
                answer = client.get(f"/recordings/{recording_id}/audio")
                assert answer.status_code == 200 and answer.content == audio
                part = client.get(
                    f"/recordings/{recording_id}/audio", headers={"Range": "bytes=262140-262150"}
                )
                assert part.status_code == 206 and part.content == audio[262140:262151]
    finally:
        for client in clients:
            client.close()
    assert first.stop() == 0 and second.stop() == 0
