"""What tests/serving shares: the short hold timeout and one JSON-RPC call as a client makes it.

A module of its own name: ``from conftest import`` picks whichever conftest.py pytest loaded
last when several test directories run together.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

HOLD_TIMEOUT = 3  # seconds (web.hold_timeout): short, so a test can outlast it


def call(url: str, method: str, *params, headers=None, timeout: float = 30):
    """One JSON-RPC call as a client makes it: (seconds it took, HTTP status, reply, response headers)."""
    body = json.dumps({"jsonrpc": "1.0", "method": method, "params": list(params), "id": 1}).encode()
    request = urllib.request.Request(f"{url}/json/{method}/1/", body, headers=headers or {})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            status, data, got = answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as err:
        status, data, got = err.code, err.read(), err.headers
    return time.monotonic() - started, status, json.loads(data), got
