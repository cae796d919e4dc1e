"""A server's runtime: the environment it runs in (``environ``), the web-server backends
(``backends``), starting and stopping (``service``), asking it over JSON-RPC (``health``),
installing it (``install``), its self-tests (``selftest``) and the per-server lock (``lock``).
Imports the config and db layers below it.
"""
