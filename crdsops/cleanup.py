"""Clean-up that runs every step whatever an earlier one raised, so the first cause stays the error.

    left = cleanup.every({"the staged database": engine.discard_staging,
                          "the staged support directories": support.discard_staging})

Each step that fails is a warning (``could not remove WHAT (why)``) and one entry of the list
returned; the caller raises its own error, which names what went wrong first, and may add what
was left behind. Interrupts are the caller's to defer (``interrupts.shielded``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def every(steps: dict[str, Callable[[], object]], verb: str = "remove") -> list[str]:
    """Run each step; return ``WHAT (why)`` for those that raised, in order."""
    failed = []
    for what, step in steps.items():
        try:
            step()
        except Exception as err:  # noqa: BLE001 - the next step runs whatever this one raised
            reason = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
            log.warning(f"could not {verb} {what} ({reason})")
            failed.append(f"{what} ({reason})")
    return failed
