"""Settings for runserver kinds (django, and any laptop use): DEBUG on."""
import os

from .base import *
from .env import optional, read_secret_key

DEBUG = True

_key_file = optional("CRDS_SECRET_KEY_FILE", "")
if _key_file and os.path.exists(_key_file):
    SECRET_KEY = read_secret_key(_key_file)
else:
    # Only ever acceptable on a developer's machine; production refuses this.
    SECRET_KEY = "django-insecure-crds-server-local-development-key"
