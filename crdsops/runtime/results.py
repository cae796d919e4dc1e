"""The last result of a check (``inv runtests``, ``inv check-cache``), kept for ``inv status``.

``Layout.last_result(task)`` (``<root>/state/<task>.json``, 0600) holds one JSON object::

    schema    1
    task      "runtests" | "check-cache"
    at        when it ran (ISO 8601, UTC)
    ok        true | false
    seconds   how long it took

and what that check adds: runtests ``passed``, ``failed``, ``summary``, ``error`` (the one
line when it could not run); check-cache ``mode``, ``checked``, ``bytes``, ``problems``.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field

from crdsops.config.layout import Layout
from crdsops.files import ensure_dir, write_atomic

SCHEMA = 1


@dataclass(frozen=True)
class LastResult:
    task: str
    at: datetime.datetime | None
    ok: bool
    summary: str
    data: dict = field(default_factory=dict)  # the whole record, as written


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write(layout: Layout, task: str, ok: bool, seconds: float, **fields) -> dict:
    """Record the result of ``task`` now; return the record."""
    data = {"schema": SCHEMA, "task": task, "at": now_iso(), "ok": bool(ok), "seconds": round(seconds, 3), **fields}
    ensure_dir(layout.state)
    write_atomic(layout.last_result(task), json.dumps(data, indent=2, default=str) + "\n")
    return data


def read(layout: Layout, task: str) -> LastResult | None:
    """The last result of ``task``, or None when it never ran (or its record is unreadable)."""
    try:
        data = json.loads(layout.last_result(task).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "ok" not in data:
        return None
    try:
        at = datetime.datetime.fromisoformat(str(data.get("at")))
    except ValueError:
        at = None
    return LastResult(task, at, bool(data["ok"]), _summary(task, data), data)


def _summary(task: str, data: dict) -> str:
    if data.get("summary"):
        return str(data["summary"])
    if data.get("error"):
        return str(data["error"])
    if task == "check-cache":
        problems = data.get("problems") or {}
        count = sum(len(v) if isinstance(v, (list, dict)) else (v if isinstance(v, int) else 1)
                    for v in problems.values()) if isinstance(problems, dict) else 0
        mode = f" ({data['mode']})" if data.get("mode") else ""
        return f"{data.get('checked', '?')} files checked{mode}, {count} problem(s)"
    return "ok" if data.get("ok") else "failed"
