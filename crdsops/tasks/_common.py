"""What every task shares: the error boundary and the installed server's config."""

from __future__ import annotations

import functools
import logging
import os
import sys

from invoke import Exit, task


def debugging() -> bool:
    """True under `inv --debug` (or INVOKE_DEBUG), when tracebacks are wanted."""
    return bool(os.environ.get("INVOKE_DEBUG")) or logging.getLogger("invoke").isEnabledFor(logging.DEBUG)


def ops_task(*args, **kwargs):
    """``@task``, with library errors turned into one line on stderr and exit code 1.

    Unexpected exceptions also become one line unless ``inv --debug`` asks for the traceback.
    """

    def decorate(func):
        @functools.wraps(func)
        def body(c, *a, **kw):
            from crdsops.errors import CrdsOpsError

            try:
                return func(c, *a, **kw)
            except CrdsOpsError as err:
                if debugging():
                    raise
                raise Exit(f"error: {err}", code=1) from None
            except (Exit, SystemExit):
                raise
            except KeyboardInterrupt:
                raise Exit("interrupted", code=130) from None
            except BrokenPipeError:
                # `inv config | head`: the reader left; end quietly, as a Unix tool killed by SIGPIPE
                # would, and keep Python from complaining again when it flushes stdout at exit.
                _stdout_to_devnull()
                raise Exit(code=141) from None
            except Exception as err:
                if debugging() or type(err).__module__.startswith("invoke"):
                    raise
                raise Exit(
                    f"error: unexpected {type(err).__name__}: {err} "
                    f"(run `inv --debug {func.__name__}` for the traceback)", code=1
                ) from None

        return task(*args, **kwargs)(body)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        func, args = args[0], ()
        return decorate(func)
    return decorate


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def installed_config():
    from crdsops.identity import installed_config as load

    return load()


def confirm(question: str, assume_yes: bool) -> bool:
    """Ask before a destructive step; no answer (no terminal, EOF) means no."""
    if assume_yes:
        return True
    if not sys.stdin or not sys.stdin.isatty():
        return False
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False
