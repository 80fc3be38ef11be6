"""Where a sealed recording's audio is stored: its blob is named by the ciphertext's sha256
(service/recordings/sealed.py), not by the audio's, so tests that look at blobs ask here."""

from __future__ import annotations

from service.storage.db import Database
from service.storage.models import RecordingKey


async def sealed_blob(db: Database, recording_id: str) -> str:
    async with db.session() as session:
        key = await session.get(RecordingKey, recording_id, populate_existing=True)
    assert key is not None, f"recording {recording_id} has no sealed audio"
    return key.blob_sha256
