#!/usr/bin/env python3
"""Median time of `inv --list` divided by that of `python -c "import invoke"`, same run.

Both run with the stack's Python, alternating, so machine noise hits both alike.
Target: at most 1.5 (Django, Fabric and YAML stay out of import time).
"""

import statistics
import sys

from common import STACK_BIN, figure, note, ratio_of_medians, timed

REPEATS = 21


def main() -> int:
    python, inv = STACK_BIN / "python", STACK_BIN / "inv"
    if not inv.exists():
        print(f"cannot measure: {inv} missing; run `make build`", file=sys.stderr)
        return 1
    plain, ours = [], []
    timed([str(inv), "--list"])  # warm the page cache and bytecode
    for _ in range(REPEATS):
        plain.append(timed([str(python), "-c", "import invoke"]))
        ours.append(timed([str(inv), "--list"]))
    note(f"inv --list median {statistics.median(ours) * 1000:.1f} ms, "
         f"import invoke median {statistics.median(plain) * 1000:.1f} ms, {REPEATS} runs each")
    figure("inv_list_vs_import_invoke", ratio_of_medians(ours, plain), "<= 1.5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
