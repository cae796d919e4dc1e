from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "crds_server.catalog"
    label = "catalog"
    verbose_name = "CRDS file catalog"
