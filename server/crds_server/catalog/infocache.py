"""A short-lived per-process cache for get_server_info.

Every client asks for server info first, and its download_metadata covers the whole
catalog (hundreds of thousands of rows on ops): compute it at most once per
CRDS_SERVER_INFO_TTL seconds per process. A restart (restore, mirror, rerun) starts empty,
so only a live ingest is seen up to TTL seconds (plus one computation) late.

Only the first request of a process waits for the computation. Once an answer is older than
the TTL, the request that notices starts one background refresh and every request goes on
getting the older answer until the new one is ready: a refresh on 500,000 rows takes seconds
on a busy machine (a restore staging next to the server), and the server used to answer
nothing for that long every TTL seconds.
"""
import threading
import time

from django.conf import settings
from django.db import connections

_lock = threading.Lock()
_entries = {}  # key -> (monotonic time computed, value)
_refreshing = set()  # keys with a background refresh under way
_generation = [0]  # bumped by clear(): a refresh started before it must not write its answer after


def cached(key, compute):
    ttl = settings.CRDS_SERVER_INFO_TTL
    if ttl <= 0:
        return compute()
    entry = _entries.get(key)
    if entry is None:
        with _lock:  # the first caller computes; the others wait for its answer
            entry = _entries.get(key)
            if entry is None:
                entry = _entries[key] = (time.monotonic(), compute())
        return entry[1]
    if time.monotonic() - entry[0] >= ttl:
        _refresh_in_background(key, compute)
    return entry[1]


def _refresh_in_background(key, compute):
    with _lock:
        if key in _refreshing:
            return
        _refreshing.add(key)
    generation = _generation[0]

    def refresh():
        try:
            value = compute()
            with _lock:
                if _generation[0] == generation:
                    _entries[key] = (time.monotonic(), value)
        except Exception:  # noqa: BLE001 - the old answer stays; the next request past the TTL retries
            pass
        finally:
            _refreshing.discard(key)
            connections.close_all()  # this thread's own database connections

    threading.Thread(target=refresh, name="server-info-refresh", daemon=True).start()


def clear():
    with _lock:
        _generation[0] += 1
        _entries.clear()
