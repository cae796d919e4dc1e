"""Django's development server, able to hand its listening socket to a successor.

``manage.py serve`` runs this for the runserver kinds. It is Django's own dev server
(``ThreadedWSGIServer``, ``WSGIRequestHandler``, the project's WSGI application, static files
under DEBUG as ``runserver`` serves them) with two differences that let a restart refuse nobody:

- a control socket (a unix socket in ``<root>/run``) through which a new process, once it has
  loaded the application, asks for the listening socket (SCM_RIGHTS). Both then accept from the
  one kernel queue; when the new one says it accepts, the old one stops accepting, finishes the
  requests it holds and exits. A connection is never refused or reset on the way.
- SIGTERM and Ctrl-C stop it the same gentle way: no new connections, requests in hand finish.

The protocol, one line each way over the control socket::

    new -> old   HANDOVER
    old -> new   LISTENING <pid>          (with the listening socket's fd attached)
    new -> old   ACCEPTING                 (after its accept loop runs; the old one then drains)
"""

from __future__ import annotations

import io
import json
import os
import select
import socket
import threading
from pathlib import Path

from django.conf import settings
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler, get_internal_wsgi_application
from django.db import connections

KEEPALIVE_POLL = 0.25  # how often an idle keep-alive connection looks whether its server drains


class HandoverError(Exception):
    """The successor could not take the socket over; the old server goes on serving."""


def application():
    """The project's WSGI application as ``runserver`` wraps it (static files under DEBUG)."""
    handler = get_internal_wsgi_application()
    if settings.DEBUG and "django.contrib.staticfiles" in settings.INSTALLED_APPS:
        from django.contrib.staticfiles.handlers import StaticFilesHandler

        handler = StaticFilesHandler(handler)
    return handler


def preflight(app) -> None:
    """Answer one get_server_info in-process, so a new server that cannot (bad settings, a database it
    cannot open, a view that fails to import) never takes over; it also warms what the first request needs."""
    body = json.dumps({"jsonrpc": "1.0", "method": "get_server_info", "params": [], "id": "preflight"}).encode()
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/json/", "SCRIPT_NAME": "", "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), "HTTP_HOST": "localhost",
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.input": io.BytesIO(body), "wsgi.errors": io.StringIO(), "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }
    status = []
    result = app(environ, lambda code, headers, exc_info=None: status.append(code))
    try:
        answer = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
        connections.close_all()  # the request threads open their own
    try:
        error = json.loads(answer).get("error")
    except ValueError:
        error = answer[:200].decode(errors="replace")
    if not status or not status[0].startswith("200") or error:
        raise HandoverError(f"get_server_info fails here ({status[0] if status else 'no status'}): {error}")


class RequestHandler(WSGIRequestHandler):
    """Django's handler; between keep-alive requests it notices a drain and closes the connection."""

    def handle(self):
        self.close_connection = True
        self.handle_one_request()
        while not self.close_connection and self.server.next_request_arrives(self.connection):
            self.handle_one_request()
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Server(ThreadedWSGIServer):
    """Django's threaded dev server that tracks its request threads, so closing it waits for them."""

    daemon_threads = False  # Django's are daemons, which nobody waits for: in-flight requests would be cut
    block_on_close = True

    def __init__(self, address, app, listener: socket.socket | None = None):
        super().__init__(address, RequestHandler, bind_and_activate=listener is None)
        if listener is not None:  # taken over: the socket is bound and listening already
            self.socket.close()
            self.socket = listener
            self.server_address = listener.getsockname()
            # what HTTPServer.server_bind and WSGIServer.server_bind set, besides binding
            self.server_name, self.server_port = socket.getfqdn(self.server_address[0]), self.server_address[1]
            self.setup_environ()
        self.draining = threading.Event()
        self.set_app(app)

    def next_request_arrives(self, conn: socket.socket) -> bool:
        """Wait for the next request on a kept-alive connection; False once the server drains and it is idle."""
        while True:
            readable, _, _ = select.select([conn], [], [], KEEPALIVE_POLL)
            if readable:
                return True
            if self.draining.is_set():
                return False

    def drain(self) -> None:
        """Stop accepting; return once every request in hand is answered (the socket may live on elsewhere)."""
        self.draining.set()
        self.shutdown()  # ends serve_forever (run in another thread)
        self.server_close()  # closes our copy of the listening socket, joins the request threads


class Control:
    """The control socket: hands the listening socket to the first successor that asks."""

    def __init__(self, path: Path, server: Server, done: threading.Event):
        self.path, self.server, self.done = Path(path), server, done
        self.handed_over = False
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        staging = self.path.with_name(f"{self.path.name}.{os.getpid()}")
        staging.unlink(missing_ok=True)
        self.listener.bind(str(staging))
        os.chmod(staging, 0o600)
        self.listener.listen(2)
        self._staging, self._ident = staging, None

    def publish(self) -> None:
        """Put the control socket at its path (a predecessor's, if any, is replaced: it has handed over)."""
        os.replace(self._staging, self.path)
        st = os.stat(self.path)
        self._ident = (st.st_dev, st.st_ino)
        threading.Thread(target=self._serve, name="handover-control", daemon=True).start()

    def _serve(self) -> None:
        while not self.handed_over:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    self._hand_over(conn)
                except OSError:
                    pass  # the successor went away: we go on serving

    def _hand_over(self, conn: socket.socket) -> None:
        conn.settimeout(30)
        reader = conn.makefile("rb")
        if reader.readline().strip() != b"HANDOVER":
            return
        socket.send_fds(conn, [f"LISTENING {os.getpid()}\n".encode()], [self.server.fileno()])
        if reader.readline().strip() == b"ACCEPTING":
            self.handed_over = True
            self.done.set()

    def close(self) -> None:
        """Stop listening; remove the path unless a successor's socket is there now."""
        self.listener.close()
        self._staging.unlink(missing_ok=True)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._ident:
            self.path.unlink(missing_ok=True)


def take_over(path: Path, address: tuple[str, int]) -> tuple[socket.socket, socket.socket, int]:
    """Ask the server at control socket ``path`` for its listening socket.

    Returns (the listening socket, the control connection to confirm on, the old server's pid).
    """
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(30)
    try:
        conn.connect(str(path))
        conn.sendall(b"HANDOVER\n")
        message, fds, _, _ = socket.recv_fds(conn, 256, 1)
    except OSError as err:
        conn.close()
        raise HandoverError(f"no server to take over at {path} ({err.strerror or err})") from None
    if not fds or not message.startswith(b"LISTENING "):
        conn.close()
        raise HandoverError(f"the server at {path} answered {message[:40]!r} instead of its socket")
    listener = socket.socket(fileno=fds[0])
    bound = listener.getsockname()[:2]
    if (socket.gethostbyname(address[0]), address[1]) != (bound[0], bound[1]):
        listener.close()
        conn.close()
        raise HandoverError(f"the running server listens on {bound[0]}:{bound[1]}, not {address[0]}:{address[1]}")
    return listener, conn, int(message.split()[1])
