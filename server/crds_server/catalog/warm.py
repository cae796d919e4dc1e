"""download_metadata computed before a swap, so the first get_server_info after it is cheap.

On a 500,000-file catalog the first get_server_info of a process reads every row and
compresses the listing (2-3 s). A restore or mirror swaps a staged database in under the
running server; while it loads, ``manage.py warm_server_info --generation G`` waits, then
computes the payload from the *staged* database and writes ``CRDS_SERVER_INFO_WARM``:
the payload, the catalog generation G that the swap will write (``CRDS_GENERATION_FILE``),
and the catalog's highest id.

A process uses the file only when all of these hold (anything else: it computes as before):
- the live generation is G: the swap of exactly that staged database happened, and nothing
  swapped since (a rollback writes another generation);
- the swap was at most ``MAX_AGE`` seconds ago;
- the highest id is still the one the file records: no row was added since (one primary-key
  lookup; the catalog's whole-table fingerprint took 0.3-0.9 s of the restore's critical path
  twice, in the warm-up and again in the first request).
Rows are added by ingests, never changed in name, size or sha1 in place, so within MAX_AGE of
the swap the payload is the one a computation would give.

The server's log says which: one line when it takes download_metadata from the file, one
when a file is there but not used (and why); nothing when there is no file.
"""
import json
import logging
import os
import time

from django.conf import settings
from django.db.models import Max

MAX_AGE = 300  # seconds after the swap: the first get_server_info of every server process, with margin

log = logging.getLogger("crds_server.catalog.warm")


def top_id():
    """The catalog's highest id (any observatory): one primary-key lookup."""
    from crds_server.catalog.models import CatalogFile

    return CatalogFile.objects.aggregate(top=Max("id"))["top"]


def live_generation():
    """(content, seconds since written) of the catalog generation file; (None, None) without one."""
    path = settings.CRDS_GENERATION_FILE
    if not path:
        return None, None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip(), time.time() - os.fstat(handle.fileno()).st_mtime
    except OSError:
        return None, None


def write(path, generation=None):
    """Compute the payload into ``path`` for ``generation`` (default: the live one); return the record."""
    from crds_server.catalog.queries import download_metadata

    if generation is None:
        generation, _ = live_generation()
    data = {"generation": generation, "top": top_id(), "download_metadata": download_metadata()}
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)
    return {"generation": generation, "top": data["top"]}


def download_metadata():
    """The warm payload when it fits the live catalog (module docstring); else None.

    Asked at every computation of get_server_info (each TTL, each process): the swap's age is
    looked at before the file (20 MB of JSON on 500,000 files) is read."""
    path = settings.CRDS_SERVER_INFO_WARM
    if not path or not os.path.exists(path):
        return None  # no warm file: the usual case, nothing to say
    generation, age = live_generation()
    if generation is not None and age > MAX_AGE:
        log.info("server info: warm file %s ignored, the swap to generation %s was %.0f s ago (limit %d s)",
                 path, generation, age, MAX_AGE)
        return None
    try:
        with open(path) as handle:
            data = json.load(handle)
        why = _unfit(data, generation)
        if why:
            log.info("server info: warm file %s ignored, %s", path, why)
            return None
        metadata = data["download_metadata"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.info("server info: warm file %s ignored, unreadable (%s)", path, err)
        return None
    log.info("server info: download_metadata from the warm file %s, made for generation %s", path, data["generation"])
    return metadata


def _unfit(data, generation):
    """Why the warm record ``data`` does not describe the live catalog of ``generation`` ("" when it does)."""
    if data.get("generation") is None or data["generation"] != generation:
        return f"made for catalog generation {data.get('generation')}, the live one is {generation}"
    top = top_id()
    if data.get("top") != top:
        return f"made for a catalog whose highest id was {data.get('top')}, the live one has {top}"
    return ""
