"""Bad input at a running server's /json/: a JSON-RPC error every time, and the server goes on answering.

The hst django server as `inv install` and `inv run` make it (runserver, DEBUG on: where an
uncaught error would be Django's HTML traceback page), reached over HTTP with urllib
(tests/vm posts the same bodies through Apache).
"""

from __future__ import annotations

from types import SimpleNamespace

import crdsclient as cc


def test_deep_and_huge_bodies_are_jsonrpc_errors_and_the_server_goes_on(running_hst):
    cc.workflow_bad_bodies(SimpleNamespace(url=running_hst.config("hst", "django").local_url, obs="hst"))
