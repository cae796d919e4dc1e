"""The server's Python stack: lock it with conda-lock and build it from the lock (``build``),
read locks (``condalock``), a conda stand-in on py-rattler (``rattler``) and a local channel
describing the system Python (``channel``).

Stands apart from the other layers: ``bin/bootstrap`` runs ``python3 -m crdsops.stack build``
with a bare Debian python3 before any package is installed, so nothing here imports anything
outside the standard library and ``crdsops.errors``.
"""
