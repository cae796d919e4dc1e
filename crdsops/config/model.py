"""The typed record of a server's config: what ``crdsops.config.loader`` validates into.

Frozen dataclasses, one per section of the YAML files; the loader derives each key's
expected type from the annotations here, so a new key is one annotated field.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from crdsops.config.layout import Layout

CHECKOUT = Path(__file__).resolve().parents[2]
TIERS = ("django", "dev", "test", "ops")  # lowest to highest: data flows downward only


@dataclass(frozen=True)
class Database:
    engine: Literal["sqlite", "mysql"]
    name: str
    host: str = "127.0.0.1"
    port: int = 3306
    option_file: Path | None = None

    @property
    def is_mysql(self) -> bool:
        return self.engine == "mysql"


@dataclass(frozen=True)
class Web:
    server: Literal["runserver", "mod_wsgi"]
    host: str
    port: int
    processes: int = 1
    threads: int = 1
    wsgi_mode: Literal["embedded", "daemon"] = "embedded"
    user: str | None = None
    group: str | None = None
    start_timeout: int = 60
    stop_timeout: int = 20
    hold_timeout: int = 10  # seconds the server holds requests while a swap is under way, at most


@dataclass(frozen=True)
class Offsite:
    """Encrypted off-site copies of each verified backup (``crdsops.data.offsite``); off unless ``remote`` is set."""

    remote: str | None = None  # an rclone remote and path, e.g. crdsoffsite:backups/hst.ops
    rclone_config: Path | None = None  # rclone's config file (None: rclone's own default)
    recipients: tuple[str, ...] = ()  # age public keys; the private key is never on the server

    @property
    def enabled(self) -> bool:
        return bool(self.remote)


@dataclass(frozen=True)
class Backups:
    private_dir: Path
    shared_dir: Path
    keep: int = 7
    keep_days: int = 14
    min_keep: int = 2
    # tiers (restic/borg ``forget --keep-daily``...): the newest backup of each of the last N
    # days, ISO weeks, months (UTC) that have one; 0 (the default) adds nothing to the rules above
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    offsite: Offsite = dataclasses.field(default_factory=Offsite)


@dataclass(frozen=True)
class Stack:
    prefix: Path

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"


@dataclass(frozen=True)
class Ssh:
    user: str | None = None
    port: int | None = None
    key: Path | None = None
    known_hosts: Path | None = None
    gateway: str | None = None
    checkout: Path | None = None


@dataclass(frozen=True)
class Monitoring:
    """Thresholds that turn stale results into WARN in ``inv status``, and where alerts go.

    A ``None`` threshold is not checked. Durations are written ``26h``, ``90m``, ``2d``, ``1h30m``.
    """

    backup_max_age: datetime.timedelta | None = datetime.timedelta(hours=26)  # newest verified private backup
    shared_max_age: datetime.timedelta | None = datetime.timedelta(hours=26)  # the shared latest a mirror reads
    runtests_max_age: datetime.timedelta | None = None  # the last `inv runtests`
    check_cache_max_age: datetime.timedelta | None = None  # the last `inv check-cache`
    binlog_max_lag: datetime.timedelta | None = datetime.timedelta(minutes=5)  # the binlog archive behind the server
    ping_url: str | None = None  # Healthchecks-style: <url>/start, <url>, <url>/fail
    mail_to: tuple[str, ...] = ()
    mail_on: Literal["failure", "always"] = "failure"
    mail_from: str | None = None  # default crdsops@<this host>
    smtp_host: str | None = None  # None: the local sendmail
    smtp_port: int = 25
    sendmail: Path = Path("/usr/sbin/sendmail")
    timeout: int = 10  # seconds for each notification
    textfile_dir: Path | None = None  # node_exporter's textfile collector directory (None: no metrics file)

    @property
    def notifies(self) -> bool:
        """Whether anyone is to be told how a run went (a ping URL, mail addresses)."""
        return bool(self.ping_url or self.mail_to)


@dataclass(frozen=True)
class Logs:
    """The logs under ``<root>/logs`` (``inv rotate-logs``); the audit log is never rotated."""

    keep_days: int = 550  # rotated logs older than this are deleted (and at most this many kept)


@dataclass(frozen=True)
class Nightly:
    """``inv nightly``, the one nightly job (``inv schedule --nightly``)."""

    # the tiers whose servers run their self-tests each night: never ops, whose clients must
    # not meet a test's load or its seeded files
    runtests_tiers: tuple[Literal["django", "dev", "test", "ops"], ...] = ("dev", "test")


@dataclass(frozen=True)
class Upgrade:
    """``inv upgrade`` / ``inv rollback``: the releases of the server's code under ``<root>/releases``."""

    keep: int = 5  # the newest releases kept (the serving one and the one before it always are)
    repository: Path | None = None  # the git repository revisions come from (None: this checkout)


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> datetime.timedelta | None:
    """``26h``, ``90m``, ``2d``, ``1h30m``, ``45s`` as a timedelta; None when it is not one."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not match or not any(match.groups()):
        return None
    d, h, m, s = (int(g or 0) for g in match.groups())
    return datetime.timedelta(days=d, hours=h, minutes=m, seconds=s)


def format_duration(value: datetime.timedelta) -> str:
    """The inverse of ``parse_duration``: whole days as ``2d``, else hours (``26h``, ``1h30m``)."""
    seconds = int(value.total_seconds())
    if seconds and seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    out = ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


@dataclass(frozen=True)
class ServerConfig:
    observatory: str
    kind: str
    tier: Literal["django", "dev", "test", "ops"]
    host: str
    url: str
    root: Path
    cache: Path
    server_files: Path
    database: Database
    web: Web
    backups: Backups
    stack: Stack
    ssh: Ssh
    monitoring: Monitoring = Monitoring()
    logs: Logs = Logs()
    nightly: Nightly = Nightly()
    upgrade: Upgrade = Upgrade()
    sources: tuple = ()  # the files this config was read from, lowest precedence first
    configs: Path | None = None  # the configs directory it was loaded from

    @property
    def name(self) -> str:
        """The server's short name, as used for shared backups: ``hst.dev``."""
        return f"{self.observatory}.{self.kind}"

    @property
    def local_url(self) -> str:
        """Where this machine reaches the server (the public URL may be a proxy)."""
        return f"http://{self.web.host}:{self.web.port}"

    @property
    def tier_rank(self) -> int:
        return TIERS.index(self.tier)

    @property
    def layout(self) -> Layout:
        """Every path under the server root, and the cache's trees of this observatory."""
        return Layout(self.root, self.cache, self.server_files, self.observatory)

    def directory_keys(self) -> tuple[tuple[str, Path, str], ...]:
        """(key, directory, how to fix the key) for each key that names a directory crdsops makes
        or writes on this server's machine; what it keeps under one (``<root>/logs``, the cache's
        trees, a backup's temporary directory) is named after the nearest (``crdsops.files``)."""
        keys = [(key, path, f"point {key} at a directory") for key, path in (
            ("root", self.root), ("cache", self.cache), ("server_files", self.server_files),
            ("backups.private_dir", self.backups.private_dir), ("backups.shared_dir", self.backups.shared_dir),
            ("stack.prefix", self.stack.prefix),
        )]
        if self.monitoring.textfile_dir is not None:
            keys.append(("monitoring.textfile_dir", self.monitoring.textfile_dir,
                         "point monitoring.textfile_dir at a directory (or null: no metrics file)"))
        if self.database.engine == "sqlite":
            keys.append(("the directory of database.name", Path(self.database.name).parent,
                         "point database.name at a file in a directory"))
        return tuple(keys)

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("sources")
        data.pop("configs")
        return _plain(data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime.timedelta):
        return format_duration(value)
    return value
