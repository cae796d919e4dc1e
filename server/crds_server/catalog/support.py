"""Support directories a backup carries: server_files/catalogs and the cache's config/<obs>."""
import os
import pprint
import tempfile

from django.conf import settings

from . import queries

SERVER_FILES_DIRS = ("catalogs", "deliveries", "uploads", "ingest", "archive_cache")


def _write_atomic(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(temp, 0o644)
    os.replace(temp, path)


def ensure_layout():
    """Create the cache and server_files directories a server expects to exist."""
    obs = settings.CRDS_OBSERVATORY
    for section in ("references", "mappings", "config", "pickles"):
        os.makedirs(os.path.join(settings.CRDS_PATH, section, obs), exist_ok=True)
    for name in SERVER_FILES_DIRS:
        os.makedirs(os.path.join(settings.CRDS_SERVER_FILES, name), exist_ok=True)


def write_catalog_listing():
    """server_files/catalogs/<obs>_catalog.txt: "name size sha1sum state" per file, one query."""
    obs = settings.CRDS_OBSERVATORY
    rows = queries.observatory_files().order_by("name").values_list("name", "size", "sha1sum", "state")
    lines = (f"{name} {size} {sha1} {state}\n" for name, size, sha1, state in rows.iterator(chunk_size=5000))
    path = os.path.join(settings.CRDS_SERVER_FILES, "catalogs", f"{obs}_catalog.txt")
    _write_atomic(path, "".join(lines))
    return path


def write_cache_config():
    """config/<obs>/ as the crds client would leave it, so the server's own cache works offline.

    The URLs come from CRDS_SERVER_URL (the public identity): there is no request here.
    """
    obs = settings.CRDS_OBSERVATORY
    base = settings.CRDS_SERVER_URL + "/unchecked_get"
    info = queries.server_info(f"{base}/references/{obs}/", f"{base}/mappings/{obs}/")
    config_dir = os.path.join(settings.CRDS_PATH, "config", obs)
    _write_atomic(os.path.join(config_dir, "server_config"), pprint.pformat(info))
    _write_atomic(os.path.join(config_dir, "bad_files.txt"), "\n".join(info["bad_files_list"]))
    # The cache is organized references/<obs>/<file>, which the client calls "flat".
    _write_atomic(os.path.join(config_dir, "ref_cache_subdir_mode"), "flat\n")
    return config_dir
