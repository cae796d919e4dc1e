"""What a server is: its validated config (``model``, ``loader``), which one this checkout
runs (``installed``: the one resolver), and where its files live under its root (``layout``).

The lowest layer: it imports nothing of crdsops but ``errors`` and ``files``.
"""
