#!/usr/bin/env python
"""Django's command-line utility for the CRDS server."""
import os
import sys


def main():
    # local settings are the safe default: DEBUG on, no secret key file needed.
    # Installed servers always pass DJANGO_SETTINGS_MODULE explicitly.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crds_server.settings.local")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
