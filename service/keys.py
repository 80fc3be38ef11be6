"""Where the master keys come from: the environment, else a key file; never the database."""

from __future__ import annotations

import logging

from service.config import Settings
from service.sealing import Keyring, create_key_file, load_key_file, parse_keys_env

log = logging.getLogger("callvault.keys")


class MissingMasterKeys(RuntimeError):
    pass


def load_keyring(settings: Settings, *, create_in_dev: bool = True) -> Keyring:
    if settings.master_keys:
        return parse_keys_env(settings.master_keys)
    path = settings.resolved_key_file
    if path.exists():
        return load_key_file(path)
    if settings.production or not create_in_dev:
        raise MissingMasterKeys(
            'no master keys: set CALLVAULT_MASTER_KEYS ("id:base64key,...", first is primary) '
            f"or CALLVAULT_KEY_FILE (a key file made by `callvault keys init`); {path} does not exist"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    keyring = create_key_file(path)
    log.warning(
        "created a development master key file at %s: back it up, or secrets sealed with it are lost", path
    )
    return keyring
