"""JSON-RPC 1.0 methods of the CRDS server and their dispatcher.

Every failure becomes a JSON-RPC error object with a message: the crds client only
looks at jsonrpc["error"]["message"], and an HTML 500 would reach it as an opaque
"HTTP Error 500" after several retries.
"""
import functools
import inspect
import json
import logging

from django.conf import settings

from . import contexts, infocache, queries, rules, sqlitedb
from .errors import NotServed, RpcError, UnknownContext, UnknownFile
from .models import MAPPING, REFERENCE

log = logging.getLogger("crds_server.jsonrpc")

METHODS = {}

__all__ = ["METHODS", "NotServed", "RpcError", "UnknownContext", "UnknownFile", "handle", "error_response"]


def method(func):
    METHODS[func.__name__] = func
    return func


def _check_observatory(observatory):
    if observatory not in (None, "", "none", settings.CRDS_OBSERVATORY):
        raise RpcError(f"this server serves observatory {settings.CRDS_OBSERVATORY!r}, not {observatory!r}")


def _file_url(request, filename, filekind=None):
    """The unchecked_get URL of catalog file `filename` (of `filekind` when given)."""
    if not isinstance(filename, str):
        raise RpcError("the file name must be a string")
    kind = queries.observatory_files().filter(name=filename).values_list("filekind", flat=True).first()
    if kind is None or (filekind is not None and kind != filekind):
        what = {MAPPING: "mapping", REFERENCE: "reference"}.get(filekind, "file")
        raise UnknownFile(f"{what} {filename!r} is not known to this CRDS server")
    section = "mappings" if kind == MAPPING else "references"
    return request.build_absolute_uri(f"/unchecked_get/{section}/{settings.CRDS_OBSERVATORY}/{filename}")


# ------------------------------------------------------------------ server and catalog


@method
def get_server_info(request):
    base = request.build_absolute_uri("/unchecked_get/")
    obs = settings.CRDS_OBSERVATORY
    references, mappings = f"{base}references/{obs}/", f"{base}mappings/{obs}/"
    return infocache.cached((references, mappings), lambda: queries.server_info(references, mappings))


@method
def get_file_info(request, pipeline_context, filename):
    info = queries.file_info_map([filename]).get(filename)
    if info == "NOT FOUND":
        raise UnknownFile(f"file {filename!r} is not known to this CRDS server")
    return info


@method
def get_file_info_map(request, observatory, files=None, fields=None):
    _check_observatory(observatory)
    if files is not None and not isinstance(files, (list, tuple)):
        raise RpcError("files must be a list of file names or null")
    return queries.file_info_map(files, fields)


@method
def list_mappings(request, observatory=None, glob_pattern="*"):
    _check_observatory(observatory)
    return queries.list_names(MAPPING, glob_pattern)


@method
def list_references(request, observatory=None, glob_pattern="*"):
    _check_observatory(observatory)
    return queries.list_names(REFERENCE, glob_pattern)


@method
def get_catalog_counts(request):
    return queries.catalog_counts()


@method
def get_sqlite_db(request, observatory=None):
    """The catalog as an SQLite file, zlib-compressed and base64-encoded (crds sync --fetch-sqlite-db)."""
    _check_observatory(observatory)
    return sqlitedb.encoded_database()


@method
def get_url(request, pipeline_context, filename):
    return _file_url(request, filename)


@method
def get_mapping_url(request, pipeline_context, mapping):
    return _file_url(request, mapping, MAPPING)


@method
def get_reference_url(request, pipeline_context, reference):
    return _file_url(request, reference, REFERENCE)


# ------------------------------------------------------------------ contexts


@method
def get_default_context(request, observatory=None, state=None):
    """The context of `state`: latest/operational (the default; build and versions too here), or edit."""
    _check_observatory(observatory)
    return contexts.by_state(state)


@method
def get_build_context(request, observatory=None, calver=None):
    """No calibration-software-to-context table here: the build context is the latest one."""
    _check_observatory(observatory)
    return contexts.by_state("build")


@method
def get_context_by_date(request, date, observatory=None):
    """The mapping `date` names: a date, <obs>-<date>, <obs>-<instrument>-<date>, or a state like <obs>-edit."""
    _check_observatory(observatory)
    return contexts.resolve(date)


@method
def get_context_history(request, observatory=None):
    _check_observatory(observatory)
    return queries.context_history()


@method
def get_mapping_names(request, pipeline_context):
    """Every mapping in the closure of `pipeline_context` (a .pmap, .imap or .rmap), itself included."""
    return rules.mapping_names(contexts.resolve(pipeline_context))


@method
def get_reference_names(request, pipeline_context):
    """Every reference the closure of `pipeline_context` names."""
    return rules.reference_names(contexts.resolve(pipeline_context))


@method
def get_required_parkeys(request, context):
    return rules.required_parkeys(contexts.resolve(context))


@method
def get_system_versions(request, master_version, context=None):
    name = contexts.by_state("versions") if context in (None, "", "none", "null", "None") else contexts.resolve(context)
    raise NotServed(
        f"this CRDS server records no calibration software versions (no SYSTEM CALVER rules are served with {name!r})"
    )


# ------------------------------------------------------------------ best references


@method
def get_best_references(request, context, header, reftypes=None):
    """{reftype: reference} for dataset `header` under `context`, computed by the crds library."""
    return rules.best_references(contexts.resolve(context), header, reftypes)


@method
def get_best_references_by_header_map(request, context, header_map, reftypes=None):
    """{dataset_id: {reftype: reference}}; a dataset whose header cannot be matched maps to "NOT FOUND <why>"."""
    if not isinstance(header_map, dict):
        raise RpcError("header_map must be an object {dataset_id: header}")
    name = contexts.resolve(context)
    answers = {}
    for dataset_id, header in header_map.items():
        try:
            answers[dataset_id] = rules.best_references(name, header, reftypes)
        except RpcError as exc:
            answers[dataset_id] = f"NOT FOUND {exc}"
    return answers


# ------------------------------------------------------------------ services this server does not offer

_NO_ARCHIVE = ("this CRDS server has no archive dataset service: {method} needs the archive's dataset "
               "parameters; give the client dataset files or headers instead (crds bestrefs --files, "
               "crds.getrecommendations(header))")
_NO_PIPELINE_CONTEXTS = "this CRDS server does not keep pipelines' pushed contexts ({method})"
_NO_JPOLL = "this CRDS server has no web submissions and so no jpoll channels ({method})"


def _not_served(name, message):
    def refuse(request, *args, **kwargs):
        raise NotServed(message.format(method=name))

    refuse.__name__ = name
    refuse.__doc__ = message.format(method=name)
    METHODS[name] = refuse


for _name in ("get_dataset_headers_by_id", "get_dataset_headers_by_instrument", "get_dataset_ids",
              "get_best_references_by_ids", "get_aui_best_references", "get_affected_datasets"):
    _not_served(_name, _NO_ARCHIVE)
for _name in ("push_remote_context", "get_remote_context"):
    _not_served(_name, _NO_PIPELINE_CONTEXTS)
for _name in ("jpoll_pull_messages", "jpoll_abort"):
    _not_served(_name, _NO_JPOLL)


# ------------------------------------------------------------------ dispatch


def error_response(request_id, name, message):
    return {"result": None, "error": {"name": name, "message": message, "code": -32000}, "id": request_id}


@functools.cache
def _signature(func):
    return inspect.signature(func)


def _bind(func, request, params):
    """Call `func` with positional or named `params`, reporting a mismatch as bad params."""
    if params is None:
        params = []
    if isinstance(params, dict):
        args, kwargs = [], params
    elif isinstance(params, list):
        args, kwargs = params, {}
    else:
        raise RpcError("params must be a list or an object")
    try:
        _signature(func).bind(request, *args, **kwargs)
    except TypeError as exc:
        raise RpcError(f"bad parameters for {func.__name__}: {exc}") from exc
    return func(request, *args, **kwargs)


def _too_deep(value, limit):
    """Whether `value` nests arrays/objects more than `limit` deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
                         if isinstance(child, (list, dict)))
    return False


def handle(request, body):
    """Return the JSON-RPC response dict for raw request `body`."""
    limit = settings.CRDS_JSONRPC_MAX_DEPTH
    try:
        call = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return error_response(None, "ParseError", f"request is not valid JSON: {exc}")
    except RecursionError:  # the parser's own recursion limit, far past ours
        call = None
        too_deep = True
    else:
        too_deep = _too_deep(call, limit)
    if too_deep:
        return error_response(None, "ParseError", f"request nests arrays/objects more than {limit} levels deep; "
                                                  "no CRDS call needs more than a few")
    if not isinstance(call, dict) or not isinstance(call.get("method"), str):
        return error_response(None, "InvalidRequest", "request must be an object with a 'method' string")
    request_id = call.get("id")
    func = METHODS.get(call["method"])
    if func is None:
        name = call["method"]
        return error_response(request_id, "MethodNotFound",
                              f"unknown method {name[:80]!r}" + ("..." if len(name) > 80 else ""))
    try:
        result = _bind(func, request, call.get("params"))
    except RpcError as exc:
        return error_response(request_id, exc.name, str(exc))
    except Exception as exc:
        log.exception("JSON-RPC %s failed", call["method"])
        return error_response(request_id, type(exc).__name__, f"internal error in {call['method']}: {exc}")
    return {"result": result, "error": None, "id": request_id}
