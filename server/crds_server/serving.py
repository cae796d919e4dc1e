"""Serving through crdsops' swaps and maintenance: the first middleware of every request.

The crds client never retries, so a refused or reset request is a failed pipeline job.
crdsops therefore swaps a restored or mirrored catalog in under the running server and
tells it so through three files (named by the environment, docs/internals.md; each
optional: unset means off):

* ``CRDS_HOLD_FILE``: while it exists a swap is under way; a new request waits (polling)
  until it is gone, at most ``CRDS_HOLD_TIMEOUT`` seconds, then is served anyway. A hold
  file last touched longer ago than that (plus a margin) was left by a crdsops that died:
  it holds nothing.
* ``CRDS_GENERATION_FILE``: rewritten after each swap. A process that sees new content
  drops what it cached of the catalog; each thread, as it first sees it, closes its
  database connections (a persistent SQLite connection would go on reading the renamed-away
  file; a MySQL one may hold a snapshot of the tables swapped out).
* ``CRDS_MAINTENANCE_FILE`` (``inv maintenance on``): JSON-RPC answers 503 with
  ``Retry-After`` and the file's message, as the reason phrase (the one part of a non-200
  answer the crds client prints) and as a JSON-RPC error body. Files keep downloading.

A request carrying ``X-Crdsops-Probe`` (crdsops' own health checks) is never held nor
refused: the check that decides whether a swap worked must not wait for the swap.
Without any of these files a request costs two or three ``os.stat`` calls.
"""
import json
import logging
import os
import threading
import time

from django.conf import settings
from django.db import connections
from django.http import JsonResponse

log = logging.getLogger("crds_server.serving")

PROBE_HEADER = "HTTP_X_CRDSOPS_PROBE"  # X-Crdsops-Probe, as WSGI spells it
POLL = 0.015  # seconds between looks at the hold file
STALE_MARGIN = 2.0  # seconds past the hold timeout after which an untouched hold file is stale
DEFAULT_MESSAGE = "this CRDS server is in maintenance; try again later"
DEFAULT_RETRY_AFTER = 300


def _stat(path):
    try:
        return os.stat(path)
    except OSError:  # absent (the usual case) or unreadable: nothing to obey
        return None


# ------------------------------------------------------------------ hold


def wait_out_hold(path, timeout):
    """Wait while hold file ``path`` exists and is fresh, at most ``timeout`` s; return the seconds waited."""
    started = time.monotonic()
    status = _stat(path) if path else None
    while status is not None:
        # looked at again each time: a crdsops that touches the file keeps it fresh
        if time.time() - status.st_mtime > timeout + STALE_MARGIN:
            _say_stale(path, status.st_mtime, timeout)
            break
        if time.monotonic() - started >= timeout:
            log.warning("request held %.1f s, the hold timeout; served while %s still exists",
                        time.monotonic() - started, path)
            break
        time.sleep(POLL)
        status = _stat(path)
    return time.monotonic() - started


_stale_said = set()  # (path, mtime) of stale hold files already logged: once each, not per request


def _say_stale(path, mtime, timeout):
    if (path, mtime) not in _stale_said:
        _stale_said.add((path, mtime))
        log.warning("hold file %s is stale (untouched for over %s s; left by a crdsops that died?): "
                    "holding nothing", path, timeout + STALE_MARGIN)


# ------------------------------------------------------------------ generation


def drop_catalog_caches():
    """Forget everything this process cached of the catalog (every such cache is cleared here)."""
    from crds_server.catalog import infocache, rules

    infocache.clear()  # get_server_info (its next computation still takes a fitting warm file)
    rules.clear()  # loaded contexts: a swap may replace mappings without a new directory mtime


_UNSEEN = object()  # a thread that has not looked at the generation yet


class Generation:
    """The catalog generation this process and each of its threads last saw."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._read = (None, None)  # (stat signature, content) of the last read
        self._process = None  # the content the process's caches belong to
        self._local = threading.local()

    def current(self):
        """The file's content, read again only when its stat signature changed."""
        status = _stat(self.path)
        signature = status and (status.st_ino, status.st_mtime_ns, status.st_size)
        read_signature, content = self._read
        if signature != read_signature:
            try:
                with open(self.path, encoding="utf-8", errors="replace") as handle:
                    content = handle.read().strip()
            except OSError:
                content = None
            self._read = (signature, content)
        return content

    def check(self):
        """Drop the caches and this thread's connections when the generation moved on."""
        current = self.current()
        seen = getattr(self._local, "seen", _UNSEEN)
        if seen == current:
            return
        with self._lock:
            if self._process != current:
                if self._process is not None or current is not None:
                    drop_catalog_caches()
                    log.info("catalog generation %s: caches dropped", current)
                self._process = current
        # this thread's connection predates the swap (CONN_MAX_AGE); on a thread's first request it
        # has none yet, and closing would end a test case's transaction
        if seen is not _UNSEEN:
            connections.close_all()
        self._local.seen = current


# ------------------------------------------------------------------ maintenance


def maintenance_notice(path=None):
    """The maintenance file's notice {message, retry_after, since, by}, or None when it is off."""
    path = path if path is not None else settings.CRDS_MAINTENANCE_FILE
    if not path or _stat(path) is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except (OSError, ValueError) as err:  # still on: the file is there; say so plainly
        log.warning("maintenance file %s unreadable (%s): in maintenance with the default message", path, err)
        data = {}
    try:
        retry_after = max(1, int(data.get("retry_after") or DEFAULT_RETRY_AFTER))
    except (TypeError, ValueError):
        retry_after = DEFAULT_RETRY_AFTER
    return {"message": str(data.get("message") or DEFAULT_MESSAGE), "retry_after": retry_after,
            "since": str(data.get("since") or ""), "by": str(data.get("by") or "")}


def _reason_phrase(message):
    """``message`` as an HTTP reason phrase: printable ASCII on one line, not too long."""
    text = "".join(ch if " " <= ch <= "~" else " " for ch in message)
    return " ".join(text.split())[:200] or "Service Unavailable"


def maintenance_response(notice):
    from crds_server.catalog.jsonrpc import error_response

    response = JsonResponse(error_response(None, "ServerMaintenance", notice["message"]), status=503,
                            reason=_reason_phrase(f"CRDS server maintenance: {notice['message']}"))
    response["Retry-After"] = str(notice["retry_after"])
    return response


# ------------------------------------------------------------------ the middleware


class ServingMiddleware:
    """Hold during a swap, notice a new catalog generation, refuse JSON-RPC in maintenance."""

    def __init__(self, get_response):
        self.get_response = get_response
        self.hold_file = settings.CRDS_HOLD_FILE
        self.hold_timeout = settings.CRDS_HOLD_TIMEOUT
        self.generation = Generation(settings.CRDS_GENERATION_FILE) if settings.CRDS_GENERATION_FILE else None
        self.maintenance_file = settings.CRDS_MAINTENANCE_FILE

    def __call__(self, request):
        probe = PROBE_HEADER in request.META
        if not probe and self.hold_file:
            wait_out_hold(self.hold_file, self.hold_timeout)
        if self.generation is not None:
            self.generation.check()  # probes too: the check after a swap must see the new catalog
        if not probe and self.maintenance_file and request.path_info.startswith("/json/"):
            notice = maintenance_notice(self.maintenance_file)
            if notice is not None:
                return maintenance_response(notice)
        return self.get_response(request)
