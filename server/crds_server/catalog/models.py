"""The catalog: one row per delivered file, plus the history of operational contexts."""
from django.db import models
from django.utils import timezone

REFERENCE = "reference"
MAPPING = "mapping"


class CatalogFile(models.Model):
    FILEKINDS = [(REFERENCE, "reference"), (MAPPING, "mapping")]

    name = models.CharField(max_length=128, unique=True)
    observatory = models.CharField(max_length=16)
    filekind = models.CharField(max_length=16, choices=FILEKINDS)
    instrument = models.CharField(max_length=32, blank=True, default="")
    reftype = models.CharField(max_length=32, blank=True, default="")
    size = models.BigIntegerField()
    sha1sum = models.CharField(max_length=40)
    state = models.CharField(max_length=16, default="delivered")
    blacklisted = models.BooleanField(default=False)
    rejected = models.BooleanField(default=False)
    delivery_date = models.DateTimeField(default=timezone.now)
    description = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        # Every listing and count filters on observatory and kind.
        indexes = [models.Index(fields=["observatory", "filekind", "name"], name="catalog_obs_kind_name")]

    def __str__(self):
        return self.name

    def info(self):
        return file_info({field: getattr(self, field) for field in INFO_FIELDS})


INFO_FIELDS = (
    "name", "observatory", "filekind", "instrument", "reftype", "size", "sha1sum",
    "state", "blacklisted", "rejected", "delivery_date", "description",
)


def file_info(values):
    """CRDS-style file info from a row's values: every value a string, as the client expects.

    Besides the row: `type` and `reference_file_type` (a CRDS server's names for our filekind
    and reftype), `uploaded_as`, and `deliverer_user` (not recorded here; `crds list --cat`
    reads it).
    """
    info = dict(values)
    info.update(type=values["filekind"], reference_file_type=values["reftype"], uploaded_as=values["name"],
                deliverer_user="")
    info["size"] = str(values["size"])
    info["blacklisted"] = "true" if values["blacklisted"] else "false"
    info["rejected"] = "true" if values["rejected"] else "false"
    info["delivery_date"] = values["delivery_date"].strftime("%Y-%m-%d %H:%M:%S")
    return info


class ContextHistory(models.Model):
    """Each row is one switch of the operational context; the newest is current."""

    observatory = models.CharField(max_length=16)
    context = models.CharField(max_length=128)
    start_date = models.DateTimeField(default=timezone.now)
    description = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["-start_date", "-id"]
        indexes = [models.Index(fields=["observatory", "start_date"], name="history_obs_start")]
        verbose_name_plural = "context history"

    def __str__(self):
        return f"{self.start_date:%Y-%m-%d %H:%M:%S} {self.context}"
