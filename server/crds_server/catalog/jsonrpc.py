"""JSON-RPC 1.0 methods of the CRDS server and their dispatcher.

Every failure becomes a JSON-RPC error object with a message: the crds client only
looks at jsonrpc["error"]["message"], and an HTML 500 would reach it as an opaque
"HTTP Error 500" after several retries.
"""
import inspect
import json
import logging

from django.conf import settings

from . import infocache, queries
from .models import MAPPING, REFERENCE

log = logging.getLogger("crds_server.jsonrpc")

METHODS = {}


class RpcError(Exception):
    """An error whose message is meant for the caller."""

    name = "CrdsError"


class UnknownFile(RpcError):
    name = "UnknownFile"


def method(func):
    METHODS[func.__name__] = func
    return func


def _check_observatory(observatory):
    if observatory not in (None, "", "none", settings.CRDS_OBSERVATORY):
        raise RpcError(f"this server serves observatory {settings.CRDS_OBSERVATORY!r}, not {observatory!r}")


# ------------------------------------------------------------------ methods


@method
def get_server_info(request):
    base = request.build_absolute_uri("/unchecked_get/")
    obs = settings.CRDS_OBSERVATORY
    references, mappings = f"{base}references/{obs}/", f"{base}mappings/{obs}/"
    return infocache.cached((references, mappings), lambda: queries.server_info(references, mappings))


@method
def get_default_context(request, observatory=None, state=None):
    """Latest/operational, or edit, context; 'build' falls back to latest here."""
    _check_observatory(observatory)
    if state == "edit":
        context = queries.edit_context()
    else:
        context = queries.operational_context()
    if context is None:
        raise RpcError("no operational context has been recorded yet (`manage.py seed_demo` records one)")
    return context


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
def get_context_history(request, observatory=None):
    _check_observatory(observatory)
    return queries.context_history()


@method
def get_catalog_counts(request):
    return queries.catalog_counts()


# ------------------------------------------------------------------ dispatch


def error_response(request_id, name, message):
    return {"result": None, "error": {"name": name, "message": message, "code": -32000}, "id": request_id}


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
        inspect.signature(func).bind(request, *args, **kwargs)
    except TypeError as exc:
        raise RpcError(f"bad parameters for {func.__name__}: {exc}") from exc
    return func(request, *args, **kwargs)


def handle(request, body):
    """Return the JSON-RPC response dict for raw request `body`."""
    try:
        call = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return error_response(None, "ParseError", f"request is not valid JSON: {exc}")
    if not isinstance(call, dict) or not isinstance(call.get("method"), str):
        return error_response(None, "InvalidRequest", "request must be an object with a 'method' string")
    request_id = call.get("id")
    func = METHODS.get(call["method"])
    if func is None:
        return error_response(request_id, "MethodNotFound", f"unknown method {call['method']!r}")
    try:
        result = _bind(func, request, call.get("params"))
    except RpcError as exc:
        return error_response(request_id, exc.name, str(exc))
    except Exception as exc:
        log.exception("JSON-RPC %s failed", call["method"])
        return error_response(request_id, type(exc).__name__, f"internal error in {call['method']}: {exc}")
    return {"result": result, "error": None, "id": request_id}
