"""HTTP endpoints: JSON-RPC, unchecked file delivery, status page and health check."""
import os

from django.conf import settings
from django.db import connection
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.utils.html import format_html, format_html_join
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from crds_server.serving import maintenance_notice

from . import jsonrpc as rpc
from . import queries
from .filenames import MAPPING_EXTENSIONS, is_safe_name


@csrf_exempt
def jsonrpc(request, method=None, request_id=None):
    if request.method != "POST":
        response = JsonResponse(rpc.error_response(None, "InvalidRequest", "JSON-RPC calls must be POSTed"))
        response.status_code = 405
        return response
    # Always 200: the client reads the error object, urllib would hide it behind HTTPError.
    body, refusal = _read_body(request)
    answer = refusal or rpc.handle(request, body)
    try:
        return JsonResponse(answer)
    except (TypeError, ValueError, RecursionError) as exc:  # a result JSON cannot carry
        return JsonResponse(rpc.error_response(answer.get("id"), "EncodingError", f"cannot encode result: {exc}"))


def _read_body(request):
    """(body, None), or (None, the JSON-RPC error) for a body over ``CRDS_JSONRPC_MAX_BYTES``.

    Read from the stream, not ``request.body``: that stops at Django's form-upload limit
    (DATA_UPLOAD_MAX_MEMORY_SIZE) with an HTML 400. What is left of a refused body is read and
    discarded by the WSGI server (runserver, mod_wsgi), so the connection stays usable.
    """
    limit = settings.CRDS_JSONRPC_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    body = b"" if declared > limit else request.read(limit + 1)
    if declared > limit or len(body) > limit:
        size = f"{declared} bytes" if declared > limit else f"over {limit} bytes"
        return None, rpc.error_response(None, "RequestTooLarge",
                                        f"request body of {size} is over this server's limit of {limit} bytes "
                                        f"({limit / 2**20:g} MiB); send fewer files or headers per call")
    return body, None


def cache_file_path(section, observatory, filename):
    """Path of a deliverable file in the cache, or None when the request is not acceptable."""
    if observatory != settings.CRDS_OBSERVATORY or not is_safe_name(filename):
        return None
    if (section == "mappings") != filename.endswith(MAPPING_EXTENSIONS):
        return None
    path = os.path.join(settings.CRDS_PATH, section, observatory, filename)
    return path if os.path.isfile(path) else None


@require_GET
def unchecked_get(request, section, observatory, filename):
    path = cache_file_path(section, observatory, filename)
    if path is None:
        raise Http404(f"no such CRDS file: {section}/{observatory}/{filename}")
    return FileResponse(open(path, "rb"), as_attachment=False, filename=filename)


@require_GET
def status_page(request):
    counts = queries.catalog_counts()
    rows = [
        ("observatory", settings.CRDS_OBSERVATORY),
        ("kind", settings.CRDS_KIND),
        ("public URL", settings.CRDS_SERVER_URL),
        ("operational context", counts["operational_context"] or "(none)"),
        ("references", counts["references"]),
        ("mappings", counts["mappings"]),
        ("contexts", counts["contexts"]),
        ("database engine", f"{settings.CRDS_DB_ENGINE} ({connection.vendor})"),
    ]
    title = f"CRDS server {settings.CRDS_OBSERVATORY} {settings.CRDS_KIND}"
    body = format_html(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>{}</title></head>"
        "<body><h1>{}</h1>{}<table>{}</table></body></html>",
        title,
        title,
        _maintenance_banner(),
        format_html_join("", "<tr><th align='left'>{}</th><td>{}</td></tr>", rows),
    )
    return HttpResponse(body)


def _maintenance_banner():
    """The maintenance notice, for people who open the page when their client was refused."""
    notice = maintenance_notice()
    if notice is None:
        return ""
    since = f" since {notice['since']}" if notice["since"] else ""
    by = f" by {notice['by']}" if notice["by"] else ""
    return format_html("<p class='maintenance'><strong>In maintenance{}{}:</strong> {} "
                       "(clients are asked to retry after {} s)</p>",
                       since, by, notice["message"], notice["retry_after"])


@require_GET
def health(request):
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # noqa: BLE001 - any DB failure means unhealthy
        return JsonResponse({"status": "error", "database": str(exc)}, status=503)
    return JsonResponse(
        {"status": "ok", "observatory": settings.CRDS_OBSERVATORY, "kind": settings.CRDS_KIND,
         "database": settings.CRDS_DB_ENGINE}
    )
