"""Where a server keeps its files: every path under its root, and its cache's trees, in one place.

    <root>/env.sh, env.csh      the server's environment for a login shell (``inv install``)
    <root>/secret_key           Django's secret key (0600)
    <root>/.demo-seeded         marks that the first install seeded the demo catalog
    <root>/run/                 pid files, the per-server lock ``crdsops.lock/``, the server's control socket
    <root>/logs/                server, Apache and cron logs; audit.jsonl (one line per changing task)
    <root>/crds-<obs>-<kind>.service  the systemd unit (``inv boot enable`` links it where systemd runs)
    <root>/logrotate.conf       the logs' rotation (``inv rotate-logs``); its state in ``state/logrotate.status``
    <root>/state/               the last result of each check (``last_result(task)``: runtests, check-cache)
    <root>/static/              collected static files
    <root>/dbbackup/            django-dbbackup's scratch storage
    <root>/apache/              the Apache that mod_wsgi-express generates; crds.wsgi its entry
    <root>/apache.live/         a copy of the live Apache files while `inv rerun` generates new ones
    <root>/mirror/              the mirror's fetch area (the source's backup)
    <root>/releases/<name>/     the releases of the server's code (``inv upgrade``): one git revision each,
                                with release.json (revision, stack, when made)
    <root>/current              the link to the release that serves, switched atomically
    <root>/stacks/<lock sha>/   a release's stack when its conda-lock.yml differs from stack.prefix's

The file cache (``CRDS_PATH``) holds ``references``, ``mappings``, ``config`` and ``pickles``,
each with one directory per observatory; ``server_files`` holds the support directories.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CACHE_TREES = ("references", "mappings", "config", "pickles")
SERVER_FILES_TREES = ("catalogs", "deliveries", "uploads", "ingest", "archive_cache")


@dataclass(frozen=True)
class Layout:
    root: Path
    cache: Path
    server_files: Path
    observatory: str

    # --- the server root -----------------------------------------------------------
    @property
    def env_sh(self) -> Path:
        return self.root / "env.sh"

    @property
    def env_csh(self) -> Path:
        return self.root / "env.csh"

    @property
    def secret_key(self) -> Path:
        return self.root / "secret_key"

    @property
    def seeded_marker(self) -> Path:
        return self.root / ".demo-seeded"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def lock(self) -> Path:
        return self.run / "crdsops.lock"

    @property
    def hold(self) -> Path:
        """While this file exists, the server holds new requests (at most ``web.hold_timeout``): a swap is under way."""
        return self.run / "hold"

    @property
    def catalog_generation(self) -> Path:
        """Rewritten whenever the catalog is swapped under the running server: its processes drop what they cached."""
        return self.run / "catalog.generation"

    @property
    def maintenance(self) -> Path:
        """While this file exists (``inv maintenance on``), JSON-RPC answers 503 with its message."""
        return self.run / "maintenance.json"

    @property
    def server_info_warm(self) -> Path:
        """get_server_info's download_metadata, precomputed from a staged database (restore, mirror)."""
        return self.run / "server_info.warm.json"

    @property
    def pid_file(self) -> Path:
        """The runserver backend's pid file (Apache has its own: ``httpd_pid``)."""
        return self.run / "server.pid"

    @property
    def server_control(self) -> Path:
        """The runserver backend's control socket: a new server takes the listening socket over through it."""
        return self.run / "server.sock"

    @property
    def httpd_pid(self) -> Path:
        return self.run / "httpd.pid"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs / "server.log"

    @property
    def apache_error_log(self) -> Path:
        return self.logs / "apache_error.log"

    @property
    def apache_access_log(self) -> Path:
        return self.logs / "apache_access.log"

    @property
    def backup_log(self) -> Path:
        return self.logs / "backup.log"

    @property
    def check_cache_log(self) -> Path:
        """The nightly sample cache check's log (its cron line)."""
        return self.logs / "check-cache.log"

    @property
    def boot_log(self) -> Path:
        """What the ``@reboot`` cron line's ``inv run`` says (``inv boot enable`` where systemd does not run)."""
        return self.logs / "boot.log"

    @property
    def rotate_log(self) -> Path:
        """The nightly ``inv rotate-logs`` line's log."""
        return self.logs / "rotate-logs.log"

    @property
    def nightly_log(self) -> Path:
        """Where the nightly job's cron line appends (``inv schedule --nightly``)."""
        return self.logs / "nightly.log"

    @property
    def cron_pause(self) -> Path:
        """Until when crdsops' cron lines do nothing (``inv schedule --pause-until``)."""
        return self.state / "cron-pause.json"

    @property
    def logrotate_conf(self) -> Path:
        """The logrotate configuration ``inv install`` writes for the logs under ``logs/``."""
        return self.root / "logrotate.conf"

    @property
    def logrotate_state(self) -> Path:
        """logrotate's own state file (when it last rotated each log), this server's alone."""
        return self.state / "logrotate.status"

    def systemd_unit(self, unit: str) -> Path:
        """The systemd unit ``inv install`` writes (``crds-<obs>-<kind>.service``); ``inv boot enable`` links it."""
        return self.root / unit

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.jsonl"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def last_result(self, task: str) -> Path:
        """Where the last result of ``task`` (``runtests``, ``check-cache``) is kept, for ``inv status``."""
        return self.state / f"{task}.json"

    @property
    def static(self) -> Path:
        return self.root / "static"

    @property
    def dbbackup(self) -> Path:
        return self.root / "dbbackup"

    @property
    def apache(self) -> Path:
        return self.root / "apache"

    @property
    def httpd_conf(self) -> Path:
        return self.apache / "httpd.conf"

    @property
    def apache_include(self) -> Path:
        """crdsops's own Apache directives, included at the end of the generated httpd.conf."""
        return self.apache / "crdsops.conf"

    @property
    def apachectl(self) -> Path:
        return self.apache / "apachectl"

    @property
    def apache_live_copy(self) -> Path:
        """The live Apache files (and crds.wsgi) kept while a rerun generates and checks new ones."""
        return self.root / "apache.live"

    @property
    def wsgi_entry(self) -> Path:
        return self.root / "crds.wsgi"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current(self) -> Path:
        """The link to the release that serves (none before the first ``inv upgrade``: the checkout serves)."""
        return self.root / "current"

    @property
    def stacks(self) -> Path:
        """Stacks of releases whose lock differs from ``stack.prefix``'s, one per lock sha256."""
        return self.root / "stacks"

    @property
    def mirror_work(self) -> Path:
        return self.root / "mirror"

    @property
    def private_dirs(self) -> tuple[Path, ...]:
        """Directories under the root that hold data or secrets (0700)."""
        return (self.run, self.logs, self.dbbackup, self.state)

    # --- the file cache and server files ---------------------------------------------
    def cache_tree(self, tree: str) -> Path:
        """``<cache>/<tree>/<observatory>``: references, mappings, config or pickles."""
        return self.cache / tree / self.observatory

    @property
    def references(self) -> Path:
        return self.cache_tree("references")

    @property
    def mappings(self) -> Path:
        return self.cache_tree("mappings")

    def server_files_tree(self, tree: str) -> Path:
        return self.server_files / tree

    @property
    def catalogs(self) -> Path:
        return self.server_files_tree("catalogs")

    @property
    def deliveries(self) -> Path:
        return self.server_files_tree("deliveries")
