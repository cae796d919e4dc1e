"""Tell someone how a backup, restore, mirror or cache check went: a ping URL and mail.

``monitoring.ping_url`` is a dead man's switch in the style of Healthchecks.io: a run POSTs
``<url>/start`` when it begins, ``<url>`` when it succeeds and ``<url>/fail`` when it fails or
is interrupted, the last lines of its output as the body (at most 100 kB), each with the same
``rid`` (run id) query parameter so the receiver can pair start and end. A receiver that hears
nothing for a day knows the cron job did not even run.

``monitoring.mail_to`` gets a mail when a run fails (``mail_on: always``: every run), through
the SMTP server ``monitoring.smtp_host``:``smtp_port``, or with no SMTP host through the local
``monitoring.sendmail -t -oi``. From ``monitoring.mail_from``, else ``crdsops@<this host>``.

Nothing here raises: a notification that cannot be delivered comes back as a warning line,
which the task prints and puts in its audit line. A notification never fails the task. Each
attempt gives up after ``monitoring.timeout`` seconds.

Standard library only: ``urllib.request`` for the pings and ``smtplib``/``email`` for mail are
what a Healthchecks client or a mail library would wrap; nothing they add is needed here.
"""

from __future__ import annotations

import smtplib
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from crdsops import __version__, commands
from crdsops.config.model import ServerConfig

MAX_BODY = 100_000  # what Healthchecks keeps of a ping body


class Notifier:
    """The notifications of one run of ``task`` on ``config``'s server."""

    def __init__(self, config: ServerConfig, task: str):
        self.config, self.task = config, task
        self.monitoring = config.monitoring
        self.run_id = str(uuid.uuid4())
        self.host = socket.gethostname()

    @property
    def wanted(self) -> bool:
        return self.monitoring.notifies

    def started(self) -> list[str]:
        """Ping ``<url>/start``; return the warnings (empty: delivered, or nothing to send)."""
        if not self.monitoring.ping_url:
            return []
        return _list(self.ping("/start", ""))

    def finished(self, ok: bool, line: str, output: str) -> list[str]:
        """Ping success or failure, and mail when asked; return the warnings."""
        body = _body(self, ok, line, output)
        warnings = []
        if self.monitoring.ping_url:
            warnings += _list(self.ping("" if ok else "/fail", body))
        if self.monitoring.mail_to and (not ok or self.monitoring.mail_on == "always"):
            warnings += _list(self.mail(ok, line, body))
        return warnings

    # --- the two channels -----------------------------------------------------------------

    def ping(self, suffix: str, body: str) -> str | None:
        """POST ``body`` to the ping URL plus ``suffix``; None when delivered, else the warning."""
        url = ping_url(self.monitoring.ping_url, suffix, self.run_id)
        data = body.encode("utf-8", errors="replace")[-MAX_BODY:]
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "text/plain; charset=utf-8", "User-Agent": f"crdsops/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=self.monitoring.timeout) as response:
                response.read(1024)
        except urllib.error.HTTPError as err:
            return f"warning: ping {_shown(url)} was refused (HTTP {err.code}); the {self.task} itself is unaffected"
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            return f"warning: could not ping {_shown(url)} ({reason}); the {self.task} itself is unaffected"
        return None

    def mail(self, ok: bool, line: str, body: str) -> str | None:
        """Send the mail; None when the SMTP server or sendmail took it, else the warning."""
        m = self.monitoring
        message = EmailMessage()
        message["Subject"] = subject(self.config, self.task, ok, self.host, line)
        message["From"] = m.mail_from or f"crdsops@{socket.getfqdn() or self.host}"
        message["To"] = ", ".join(m.mail_to)
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self.host or None)
        message["X-Crdsops-Run"] = self.run_id
        message.set_content(body)
        try:
            if m.smtp_host:
                with smtplib.SMTP(m.smtp_host, m.smtp_port, timeout=m.timeout) as smtp:
                    smtp.send_message(message)
                return None
            result = commands.run([str(m.sendmail), "-t", "-oi"], what=str(m.sendmail), input=message.as_bytes(),
                                  text=False, timeout=m.timeout, check=False)
        except (OSError, smtplib.SMTPException, commands.NotInstalled, commands.TimedOut) as err:
            where = f"{m.smtp_host}:{m.smtp_port}" if m.smtp_host else str(m.sendmail)
            return f"warning: could not mail {', '.join(m.mail_to)} through {where} ({_reason(err)}); " \
                   f"the {self.task} itself is unaffected"
        if not result.ok:
            said = result.last_error_line()
            return (f"warning: {m.sendmail} refused the mail to {', '.join(m.mail_to)} "
                    f"(exit {result.returncode}{': ' + said if said else ''}); the {self.task} itself is unaffected")
        return None


def ping_url(base: str, suffix: str, run_id: str) -> str:
    """``base`` with ``suffix`` added to its path and ``rid=run_id`` to its query."""
    parts = urllib.parse.urlsplit(base)
    query = urllib.parse.parse_qsl(parts.query) + [("rid", run_id)]
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix,
                                                  query=urllib.parse.urlencode(query)))


def subject(config: ServerConfig, task: str, ok: bool, host: str, line: str) -> str:
    if ok:
        return f"[crdsops] {task} of {config.name} on {host}: ok"
    first = (line.splitlines()[0] if line.strip() else "failed").removeprefix("error: ")
    return f"[crdsops] {task} of {config.name} on {host} FAILED: {first[:200]}"


def _body(notifier: Notifier, ok: bool, line: str, output: str) -> str:
    config = notifier.config
    head = [f"{notifier.task} of {config.name} on {notifier.host}: {'ok' if ok else 'FAILED'}"]
    if line:
        head.append(line)
    head.append(f"audit log: {config.layout.audit_log} (`inv history` there)")
    tail = output.rstrip()
    return "\n".join(head) + ("\n\nlast lines of its output:\n" + tail if tail else "") + "\n"


def _shown(url: str) -> str:
    """The URL without its query (the run id) for messages."""
    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(query=""))


def _reason(err: BaseException) -> str:
    if isinstance(err, commands.TimedOut):
        return f"no answer within {err.timeout:g}s"
    if isinstance(err, commands.NotInstalled):
        err = err.error  # what the OSError said, as for any other OSError
    return str(err) or type(err).__name__


def _list(warning: str | None) -> list[str]:
    return [warning] if warning else []
