"""A running SQLite server shared by a module: swaps and maintenance only touch files under its root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from servingkit import HOLD_TIMEOUT
from support import Ops, deep_merge, local_overrides, make_configs


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
