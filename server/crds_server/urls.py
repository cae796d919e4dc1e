"""URL layout.  /unchecked_get/ mirrors the file cache so Apache can alias it directly."""
from django.urls import path, re_path

from crds_server.catalog import views

urlpatterns = [
    path("", views.status_page, name="status"),
    path("health", views.health, name="health"),
    path("json/", views.jsonrpc, name="jsonrpc"),
    # The crds client appends method and request id "for the logs"; they are ignored.
    re_path(r"^json/(?P<method>[^/]+)/(?P<request_id>[^/]+)/$", views.jsonrpc),
    re_path(
        r"^unchecked_get/(?P<section>references|mappings)/(?P<observatory>[^/]+)/(?P<filename>[^/]+)$",
        views.unchecked_get,
        name="unchecked_get",
    ),
]
