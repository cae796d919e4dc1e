"""Progress on long work: a tqdm bar of bytes on a terminal, nothing in a log.

Off a terminal (cron, a pipe) the callers say a line every few seconds instead. tqdm is in
the stack; a machine without it is treated as off a terminal.
"""

from __future__ import annotations

import sys


def terminal_bar(total_bytes: int, desc: str, leave: bool = True):
    """A tqdm bar (bytes, rate, ETA) on stderr when it is a terminal; None otherwise or without tqdm."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, file=sys.stderr,
                mininterval=0.5, leave=leave, dynamic_ncols=True)
