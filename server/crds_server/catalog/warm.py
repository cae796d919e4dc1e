"""download_metadata computed before a restart, so the first get_server_info is cheap.

On a 500,000-file catalog the first get_server_info after a start reads every row and
compresses the listing; a restore or mirror used to pay that while the server was
stopped. Now, while the old server still serves, ``manage.py warm_server_info`` runs
against the *staged* database and writes ``CRDS_SERVER_INFO_WARM`` (the payload and the
catalog's fingerprint: count, highest id, total size, newest delivery). After the swap
the new server uses it only if the live catalog has the same fingerprint and the file is
young (``MAX_AGE``); crdsops removes it once the health check passed. Anything else (no
file, unreadable, another fingerprint, too old) means computing it as before.

The server's log says which: one line when it takes download_metadata from the file, one
when a file is there but not used (and why); nothing when there is no file.
"""
import json
import logging
import os
import time

from django.conf import settings
from django.db.models import Count, Max, Sum

MAX_AGE = 600  # seconds: a restore's stopped window, with margin

log = logging.getLogger("crds_server.catalog.warm")


def fingerprint():
    from crds_server.catalog.queries import observatory_files

    agg = observatory_files().aggregate(n=Count("id"), top=Max("id"), size=Sum("size"), last=Max("delivery_date"))
    return [agg["n"], agg["top"], int(agg["size"] or 0), agg["last"].isoformat() if agg["last"] else None]


def write(path):
    from crds_server.catalog.queries import download_metadata

    data = {"fingerprint": fingerprint(), "download_metadata": download_metadata()}
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)
    return data["fingerprint"]


def download_metadata():
    """The warm payload when it fits the live catalog; else None."""
    path = settings.CRDS_SERVER_INFO_WARM
    if not path:
        return None
    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        return None  # no warm file: the usual case, nothing to say
    try:
        if age > MAX_AGE:
            log.info("server info: warm file %s ignored, %.0f s old (limit %d s)", path, age, MAX_AGE)
            return None
        with open(path) as handle:
            data = json.load(handle)
        live = json.loads(json.dumps(fingerprint()))
        if data.get("fingerprint") != live:
            log.info("server info: warm file %s ignored, made for catalog %s, the live one is %s",
                     path, data.get("fingerprint"), live)
            return None
        metadata = data["download_metadata"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.info("server info: warm file %s ignored, unreadable (%s)", path, err)
        return None
    log.info("server info: download_metadata from the warm file %s, fingerprint ok (%s)", path, live)
    return metadata
