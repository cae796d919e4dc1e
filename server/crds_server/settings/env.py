"""Reading the server's environment variables with errors that name the variable."""
import os
import re

from django.core.exceptions import ImproperlyConfigured


def require(name):
    """Return the non-empty value of environment variable `name` or fail naming it."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(
            f"environment variable {name} is not set; it is required by the CRDS server "
            f"(see docs/internals.md, 'The server's environment'; `inv manage` sets it)"
        )
    return value


def optional(name, default):
    """Return the value of `name`, or `default` when unset or empty."""
    value = os.environ.get(name, "").strip()
    return value or default


def release_name(directory):
    """The name in ``directory``/release.json (a release made by `inv upgrade`), else ""."""
    import json

    try:
        with open(os.path.join(directory, "release.json")) as handle:
            return str(json.load(handle).get("name", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def as_list(value):
    """Split a comma separated value, dropping blanks."""
    return [item.strip() for item in value.split(",") if item.strip()]


def observatory(value, name="CRDS_OBSERVATORY"):
    """Validate an observatory name without listing observatories (roman must be config-only)."""
    value = value.lower()
    if not re.fullmatch(r"[a-z][a-z0-9]{1,15}", value):
        raise ImproperlyConfigured(f"{name}={value!r} is not an observatory name like 'hst' or 'jwst'")
    return value


def read_secret_key(path):
    """Return the secret key stored in file `path`, or fail naming the variable."""
    try:
        with open(path, encoding="utf-8") as handle:
            key = handle.read().strip()
    except OSError as exc:
        raise ImproperlyConfigured(
            f"CRDS_SECRET_KEY_FILE={path!r} cannot be read ({exc.strerror}); "
            f"`inv install` writes it"
        ) from exc
    if not key:
        raise ImproperlyConfigured(f"CRDS_SECRET_KEY_FILE={path!r} is empty")
    return key
