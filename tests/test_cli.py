"""The command line as a user meets it: listing, help, and refusals that change nothing."""

import pytest
from support import CHECKOUT

TASKS = ["config", "install", "run", "stop", "rerun", "status", "metrics", "history", "manage", "runtests", "maintenance", "build", "lock",
         "backup", "backups", "verify", "restore", "offsite", "schedule", "mirror", "fleet-status", "fleet-backup",
         "boot", "rotate-logs", "nightly"]


def test_list_shows_every_task_with_a_summary(ops):
    out = ops.inv("--list").stdout
    for name in TASKS:
        line = next((row for row in out.splitlines() if row.strip().startswith(name + " ")), None)
        assert line is not None, f"{name} missing from inv --list"
        assert len(line.split(None, 1)) == 2, f"{name} has no summary"


@pytest.mark.parametrize("name", TASKS)
def test_help_explains_every_flag(ops, name):
    out = ops.inv("--help", name).stdout
    options = out.split("Options:", 1)[1] if "Options:" in out else ""
    for line in options.splitlines():
        stripped = line.strip()
        if stripped.startswith("-") and "  " in stripped:
            assert stripped.split("  ", 1)[1].strip(), f"flag without help: {stripped}"
        elif stripped.startswith("-"):
            pytest.fail(f"flag without help in inv --help {name}: {stripped}")


@pytest.mark.parametrize("task", ["run", "stop", "rerun", "status", "metrics", "runtests", "manage"])
def test_server_tasks_before_any_install(ops, task):
    result = ops.inv(task, check=False)
    assert result.returncode != 0
    assert "no server is installed here" in result.stderr
    assert "inv install --obs OBS --kind KIND" in result.stderr
    assert "Traceback" not in result.stderr
    assert not ops.state.exists()


@pytest.mark.parametrize("obs,kind,expected", [
    ("roman", "dev", "unknown observatory 'roman'"),
    ("../x", "django", "unknown observatory '../x'"),
    ("hst", "nope", "unknown kind 'nope'"),
])
def test_install_refuses_bad_identity_and_changes_nothing(ops, obs, kind, expected):
    before = sorted(p.relative_to(ops.where) for p in ops.where.rglob("*"))
    result = ops.inv("install", "--obs", obs, "--kind", kind, check=False)
    assert result.returncode == 1
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.relative_to(ops.where) for p in ops.where.rglob("*")) == before


def test_bad_config_file_is_one_line_and_nothing_is_created(ops):
    path = ops.configs / "hst" / "django.yaml"
    path.write_text(path.read_text() + "colour: blue\n")
    result = ops.inv("install", "--obs", "hst", "--kind", "django", check=False)
    assert result.returncode == 1
    assert "unknown key colour" in result.stderr and "django.yaml" in result.stderr
    assert not (ops.where / "hst-django").exists() and not ops.state.exists()


def test_config_task_prints_the_resolved_config(ops):
    out = ops.inv("config", "--obs", "hst", "--kind", "dev").stdout
    assert "url: https://hst-crds-dev.stsci.edu" in out
    assert "name: crds_hst_dev" in out


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "block-buffered"])
def test_output_into_a_closed_pipe_ends_quietly(ops, unbuffered):
    """`inv config | head -1`: once the reader has gone, no error line, no traceback.

    Both ways Python may write to a pipe: unbuffered (print() meets the closed pipe) and
    block-buffered, as on a fresh machine with no PYTHONUNBUFFERED (the flush at the task's end
    meets it; Python's own flush at exit said "Exception ignored ... BrokenPipeError").
    """
    import os
    import subprocess

    from support import INV

    env = {k: v for k, v in ops.env.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before inv writes a byte: every write is EPIPE
    try:
        result = subprocess.run([INV, "config", "--obs", "hst", "--kind", "dev"], cwd=CHECKOUT, env=env,
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert result.stderr == "", result.stderr  # was "error: unexpected BrokenPipeError ..."
    assert result.returncode == 141  # as a Unix tool killed by SIGPIPE


def test_tasks_py_is_composition_only():
    text = (CHECKOUT / "tasks.py").read_text()
    assert "def " not in text and "@task" not in text
