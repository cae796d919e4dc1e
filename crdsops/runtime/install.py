"""``inv install``: lay out a server's directories and environment, migrate its database.

Idempotent: a second run rewrites nothing that is already right, keeps the secret key and
the data, and only migrates what is new.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from crdsops.config import installed as identity
from crdsops.config.layout import CACHE_TREES, SERVER_FILES_TREES
from crdsops.config.model import ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.files import ensure_dir, write_atomic
from crdsops.runtime import logrotation, unitfile
from crdsops.runtime.backends import backend_for
from crdsops.runtime.environ import check_stack_has_vm, manage, render_env_csh, render_env_sh, stack_python
from crdsops.runtime.lifecycle import Operation
from crdsops.runtime.outcomes import InstallOutcome
from crdsops.steps import Plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstallFacts:
    """What the read-only checks found: who installed what here, whom the data belongs to."""

    installed: str | None  # the server recorded as installed here (None: none yet)
    owner: tuple[int, int] | None  # uid/gid of the web server's user when we are root


def probe(config: ServerConfig) -> InstallFacts:
    """Fails (CrdsOpsError) before anything is created when there is no stack, another server is
    installed here, the MySQL option file or login is wrong, or the web server cannot run."""
    stack_python(config)
    check_stack_has_vm(config)
    _check_replacing(config)
    if config.database.is_mysql:
        from crdsops.db import mysql

        mysql.preflight(config)
    backend_for(config).preflight(config)
    installed = identity.read_installed()
    return InstallFacts(installed.name if installed else None, _data_owner(config))


def plan(config: ServerConfig, facts: InstallFacts, while_serving: bool = False) -> Plan:
    """The steps of installing ``config``'s server, written from ``facts``.

    ``while_serving``: the steps a rerun takes while the old server still serves; the web
    server's own set-up is left to ``Backend.reload`` (Apache's is generated and checked beside
    the live one), and Django's system checks are a step of their own where it does not run them.
    """
    layout, db, web, owner = config.layout, config.database, config.web, facts.owner
    backend = backend_for(config)
    p = Plan(f"installing {config.name}")
    if db.is_mysql:
        from crdsops.db import mysql

        p.add(f"MySQL: login to {db.host}:{db.port} with {db.option_file} (checked: ok); create the database "
              f"{db.name} if missing", lambda: mysql.prepare_database(config), name="creating the database")
    p.add("; ".join(f"{'keep' if path.exists() else 'create'} {label} {path}" for label, path in (
        ("server root", config.root), ("file cache", config.cache), ("server files", config.server_files))),
        lambda: (_make_dirs(config, owner), _write_secret_key(config, owner)), name="laying out directories")
    p.add(f"write {layout.env_sh} and {layout.env_csh.name}", lambda: _write_env_files(config),
          name="writing env.sh")
    p.add(f"write the systemd unit {unitfile.unit_path(config)} (`inv boot enable` installs it) and the "
          f"logrotate configuration {layout.logrotate_conf} (`inv rotate-logs`)",
          lambda: (unitfile.write(config), logrotation.write(config)), name="writing the boot and logrotate files")
    additive = (" (while the old server serves: the project's migrations are additive, new tables and "
                "columns the old code does not read)" if while_serving else "")
    p.add(f"migrate the {db.engine} database {db.name}{additive}; collect static files into {layout.static}",
          lambda: _migrate(config, owner), name="migrating the database")
    if while_serving and web.server != "mod_wsgi":
        p.add("run Django's system checks (manage.py check --database default)",
              lambda: manage(config, "check", "--database", "default", capture=True), name="checking Django")
    if web.server == "mod_wsgi" and not while_serving:
        p.add(f"generate Apache/mod_wsgi in {layout.apache} (port {web.port}, {web.processes}x{web.threads}, "
              f"as {web.user}) and check it can read the stack", lambda: backend.prepare(config),
              name="generating Apache")
    if _wants_demo(config):
        p.add("seed the demo catalog (first install of a django kind)", lambda: _seed_demo(config),
              name="seeding the demo catalog")
    if db.is_mysql:
        p.add("check the account's privileges for point-in-time restore (the binlog archive and its replay; "
              "a warning naming the GRANT when one is missing and the database server has a binary log)",
              lambda: _check_pitr_grants(config), name="checking the binlog privileges")
    p.add(f"record the installed identity {config.name} in {identity.state_file()}",
          lambda: _record(config), name="recording the install")
    return p


class Install(Operation):
    """``inv install``: idempotent; ``if_none``: nothing to do when a server is installed here already."""

    task = "install"
    lock_before_probe = False  # a first install's checks refuse before its root (and lock) exists

    def __init__(self, config: ServerConfig, if_none: bool = False):
        super().__init__(config)
        self.if_none = if_none

    def probe(self) -> InstallFacts | None:
        if self.if_none and identity.read_installed() is not None:
            return None
        return probe(self.config)

    def plan(self, facts: InstallFacts | None) -> Plan:
        if facts is None:
            p = Plan(f"installing {self.config.name}")
            p.add(f"{self.config.name} is already installed here; nothing to do")
            return p
        return plan(self.config, facts)

    def outcome(self) -> InstallOutcome:
        return InstallOutcome(self.config.root, f"{self.config.database.engine} {self.config.database.name}")


def _write_env_files(config: ServerConfig) -> None:
    layout = config.layout
    changed = [path.name for path, text in ((layout.env_sh, render_env_sh(config)),
                                            (layout.env_csh, render_env_csh(config)))
               if write_atomic(path, text, mode=0o644)]
    log.info(f"environment files: {'written ' + ', '.join(changed) if changed else 'unchanged'} in {config.root}")


def _migrate(config: ServerConfig, owner) -> None:
    log.info("migrating the database ...")
    manage(config, "migrate", "--noinput", capture=True)
    manage(config, "collectstatic", "--noinput", capture=True)
    if config.database.engine == "sqlite":
        _make_private(Path(config.database.name))  # Django creates it with the umask (0644)
        if owner:
            _chown_tree(Path(config.database.name).parent, owner)


def _check_pitr_grants(config: ServerConfig) -> None:
    """A warning, never a refusal: point-in-time restore is optional."""
    from crdsops.db import mysql

    if not mysql.binlog_enabled(config):
        return
    missing = mysql.missing_grants(config)
    if missing:
        log.warning(mysql.grant_advice(config, missing))


def _seed_demo(config: ServerConfig) -> None:
    manage(config, "seed_demo")
    write_atomic(config.layout.seeded_marker, "demo catalog seeded by the first install\n")


def _record(config: ServerConfig) -> None:
    identity.record_installed(config)
    log.info(f"installed {config.name} in {config.root} (database: {config.database.engine} {config.database.name})")


def _wants_demo(config: ServerConfig) -> bool:
    return config.tier == "django" and not config.layout.seeded_marker.exists()


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
    layout = config.layout
    ensure_dir(config.root, 0o755)
    private = (*layout.private_dirs, config.cache, config.server_files)
    for path in private:
        ensure_dir(path)
    ensure_dir(layout.static, 0o755)
    for tree in CACHE_TREES:
        ensure_dir(layout.cache_tree(tree))
    for tree in SERVER_FILES_TREES:
        ensure_dir(layout.server_files_tree(tree))
    if config.database.engine == "sqlite":
        ensure_dir(Path(config.database.name).parent)
    if owner:
        for path in private:
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
    key_file = config.layout.secret_key
    if not key_file.exists():
        write_atomic(key_file, secrets.token_urlsafe(50) + "\n")
    if owner:
        os.chown(key_file, *owner)

