"""Putting files into the cache and the catalog."""
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .filenames import (
    filekind_of,
    fits_instrument,
    guess_instrument_and_reftype,
    is_safe_name,
)
from .models import MAPPING, CatalogFile, ContextHistory


class IngestError(Exception):
    """A file that cannot be ingested; the message says which and why."""


@dataclass
class Ingested:
    name: str
    status: str  # "added" or "unchanged"
    size: int
    sha1sum: str


def sha1_of(path):
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir(filekind, observatory=None):
    section = "mappings" if filekind == MAPPING else "references"
    return os.path.join(settings.CRDS_PATH, section, observatory or settings.CRDS_OBSERVATORY)


def _copy_into_cache(source, destination):
    """Copy under a temporary name in the destination directory, then rename: never half a file."""
    directory = os.path.dirname(destination)
    os.makedirs(directory, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=".ingest-", dir=directory)
    try:
        with os.fdopen(handle, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        os.chmod(temp, 0o644)  # served by Apache directly under mod_wsgi kinds
        os.replace(temp, destination)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def ingest_file(path, state="delivered", description=""):
    """Copy `path` into the cache and record it; identical re-ingests are no-ops."""
    name = os.path.basename(path)
    if not is_safe_name(name):
        raise IngestError(f"{name!r}: not a valid CRDS file name")
    if not os.path.isfile(path):
        raise IngestError(f"{path}: no such file")
    size, sha1sum = os.path.getsize(path), sha1_of(path)
    existing = CatalogFile.objects.filter(name=name).first()
    if existing is not None:
        if existing.sha1sum != sha1sum or existing.size != size:
            raise IngestError(
                f"{name!r}: a different file with this name is already in the catalog "
                f"(sha1sum {existing.sha1sum}); CRDS file names are never reused"
            )
        return Ingested(name, "unchanged", size, sha1sum)

    obs = settings.CRDS_OBSERVATORY
    filekind = filekind_of(name)
    instrument, reftype = guess_instrument_and_reftype(name, obs)
    if not instrument and filekind != MAPPING:
        instrument = fits_instrument(path)
    destination = os.path.join(cache_dir(filekind), name)
    if os.path.exists(destination) and sha1_of(destination) != sha1sum:
        raise IngestError(f"{name!r}: the cache already holds a different {destination}")
    _copy_into_cache(path, destination)
    with transaction.atomic():
        CatalogFile.objects.create(
            name=name, observatory=obs, filekind=filekind, instrument=instrument, reftype=reftype,
            size=size, sha1sum=sha1sum, state=state, description=description,
        )
    return Ingested(name, "added", size, sha1sum)


def record_context(context, description="", start_date=None):
    """Make `context` the operational context (a new newest history entry), from now or `start_date`.

    In whole seconds, as the history is shown and as clients name dates.
    """
    start = (start_date or timezone.now()).replace(microsecond=0)
    return ContextHistory.objects.create(
        observatory=settings.CRDS_OBSERVATORY, context=context, description=description, start_date=start
    )
