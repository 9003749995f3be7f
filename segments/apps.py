from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SegmentsConfig(AppConfig):
    name = "segments"
    verbose_name = _("Shop data and segments")

    def ready(self) -> None:
        from segments import (
            checks,  # noqa: F401  (registers system checks)
            receivers,  # noqa: F401  (keeps segment membership current)
        )
