"""`callvault`: serve, migrate, and the operator's commands (accounts, businesses, API
keys, master-key rotation). Keys are printed once, when made, and never again."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from service import logs
from service.admin import Admin, AdminError
from service.audit.chain import record_system, verify_all
from service.audit.events import Action, Actor, Target, TargetKind
from service.auth import Scope
from service.blobs.factory import blob_store, close_blob_store
from service.canary import check_canaries, forget_canary
from service.config import Settings
from service.keys import MissingMasterKeys, load_keyring
from service.processes import ProcessRegistry
from service.recordings.blobrefs import BlobSweeper
from service.recordings.retention import set_provider_retention, set_retention
from service.recordings.sealed import SealedAudio, seal_legacy
from service.rotation import RotationRefused, reseal_fleet, still_needed
from service.sealing import SealingError, add_key, create_key_file, load_key_file, retire_key, write_key_file
from service.storage.db import Database
from service.storage.migrate import upgrade
from service.storage.models import ApiKey
from service.workers import run_workers

T = TypeVar("T")


def _settings() -> Settings:
    return Settings.from_env()


async def _serve(settings: Settings) -> None:
    from service.server import Server, Service

    server = Server(Service(settings))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, server.service.keyring.request_reload)
    # Before listening: a SIGTERM that arrives while we start (a balancer may already have
    # probed us) is a clean stop as soon as the start is done, never a kill mid-start.
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    print(
        f"callvault serving: gRPC on {settings.grpc_host}:{server.grpc_port}, "
        f"REST on http://{settings.http_host}:{server.http_port}",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    await server.stop()


def serve_one(settings: Settings) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the server listens for it: never die of it
    logs.configure(settings.log_level)
    asyncio.run(_serve(settings))


def cmd_serve(args: argparse.Namespace) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the server listens for it: never die of it
    settings = _settings()
    logs.configure(settings.log_level)
    if not args.no_migrate:
        upgrade(settings.resolved_database_url)
    if settings.workers <= 1:
        asyncio.run(_serve(settings))
        return
    load_keyring(settings)  # once, here: a dev key file is made before the workers race to
    raise SystemExit(run_workers(settings, serve_one))


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = _settings()
    upgrade(settings.resolved_database_url)
    print("database is at the latest schema")


def _with_db(fn: Callable[[Database], Awaitable[T]]) -> T:
    """Run one database task for a command, and close the database after it."""

    async def run() -> T:
        db = Database(_settings().resolved_database_url)
        try:
            return await fn(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def _admin(fn: Callable[[Admin], Awaitable[T]]) -> T:
    return _with_db(lambda db: fn(Admin(db)))


def cmd_account_create(args: argparse.Namespace) -> None:
    print(_admin(lambda a: a.create_account(args.name)))


def cmd_business_create(args: argparse.Namespace) -> None:
    print(_admin(lambda a: a.create_business(args.account, args.name, args.slug)))


def retention_days(text: str) -> int | None:
    if text == "off":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError("a whole number of days, or off")
    return int(text)


def cmd_business_retention(args: argparse.Namespace) -> None:
    days = args.days

    _with_db(lambda db: set_retention(db, args.business, days, actor=Actor.cli()))
    print(f"retention for {args.business}: {'off' if days is None else f'{days} days'}")


def cmd_provider_retention(args: argparse.Namespace) -> None:
    days = args.days
    _with_db(lambda db: set_provider_retention(db, args.provider, days, actor=Actor.cli()))
    shown = "off (the business's period applies)" if days is None else f"{days} days"
    print(f"retention for provider {args.provider}: {shown}")


def cmd_blobs_sweep(args: argparse.Namespace) -> None:
    """What the server's periodic sweep does, now: safe beside running servers."""
    settings = _settings()
    grace = settings.blob_grace_seconds if args.grace_seconds is None else args.grace_seconds

    async def sweep(db: Database) -> int:
        store = blob_store(settings)
        try:
            return await BlobSweeper(db, store, grace_seconds=grace).sweep()
        finally:
            await close_blob_store(store)

    print(f"freed {_with_db(sweep)} unreferenced blobs")


def cmd_recordings_seal(args: argparse.Namespace) -> None:
    """Seal audio stored before sealing; resumable, and safe beside running servers."""
    settings = _settings()
    keyring = load_keyring(settings, create_in_dev=False)

    async def run(db: Database) -> int:
        await check_canaries(db, keyring)  # never seal under keys the servers do not hold
        store = blob_store(settings)
        try:
            sealed = SealedAudio(db, store, keyring)
            return await seal_legacy(db, sealed, say=lambda line: print(line, flush=True))
        finally:
            await close_blob_store(store)

    _with_db(run)


def cmd_key_create(args: argparse.Namespace) -> None:
    created = _admin(
        lambda a: a.create_key(
            account_id=args.account,
            business_id=args.business,
            scopes=args.scopes,
            name=args.name,
            agent_keys=args.agent or (),
        )
    )
    print(f"key id: {created.id}", file=sys.stderr)
    print("the key is shown only now; store it safely:", file=sys.stderr)
    print(created.plaintext)


def cmd_key_list(args: argparse.Namespace) -> None:
    async def keys_and_agents(admin: Admin) -> tuple[list[ApiKey], dict[str, list[str]]]:
        keys = await admin.list_keys(args.account)
        return keys, await admin.key_agents(k.id for k in keys)

    keys, agents = _admin(keys_and_agents)
    for key in keys:
        state = "revoked" if key.revoked_at else "active"
        level = f"business {key.business_id}" if key.business_id else "account"
        bound = f"  agents [{' '.join(agents[key.id])}]" if key.id in agents else ""
        print(f"{key.id}  {key.prefix}...  {state:7}  {level}  [{key.scopes}]{bound}  {key.name}")


def cmd_key_revoke(args: argparse.Namespace) -> None:
    _admin(lambda a: a.revoke_key(args.key_id))
    print(f"revoked {args.key_id}")


def cmd_bootstrap(args: argparse.Namespace) -> None:
    """An account, a business and a business key with every scope: the quickest start."""

    async def run(admin: Admin) -> tuple[str, str, str]:
        account = await admin.create_account(args.name)
        business = await admin.create_business(account, args.name)
        key = await admin.create_key(account_id=account, business_id=business, scopes=[Scope.MANAGE_ALL])
        return account, business, key.plaintext

    upgrade(_settings().resolved_database_url)
    account, business, key = _admin(run)
    print(json.dumps({"accountId": account, "businessId": business, "apiKey": key}, indent=2))


def _key_file(settings: Settings) -> Any:
    if settings.master_keys:
        raise SystemExit("master keys come from CALLVAULT_MASTER_KEYS: rotate them there, not in a file")
    return settings.resolved_key_file


def _master(key_id: int) -> Target:
    return Target(TargetKind.MASTER_KEY, str(key_id))


def cmd_audit_verify(args: argparse.Namespace) -> None:
    """Walk every chain (or one business's); the first broken link of each is reported and
    the command fails, so it can run from cron or CI."""

    reports = _with_db(lambda db: verify_all(db, args.business))
    broken = [r for r in reports if r.broken is not None]
    for report in reports:
        state = f"BROKEN: {report.broken}" if report.broken else "ok"
        print(f"chain {report.chain}: {report.events} events, head {report.head or '-'}: {state}")
    if broken:
        raise SystemExit(f"callvault: {len(broken)} of {len(reports)} audit chains are broken")
    print(f"all {len(reports)} audit chains are intact")


def cmd_master_init(args: argparse.Namespace) -> None:
    path = _key_file(_settings())
    path.parent.mkdir(parents=True, exist_ok=True)
    keyring = create_key_file(path)
    print(f"created {path} with key {keyring.primary_id}")


def _registry(db: Database, settings: Settings) -> ProcessRegistry:
    """The fleet's view, for reading only: a command is not a server process and never beats."""
    return ProcessRegistry(
        db, heartbeat_seconds=settings.heartbeat_seconds, dead_after_seconds=settings.dead_after_seconds
    )


def cmd_master_add(args: argparse.Namespace) -> None:
    settings = _settings()
    path = _key_file(settings)
    current = load_key_file(path)
    keyring = add_key(current)

    async def run(db: Database) -> None:
        await check_canaries(db, current)  # never extend a key file that is not the fleet's
        write_key_file(path, keyring)
        await check_canaries(db, keyring)  # the new key's canary
        await record_system(db, Actor.cli(), Action.MASTER_KEY_ADD, _master(keyring.primary_id))

    _with_db(run)
    print(
        f"key {keyring.primary_id} is now primary; running servers load it within "
        f"{settings.key_reload_seconds:g} s (at once on SIGHUP); then run `callvault master-keys reseal`"
    )


def cmd_master_reseal(args: argparse.Namespace) -> None:
    settings = _settings()
    keyring = load_keyring(settings, create_in_dev=False)

    async def run(db: Database) -> int:
        # Re-sealing under bytes the servers do not hold would lose every secret.
        await check_canaries(db, keyring)
        resealed = await reseal_fleet(
            db,
            _registry(db, settings),
            keyring,
            wait_seconds=args.wait,
            say=lambda line: print(line, flush=True),
        )
        await record_system(db, Actor.cli(), Action.MASTER_KEY_RESEAL, _master(keyring.primary_id))
        return resealed

    _with_db(run)


def cmd_master_retire(args: argparse.Namespace) -> None:
    settings = _settings()
    path = _key_file(settings)
    keyring = retire_key(load_key_file(path), args.key_id)

    async def run(db: Database) -> None:
        if reasons := await still_needed(db, _registry(db, settings), [args.key_id]):
            raise RotationRefused(
                f"key {args.key_id} cannot be retired yet: {'; '.join(reasons)}. "
                "Run `callvault master-keys reseal` first"
            )
        write_key_file(path, keyring)
        await forget_canary(db, args.key_id)
        await record_system(db, Actor.cli(), Action.MASTER_KEY_RETIRE, _master(args.key_id))

    _with_db(run)
    print(f"retired key {args.key_id}; running servers drop it at their next reload")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callvault", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server and the REST shim")
    serve.add_argument("--no-migrate", action="store_true", help="do not upgrade the schema first")
    serve.set_defaults(fn=cmd_serve)
    sub.add_parser("migrate", help="upgrade the database schema").set_defaults(fn=cmd_migrate)

    boot = sub.add_parser("bootstrap", help="create an account, a business and a business key (all scopes)")
    boot.add_argument("--name", default="Demo")
    boot.set_defaults(fn=cmd_bootstrap)

    accounts = sub.add_parser("accounts").add_subparsers(dest="action", required=True)
    ac = accounts.add_parser("create")
    ac.add_argument("--name", required=True)
    ac.set_defaults(fn=cmd_account_create)

    businesses = sub.add_parser("businesses").add_subparsers(dest="action", required=True)
    bc = businesses.add_parser("create")
    bc.add_argument("--account", required=True)
    bc.add_argument("--name", required=True)
    bc.add_argument("--slug")
    bc.set_defaults(fn=cmd_business_create)
    br = businesses.add_parser("retention", help="delete recordings of calls older than N days (or off)")
    br.add_argument("--business", required=True)
    br.add_argument("--days", required=True, type=retention_days, help="a whole number of days, or off")
    br.set_defaults(fn=cmd_business_retention)

    providers = sub.add_parser("providers").add_subparsers(dest="action", required=True)
    pr = providers.add_parser(
        "retention",
        help="the provider's own retention period, overriding its business's (off: the business's)",
    )
    pr.add_argument("--provider", required=True)
    pr.add_argument("--days", required=True, type=retention_days, help="a whole number of days, or off")
    pr.set_defaults(fn=cmd_provider_retention)

    blobs = sub.add_parser("blobs", help="stored audio").add_subparsers(dest="action", required=True)
    bs = blobs.add_parser("sweep", help="free audio no recording has used for the grace period")
    bs.add_argument("--grace-seconds", type=float, help="instead of CALLVAULT_BLOB_GRACE_SECONDS")
    bs.set_defaults(fn=cmd_blobs_sweep)

    recordings = sub.add_parser("recordings", help="recordings at rest").add_subparsers(
        dest="action", required=True
    )
    recordings.add_parser(
        "seal", help="seal audio stored before sealing (resumable; safe beside running servers)"
    ).set_defaults(fn=cmd_recordings_seal)

    keys = sub.add_parser("keys", help="API keys").add_subparsers(dest="action", required=True)
    kc = keys.add_parser("create", help="make a key and print it once")
    kc.add_argument("--account", required=True)
    kc.add_argument("--business", help="bind the key to this business (a business key)")
    kc.add_argument("--scopes", nargs="+", required=True, choices=[s.value for s in Scope], metavar="SCOPE")
    kc.add_argument("--name", default="")
    kc.add_argument(
        "--agent",
        action="append",
        metavar="KEY",
        help="bind the key to this agent key (repeatable): with view_recording_self it reads their recordings",
    )
    kc.set_defaults(fn=cmd_key_create)
    kl = keys.add_parser("list")
    kl.add_argument("--account")
    kl.set_defaults(fn=cmd_key_list)
    kr = keys.add_parser("revoke")
    kr.add_argument("key_id")
    kr.set_defaults(fn=cmd_key_revoke)

    audit = sub.add_parser("audit", help="the access audit log").add_subparsers(dest="action", required=True)
    av = audit.add_parser("verify", help="check every hash chain; exits non-zero at a broken link")
    av.add_argument("--business", help="check only this business's chain (`system` for the fleet's)")
    av.set_defaults(fn=cmd_audit_verify)

    master = sub.add_parser("master-keys", help="the keys that seal secrets").add_subparsers(
        dest="action", required=True
    )
    master.add_parser("init", help="create a key file").set_defaults(fn=cmd_master_init)
    master.add_parser("add", help="add a key and make it primary").set_defaults(fn=cmd_master_add)
    ms = master.add_parser(
        "reseal",
        help="re-seal every secret and re-wrap every recording's data key under the primary key, "
        "once every live server seals with it",
    )
    ms.add_argument(
        "--wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long to wait for every live server to load the primary key (default 60)",
    )
    ms.set_defaults(fn=cmd_master_reseal)
    mr = master.add_parser("retire", help="remove a key no secret and no data key uses any more")
    mr.add_argument("key_id", type=int)
    mr.set_defaults(fn=cmd_master_retire)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        args.fn(args)
    except (AdminError, MissingMasterKeys, SealingError, ValueError) as exc:
        raise SystemExit(f"callvault: {exc}") from None
