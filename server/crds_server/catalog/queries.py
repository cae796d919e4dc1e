"""Catalog questions answered with one aggregate query each (no per-row work)."""
import base64
import fnmatch
import gzip
import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata

from django.conf import settings
from django.db import connections
from django.db.models import Count, Q
from django.utils import timezone

from . import warm
from .models import (
    INFO_FIELDS,
    MAPPING,
    REFERENCE,
    CatalogFile,
    ContextHistory,
    file_info,
)


def observatory_files():
    return CatalogFile.objects.filter(observatory=settings.CRDS_OBSERVATORY)


def operational_context():
    """Newest context-history entry, or None before anything was seeded or ingested."""
    entry = (
        ContextHistory.objects.filter(observatory=settings.CRDS_OBSERVATORY)
        .order_by("-start_date", "-id")
        .values_list("context", flat=True)
        .first()
    )
    return entry


def edit_context():
    """Most recently delivered pipeline mapping; falls back to the operational one."""
    newest = (
        observatory_files()
        .filter(filekind=MAPPING, name__endswith=".pmap")
        .order_by("-delivery_date", "-name")
        .values_list("name", flat=True)
        .first()
    )
    return newest or operational_context()


def catalog_counts():
    counts = observatory_files().aggregate(
        references=Count("id", filter=Q(filekind=REFERENCE)),
        mappings=Count("id", filter=Q(filekind=MAPPING)),
    )
    return {
        "references": counts["references"],
        "mappings": counts["mappings"],
        "contexts": ContextHistory.objects.filter(observatory=settings.CRDS_OBSERVATORY).count(),
        "operational_context": operational_context(),
        "observatory": settings.CRDS_OBSERVATORY,
        "kind": settings.CRDS_KIND,
    }


def list_names(filekind, glob_pattern="*"):
    names = observatory_files().filter(filekind=filekind).order_by("name").values_list("name", flat=True)
    if glob_pattern in (None, "", "*"):
        return list(names)
    return fnmatch.filter(names.iterator(), glob_pattern)


def bad_files():
    return list(
        observatory_files()
        .filter(Q(blacklisted=True) | Q(rejected=True))
        .order_by("name")
        .values_list("name", flat=True)
    )


def context_history():
    """[(start_date, context, description), ...] newest first, as the client sorts them."""
    rows = ContextHistory.objects.filter(observatory=settings.CRDS_OBSERVATORY).values_list(
        "start_date", "context", "description"
    )
    return [(start.strftime("%Y-%m-%d %H:%M:%S"), context, desc) for start, context, desc in rows]


def download_metadata():
    """{name: {"size": str, "sha1sum": str}} for every file, compressed like CRDS does.

    It is part of the first get_server_info after every restart, so on a 500,000-file
    catalog its speed is the server's start-up time: the JSON is written by hand when one
    scan shows no name or sha1sum needs escaping (0.2 s instead of 0.8 s for json.dumps).
    """
    query = observatory_files().values_list("name", "size", "sha1sum")
    sql, params = query.query.sql_with_params()
    with connections[query.db].cursor() as cursor:  # the ORM's query, without its per-row work (-0.2 s)
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    if SAFE_TOKENS.fullmatch("".join(name + sha1 for name, _, sha1 in rows)):
        text = "{" + ", ".join('"%s": {"size": "%d", "sha1sum": "%s"}' % row for row in rows) + "}"
    else:
        text = json.dumps({name: {"size": str(size), "sha1sum": sha1} for name, size, sha1 in rows})
    return _encode_json_text(text)


SAFE_TOKENS = re.compile(r"[A-Za-z0-9_.+-]*")


def crds_encode(obj):
    """The crds client's proxy.crds_decode() format: gzipped JSON, base64."""
    return _encode_json_text(json.dumps(obj))


def _encode_json_text(text):
    """gzip (level 1) in one member per core, concatenated: gzip.decompress, which the
    client uses, reads them as one stream. Level 9 in one piece took 2.0 s of the first
    get_server_info on a 500,000-file catalog, for a payload only 7% smaller."""
    data = text.encode()
    pieces = max(1, min(os.cpu_count() or 1, len(data) // (4 << 20)))
    size = -(-len(data) // pieces)
    chunks = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:  # zlib releases the GIL
        compressed = b"".join(pool.map(lambda chunk: gzip.compress(chunk, compresslevel=1), chunks))
    return {"crds_encoded": "1.0", "crds_payload": base64.b64encode(compressed).decode("ascii")}


def crds_version():
    """Version block the client reports (it reads only ["str"])."""
    try:
        crds = metadata.version("crds")
    except metadata.PackageNotFoundError:
        crds = "unknown"
    return {"str": f"{crds}, crdsops-server", "version": crds, "server": "crdsops", "kind": settings.CRDS_KIND}


def file_info_map(names=None, fields=None):
    """{name: info} for `names` (all files when None); unknown names map to "NOT FOUND"."""
    query = observatory_files()
    if names is not None:
        query = query.filter(name__in=list(names))
    rows = query.values(*INFO_FIELDS).iterator(chunk_size=5000)
    infos = {row["name"]: file_info(row) for row in rows}
    if fields:
        infos = {name: {key: info[key] for key in fields if key in info} for name, info in infos.items()}
    if names is not None:
        for name in names:
            infos.setdefault(name, "NOT FOUND")
    return infos


def server_info(reference_base, mapping_base):
    obs = settings.CRDS_OBSERVATORY
    operational = operational_context()
    bad = bad_files()
    return {
        "observatory": obs,
        "kind": settings.CRDS_KIND,
        "server_url": settings.CRDS_SERVER_URL,
        "operational_context": operational,
        "latest_context": operational,
        "edit_context": edit_context(),
        # `<obs>-versions` (calibration software versions) is not kept apart here.
        "versions_context": operational,
        "bad_files": " ".join(bad),
        "bad_files_list": bad,
        # No checked (authenticated) delivery exists here, so both point at the same place.
        "reference_url": {"unchecked": {obs: reference_base}, "checked": {obs: reference_base}},
        "mapping_url": {"unchecked": {obs: mapping_base}, "checked": {obs: mapping_base}},
        "download_metadata": warm.download_metadata() or download_metadata(),
        "last_synced": timezone.now().strftime("%Y-%m-%d %H:%M:%S"),
        "crds_version": crds_version(),
        "mappings": list_names(MAPPING),
        "context_history": context_history(),
        # ConfigInfo.effective_mode reads force_remote_mode unguarded when CRDS_MODE=local.
        "force_remote_mode": False,
        "max_archive_size": 5 * 10**9,
        "max_headers_per_rpc": 500,
        # which release of the server's code answers (`inv upgrade`); "" when run from a checkout
        "crdsops_release": settings.CRDS_RELEASE,
    }
