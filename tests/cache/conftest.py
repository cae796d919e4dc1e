"""Fixtures for the cache checks: a real installed hst django server (its demo catalog and cache).

The server is installed, not started: `inv check-cache` reads the catalog's database and the
cache on disk, and needs no running web server. Helpers: tests/cachelab.py.
"""

from __future__ import annotations

import pytest
from cachelab import Cache
from support import Ops, local_overrides, make_configs


@pytest.fixture
def cache(tmp_path):
    configs = make_configs(tmp_path, {("hst", "django"): local_overrides(tmp_path)})
    ops = Ops(tmp_path, configs)
    ops.inv("install", "--obs", "hst", "--kind", "django")
    return Cache(ops)
