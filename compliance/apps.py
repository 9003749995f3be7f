from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ComplianceConfig(AppConfig):
    name = "compliance"
    verbose_name = _("Compliance")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from compliance import checks, receivers, timeline  # noqa: F401  (checks registers itself)

        receivers.connect()
        timeline.connect()
        from compliance.segment_rules import register_kind

        register_kind()  # {"kind": "consent", ...} in segment rules
