"""The environment the Django server runs in, and the manage.py commands run inside it.

One mapping feeds the subprocesses crdsops starts and the ``env.sh``/``env.csh`` files an
operator sources in a login shell, so the two can never disagree.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from crdsops import commands
from crdsops.config.model import CHECKOUT, ServerConfig
from crdsops.errors import CrdsOpsError
from crdsops.runtime.releases import serving_code

SERVER_DIR = CHECKOUT / "server"  # the checkout's; a server runs ``server_dir(config)``


def server_dir(config: ServerConfig) -> Path:
    """The server code that runs: the current release's (``inv upgrade``), else the checkout's."""
    return serving_code(config).server_dir


def settings_module(config: ServerConfig) -> str:
    return "crds_server.settings." + ("local" if config.web.server == "runserver" else "production")


def server_environ(config: ServerConfig) -> dict[str, str]:
    layout = config.layout
    db = config.database
    env = {
        "DJANGO_SETTINGS_MODULE": settings_module(config),
        "CRDS_OBSERVATORY": config.observatory,
        "CRDS_KIND": config.kind,
        "CRDS_SERVER_URL": config.url,
        "CRDS_SERVER_ROOT": str(config.root),
        "CRDS_PATH": str(config.cache),
        "CRDS_SERVER_FILES": str(config.server_files),
        "CRDS_DB_ENGINE": db.engine,
        "CRDS_DB_NAME": db.name,
        "CRDS_STATIC_ROOT": str(layout.static),
        "CRDS_SECRET_KEY_FILE": str(layout.secret_key),
        "CRDS_ALLOWED_HOSTS": ",".join(_allowed_hosts(config)),
        "CRDS_DBBACKUP_DIR": str(layout.dbbackup),
        "CRDS_HOLD_FILE": str(layout.hold),
        "CRDS_HOLD_TIMEOUT": str(config.web.hold_timeout),
        "CRDS_GENERATION_FILE": str(layout.catalog_generation),
        "CRDS_MAINTENANCE_FILE": str(layout.maintenance),
        "PYTHONPATH": str(server_dir(config)),
    }
    if db.is_mysql:
        env.update(CRDS_DB_HOST=db.host, CRDS_DB_PORT=str(db.port), CRDS_DB_OPTION_FILE=str(db.option_file or ""))
    return env


def _allowed_hosts(config: ServerConfig) -> list[str]:
    from urllib.parse import urlsplit

    hosts = [urlsplit(config.url).hostname or "", config.web.host, "localhost", "127.0.0.1", config.host]
    return list(dict.fromkeys(h for h in hosts if h))


def render_env_sh(config: ServerConfig) -> str:
    lines = [f"# {config.name}: written by `inv install`; source it to work in this server's environment"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in server_environ(config).items()]
    lines.append(f"export PATH={shlex.quote(str(serving_code(config).stack / 'bin'))}:\"$PATH\"")
    return "\n".join(lines) + "\n"


def render_env_csh(config: ServerConfig) -> str:
    lines = [f"# {config.name}: written by `inv install`; source it to work in this server's environment"]
    lines += [f"setenv {k} {_csh_quote(v)}" for k, v in server_environ(config).items()]
    lines.append(f"setenv PATH {_csh_quote(str(serving_code(config).stack / 'bin'))}:${{PATH}}")
    return "\n".join(lines) + "\n"


def _csh_quote(value: str) -> str:
    if "'" in value or "!" in value or "\n" in value:
        raise CrdsOpsError(f"value {value!r} cannot be quoted for csh; remove quotes or '!' from the config")
    return f"'{value}'"


def child_environ(config: ServerConfig) -> dict[str, str]:
    """The process environment for a server subprocess: ours, with the server's on top."""
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(server_environ(config))
    return env


def stack_python(config: ServerConfig) -> Path:
    """The Python the server runs with: its release's stack (``inv upgrade``), else ``stack.prefix``'s."""
    code = serving_code(config)
    if not code.python.exists():
        raise CrdsOpsError(f"no Python stack at {code.stack}; run `inv build` (or `make build`) first")
    return code.python


_FIND_MODULES = "import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] if u.find_spec(m) is None))"


def check_stack_has_vm(config: ServerConfig) -> None:
    """A VM kind (Apache/mod_wsgi, MySQL) needs the stack's vm category: one line naming the command that adds it."""
    needs = {}
    if config.web.server == "mod_wsgi":
        needs["mod_wsgi"] = "mod_wsgi"
    if config.database.is_mysql:
        needs["MySQLdb"] = "mysqlclient"
    if not needs:
        return
    proc = commands.run([stack_python(config), "-c", _FIND_MODULES, *needs], check=False,
                        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if not proc.ok:
        raise CrdsOpsError(f"the stack's python {stack_python(config)} does not run ({proc.last_error_line()}); "
                           "rebuild it with `inv build --force`")
    absent = [needs[m] for m in proc.stdout.split() if m in needs]
    if absent:
        serves = " and ".join(w for w, on in (("Apache/mod_wsgi", config.web.server == "mod_wsgi"),
                                             ("MySQL", config.database.is_mysql)) if on)
        raise CrdsOpsError(
            f"{config.name} runs on {serves}, and the stack {config.stack.prefix} has no {' or '.join(absent)} "
            "(its vm category); add it with `inv build --vm` (or `bin/bootstrap --vm`, which also installs the "
            "compiler and headers it builds with)"
        )


def manage_argv(config: ServerConfig, *args: str) -> list[str]:
    return [str(stack_python(config)), str(server_dir(config) / "manage.py"), *args]


def _manage_env(config: ServerConfig, extra_env: dict | None) -> dict:
    env = child_environ(config)
    env.update(extra_env or {})
    return env


def manage_failure(args, returncode: int, output: str = "") -> str:
    """One line for a failed ``manage.py ARGS``: its exit code and the last line it printed."""
    last = (output or "").strip().splitlines()[-1:]
    return f"manage.py {' '.join(args)} failed (exit {returncode})" + (f": {last[0]}" if last else "")


def start_manage(config: ServerConfig, *args: str, extra_env: dict | None = None) -> commands.Popen:
    """Start ``manage.py ARGS`` with text pipes on stdin, stdout and stderr (in our session, so
    ``side_by_side`` stops it with the job that started it)."""
    return commands.start(manage_argv(config, *args), env=_manage_env(config, extra_env), cwd=server_dir(config),
                          text=True, stdin=commands.PIPE, stdout=commands.PIPE, stderr=commands.PIPE)


def manage(config: ServerConfig, *args: str, capture: bool = False, check: bool = True,
           extra_env: dict | None = None) -> commands.Result:
    """Run ``manage.py ARGS`` in the server's environment.

    With ``capture`` the output is returned (and shown in the error if it fails);
    otherwise it streams to the terminal.
    """
    result = commands.run(manage_argv(config, *args), env=_manage_env(config, extra_env), cwd=server_dir(config),
                          capture=capture, check=False)
    if check and not result.ok:
        output = (result.stderr or result.stdout or "") if capture else ""
        raise CrdsOpsError(manage_failure(args, result.returncode, output))
    return result
