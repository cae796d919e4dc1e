"""The live Apache configuration of a mod_wsgi server: kept aside while a new one is made and checked.

``mod_wsgi-express setup-server`` writes into the server root the running Apache uses (its
httpd.conf names that root, the mod_wsgi daemon sockets and the pid file, so it cannot be
generated anywhere else and moved). So a rerun copies the live files first (``keep``),
generates in place, checks with ``apachectl configtest``, and on any failure puts the copy
back file by file (``put_back``): the directory itself stays, because the running daemons'
sockets live in it and unlinking them would cut the live server off from its Python.
"""

from __future__ import annotations

import logging
import shutil
import stat
from pathlib import Path

from crdsops import commands
from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import write_atomic
from crdsops.runtime.environ import child_environ, server_dir

log = logging.getLogger(__name__)

CONFIGTEST_TIMEOUT = 60


class ConfigRefused(CrdsOpsError):
    """``apachectl configtest`` refused the new configuration; the live one was put back."""


def _kept_files(config: ServerConfig) -> dict[Path, Path]:
    """Each live file a rerun may rewrite -> where its copy is kept."""
    layout = config.layout
    copy = layout.apache_live_copy
    files = {layout.wsgi_entry: copy / layout.wsgi_entry.name}
    if layout.apache.is_dir():
        for path in layout.apache.rglob("*"):
            if _regular(path):
                files[path] = copy / "apache" / path.relative_to(layout.apache)
    return files


def keep(config: ServerConfig) -> None:
    """Copy the live files aside (a copy left by a run that died is replaced: the live files are the truth)."""
    copy = config.layout.apache_live_copy
    shutil.rmtree(copy, ignore_errors=True)
    for live, kept in _kept_files(config).items():
        if live.exists():
            kept.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            shutil.copy2(live, kept)


def put_back(config: ServerConfig) -> list[str]:
    """Restore the kept files where they differ, remove files the new generation added; the names changed."""
    layout = config.layout
    copy = layout.apache_live_copy
    changed = []
    for path in [p for p in layout.apache.rglob("*") if _regular(p)] if layout.apache.is_dir() else []:
        if not (copy / "apache" / path.relative_to(layout.apache)).exists():
            path.unlink()
            changed.append(str(path))
    for kept in [p for p in copy.rglob("*") if _regular(p)]:
        rel = kept.relative_to(copy)
        live = layout.apache / rel.relative_to("apache") if rel.parts[0] == "apache" else layout.root / rel
        if write_atomic(live, kept.read_bytes(), mode=stat.S_IMODE(kept.stat().st_mode)):
            changed.append(str(live))
    return changed


def discard(config: ServerConfig) -> None:
    shutil.rmtree(config.layout.apache_live_copy, ignore_errors=True)


def configtest(config: ServerConfig) -> None:
    """``apachectl configtest`` on the generated files; ConfigRefused with its own message if it fails."""
    argv = [str(config.layout.apachectl), "configtest"]
    try:
        result = commands.run(argv, what="apachectl configtest", cwd=server_dir(config), env=child_environ(config),
                              check=False, timeout=CONFIGTEST_TIMEOUT)
    except commands.CommandFailed as err:
        raise ConfigRefused(f"{config.name}: cannot check the new Apache configuration ({err})") from None
    if result.ok:
        return
    said = [line.strip() for line in (result.stderr + result.stdout).splitlines()
            if line.strip() and "setlocale" not in line and "Syntax OK" not in line]
    message = " / ".join(said[-3:]) or f"exit {result.returncode}"
    raise ConfigRefused(f"{config.name}: the new Apache configuration fails `apachectl configtest` ({message}); "
                        "nothing was reloaded, the live configuration is as it was; fix web.* in the config")


def _regular(path: Path) -> bool:
    """A regular file (not a socket, a link or a directory) that generation writes."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False
