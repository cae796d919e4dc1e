"""A config key naming a directory where something else is: one line naming the key and what is there.

The real ``inv`` on a django server installed under tmp_path; the only thing made wrong is
the path the test names. Then the error messages themselves, for what root cannot meet for
real here (a directory it may not write).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
from support import Ops, deep_merge, local_overrides, make_configs

from crdsops import files


def installed(tmp_path: Path, extra: dict | None = None) -> Ops:
    ops = Ops(tmp_path, make_configs(tmp_path, {("hst", "django"): deep_merge(local_overrides(tmp_path), extra or {})}))
    ops.inv("install", "--obs", "hst", "--kind", "django")
    return ops


def one_error_line(result) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # exactly one line, no traceback, no warning
    assert lines[0].startswith("error: ") and "unexpected" not in lines[0], lines[0]
    return lines[0]


def test_backup_with_private_dir_a_file_names_the_key(tmp_path):
    ops = installed(tmp_path)
    private = ops.config("hst", "django").backups.private_dir
    shutil.rmtree(private, ignore_errors=True)
    private.write_text("someone's notes\n")
    line = one_error_line(ops.inv("backup", check=False))
    assert line == (f"error: backups.private_dir {private} is a file, not a directory; "
                    "point backups.private_dir at a directory (or move that file)")
    assert private.read_text() == "someone's notes\n"  # left as it was
    # inv status reads the same directory: the same line, not an unexpected NotADirectoryError
    assert one_error_line(ops.inv("status", check=False)) == line


def test_backup_with_shared_dir_a_file_names_the_key_and_removes_nothing(tmp_path):
    ops = installed(tmp_path)
    cfg = ops.config("hst", "django")
    cfg.backups.shared_dir.write_text("x")
    line = one_error_line(ops.inv("backup", check=False))
    assert line == (f"error: backups.shared_dir {cfg.backups.shared_dir} is a file, not a directory; "
                    "point backups.shared_dir at a directory (or move that file)")


def test_backup_with_a_file_above_private_dir_names_the_key_and_the_file(tmp_path):
    ops = installed(tmp_path, {"backups": {"private_dir": "{root}/blocker/backups"}})
    cfg = ops.config("hst", "django")
    blocker = cfg.root / "blocker"
    shutil.rmtree(blocker, ignore_errors=True)
    blocker.write_text("x")
    line = one_error_line(ops.inv("backup", check=False))
    assert line == (f"error: backups.private_dir {cfg.backups.private_dir} cannot be made: {blocker} is a file, "
                    "not a directory; point backups.private_dir at a directory (or move that file)")
    blocker.unlink()
    blocker.symlink_to(tmp_path / "gone")
    line = one_error_line(ops.inv("backup", check=False))
    assert f"{blocker} is a symbolic link to {tmp_path / 'gone'}, which does not exist" in line, line


@pytest.mark.parametrize("key", ["cache", "server_files"])
def test_install_with_a_directory_key_a_file_names_the_key(tmp_path, key):
    where = tmp_path / "elsewhere" / key
    where.parent.mkdir()
    where.write_text("x")
    ops = Ops(tmp_path, make_configs(tmp_path, {("hst", "django"): deep_merge(local_overrides(tmp_path),
                                                                              {key: str(where)})}))
    line = one_error_line(ops.inv("install", "--obs", "hst", "--kind", "django", check=False))
    assert line == f"error: {key} {where} is a file, not a directory; point {key} at a directory (or move that file)"


# --- the messages, for what a test running as root cannot meet for real --------------------

NAMED = [("root", Path("/srv/crds"), "point root at a directory"),
         ("backups.private_dir", Path("/srv/crds/backups"), "point backups.private_dir at a directory")]


@pytest.fixture
def named():
    files.name_directories(NAMED)
    yield
    files.name_directories(())


def test_a_directory_it_may_not_write_is_named_by_the_nearest_key(named, monkeypatch):
    dirs = {"/srv/crds", "/srv/crds/backups", "/srv/crds/logs"}
    real_lexists, real_stat = files.os.path.lexists, files.os.stat
    monkeypatch.setattr(files, "_user", lambda: "crds")
    monkeypatch.setattr(files.os.path, "lexists", lambda p: str(p) in dirs or real_lexists(p))
    monkeypatch.setattr(files.os, "stat", lambda p, **kw: files.os.stat_result((0o40700, *[0] * 9))
                        if str(p) in dirs else real_stat(p, **kw))
    denied = PermissionError(errno.EACCES, "Permission denied")

    err = files._directory_error(Path("/srv/crds/backups/.tmp-x"), denied)
    assert str(err) == ("backups.private_dir /srv/crds/backups is not writable by user crds; point "
                        "backups.private_dir at a directory (or give user crds write access to it)")
    assert isinstance(err, OSError) and err.errno == errno.EACCES  # still the OSError it replaces
    err = files._directory_error(Path("/srv/crds/logs/x"), denied)
    assert str(err) == "/srv/crds/logs (under root /srv/crds) is not writable by user crds; give user crds " \
                       "write access to it"
    err = files._directory_error(Path("/srv/crds/state"), PermissionError(errno.EROFS, "Read-only file system"))
    assert str(err) == ("root /srv/crds is on a read-only file system; point root at a directory "
                        "(or mount it read-write)")


def test_unnamed_paths_still_say_what_is_there(tmp_path):
    files.name_directories(())
    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(files.DirectoryError) as caught:
        files.ensure_dir(blocker / "sub")
    assert str(caught.value) == (f"directory {blocker / 'sub'} cannot be made: {blocker} is a file, not a "
                                 "directory; move that file (or use another path)")


def test_only_the_server_acted_on_is_named(tmp_path, monkeypatch):
    """A mirror loads its source's config (paths on another host): loading names nothing."""
    from crdsops.config import installed
    from crdsops.config.loader import load_config

    configs = make_configs(tmp_path, {("hst", "django"): local_overrides(tmp_path / "here"),
                                      ("hst", "dev"): local_overrides(tmp_path / "source")})
    monkeypatch.setenv("CRDSOPS_CONFIGS", str(configs))
    monkeypatch.setenv("CRDSOPS_STATE", str(tmp_path / "installed.json"))
    files.name_directories(())
    try:
        source = load_config("hst", "dev", configs)
        assert files._key_of(Path(source.backups.private_dir)) is None
        here = installed.resolve("hst", "django")
        assert files._key_of(here.backups.private_dir / ".tmp-1")[0] == "backups.private_dir"
        assert files._key_of(here.layout.logs)[0] == "root"
        assert files._key_of(Path(source.backups.private_dir)) is None
    finally:
        files.name_directories(())
