"""Load a server's config: ``configs/defaults.yaml`` overlaid by ``configs/<obs>/<kind>.yaml``.

Every key is validated into the frozen dataclasses of ``crdsops.config.model`` when loaded; unknown keys, wrong types and
bad choices are errors that name the file, the key and what was expected. Values may use
``{observatory}``, ``{kind}``, ``{root}`` (the resolved server root) and ``{home}``;
relative paths resolve against the checkout.

Environment overrides (never edit tracked files to run a second server or a test):
``CRDSOPS_CONFIGS`` names the configs directory.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import types
import typing
import unicodedata
from pathlib import Path
from typing import Any, Literal

from crdsops.config.model import CHECKOUT, ServerConfig, parse_duration
from crdsops.errors import CrdsOpsError

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_NOT_CONFIG_KEYS = ("sources", "configs")  # fields of ServerConfig that say where it came from
# age's own recipients (bech32 age1 + 58 characters) and the SSH public keys age also encrypts to
_AGE_RECIPIENT = re.compile(r"^(age1[02-9ac-hj-np-z]{58}|ssh-(ed25519|rsa) [A-Za-z0-9+/=]+( .*)?)$")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # C0/C1 but tab, newline, return


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
    directory = Path(directory or configs_dir()).resolve()
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
    offsite = config.backups.offsite
    if offsite.remote and not offsite.recipients:  # an upload nobody can decrypt, or one in clear: neither
        raise CrdsOpsError(f"{origin.get('backups.offsite.remote')}: key backups.offsite.remote is set but "
                           "backups.offsite.recipients is empty; list the age public keys the copies are encrypted to")
    return dataclasses.replace(config, sources=tuple(str(f) for f in files if f.exists()), configs=directory)


def load_defaults_section(cls: type, key: str, directory: Path | None = None):
    """One section of ``defaults.yaml`` alone (e.g. ``stack`` or ``ssh``), validated as ``cls``.

    For what holds before any server is chosen: the stack prefix of a fresh checkout, how to
    reach a host that no config names. Placeholders other than ``{home}`` are not available.
    """
    directory = Path(directory or configs_dir())
    path = directory / "defaults.yaml"
    data = _read_yaml(path) if path.exists() else {}
    origin = {key: path, **{sub: path for sub in _dotted_keys(data.get(key) or {}, key + ".")}}
    section = _expand(data.get(key) or {}, {"home": str(Path.home())}, origin, key)
    return _build(cls, section, origin, key + ".")


# --- reading and merging -------------------------------------------------------------

def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CrdsOpsError(f"{path}: config file missing; create it or fix CRDSOPS_CONFIGS") from None
    except OSError as err:
        raise CrdsOpsError(f"{path}: cannot read it ({err.strerror}); check its permissions") from None
    text = _decoded(path, raw)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        what = " ".join(str(getattr(err, "problem", None) or err).split())
        raise CrdsOpsError(f"{path}:{where} not valid YAML ({what})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CrdsOpsError(f"{path}: expected a mapping of keys at the top level")
    return data


def _decoded(path: Path, raw: bytes) -> str:
    """The text of a config file, or one line naming the line and the byte that is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise CrdsOpsError(
            f"{path}: line {line}: byte 0x{raw[err.start]:02x} at column {column} is not UTF-8; "
            "save the file as UTF-8"
        ) from None
    bad = _CONTROL.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        column = bad.start() - (text.rfind("\n", 0, bad.start()) + 1) + 1
        char = bad.group()
        name = unicodedata.name(char, "NUL" if char == "\0" else "a control character")
        raise CrdsOpsError(f"{path}: line {line}: {name} (U+{ord(char):04X}) at column {column}; remove it")
    return text


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
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_CONFIG_KEYS}
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
    if origin_t is tuple:  # tuple[str, ...]: a list in YAML, or one item alone
        items = value if isinstance(value, list) else [value]
        return tuple(_convert(typing.get_args(hint)[0], item, origin, dotted) for item in items)
    if hint is datetime.timedelta:
        duration = parse_duration(value) if isinstance(value, str) else None
        if duration is None:
            raise CrdsOpsError(f"{where}: key {dotted}: expected a duration such as 26h, 90m, 2d or 1h30m "
                               f"(or null for none), got {value!r}")
        return duration
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
        if dotted.endswith("port") and not 1 <= value <= 65535:
            raise CrdsOpsError(f"{where}: key {dotted}: expected a TCP port from 1 to 65535, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str) or not value:
            raise CrdsOpsError(f"{where}: key {dotted}: expected a non-empty string, got {value!r}")
        if dotted.endswith("url") and not re.match(r"^https?://[^/\s]+", value):
            raise CrdsOpsError(f"{where}: key {dotted}: expected an http:// or https:// URL, got {value!r}")
        if dotted.endswith(("mail_to", "mail_from")) and not re.match(r"^[^@\s]+@[^@\s]+$", value):
            raise CrdsOpsError(f"{where}: key {dotted}: expected a mail address (user@host), got {value!r}")
        if dotted == "backups.offsite.recipients" and value.startswith("AGE-SECRET-KEY-"):
            raise CrdsOpsError(f"{where}: key {dotted}: that is an age PRIVATE key; put its public key here "
                               "(`age-keygen -y FILE`) and keep the private key off the server")
        if dotted == "backups.offsite.recipients" and not _AGE_RECIPIENT.match(value):
            raise CrdsOpsError(f"{where}: key {dotted}: expected an age public key (age1..., or an ssh-ed25519 "
                               f"or ssh-rsa public key), got {value!r}")
        if dotted == "backups.offsite.remote" and ":" not in value:
            raise CrdsOpsError(f"{where}: key {dotted}: expected an rclone remote and path (REMOTE:PATH, e.g. "
                               f"crdsoffsite:backups/hst.ops), got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise CrdsOpsError(f"{where}: key {dotted}: expected a path, got {value!r}")
        return _absolute(value)
    raise TypeError(f"no converter for {hint!r}")  # a programming error, not a config one
