"""Catalog questions answered with one aggregate query each (no per-row work)."""
import base64
import fnmatch
import gzip
import json
import re
from importlib import metadata

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone

from .models import INFO_FIELDS, MAPPING, REFERENCE, CatalogFile, ContextHistory, file_info


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

    The JSON is written by hand: on a 500,000-file catalog building the dict and
    json.dumps took 0.8 s of the first get_server_info after every restart, this 0.2 s.
    Names and sha1sums need no escaping when they match SAFE_TOKEN; others get json.dumps.
    """
    rows = observatory_files().values_list("name", "size", "sha1sum").iterator(chunk_size=5000)
    entries = ", ".join(
        '%s: {"size": "%d", "sha1sum": %s}' % (_json_str(name), size, _json_str(sha1))
        for name, size, sha1 in rows
    )
    return _encode_json_text("{" + entries + "}")


SAFE_TOKEN = re.compile(r"[A-Za-z0-9_.+-]*")


def _json_str(text):
    return f'"{text}"' if SAFE_TOKEN.fullmatch(text) else json.dumps(text)


def crds_encode(obj):
    """The crds client's proxy.crds_decode() format: gzipped JSON, base64."""
    return _encode_json_text(json.dumps(obj))


def _encode_json_text(text):
    # Level 1: on a 500,000-file catalog level 9 took 2.0 s of a 3.5 s get_server_info (the first
    # answer after every restart) for a payload only 7% smaller.
    payload = base64.b64encode(gzip.compress(text.encode(), compresslevel=1)).decode("ascii")
    return {"crds_encoded": "1.0", "crds_payload": payload}


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
        "bad_files": " ".join(bad),
        "bad_files_list": bad,
        # No checked (authenticated) delivery exists here, so both point at the same place.
        "reference_url": {"unchecked": {obs: reference_base}, "checked": {obs: reference_base}},
        "mapping_url": {"unchecked": {obs: mapping_base}, "checked": {obs: mapping_base}},
        "download_metadata": download_metadata(),
        "last_synced": timezone.now().strftime("%Y-%m-%d %H:%M:%S"),
        "crds_version": crds_version(),
        "mappings": list_names(MAPPING),
        "context_history": context_history(),
        # ConfigInfo.effective_mode reads force_remote_mode unguarded when CRDS_MODE=local.
        "force_remote_mode": False,
        "max_archive_size": 5 * 10**9,
        "max_headers_per_rpc": 500,
    }
