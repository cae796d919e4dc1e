"""Named points where tests make a task die or fail on purpose (no effect unless asked).

``CRDSOPS_FAILPOINT`` holds ``name=action`` pairs separated by commas; the action is
``kill`` (SIGKILL this process, as a power cut or an OOM kill would) or ``fail`` (raise
a CrdsOpsError). Example: ``CRDSOPS_FAILPOINT=backup.dumped=kill``. Operators never set it.
"""

from __future__ import annotations

import os
import signal

from crdsops.errors import CrdsOpsError


def _wanted() -> dict[str, str]:
    spec = os.environ.get("CRDSOPS_FAILPOINT", "")
    pairs = (item.split("=", 1) for item in spec.split(",") if "=" in item)
    return {name.strip(): action.strip() for name, action in pairs}


def hit(name: str) -> None:
    action = _wanted().get(name)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "fail":
        raise CrdsOpsError(f"failpoint {name} (CRDSOPS_FAILPOINT) made this step fail")


def active(name: str) -> bool:
    return name in _wanted()
