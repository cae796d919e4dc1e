"""Times: how long ago something happened, for people; the precision the records keep a moment at.

Standard library only.
"""

from __future__ import annotations

import datetime


def age_text(delta: datetime.timedelta | float | None) -> str:
    """``45s``, ``12m``, ``5h 3m``, ``30h``, ``3d 4h``: how long ago, for people (hours up to two days)."""
    if delta is None:
        return "?"
    seconds = int(delta.total_seconds() if isinstance(delta, datetime.timedelta) else delta)
    if seconds < 0:
        return "in the future"
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 3600:
        return f"{minutes}m"
    if seconds < 86400:
        return f"{hours}h {minutes % 60}m" if minutes % 60 else f"{hours}h"
    if seconds < 2 * 86400:
        return f"{hours}h"
    return f"{days}d {hours % 24}h" if hours % 24 else f"{days}d"


def to_the_millisecond(when: datetime.datetime) -> datetime.datetime:
    """``when`` as the records keep an exact moment: a backup's start, orderable against a swap's."""
    return when.replace(microsecond=when.microsecond // 1000 * 1000)
