"""Real receivers on loopback for the notifications: an HTTP server that records pings, an SMTP server.

``PingReceiver`` is a ThreadingHTTPServer on 127.0.0.1 that answers 200 to every request and
records method, path, query and body, as Healthchecks would receive them. ``MailReceiver`` is
aiosmtpd's SMTP server (its ``Controller`` runs it in a thread) keeping every message it
accepted. Both are context managers that stop their server on exit.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from support import free_port


@dataclass
class Ping:
    method: str
    path: str
    query: dict
    body: str


class PingReceiver:
    def __init__(self, status: int = 200):
        self.pings: list[Ping] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
                parts = urllib.parse.urlsplit(self.path)
                receiver.pings.append(Ping(self.command, parts.path, dict(urllib.parse.parse_qsl(parts.query)), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = do_HEAD = _record

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ping/0c3e7a41-check"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PingReceiver:
        self.thread.start()
        return self

    def __exit__(self, *_exc):
        self.server.shutdown()
        self.server.server_close()

    def paths(self) -> list[str]:
        return [p.path.removeprefix("/ping/0c3e7a41-check") or "/" for p in self.pings]


class MailReceiver:
    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, _server, _session, envelope):
                receiver.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                receiver.messages.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                                  policy=email.policy.default))
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> MailReceiver:
        self.controller.start()
        return self

    def __exit__(self, *_exc):
        self.controller.stop()

    def wait(self, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)


def closed_port() -> int:
    """A loopback port nothing listens on (a receiver that is down)."""
    return free_port()
