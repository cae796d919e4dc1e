"""A short-lived per-process cache for get_server_info.

Every client asks for server info first, and its download_metadata covers the whole
catalog (hundreds of thousands of rows on ops): compute it at most once per
CRDS_SERVER_INFO_TTL seconds per process, one thread at a time. A restart (restore,
mirror, rerun) starts empty, so only a live ingest is seen up to TTL seconds late.
"""
import threading
import time

from django.conf import settings

_lock = threading.Lock()
_entries = {}


def cached(key, compute):
    ttl = settings.CRDS_SERVER_INFO_TTL
    if ttl <= 0:
        return compute()
    entry = _entries.get(key)
    if entry and time.monotonic() - entry[0] < ttl:
        return entry[1]
    with _lock:  # the first caller computes; the others wait for its answer
        entry = _entries.get(key)
        if entry and time.monotonic() - entry[0] < ttl:
            return entry[1]
        value = compute()
        _entries[key] = (time.monotonic(), value)
        return value


def clear():
    _entries.clear()
