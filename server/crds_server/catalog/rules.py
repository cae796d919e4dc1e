"""The server's CRDS rules: contexts loaded by the crds library from the server's own cache.

Best references, mapping and reference closures and required parameters are answered by
the crds library itself (crds.core.rmap), on the mappings in `$CRDS_PATH/mappings/<obs>`,
so they are what the client's local mode computes from a synced cache.

Inside the server the crds library must never reach a CRDS server (itself included):
`_crds()` puts it in its own server-less mode, in which every JSON-RPC call it would make
fails at once, and loads mappings only from an explicit path.

Loaded contexts are kept per process (CACHE_SIZE of them, fully loaded so concurrent
requests only read them), keyed by the mappings directory and the context name; an entry
is reused while the directory's mtime is unchanged, and reloaded otherwise. The catalog
gains a mapping only by an ingest, which puts the file into that directory (a new mtime);
restores and mirrors swap catalog and cache together under the running server and write a new
catalog generation, on which serving.drop_catalog_caches() calls clear(): a context loaded
before that is never used after it, even one whose load was under way when it came (it is
not stored). One stat per request, no query: the catalog is asked only when a context is
(re)loaded.
"""
import atexit
import os
import shutil
import tempfile
import threading
from collections import OrderedDict

from django.conf import settings

from . import queries
from .errors import RpcError, UnknownContext
from .models import MAPPING

CACHE_SIZE = 4  # an ops context, fully loaded, is large; operational, edit and a date or two fit
SERVERLESS_URL = "https://crds-serverless-mode.stsci.edu"  # crds.client.proxy refuses any URL with "serverless"

_lock = threading.Lock()
_loaded = OrderedDict()  # (mappings dir, name) -> (signature, mapping)
_generation = [0]  # bumped by clear(): a load started before it must not store its mapping after
_offline = False


def _library_dirs():
    """Give astropy (imported by crds) writable config and cache directories.

    Under Apache the server runs as the web user with the HOME it was started with, which it
    cannot write; astropy would fail creating ~/.astropy. A private directory per process
    then serves (XDG_CONFIG_HOME and XDG_CACHE_HOME), removed when the process ends.
    """
    home = os.path.expanduser("~")
    if os.environ.get("XDG_CONFIG_HOME") and os.environ.get("XDG_CACHE_HOME"):
        return
    if os.path.isdir(home) and os.access(home, os.W_OK):
        return
    private = tempfile.mkdtemp(prefix="crds-server-libs-")
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        os.environ.setdefault(name, private)


def _crds():
    """crds.core.rmap and crds.core.utils, with the library's JSON-RPC client switched off."""
    global _offline
    if not _offline:
        _library_dirs()
    from crds.client import api
    from crds.core import rmap, utils

    if not _offline:
        api.set_crds_server(SERVERLESS_URL)
        _offline = True
    return rmap, utils


def mappings_dir():
    return os.path.join(settings.CRDS_PATH, "mappings", settings.CRDS_OBSERVATORY)


def _signature(directory):
    try:
        return os.stat(directory).st_mtime_ns
    except FileNotFoundError:
        return None


def load(name):
    """The loaded mapping `name` (a .pmap, .imap or .rmap of the catalog), from the per-process cache."""
    directory = mappings_dir()
    signature = _signature(directory)
    key = (directory, name)
    with _lock:
        entry = _loaded.get(key)
        if entry and entry[0] == signature:
            _loaded.move_to_end(key)
            return entry[1]
        generation = _generation[0]
    if not queries.observatory_files().filter(filekind=MAPPING, name=name).exists():
        raise UnknownContext(f"{name!r} is not a mapping known to this CRDS server")
    rmap, _utils = _crds()
    try:
        mapping = rmap.load_mapping(name, path=directory)
        if hasattr(mapping, "force_load"):
            mapping.force_load()  # every nested mapping now: later requests only read
    except Exception as exc:
        raise RpcError(f"cannot load {name!r} from the server's cache: {exc}") from exc
    with _lock:
        if _generation[0] == generation:  # else a new catalog came meanwhile: serve this once, keep nothing
            _loaded[key] = (signature, mapping)
            _loaded.move_to_end(key)
            while len(_loaded) > CACHE_SIZE:
                _loaded.popitem(last=False)
    return mapping


def clear():
    with _lock:
        _generation[0] += 1
        _loaded.clear()


def mapping_names(name):
    return sorted(load(name).mapping_names())


def reference_names(name):
    return sorted(load(name).reference_names())


def required_parkeys(name):
    """{instrument: [parameter, ...]} for a .pmap, [parameter, ...] for an .imap or .rmap."""
    parkeys = load(name).get_required_parkeys()
    if isinstance(parkeys, dict):
        return {instrument: list(keys) for instrument, keys in parkeys.items()}
    return list(parkeys)


def nested(name, instrument=None, filekind=None):
    """The .imap of `instrument` in context `name`, or the .rmap of `filekind` in it."""
    mapping = load(name)
    try:
        if instrument:
            mapping = mapping.get_imap(instrument)
        if filekind:
            mapping = mapping.get_rmap(filekind)
    except Exception as exc:
        raise UnknownContext(f"{name!r} has no {'/'.join(filter(None, (instrument, filekind)))}: {exc}") from exc
    return mapping.basename


def best_references(name, header, reftypes=None):
    """{reftype: reference or "NOT FOUND ..."} as crds.heavy_client.hv_best_references computes them locally."""
    if not isinstance(header, dict):
        raise RpcError("header must be an object of matching parameters")
    if reftypes is not None and not (isinstance(reftypes, (list, tuple)) and all(isinstance(t, str) for t in reftypes)):
        raise RpcError("reftypes must be a list of reference type names or null")
    context = load(name)
    _rmap, utils = _crds()
    try:
        conditioned = utils.condition_header(header)
        include = reftypes
        if include is None:  # the client's default: the types the locator deems applicable
            include = set(context.locate.header_to_reftypes(conditioned, name))
            include = list(set(context.get_filekinds(conditioned)) & include)
        return context.get_best_references(context.minimize_header(conditioned), include=include)
    except Exception as exc:
        raise RpcError(f"cannot compute best references under {name!r}: {exc}") from exc
