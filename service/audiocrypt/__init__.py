"""Streaming encryption of recordings at rest (service/audiocrypt/stream.py)."""
