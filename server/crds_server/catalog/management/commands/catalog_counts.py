"""Print the catalog counts as one line of JSON (the same as JSON-RPC get_catalog_counts)."""
import json

from django.core.management.base import BaseCommand

from crds_server.catalog.queries import catalog_counts


class Command(BaseCommand):
    help = 'Print {"references", "mappings", "contexts", "operational_context", "observatory", "kind"} as JSON.'

    def handle(self, *args, **options):
        self.stdout.write(json.dumps(catalog_counts(), sort_keys=True))
