"""Typed records for the facts that cross modules, and their one way to and from JSON.

A record is a frozen dataclass that also inherits ``Record``. Inside the program its fields
are what they mean (``datetime``, ``Path``, nested records, tuples); only at the JSON edge
(the audit log, a manifest, ``--json`` documents, another host's answer) are they strings::

    @dataclass(frozen=True)
    class BackupRef(Record):
        name: str
        path: Path
        created: datetime.datetime | None = None

    ref.as_dict()             # {"name": ..., "path": "/...", "created": "2026-12-03T03:17:00+00:00"}
    BackupRef.from_dict(data) # the record again; RecordError naming the field that does not fit

``from_dict`` ignores keys it does not know (a newer crdsops on another host may add some)
and uses a field's default for a key that is missing; a field without a default must be there.

Standard library only.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from crdsops.errors import CrdsOpsError

R = TypeVar("R", bound="Record")


class RecordError(CrdsOpsError):
    """A document does not fit the record it should be read as."""


class Record:
    """Mixin for frozen dataclasses: ``as_dict()`` for JSON, ``from_dict()`` back, by the annotations."""

    def as_dict(self) -> dict:
        return {f.name: to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str = "") -> R:
        where = where or cls.__name__
        if isinstance(data, cls):
            return data
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected a mapping, got {type(data).__name__}")
        hints = _hints(cls)
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise RecordError(f"{where}: lacks {f.name!r}")
                continue
            values[f.name] = from_json(hints[f.name], data[f.name], f"{where}.{f.name}")
        return cls(**values)

    def replace(self: R, **changes) -> R:
        return dataclasses.replace(self, **changes)


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def to_json(value: Any) -> Any:
    """A value made of JSON's types: records and mappings as dicts, datetimes in ISO 8601, paths as strings."""
    if isinstance(value, Record):
        return value.as_dict()
    if isinstance(value, datetime.datetime):  # to the second, or the millisecond when it is kept so
        return value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_json(v) for v in value]
    return value


def from_json(hint: Any, value: Any, where: str) -> Any:
    """``value`` (read from JSON) as the type ``hint`` names; RecordError when it cannot be."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return from_json(option, value, where)
            except RecordError as err:
                errors.append(str(err))
        raise RecordError(errors[0] if errors else f"{where}: unexpected {value!r}")
    if hint is Any or hint is object:
        return value
    if hint in (list, dict, tuple):  # a container of anything: only its shape is checked
        if not isinstance(value, list if hint is tuple else hint):
            raise RecordError(f"{where}: expected a {hint.__name__}, got {type(value).__name__}")
        return tuple(value) if hint is tuple else value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [from_json(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected a mapping, got {type(value).__name__}")
        item = args[1] if len(args) == 2 else Any
        return {str(k): from_json(item, v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value, where)
    return _scalar(hint, value, where)


def _scalar(hint: Any, value: Any, where: str) -> Any:
    if hint is datetime.datetime:
        if isinstance(value, datetime.datetime):
            return value
        try:
            when = datetime.datetime.fromisoformat(str(value))
        except ValueError:
            raise RecordError(f"{where}: {value!r} is not an ISO 8601 time") from None
        return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)
    if hint is Path:
        if not isinstance(value, (str, Path)):
            raise RecordError(f"{where}: expected a path, got {type(value).__name__}")
        return Path(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (bool, int, str) and (type(value) is hint):
        return value
    raise RecordError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
