"""The one exception the library raises for conditions an operator must fix."""


class CrdsOpsError(Exception):
    """A failure an operator can act on.

    The message is one line: what went wrong, then how to fix it. Tasks print it as
    the only output of a failed run (no traceback unless ``inv --debug``).
    """
