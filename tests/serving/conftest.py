"""A running SQLite server shared by a module: swaps and maintenance only touch files under its root."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import Ops, deep_merge, local_overrides, make_configs

HOLD_TIMEOUT = 3  # seconds (web.hold_timeout): short, so a test can outlast it


@dataclass
class Served:
    """The server, and what tests/crdsclient.py needs of one (url, obs, log)."""

    ops: Ops
    cfg: object
    obs: str = "hst"

    @property
    def url(self) -> str:
        return self.cfg.local_url.rstrip("/")

    @property
    def log(self) -> Path:
        return self.cfg.layout.server_log

    def inv(self, *args, **kwargs):
        return self.ops.inv(*args, **kwargs)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    where = tmp_path_factory.mktemp("served")
    overrides = deep_merge(local_overrides(where), {"web": {"hold_timeout": HOLD_TIMEOUT}})
    ops = Ops(where, make_configs(where, {("hst", "django"): overrides}))
    ops.inv("install", "--obs", "hst", "--kind", "django")
    ops.inv("run")
    try:
        yield Served(ops, ops.config("hst", "django"))
    finally:
        ops.inv("stop", check=False)


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
