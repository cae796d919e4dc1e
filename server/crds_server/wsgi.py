"""WSGI entry point for mod_wsgi; the environment is set by the server's env.sh."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crds_server.settings.production")

application = get_wsgi_application()
