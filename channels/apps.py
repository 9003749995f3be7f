from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ChannelsConfig(AppConfig):
    name = "channels"
    label = "channels"
    verbose_name = _("Channels")

    def ready(self) -> None:
        from channels import receivers, timeline  # noqa: F401  (timeline registers itself)

        receivers.connect()
