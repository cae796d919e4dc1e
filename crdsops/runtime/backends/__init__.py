"""Web-server backends: the base with the process helpers (``base``), Django's runserver
(``runserver``) and Apache/mod_wsgi (``modwsgi``). ``backend_for(config)`` picks one.
"""

from __future__ import annotations

from crdsops.config.model import ServerConfig
from crdsops.runtime.backends.base import Backend


def backend_for(config: ServerConfig) -> Backend:
    """The backend of ``web.server``: runserver, or Apache/mod_wsgi (imported only when used)."""
    if config.web.server == "mod_wsgi":
        from crdsops.runtime.backends.modwsgi import ModWsgiBackend

        return ModWsgiBackend()
    from crdsops.runtime.backends.runserver import RunserverBackend

    return RunserverBackend()
