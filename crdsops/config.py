"""Server configuration: ``configs/defaults.yaml`` overlaid by ``configs/<obs>/<kind>.yaml``.

Every key is validated into frozen dataclasses when loaded; unknown keys, wrong types and
bad choices are errors that name the file, the key and what was expected. Values may use
``{observatory}``, ``{kind}``, ``{root}`` (the resolved server root) and ``{home}``;
relative paths resolve against the checkout.

Environment overrides (never edit tracked files to run a second server or a test):
``CRDSOPS_CONFIGS`` names the configs directory.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from crdsops.errors import CrdsOpsError

CHECKOUT = Path(__file__).resolve().parent.parent
TIERS = ("django", "dev", "test", "ops")  # lowest to highest: data flows downward only
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


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


@dataclass(frozen=True)
class Backups:
    private_dir: Path
    shared_dir: Path
    keep: int = 7
    keep_days: int = 14
    min_keep: int = 2


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
    sources: tuple = ()  # the files this config was read from, lowest precedence first

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

    def as_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data.pop("sources")
        return _plain(data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def configs_dir() -> Path:
    return Path(os.environ.get("CRDSOPS_CONFIGS") or CHECKOUT / "configs").resolve()


def observatories(directory: Path | None = None) -> list[str]:
    directory = directory or configs_dir()
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and _NAME.match(p.name))


def kinds(observatory: str, directory: Path | None = None) -> list[str]:
    directory = directory or configs_dir()
    return sorted(p.stem for p in (directory / observatory).glob("*.yaml") if _NAME.match(p.stem))


def check_identity(observatory: str, kind: str, directory: Path | None = None) -> None:
    """Refuse names that are not configured (this also rules out ``../x`` and friends)."""
    directory = directory or configs_dir()
    known = observatories(directory)
    if observatory not in known:
        raise CrdsOpsError(
            f"unknown observatory {observatory!r}; known: {', '.join(known) or 'none'} "
            f"(configs in {directory})"
        )
    known_kinds = kinds(observatory, directory)
    if kind not in known_kinds:
        raise CrdsOpsError(
            f"unknown kind {kind!r} for {observatory}; known: {', '.join(known_kinds)} "
            f"(configs in {directory / observatory})"
        )


def load_config(observatory: str, kind: str, directory: Path | None = None) -> ServerConfig:
    """Load and validate the config of one server."""
    directory = Path(directory or configs_dir())
    check_identity(observatory, kind, directory)
    files = [directory / "defaults.yaml", directory / observatory / f"{kind}.yaml"]
    merged: dict = {}
    origin: dict[str, Path] = {}
    for path in files:
        if path.exists() or path.name != "defaults.yaml":
            _merge(merged, _read_yaml(path), path, origin, "")
    placeholders = {"observatory": observatory, "kind": kind, "home": str(Path.home())}
    for key in ("observatory", "kind"):
        if key in merged and merged[key] != placeholders[key]:
            raise CrdsOpsError(
                f"{origin.get(key)}: key {key}: says {merged[key]!r} but the file is for "
                f"{observatory}/{kind}; fix the key or move the file"
            )
    merged.update(observatory=observatory, kind=kind)
    root = _expand(merged.get("root"), placeholders, origin, "root")
    placeholders["root"] = str(_absolute(root)) if isinstance(root, str) else ""
    config = _build(ServerConfig, _expand(merged, placeholders, origin, ""), origin, "")
    return dataclasses.replace(config, sources=tuple(str(f) for f in files if f.exists()))


def stack_prefix() -> Path:
    """The stack prefix of the installed server, else the default from defaults.yaml."""
    from crdsops import identity

    installed = identity.read_installed()
    if installed is not None:
        return load_config(installed.observatory, installed.kind, installed.configs).stack.prefix
    defaults = configs_dir() / "defaults.yaml"
    prefix = ((_read_yaml(defaults) if defaults.exists() else {}).get("stack") or {}).get("prefix")
    return _absolute(prefix or ".venv")


# --- reading and merging -------------------------------------------------------------

def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CrdsOpsError(f"{path}: config file missing; create it or fix CRDSOPS_CONFIGS") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise CrdsOpsError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CrdsOpsError(f"{path}: expected a mapping of keys at the top level")
    return data


def _merge(into: dict, data: dict, path: Path, origin: dict, prefix: str) -> None:
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, path, origin, dotted + ".")
        else:
            into[key] = value
            origin[dotted] = path
            if isinstance(value, dict):
                for sub in _dotted_keys(value, dotted + "."):
                    origin[sub] = path


def _dotted_keys(data: dict, prefix: str):
    for key, value in data.items():
        yield prefix + str(key)
        if isinstance(value, dict):
            yield from _dotted_keys(value, f"{prefix}{key}.")


def _expand(value: Any, placeholders: dict, origin: dict, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, placeholders, origin, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, str):
        try:
            return value.format_map(placeholders)
        except (KeyError, ValueError, IndexError) as err:
            raise CrdsOpsError(
                f"{origin.get(key, 'config')}: key {key}: bad placeholder in {value!r} ({err}); "
                f"use {{observatory}}, {{kind}}, {{root}} or {{home}}"
            ) from None
    return value


def _absolute(value: str | Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (CHECKOUT / path)


# --- validation ----------------------------------------------------------------------

def _build(cls: type, data: Any, origin: dict, prefix: str):
    where = origin.get(prefix.rstrip("."), None) if prefix else None
    if not isinstance(data, dict):
        raise CrdsOpsError(f"{where or 'config'}: key {prefix.rstrip('.')}: expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "sources"}
    for key in data:
        if key not in fields:
            dotted = f"{prefix}{key}"
            raise CrdsOpsError(
                f"{origin.get(dotted, 'config')}: unknown key {dotted}; "
                f"known keys{' under ' + prefix.rstrip('.') if prefix else ''}: {', '.join(fields)}"
            )
    values = {}
    for name, field in fields.items():
        dotted = f"{prefix}{name}"
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                files = " or ".join(str(p) for p in sorted(set(origin.values()))) or "the config"
                raise CrdsOpsError(f"{files}: missing key {dotted}")
            continue
        values[name] = _convert(hints[name], data[name], origin, dotted)
    return cls(**values)


def _convert(hint: Any, value: Any, origin: dict, dotted: str):
    where = origin.get(dotted, "config")
    origin_t = typing.get_origin(hint)
    if origin_t in (typing.Union, types.UnionType):  # Optional[X] and X | None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, origin, dotted)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, origin, dotted + ".")
    if origin_t is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise CrdsOpsError(f"{where}: key {dotted}: expected one of {', '.join(choices)}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise CrdsOpsError(f"{where}: key {dotted}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CrdsOpsError(f"{where}: key {dotted}: expected a non-negative integer, got {value!r}")
        if dotted.endswith(".port") and not 1 <= value <= 65535:
            raise CrdsOpsError(f"{where}: key {dotted}: expected a TCP port from 1 to 65535, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str) or not value:
            raise CrdsOpsError(f"{where}: key {dotted}: expected a non-empty string, got {value!r}")
        if dotted == "url" and not re.match(r"^https?://[^/\s]+", value):
            raise CrdsOpsError(f"{where}: key url: expected an http:// or https:// URL, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise CrdsOpsError(f"{where}: key {dotted}: expected a path, got {value!r}")
        return _absolute(value)
    raise TypeError(f"no converter for {hint!r}")  # a programming error, not a config one
