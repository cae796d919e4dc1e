"""The server's Python stack: lock it with conda-lock and build it from the lock (``build``),
read locks (``condalock``), a conda stand-in on py-rattler (``rattler``), a local channel
describing the system Python (``channel``), the system packages (``system``) and commands
whose output streams into a log file (``logged``).

Stands apart from the other layers: ``bin/bootstrap`` runs ``python3 -m crdsops.stack build``
with a bare Debian python3 before any package is installed, so nothing here imports anything
outside the standard library and the stdlib-only core modules (``tests/test_layers.py``,
``STACK_MAY_IMPORT``: errors, files, interrupts, output, commands, steps, records).
"""
