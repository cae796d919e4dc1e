"""The Makefile is a thin front end: make variables become the flags of one forwarded inv call."""

import os
import subprocess

import pytest
from support import CHECKOUT


MAKE_ENV = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
            "obs", "kind", "src", "src_url", "src_host", "from", "to", "yes", "dry_run", "args")


def make_n(*args: str) -> list[str]:
    # not the variables of a `make test args=...` this suite may run under: make exports its
    # command line's variables to the recipe's environment, and a make started there reads them
    env = {k: v for k, v in os.environ.items() if k not in MAKE_ENV}
    out = subprocess.run(["make", "-n", *args], cwd=CHECKOUT, capture_output=True, text=True, check=True,
                         env=env).stdout
    return [line.split() for line in out.splitlines() if "/inv " in line]


@pytest.mark.parametrize("args,expected", [
    (["install", "obs=hst", "kind=dev"], ["install", "--obs=hst", "--kind=dev"]),
    (["mirror", "obs=hst", "src=test"], ["mirror", "--obs=hst", "--src=test"]),
    (["restore", "from=2026-11-28", "yes=1"], ["restore", "--from=2026-11-28", "--yes"]),
    (["backup", "dry_run=1"], ["backup", "--dry-run"]),
    (["status"], ["status"]),
    (["metrics"], ["metrics"]),
    (["history", "args=-n 5"], ["history", "-n", "5"]),
    (["rerun"], ["rerun"]),
    (["upgrade", "to=v2.1", "yes=1"], ["upgrade", "--to=v2.1", "--yes"]),
    (["rollback"], ["rollback"]),
    (["check-cache", "src=test", "args=--repair --sha1"], ["check-cache", "--src=test", "--repair", "--sha1"]),
])
def test_make_forwards_to_inv(args, expected):
    calls = make_n(*args)
    assert [call[1:] for call in calls] == [expected]


def test_make_run_installs_the_default_server_only_if_none_then_runs():
    calls = [call[1:] for call in make_n("run")]
    assert calls == [["install", "--if-none", "--obs=hst", "--kind=django"], ["run"]]


def test_help_is_the_default_goal():
    text = (CHECKOUT / "Makefile").read_text()
    assert ".DEFAULT_GOAL := help" in text and "%:" not in text
