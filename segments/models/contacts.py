from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone as dj_timezone
from django.utils.translation import gettext_lazy as _
from phonenumber_field.modelfields import PhoneNumberField

from segments.models.shop import validate_timezone
from segments.money import AMOUNT_DECIMAL_PLACES, AMOUNT_MAX_DIGITS


def normalize_email(value: str | None) -> str | None:
    """Trim and lower-case; empty becomes None (so many phone-only contacts can coexist)."""
    value = (value or "").strip().lower()
    return value or None


class Tag(models.Model):
    name = models.CharField(_("name"), max_length=64, unique=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("tag")
        verbose_name_plural = _("tags")

    def __str__(self) -> str:
        return self.name


class ContactQuerySet(models.QuerySet):
    def customers(self) -> "ContactQuerySet":
        return self.filter(orders_count__gt=0)

    def by_identity(self, *, email: str | None = None, phone: str | None = None) -> "ContactQuerySet":
        """The contact an email or phone belongs to: email first, then E.164 phone."""
        email = normalize_email(email)
        if email:
            return self.filter(email=email)
        if phone:
            return self.filter(phone=phone)
        return self.none()


class Contact(models.Model):
    """A person the shop may talk to: an email, a phone, or both — never neither."""

    email = models.EmailField(_("email"), max_length=254, unique=True, null=True, blank=True,
                              validators=[EmailValidator()])
    phone = PhoneNumberField(_("phone"), unique=True, null=True, blank=True,
                             help_text=_("Stored in E.164 (+81..., +60..., +1...)."))
    first_name = models.CharField(_("first name"), max_length=100, blank=True)
    last_name = models.CharField(_("last name"), max_length=100, blank=True)
    locale = models.CharField(_("language"), max_length=10, blank=True,
                              help_text=_("e.g. en, ja, ms; empty means the shop's default."))
    timezone = models.CharField(_("time zone"), max_length=64, blank=True, validators=[validate_timezone],
                                help_text=_("IANA name such as Asia/Kuala_Lumpur; empty means the shop's zone."))
    country = models.CharField(_("country"), max_length=2, blank=True, help_text=_("ISO 3166 code, e.g. JP, MY, US."))
    tags = models.ManyToManyField(Tag, blank=True, related_name="contacts", verbose_name=_("tags"))
    properties = models.JSONField(_("custom properties"), default=dict, blank=True)
    source = models.CharField(_("source"), max_length=32, blank=True, db_index=True,
                              help_text=_("Where the contact came from: import, api, shopify, admin, form..."))

    # Derived figures, recomputed from the orders by segments.services.contact_stats_refresh()
    # whenever an order of the contact changes, so refunds and out-of-order imports converge.
    orders_count = models.PositiveIntegerField(_("orders"), default=0, editable=False)
    total_spent = models.DecimalField(_("total spent"), max_digits=AMOUNT_MAX_DIGITS,
                                      decimal_places=AMOUNT_DECIMAL_PLACES, default=0, editable=False)
    average_order_value = models.DecimalField(_("average order value"), max_digits=AMOUNT_MAX_DIGITS,
                                              decimal_places=AMOUNT_DECIMAL_PLACES, default=0, editable=False)
    first_order_at = models.DateTimeField(_("first order"), null=True, blank=True, editable=False)
    last_order_at = models.DateTimeField(_("last order"), null=True, blank=True, editable=False)
    last_activity_at = models.DateTimeField(_("last activity"), null=True, blank=True, editable=False)

    created_at = models.DateTimeField(_("created"), default=dj_timezone.now, db_index=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    objects = ContactQuerySet.as_manager()

    class Meta:
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")
        constraints = [
            models.CheckConstraint(condition=Q(email__isnull=False) | Q(phone__isnull=False),
                                   name="contact_has_email_or_phone"),
        ]
        # Used by segments on recency/value and by the dashboard. Partial: only customers and active
        # contacts are in them, so a contact without orders or activity (every imported subscriber,
        # most new contacts) updates none of the three. A range on a date implies IS NOT NULL to both
        # databases' planners; the top-N% ranks ask for orders_count > 0 themselves.
        indexes = [
            models.Index(fields=["last_order_at"], condition=Q(last_order_at__isnull=False),
                         name="contact_last_order_idx"),
            models.Index(fields=["total_spent"], condition=Q(orders_count__gt=0), name="contact_total_spent_idx"),
            models.Index(fields=["last_activity_at"], condition=Q(last_activity_at__isnull=False),
                         name="contact_last_activity_idx"),
        ]

    def __str__(self) -> str:
        return self.email or str(self.phone or "") or f"contact {self.pk}"

    def save(self, *args, **kwargs) -> None:
        self.email = normalize_email(self.email)
        self.phone = self.phone or None
        super().save(*args, **kwargs)

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p)

    def clean(self) -> None:
        self.email = normalize_email(self.email)
        if not self.email and not self.phone:
            raise ValidationError(_("A contact needs an email address, a phone number, or both."))


class ContactIdentifier(models.Model):
    """Another id the same person is known by: a shop customer id, an anonymous visitor id."""

    class Kind(models.TextChoices):
        SHOP_CUSTOMER = "shop_customer", _("shop customer id")
        ANONYMOUS = "anonymous", _("anonymous visitor id")

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="identifiers")
    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    source = models.CharField(_("source"), max_length=32, default="shop",
                              help_text=_("Which system issued the id: shopify, woocommerce, tracker..."))
    value = models.CharField(_("value"), max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("identifier")
        verbose_name_plural = _("identifiers")
        constraints = [
            models.UniqueConstraint(fields=["kind", "source", "value"], name="identifier_unique_per_source"),
        ]
        indexes = [models.Index(fields=["value"], name="identifier_value_idx")]

    def __str__(self) -> str:
        return f"{self.source}:{self.value}"
