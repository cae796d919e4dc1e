"""``inv install``: lay out a server's directories and environment, migrate its database.

Idempotent: a second run rewrites nothing that is already right, keeps the secret key and
the data, and only migrates what is new.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from crdsops import identity
from crdsops.config import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir, write_atomic
from crdsops.serverenv import (
    SUBDIRS_OF_CACHE,
    SUBDIRS_OF_SERVER_FILES,
    manage,
    paths,
    render_env_csh,
    render_env_sh,
    stack_python,
)
from crdsops.serverlock import server_lock
from crdsops.service import backend_for

SEEDED_MARKER = ".demo-seeded"


def plan(config: ServerConfig) -> list[str]:
    """What ``install`` would do, from read-only probes."""
    steps = []
    for label, path in (("server root", config.root), ("file cache", config.cache),
                        ("server files", config.server_files)):
        steps.append(f"{'keep' if path.exists() else 'create'} {label} {path}")
    steps.append(f"write {config.root / 'env.sh'} and env.csh")
    steps.append(f"record the installed identity {config.name} in {identity.state_file()}")
    if config.database.is_mysql:
        db = config.database
        steps.append(f"check the option file {db.option_file} (0600) and the login to {db.host}:{db.port}; "
                     f"create MySQL database {db.name} if missing")
    steps.append(f"migrate the {config.database.engine} database {config.database.name}")
    steps.append("collect static files")
    if config.web.server == "mod_wsgi":
        steps.append(f"generate Apache/mod_wsgi in {config.root / 'apache'} (port {config.web.port}, "
                     f"{config.web.processes}x{config.web.threads}, as {config.web.user}) and check it can read the stack")
    if _wants_demo(config):
        steps.append("seed the demo catalog (first install of a django kind)")
    return steps


def install(config: ServerConfig, say=print) -> None:
    stack_python(config)  # fail before creating anything when there is no stack
    _check_replacing(config)
    if config.database.is_mysql:  # option file mode, login, the database: before any directory
        from crdsops import mysql

        mysql.preflight(config)
        mysql.prepare_database(config, say=say)
    backend_for(config).preflight(config)
    with server_lock(config, "install", say=say):
        _lay_out(config, say)


def _lay_out(config: ServerConfig, say) -> None:
    owner = _data_owner(config)
    _make_dirs(config, owner)
    _write_secret_key(config, owner)
    changed = [name for name, text in (("env.sh", render_env_sh(config)), ("env.csh", render_env_csh(config)))
               if write_atomic(config.root / name, text, mode=0o644)]
    say(f"environment files: {'written ' + ', '.join(changed) if changed else 'unchanged'} in {config.root}")
    say("migrating the database ...")
    manage(config, "migrate", "--noinput", capture=True)
    manage(config, "collectstatic", "--noinput", capture=True)
    if config.database.engine == "sqlite":
        _make_private(Path(config.database.name))  # Django creates it with the umask (0644)
    if config.database.engine == "sqlite" and owner:
        _chown_tree(Path(config.database.name).parent, owner)
    backend_for(config).prepare(config)
    if _wants_demo(config):
        manage(config, "seed_demo")
        write_atomic(config.root / SEEDED_MARKER, "demo catalog seeded by the first install\n")
    identity.record_installed(config)
    say(f"installed {config.name} in {config.root} (database: {config.database.engine} {config.database.name})")


def _wants_demo(config: ServerConfig) -> bool:
    return config.tier == "django" and not (config.root / SEEDED_MARKER).exists()


def _check_replacing(config: ServerConfig) -> None:
    installed = identity.read_installed()
    if installed is not None and installed.name != config.name:
        raise CrdsOpsError(
            f"this checkout already runs {installed.name} (recorded in {identity.state_file()}); "
            f"stop it and remove that file to install {config.name} instead, or set CRDSOPS_STATE "
            "to install a second server"
        )


def _data_owner(config: ServerConfig) -> tuple[int, int] | None:
    """The uid/gid that must own data directories: the web server's user when we are root."""
    if os.geteuid() != 0 or not config.web.user:
        return None
    import grp
    import pwd

    try:
        uid = pwd.getpwnam(config.web.user).pw_uid
        gid = grp.getgrnam(config.web.group or config.web.user).gr_gid
    except KeyError:
        raise CrdsOpsError(
            f"web.user {config.web.user!r} or web.group {config.web.group!r} does not exist on this "
            "machine; create it or fix the config"
        ) from None
    return uid, gid


def _make_dirs(config: ServerConfig, owner) -> None:
    p = paths(config)
    ensure_dir(config.root, 0o755)
    for path in (p["run"], p["logs"], p["dbbackup"], config.cache, config.server_files):
        ensure_dir(path)
    ensure_dir(p["static"], 0o755)
    for sub in SUBDIRS_OF_CACHE:
        ensure_dir(config.cache / sub / config.observatory)
    for sub in SUBDIRS_OF_SERVER_FILES:
        ensure_dir(config.server_files / sub)
    if config.database.engine == "sqlite":
        ensure_dir(Path(config.database.name).parent)
    if owner:
        for path in (p["run"], p["logs"], p["dbbackup"], config.cache, config.server_files):
            _chown_tree(path, owner)


def _make_private(path: Path) -> None:
    """A data file is 0600 (SQLite gives its journals the database file's mode)."""
    if path.exists() and path.stat().st_mode & 0o777 != 0o600:
        os.chmod(path, 0o600)


def _chown_tree(path: Path, owner: tuple[int, int]) -> None:
    uid, gid = owner
    for dirpath, _dirnames, filenames in os.walk(path):
        os.chown(dirpath, uid, gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _write_secret_key(config: ServerConfig, owner) -> None:
    key_file = paths(config)["secret_key"]
    if not key_file.exists():
        write_atomic(key_file, secrets.token_urlsafe(50) + "\n")
    if owner:
        os.chown(key_file, *owner)

