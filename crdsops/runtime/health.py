"""Ask a CRDS server whether it answers, over its own JSON-RPC interface (stdlib only).

Every request says ``X-Crdsops-Probe``: the server then neither holds it during a swap nor
refuses it in maintenance (server/crds_server/serving.py), so the check that decides whether a
swap worked sees the new catalog at once, and `inv status` sees a server in maintenance answer.
"""

from __future__ import annotations

import json
import time

from crdsops.db.catalog import CatalogCounts
from crdsops.errors import CrdsOpsError
from crdsops.records import RecordError

PROBE_HEADERS = {"X-Crdsops-Probe": "1"}


class RpcError(CrdsOpsError):
    """The server answered, with a JSON-RPC error."""


def rpc(url: str, method: str, *params, timeout: float = 10.0):
    """Call ``method`` at ``url``/json/ and return its result; raise on any failure."""
    import urllib.error  # here, not at the top: every task imports this module (the server's pid), few call
    import urllib.request

    body = json.dumps({"jsonrpc": "1.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = urllib.request.Request(
        url.rstrip("/") + "/json/", data=body, headers={"Content-Type": "application/json", **PROBE_HEADERS}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise CrdsOpsError(f"{url} answered HTTP {err.code} to {method}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CrdsOpsError(f"{url} does not answer ({reason})") from None
    except ValueError:
        raise CrdsOpsError(f"{url} answered {method} with something that is not JSON") from None
    if answer.get("error"):
        error = answer["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise RpcError(f"{url}: {method} failed: {message}")
    return answer.get("result")


def catalog_counts(url: str, timeout: float = 10.0) -> CatalogCounts:
    """The server's ``get_catalog_counts``: its four numbers and who it says it is."""
    answer = rpc(url, "get_catalog_counts", timeout=timeout)
    try:
        return CatalogCounts.from_dict(answer, where=f"{url} get_catalog_counts")
    except RecordError as err:
        raise CrdsOpsError(f"{url} answered get_catalog_counts with something unexpected ({err})") from None


def answers(url: str, timeout: float = 3.0) -> bool:
    try:
        rpc(url, "get_server_info", timeout=timeout)
        return True
    except CrdsOpsError:
        return False


def wait_until_answers(url: str, timeout: float, still_starting=lambda: True, interval: float = 0.05) -> bool:
    """Poll ``get_server_info`` until it answers, ``timeout`` passes, or ``still_starting()`` is false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(url, timeout=min(3.0, max(0.5, deadline - time.monotonic()))):
            return True
        if not still_starting():
            return False
        time.sleep(interval)
    return answers(url)
