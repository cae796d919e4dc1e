"""Django's development server that can take over a running one's socket (see crds_server/devserver.py)."""
import os
import signal
import sys
import threading

import django
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from crds_server import devserver


class Command(BaseCommand):
    help = ("Serve the project with Django's development server on HOST:PORT. With --control, listen for a "
            "successor on that unix socket; with --take-over, load the application, then take the listening "
            "socket of the server at --control (it finishes its requests and exits): nothing is refused. "
            "SIGTERM or Ctrl-C: stop accepting, answer the requests in hand, exit.")
    requires_system_checks = []  # as `runserver --skip-checks`: install has run them

    def add_arguments(self, parser):
        parser.add_argument("addrport", help="HOST:PORT to listen on (or the address the taken-over socket has)")
        parser.add_argument("--control", default=None, help="the unix socket a successor asks for our socket on")
        parser.add_argument("--take-over", action="store_true", help="take the socket of the server at --control")
        parser.add_argument("--log", default=None,
                            help="once serving, write output to this file (until then: to stdout, for the caller)")

    def handle(self, *args, **options):
        host, _, port = options["addrport"].rpartition(":")
        if not host or not port.isdigit():
            raise CommandError(f"{options['addrport']!r} is not HOST:PORT")
        address, control_path = (host, int(port)), options["control"]
        if options["take_over"] and not control_path:
            raise CommandError("--take-over needs --control, the socket of the server to take over")
        app = devserver.application()
        warm_up()
        listener = confirm = predecessor = None
        if options["take_over"]:
            try:
                devserver.preflight(app)
                listener, confirm, predecessor = devserver.take_over(control_path, address)
            except devserver.HandoverError as err:
                raise CommandError(str(err)) from None
        self.serve(devserver.Server(address, app, listener), control_path, confirm, predecessor, options["log"])

    def serve(self, httpd, control_path, confirm, predecessor, log):
        done = threading.Event()
        control = devserver.Control(control_path, httpd, done) if control_path else None
        received = stop_on_signals(done)
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="accept").start()
        if confirm is not None:
            try:
                with confirm:
                    confirm.sendall(b"ACCEPTING\n")  # from now on the predecessor drains
            except OSError as err:
                httpd.drain()
                if control:
                    control.close()
                raise CommandError(
                    f"could not tell pid {predecessor} that we accept ({err}); it goes on serving") from None
        if control:
            control.publish()
        self.announce(httpd, predecessor)
        if log:
            redirect_output(log)
        while not done.wait(0.5):
            pass
        why = "handed over to a successor" if control and control.handed_over else "stopping"
        self.stdout.write(f"{why}: finishing the requests in hand (pid {os.getpid()})")
        sys.stdout.flush()
        httpd.drain()
        if control:
            control.close()
        if signal.SIGTERM in received:
            sys.exit(128 + signal.SIGTERM)  # as if SIGTERM had ended it (runserver's way); Ctrl-C ends with 0, as there

    def announce(self, httpd, predecessor):
        host, port = httpd.server_address[:2]
        took = f" (took over from pid {predecessor})" if predecessor else ""
        self.stdout.write(
            f"Django version {django.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"Starting development server at http://{host}:{port}/{took} (pid {os.getpid()})\n"
            "Quit the server with CONTROL-C."
        )
        sys.stdout.flush()


def warm_up():
    """Import the URLconf and the views now, while the predecessor still serves, not on the first request."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - the import is the point


def stop_on_signals(done: threading.Event) -> list[int]:
    """SIGTERM or Ctrl-C: stop gently (``done``); a second one: exit at once. Returns the signals received."""
    received = []

    def handler(signum, _frame):
        if received:
            os._exit(128 + signum)
        received.append(signum)
        done.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return received


def redirect_output(path: str) -> None:
    """From now on our output goes to the server's log; the caller reading our stdout sees its end."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
