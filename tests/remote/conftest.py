"""Fixtures for tests that reach "VMs" over real SSH: sshd per host on 127.0.0.x."""

from __future__ import annotations

import pytest
from vms import Fleet


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    where = tmp_path_factory.mktemp("fleet")
    fl = Fleet(where)
    try:
        fl.ops["test"].inv("install", "--obs", "hst", "--kind", "test")
        fl.ops["test"].inv("run")
        fl.ops["dev"].inv("install", "--obs", "hst", "--kind", "dev")
        yield fl
    finally:
        fl.close()
