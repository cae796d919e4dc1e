import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/support.py
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # crdsops

from support import Ops, local_overrides, make_configs


@pytest.fixture
def ops(tmp_path):
    """An operator with private configs in which hst/jwst django servers live under tmp_path."""
    configs = make_configs(tmp_path, {
        ("hst", "django"): local_overrides(tmp_path),
        ("jwst", "django"): local_overrides(tmp_path),
    })
    return Ops(tmp_path, configs)


@pytest.fixture
def running_hst(ops):
    """hst django installed and running under tmp_path; stopped afterwards whatever happens."""
    ops.inv("install", "--obs", "hst", "--kind", "django")
    ops.inv("run")
    try:
        yield ops
    finally:
        ops.inv("stop", check=False)
