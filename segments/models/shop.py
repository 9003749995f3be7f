import zoneinfo

from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext_lazy as _

from segments.money import CURRENCY_CHOICES


def validate_timezone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(_("%(value)s is not an IANA time zone (e.g. Asia/Tokyo)."), params={"value": value})


class Shop(models.Model):
    """The one shop this installation serves (a singleton row, pk=1)."""

    name = models.CharField(_("shop name"), max_length=200, default="My Shop")
    currency = models.CharField(_("currency"), max_length=3, choices=CURRENCY_CHOICES, default="USD",
                                help_text=_("Revenue figures and reports are in this currency."))
    timezone = models.CharField(_("time zone"), max_length=64, default="UTC", validators=[validate_timezone],
                                help_text=_("Dates in the admin and reports are shown in this zone."))
    default_locale = models.CharField(_("default language"), max_length=10, default="en")
    website_url = models.URLField(_("website"), blank=True)
    # CAN-SPAM: marketing email needs a valid postal address and a clear sender identity.
    postal_address = models.TextField(_("postal address"), blank=True)
    sender_name = models.CharField(_("sender name"), max_length=200, blank=True)
    sender_email = models.EmailField(_("sender email"), blank=True)
    reply_to_email = models.EmailField(_("reply-to email"), blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("shop settings")
        verbose_name_plural = _("shop settings")

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.pk = 1
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> "Shop":
        shop, _created = cls.objects.get_or_create(pk=1)
        return shop

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)
