"""The console script as an operator uses it: keys, rotation, production refusal, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.test_providers_rest import SEED_CREATE
from tests.support.postgres import free_port

CLI = [sys.executable, "-m", "service"]


def run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def base_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CALLVAULT_DATA_DIR": str(tmp_path / "var"),
        "CALLVAULT_GRPC_PORT": str(free_port()),
        "CALLVAULT_HTTP_PORT": str(free_port()),
        "CALLVAULT_GRACE_SECONDS": "3",
        # The seed's provider points at pbx.example.com: nothing here may try to reach it.
        "CALLVAULT_SYNC_ENABLED": "0",
    }


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*CLI, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if (
                httpx.get(f"http://127.0.0.1:{env['CALLVAULT_HTTP_PORT']}/healthz", timeout=1).status_code
                == 200
            ):
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
    raise AssertionError("server did not answer /healthz")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def test_keys_rotation_and_graceful_stop(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    boot = json.loads(run(env, "bootstrap", "--name", "Rotate Co").stdout)
    key_file = tmp_path / "var" / "master-keys.json"
    assert not key_file.exists()

    proc = start(env)  # the dev start makes a key file on first run
    assert key_file.exists() and oct(key_file.stat().st_mode & 0o777) == "0o600"
    api = f"http://127.0.0.1:{env['CALLVAULT_HTTP_PORT']}/api/v1/providers"
    headers = {"Authorization": f"Bearer {boot['apiKey']}"}
    ids = [
        httpx.post(api, json={**SEED_CREATE, "name": f"PBX {i}"}, headers=headers).json()["id"]
        for i in range(3)
    ]
    code, err = stop(proc)
    assert code == 0, err
    assert "created a development master key file" in err
    assert '"msg": "stopped"' in err and boot["apiKey"] not in err and "s3cret" not in err

    assert "key 2 is now primary" in run(env, "master-keys", "add").stdout
    refused = run(env, "master-keys", "retire", "1", check=False)
    assert refused.returncode != 0 and "still seals" in refused.stderr
    assert "re-sealed 3 secrets under key 2" in run(env, "master-keys", "reseal").stdout
    assert "re-sealed 0 secrets" in run(env, "master-keys", "reseal").stdout  # resumable, idempotent
    assert "retired key 1" in run(env, "master-keys", "retire", "1").stdout
    assert list(json.loads(key_file.read_text())["keys"]) == ["2"]

    proc = start(env)
    try:
        for provider_id in ids:
            got = httpx.get(f"{api}/{provider_id}", headers=headers)
            assert got.status_code == 200 and got.json()["username"] == "apiuser"
        # PATCH re-validates against the opened secrets, proving they still open after rotation.
        patch = httpx.patch(f"{api}/{ids[0]}", json={"name": "Renamed"}, headers=headers)
        assert patch.json() == {"ok": True}
    finally:
        stop(proc)


def test_account_business_and_key_commands(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    run(env, "migrate")
    account = run(env, "accounts", "create", "--name", "Acct").stdout.strip()
    business = run(env, "businesses", "create", "--account", account, "--name", "Shop One").stdout.strip()
    made = run(env, "keys", "create", "--account", account, "--scopes", "manage_provider_config")
    key = made.stdout.strip()
    assert key.startswith("crk_") and "shown only now" in made.stderr
    listing = run(env, "keys", "list", "--account", account).stdout
    assert key not in listing and key[:12] in listing and "active" in listing
    key_id = listing.split()[0]
    bad_scope = run(env, "keys", "create", "--account", account, "--scopes", "superuser", check=False)
    assert bad_scope.returncode != 0

    proc = start(env)
    try:
        url = f"http://127.0.0.1:{env['CALLVAULT_HTTP_PORT']}/api/v1/providers"
        headers = {"Authorization": f"Bearer {key}", "X-Business-Id": business}
        assert httpx.get(url, headers=headers).json() == {"items": []}
        run(env, "keys", "revoke", key_id)
        # Another process's revocation is refused within the key cache's bound of 1 s.
        deadline = time.monotonic() + 1.5
        while httpx.get(url, headers=headers).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(url, headers=headers).status_code == 401
    finally:
        stop(proc)


def test_production_start_without_keys_refuses(tmp_path: Path) -> None:
    env = {**base_env(tmp_path), "CALLVAULT_ENV": "production"}
    result = run(env, "serve", check=False)
    assert result.returncode != 0
    assert "no master keys" in result.stderr and "CALLVAULT_MASTER_KEYS" in result.stderr
    assert "Traceback" not in result.stderr


def test_retention_command(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    business = json.loads(run(env, "bootstrap", "--name", "Keep Co").stdout)["businessId"]
    assert "90 days" in run(env, "businesses", "retention", "--business", business, "--days", "90").stdout
    assert ": off" in run(env, "businesses", "retention", "--business", business, "--days", "off").stdout
    for days, message in (("soon", "a whole number of days, or off"), ("0", "at least 1 day")):
        refused = run(env, "businesses", "retention", "--business", business, "--days", days, check=False)
        assert refused.returncode != 0 and message in refused.stderr and "Traceback" not in refused.stderr
    missing = run(env, "businesses", "retention", "--business", "nope", "--days", "7", check=False)
    assert missing.returncode != 0 and "no business nope" in missing.stderr


def test_provider_retention_command(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    boot = json.loads(run(env, "bootstrap", "--name", "Periods Co").stdout)
    proc = start(env)
    try:
        api = f"http://127.0.0.1:{env['CALLVAULT_HTTP_PORT']}/api/v1/providers"
        with httpx.Client(headers={"Authorization": f"Bearer {boot['apiKey']}"}) as client:
            provider = client.post(api, json=SEED_CREATE).json()["id"]
        shown = run(env, "providers", "retention", "--provider", provider, "--days", "7").stdout
        assert shown.strip() == f"retention for provider {provider}: 7 days"
        off = run(env, "providers", "retention", "--provider", provider, "--days", "off").stdout
        assert "off (the business's period applies)" in off
        for days, message in (("-1", "a whole number of days, or off"), ("0", "at least 1 day")):
            refused = run(env, "providers", "retention", "--provider", provider, "--days", days, check=False)
            assert refused.returncode != 0 and message in refused.stderr and "Traceback" not in refused.stderr
        missing = run(env, "providers", "retention", "--provider", "nope", "--days", "7", check=False)
        assert missing.returncode != 0 and "no provider nope" in missing.stderr
    finally:
        code, err = stop(proc)
    assert code == 0, err


def test_blobs_sweep_frees_deleted_audio_after_the_grace_period(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    boot = json.loads(run(env, "bootstrap", "--name", "Sweep Co").stdout)
    proc = start(env)
    try:
        api = f"http://127.0.0.1:{env['CALLVAULT_HTTP_PORT']}/api/v1/recordings"
        with httpx.Client(headers={"Authorization": f"Bearer {boot['apiKey']}"}) as client:
            rec = client.post(api, json={"dataId": "d1", "callAt": "2026-05-01T00:00:00Z", "direction": "in"})
            uploaded = client.put(f"{api}/{rec.json()['id']}/audio", content=b"RIFF" + os.urandom(4000))
            assert uploaded.status_code == 200, uploaded.text
            blob = next((tmp_path / "var" / "blobs").rglob(uploaded.json()["sha256"]))
            assert client.delete(f"{api}/{rec.json()['id']}").status_code == 200
        assert run(env, "blobs", "sweep").stdout.strip() == "freed 0 unreferenced blobs"  # 1 h grace
        assert blob.exists()
        # Beside the running server, as safe as its own sweeps.
        assert (
            run(env, "blobs", "sweep", "--grace-seconds", "0").stdout.strip() == "freed 1 unreferenced blobs"
        )
        assert not blob.exists()
    finally:
        code, err = stop(proc)
    assert code == 0, err
