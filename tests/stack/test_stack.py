"""The server stack: `inv lock` (real conda-lock, offline for the conda part) and `inv build`.

The conda layer is solved against local file channels that these tests build with
py-rattler (no conda, no conda channel); the pip layer comes from PyPI's simple index,
so a small lock (six + iniconfig) keeps the builds short. One test builds the committed
conda-lock.yml for real through bin/bootstrap.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]

pytest.importorskip("conda_lock", reason="the dev category (bin/bootstrap --dev) brings conda-lock")
pytest.importorskip("rattler", reason="the dev category (bin/bootstrap --dev) brings py-rattler")

from crdsops.stack import build as stack
from crdsops.stack import channel as stack_channel
from crdsops.stack import condalock

ENV = """\
name: small
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
      - six==1.17.0
pip-repositories:
  - https://pypi.org/simple
allow-pypi-requests: false
"""
ENV_DEV = """\
category: dev
channels:
  - conda-forge
dependencies:
  - pip:
      - iniconfig==2.1.0
pip-repositories:
  - https://pypi.org/simple
allow-pypi-requests: false
"""


def inv(*args, check=True, env=None, timeout=900):
    """Run the real CLI (`inv ...` from the checkout) with this interpreter."""
    proc = subprocess.run([sys.executable, "-m", "invoke", "-r", str(REPO), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    if check and proc.returncode != 0:
        raise AssertionError(f"inv {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def one_error_line(proc) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def tree_digest(prefix: pathlib.Path) -> str:
    """Names, sizes and mtimes of everything under PREFIX: 'untouched' means equal digests."""
    h = hashlib.sha256()
    for path in sorted(prefix.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(prefix)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@pytest.fixture(scope="module")
def channel(tmp_path_factory) -> pathlib.Path:
    """A local conda channel: the system Python (as the stub `python`), pip, and `hello`."""
    chan = tmp_path_factory.mktemp("channel")
    stack_channel.build_package(chan, stack_channel.Package("hello", "1.0", files={
        "bin/hello": b"#!/bin/sh\necho hello from the conda layer\n",
    }))
    stack_channel.system_channel(chan, "/usr/bin/python3")
    return chan


@pytest.fixture(scope="module")
def small(tmp_path_factory, channel) -> pathlib.Path:
    """A project dir with environment.yml, environment-dev.yml and the lock `inv lock` made."""
    project = tmp_path_factory.mktemp("project")
    (project / "environment.yml").write_text(ENV)
    (project / "environment-dev.yml").write_text(ENV_DEV)
    started = time.monotonic()
    proc = inv("lock", "--lock-file", str(project / "conda-lock.yml"),
               "--env-file", str(project / "environment.yml"),
               "--env-file", str(project / "environment-dev.yml"),
               "--channel", channel.as_uri())
    assert time.monotonic() - started < 300
    assert "wrote" in proc.stdout
    return project


@pytest.fixture
def project(small, tmp_path) -> pathlib.Path:
    """A private copy of the small project (tests may break its files)."""
    dest = tmp_path / "project"
    shutil.copytree(small, dest)
    return dest


@pytest.fixture(scope="module")
def built(small, tmp_path_factory):
    """A stack built from the small lock, shared by the tests that only read it."""
    prefix = tmp_path_factory.mktemp("built") / "stack"
    inv("build", "--prefix", str(prefix), "--lock-file", str(small / "conda-lock.yml"))
    return prefix


def build(project, prefix, *extra, check=True):
    return inv("build", "--prefix", str(prefix), "--lock-file", str(project / "conda-lock.yml"), *extra, check=check)


# --- inv lock -------------------------------------------------------------------------

def test_lock_pins_conda_layer_from_local_channel_and_pip_layer_with_hashes(small, channel):
    lk = condalock.read_lock(small / "conda-lock.yml")
    python = lk.python
    assert python is not None and python.url.startswith(channel.as_uri())
    assert python.build == "system_0"
    assert python.version == subprocess.run(
        ["/usr/bin/python3", "-c", "import platform; print(platform.python_version())"],
        capture_output=True, text=True).stdout.strip()
    pips = {p.name: p for p in lk.select("pip", {"main", "dev"})}
    assert pips["six"].version == "1.17.0" and pips["six"].category == "main"
    assert pips["iniconfig"].category == "dev"
    for p in pips.values():
        assert len(p.sha256) == 64 and p.url.startswith("https://files.pythonhosted.org/")
    assert lk.sources == ("environment.yml", "environment-dev.yml")
    assert lk.channels == (channel.as_uri(),)
    assert condalock.check_fresh(lk, [small / "environment.yml", small / "environment-dev.yml"]) == "input sha256"


def test_lock_content_hash_is_conda_locks_own(small):
    """conda-lock itself, asked to check the input hash, finds the lock current."""
    lk = condalock.read_lock(small / "conda-lock.yml")
    envs = [small / "environment.yml", small / "environment-dev.yml"]
    assert lk.content_hash in condalock.content_hashes(envs, lk.channels)
    with_comment = small.parent / (small.name + "-comment")
    shutil.copytree(small, with_comment)
    (with_comment / "environment.yml").write_text("# a comment changes bytes, not the spec\n" + ENV)
    envs2 = [with_comment / "environment.yml", with_comment / "environment-dev.yml"]
    assert condalock.check_fresh(condalock.read_lock(with_comment / "conda-lock.yml"), envs2) == "conda-lock content hash"


def test_block_yaml_reader_agrees_with_pyyaml(small):
    import yaml

    for lock in (small / "conda-lock.yml", REPO / "conda-lock.yml"):
        text = lock.read_text()
        assert condalock._load_block_yaml(text, lock) == yaml.safe_load(text)


def test_lock_with_missing_environment_is_one_line(tmp_path):
    proc = inv("lock", "--lock-file", str(tmp_path / "conda-lock.yml"),
               "--env-file", str(tmp_path / "environment.yml"), check=False)
    assert "environment.yml not found" in one_error_line(proc)
    assert not (tmp_path / "conda-lock.yml").exists()


def test_lock_failure_keeps_the_previous_lock(project, channel):
    before = (project / "conda-lock.yml").read_bytes()
    (project / "environment.yml").write_text(ENV.replace("six==1.17.0", "six==999.0"))
    proc = inv("lock", "--lock-file", str(project / "conda-lock.yml"),
               "--env-file", str(project / "environment.yml"),
               "--env-file", str(project / "environment-dev.yml"),
               "--channel", channel.as_uri(), check=False)
    assert "conda-lock failed" in one_error_line(proc)
    assert (project / "conda-lock.yml").read_bytes() == before
    assert not list(project.glob(".conda-lock.yml.previous"))


# --- inv build ------------------------------------------------------------------------

def test_build_creates_a_working_prefix_and_records_packages(built, small):
    run = subprocess.run([str(built / "bin" / "python"), "-c", "import six; print(six.__version__)"],
                         capture_output=True, text=True)
    assert run.stdout.strip() == "1.17.0"
    listing = (built / stack.PACKAGE_LIST).read_text().splitlines()
    assert "six==1.17.0" in listing
    assert not any(line.startswith("iniconfig==") for line in listing)  # main only by default
    assert any(line.startswith("# conda: python=") for line in listing)
    stamp = json.loads((built / stack.STAMP).read_text())
    assert stamp["lock_sha256"] == hashlib.sha256((small / "conda-lock.yml").read_bytes()).hexdigest()
    assert stamp["mode"] == "system" and stamp["categories"] == ["main"]
    assert not list(built.parent.glob(".stack.previous-*"))


def test_unchanged_lock_is_a_fast_noop(built, small):
    before = tree_digest(built)
    started = time.monotonic()
    proc = build(small, built)
    assert "up to date" in proc.stdout
    assert time.monotonic() - started < 10
    assert tree_digest(built) == before
    dry = build(small, built, "--dry-run").stdout.splitlines()
    assert dry[0] == f"plan for the stack {built}:"
    assert dry[1].startswith(f"  - stack at {built} is up to date with conda-lock.yml (lock sha256 ")
    assert dry[-1] == "dry run: nothing changed"
    assert tree_digest(built) == before


def test_the_facts_are_a_frozen_record_and_the_plan_is_made_from_them(built, small):
    """A probe is read-only and its facts cannot change after it; the steps are a function of them."""
    import dataclasses

    from crdsops import steps

    facts = stack.probe(built, stack.BuildOptions(lock_path=small / "conda-lock.yml"))
    assert facts.up_to_date and not facts.restamp and facts.categories == ("main",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.up_to_date = False
    plan = stack.steps(facts)
    assert isinstance(plan, steps.Plan)
    assert [(s.text, s.action) for s in plan.steps] == [(facts.describe(), None)]
    forced = stack.probe(built, stack.BuildOptions(lock_path=small / "conda-lock.yml", force=True))
    assert not forced.up_to_date and forced.reason == "--force" and forced.mode == "system"
    assert [p.name for p in forced.pip_packages] == ["six"]
    (step,) = stack.steps(forced).steps
    assert step.text.startswith(f"build {built} [system, python ") and step.action is not None


def test_comment_only_change_is_not_a_rebuild(project, tmp_path):
    """conda-lock's content hash sees no change in the spec: the stamp is refreshed, nothing rebuilt."""
    prefix = tmp_path / "stack"
    build(project, prefix)
    python_inode = (prefix / "bin" / "python").lstat().st_ino
    with open(project / "environment.yml", "a") as fh:
        fh.write("# a comment\n")
    proc = build(project, prefix)
    assert "environment files changed, not their spec" in proc.stdout
    assert (prefix / "bin" / "python").lstat().st_ino == python_inode
    assert "up to date" in build(project, prefix).stdout


def test_dev_category_and_it_is_kept_by_later_builds(project, tmp_path):
    prefix = tmp_path / "stack"
    build(project, prefix, "--dev")
    assert "iniconfig==2.1.0" in (prefix / stack.PACKAGE_LIST).read_text()
    assert "up to date" in build(project, prefix).stdout  # no flag: keeps main+dev
    build(project, prefix, "--no-dev")
    assert "iniconfig==" not in (prefix / stack.PACKAGE_LIST).read_text()


def test_failed_build_restores_previous_stack(project, tmp_path):
    prefix = tmp_path / "stack"
    build(project, prefix)
    before = tree_digest(prefix)
    lock = project / "conda-lock.yml"
    text = lock.read_text()
    six = condalock.read_lock(lock).select("pip", {"main"})[0]
    assert six.name == "six"
    lock.write_text(text.replace(six.sha256, "ab" * 32))  # a lock naming a hash the file lacks
    proc = build(project, prefix, check=False)
    line = one_error_line(proc)
    assert "stack build failed" in line and "previous stack restored" in line
    assert "hash" in line.lower()
    assert tree_digest(prefix) == before
    assert not list(tmp_path.glob(".stack.previous-*"))
    assert subprocess.run([str(prefix / "bin" / "python"), "-c", "import six"]).returncode == 0


def test_build_from_inside_the_stack_it_replaces(project, tmp_path):
    """`inv build` run by the stack's own interpreter moves that stack aside and replaces it."""
    prefix = tmp_path / "stack"
    build(project, prefix)
    # give the stack invoke + crdsops's needs from this interpreter's site (no network)
    site = next((prefix / "lib").glob("python3*/site-packages"))
    (site / "host.pth").write_text(next(p for p in sys.path if p.endswith("site-packages")) + "\n")
    old_inode = (prefix / "bin" / "python").lstat().st_ino
    proc = subprocess.run([str(prefix / "bin" / "python"), "-m", "invoke", "-r", str(REPO), "build",
                           "--prefix", str(prefix), "--lock-file", str(project / "conda-lock.yml"), "--force"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "built" in proc.stdout
    assert (prefix / "bin" / "python").lstat().st_ino != old_inode
    assert not (site / "host.pth").exists()  # a new stack, not the old one
    assert subprocess.run([str(prefix / "bin" / "python"), "-c", "import six"]).returncode == 0


# --- bad input: one clear line, the existing stack untouched --------------------------

def _break_env_missing(project):
    (project / "environment.yml").unlink()


def _break_env_malformed(project):
    (project / "environment.yml").write_text("dependencies: [python=3.11, {pip: \n  - six\n")


def _break_lock_missing(project):
    (project / "conda-lock.yml").unlink()


def _break_lock_malformed(project):
    (project / "conda-lock.yml").write_text("version: 1\nmetadata: [unterminated\n")


def _break_lock_not_a_lock(project):
    (project / "conda-lock.yml").write_text("just: some\nyaml: here\n")


def _break_stale(project):
    env = project / "environment.yml"
    env.write_text(env.read_text().replace("six==1.17.0", "six==1.16.0"))


@pytest.mark.parametrize("breaker, expected", [
    (_break_env_missing, "environment.yml not found"),
    (_break_env_malformed, "is not valid YAML"),
    (_break_lock_missing, "conda-lock.yml not found; run `inv lock`"),
    (_break_lock_malformed, "is not valid YAML"),
    (_break_lock_not_a_lock, "is not a conda-lock file"),
    (_break_stale, "stale lock"),
])
def test_bad_input_is_one_line_and_leaves_the_stack(project, tmp_path, breaker, expected):
    prefix = tmp_path / "stack"
    build(project, prefix)
    before = tree_digest(prefix)
    breaker(project)
    line = one_error_line(build(project, prefix, "--force", check=False))
    assert expected in line
    if breaker is _break_stale:
        assert "run `inv lock`" in line
    assert tree_digest(prefix) == before


def test_unwritable_prefix_is_one_line_and_leaves_the_stack(project, tmp_path):
    parent = tmp_path / "ro"
    prefix = parent / "stack"
    build(project, prefix)
    before = tree_digest(prefix)
    if subprocess.run(["chattr", "+i", str(parent)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        line = one_error_line(build(project, prefix, "--force", check=False))
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=True)
    assert f"cannot write in {parent}" in line
    assert tree_digest(prefix) == before


def test_python_that_does_not_match_the_lock_is_refused(project, tmp_path):
    fake = tmp_path / "python3.10"
    fake.write_text("#!/bin/sh\necho 3.10.13\n")
    fake.chmod(0o755)
    line = one_error_line(build(project, tmp_path / "stack", "--python", str(fake), check=False))
    assert "is Python 3.10.13 but conda-lock.yml pins python 3.11" in line
    assert not (tmp_path / "stack").exists()


# --- the conda world, through the py-rattler front end --------------------------------

def test_conda_mode_installs_the_locks_conda_packages(tmp_path, channel):
    project = tmp_path / "project"
    project.mkdir()
    (project / "environment.yml").write_text("channels:\n  - conda-forge\ndependencies:\n  - hello\n")
    inv("lock", "--lock-file", str(project / "conda-lock.yml"), "--env-file", str(project / "environment.yml"),
        "--channel", channel.as_uri())
    exe = stack.rattler_conda_exe(tmp_path)
    prefix = tmp_path / "stack"
    proc = inv("build", "--prefix", str(prefix), "--lock-file", str(project / "conda-lock.yml"),
               "--mode", "conda", "--conda", str(exe))
    assert "built" in proc.stdout
    out = subprocess.run([str(prefix / "bin" / "hello")], capture_output=True, text=True).stdout
    assert out.strip() == "hello from the conda layer"
    assert "# conda: hello=1.0=0" in (prefix / stack.PACKAGE_LIST).read_text()
    assert (prefix / "conda-meta").is_dir()


# --- bin/bootstrap: the fresh-machine path with the committed lock --------------------

def test_bootstrap_reads_the_lock_without_pyyaml(tmp_path):
    code = ("import sys; sys.modules['yaml'] = None; from crdsops.stack import build as stack; "
            "sys.exit(stack.main(sys.argv[1:]))")
    proc = subprocess.run(["/usr/bin/python3", "-c", code, "build", "--prefix", str(tmp_path / "s"), "--dry-run"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "would build" in proc.stdout and "hash-checked" in proc.stdout


def test_bootstrap_builds_the_committed_lock(tmp_path):
    prefix = tmp_path / "stack"
    env = dict(os.environ, STACK=str(prefix))
    proc = subprocess.run([str(REPO / "bin" / "bootstrap")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    # the default stack: the main category, nothing that only the VM kinds use (vm: MySQLdb, mod_wsgi)
    check = ("import importlib.util as u, django, dbbackup, crds, astropy, invoke, fabric, yaml; "
             "print(django.get_version(), u.find_spec('MySQLdb') is None and u.find_spec('mod_wsgi') is None)")
    run = subprocess.run([str(prefix / "bin" / "python"), "-c", check], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("5.2.") and run.stdout.split()[1] == "True", run.stdout
    listing = (prefix / stack.PACKAGE_LIST).read_text()
    locked = condalock.read_lock(REPO / "conda-lock.yml").select("pip", {"main"})
    for p in locked:
        assert any(line.lower().replace("_", "-").startswith(f"{p.name}=={p.version}".lower())
                   for line in listing.splitlines()), p.name
    again = subprocess.run([str(REPO / "bin" / "bootstrap")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "up to date" in again.stdout
