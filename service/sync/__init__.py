"""Sync: the one owner of sync jobs and sync state (queue.py), the scheduler that starts
pulls (scheduler.py), the pull runner (runner.py), and what a pull writes: listed calls
(ingest.py) and their audio (download.py), under the provider lease (lease.py)."""
