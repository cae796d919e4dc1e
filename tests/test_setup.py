"""Set-up on a fresh machine: system packages by purpose, a default stack with no compiler.

Real runs, no mocks where they prove the feature: `make run` as an unprivileged user on a copy
of this checkout whose system-packages.txt names a package this machine lacks; the stack's
main category built with no C compiler on PATH; a VM kind installed on that stack.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from support import CHECKOUT, INV, copy_checkout, make_configs

from crdsops.errors import CrdsOpsError
from crdsops.stack import build, system

ABSENT = "crdsops-no-such-package"
COMPILERS = re.compile(r"^(cc|c\+\+|c89|c99|cpp|gcc|g\+\+|tcc|clang.*|.*-gcc(-\d+)?|gcc-.*|g\+\+-.*|.*-g\+\+(-\d+)?)$")
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def world_dir(prefix: str) -> Path:
    """A temporary directory others can enter (pytest's own are 0700)."""
    where = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    where.chmod(0o755)
    return where


def tree(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_mode, st.st_mtime_ns)
    return out


def as_nobody() -> list[str]:
    """The prefix that runs a command unprivileged: setpriv as nobody when we are root."""
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def test_the_one_list_has_every_purpose_and_no_other_file_keeps_one():
    purposes = system.read()
    assert list(purposes) == ["default", "vm", "test"]
    assert "python3-venv" in purposes["default"].packages
    assert {"build-essential", "python3-dev", "libmariadb-dev", "pkg-config", "apache2", "apache2-dev",
            "mariadb-client"} <= set(purposes["vm"].packages)
    assert {"mariadb-server", "openssh-server", "openssh-client", "rsync", "zstd", "cron",
            "chromium"} <= set(purposes["test"].packages)
    # no compiler, header or Apache for the default server
    assert not {"build-essential", "apache2", "apache2-dev", "python3-dev"} & set(purposes["default"].packages)
    for path in (".ci/run", "Makefile", "bin/bootstrap"):
        text = (CHECKOUT / path).read_text()
        assert "apache2-dev" not in text and "apt-get install -y" not in text and "mariadb-server" not in text, path


def test_make_run_as_non_root_missing_a_package_changes_nothing_and_prints_the_apt_line():
    where = world_dir("crdsops-setup-")
    try:
        project = copy_checkout(where / "project")
        listing = project / "system-packages.txt"
        text = listing.read_text()
        assert "packages = python3-venv\n" in text
        listing.write_text(text.replace("packages = python3-venv\n", f"packages = python3-venv {ABSENT}\n"))
        home = where / "home"
        home.mkdir()
        if os.geteuid() == 0:  # nobody could write here: "changes nothing" is then the tool's doing
            subprocess.run(["chown", "-R", "nobody:nogroup", str(where)], check=True)
        before = tree(where)
        result = subprocess.run([*as_nobody(), "make", "run"], cwd=project, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=120,
                                env={"PATH": BASE_PATH, "HOME": str(home), "LANG": "C.UTF-8"})
        assert result.returncode != 0, result.stdout
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr
        assert f"`sudo apt-get install -y {ABSENT}`" in errors[0], errors[0]
        assert "nothing was changed" in errors[0] and "python3-venv" not in errors[0].split("`")[1]
        assert "Traceback" not in result.stderr
        assert not (project / ".venv").exists()
        assert tree(where) == before
    finally:
        shutil.rmtree(where, ignore_errors=True)


def no_compiler_path(where: Path) -> str:
    """A PATH with every system command but the C/C++ compilers."""
    bindir = where / "bin"
    bindir.mkdir()
    for directory in BASE_PATH.split(":"):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            if COMPILERS.match(name) or (bindir / name).exists():
                continue
            (bindir / name).symlink_to(Path(directory) / name)
    path = str(bindir)
    assert shutil.which("cc", path=path) is None and shutil.which("gcc", path=path) is None
    assert shutil.which("make", path=path) is not None
    return path


@pytest.fixture(scope="module")
def main_stack():
    """The stack's main category, built by a bare /usr/bin/python3 with no compiler on PATH."""
    where = world_dir("crdsops-nocc-")
    path = no_compiler_path(where)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRDSOPS_STACK_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = path
    try:
        result = subprocess.run(["/usr/bin/python3", "-m", "crdsops.stack", "build", "--prefix", str(where / "stack")],
                                cwd=CHECKOUT, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                timeout=900)
        yield where, path, result
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_the_default_stack_builds_with_no_compiler(main_stack):
    where, _path, result = main_stack
    assert result.returncode == 0, result.stderr
    stamp = json.loads((where / "stack" / build.STAMP).read_text())
    assert stamp["categories"] == ["main"]
    installed = (where / "stack" / build.PACKAGE_LIST).read_text().lower()
    assert "django==" in installed and "crds==" in installed
    assert "mod_wsgi" not in installed and "mod-wsgi" not in installed and "mysqlclient" not in installed


def test_a_vm_kind_on_that_stack_refuses_in_one_line_naming_inv_build_vm(main_stack):
    where, _path, result = main_stack
    assert result.returncode == 0, result.stderr
    configs = make_configs(where / "ops", {("hst", "dev"): {
        "root": str(where / "ops" / "{observatory}-{kind}"),
        "stack": {"prefix": str(where / "stack")},
    }})
    env = dict(os.environ, CRDSOPS_CONFIGS=str(configs), CRDSOPS_STATE=str(where / "ops" / "installed.json"))
    refused = subprocess.run([INV, "install", "--obs", "hst", "--kind", "dev"], cwd=CHECKOUT, env=env,
                             capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert refused.returncode == 1, refused.stdout
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), refused.stderr
    assert "`inv build --vm`" in lines[0] and "mod_wsgi" in lines[0] and "mysqlclient" in lines[0], lines[0]
    assert not (where / "ops" / "hst-dev").exists()
    assert not (where / "ops" / "installed.json").exists()


def test_building_an_sdist_with_no_compiler_names_the_packages_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", no_compiler_path(tmp_path))
    from crdsops.stack import condalock

    sdist = next(p for p in condalock.read_lock(CHECKOUT / build.LOCK_FILE).packages if p.name == "mysqlclient")
    assert sdist.category == "vm"
    with pytest.raises(CrdsOpsError) as err:
        build._check_can_compile(sdist)
    message = str(err.value)
    assert "needs a C compiler" in message and "apt-get install -y build-essential" in message, message
    assert "\n" not in message


def test_a_python_with_no_venv_module_is_told_to_install_python3_venv(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho 'No module named ensurepip' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(CrdsOpsError) as err:
        build._check_venv_module(str(fake))
    assert "install python3-venv: apt-get install python3-venv" in str(err.value)
