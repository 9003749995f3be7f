"""Bookkeeping for getting a shop's data in: API keys, import jobs, webhook deliveries."""

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from segments.models.catalog import Product

API_KEY_PREFIX = "sk_"


def hash_api_key(raw: str) -> str:
    # The keys are 32 random bytes, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet):
    def active(self) -> "ApiKeyQuerySet":
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A secret for the events API. Only its hash is stored; the key is shown once, at creation."""

    name = models.CharField(_("name"), max_length=100, help_text=_("Who uses it, e.g. 'checkout server'."))
    prefix = models.CharField(_("prefix"), max_length=12, editable=False,
                              help_text=_("The first characters, to recognise a key without storing it."))
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   editable=False, related_name="+")
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def set_new_secret(self) -> str:
        """Give this (unsaved) key fresh secret material; returns the raw key, which is never stored."""
        raw = API_KEY_PREFIX + secrets.token_urlsafe(32)
        self.prefix, self.key_hash = raw[:10], hash_api_key(raw)
        return raw

    @classmethod
    def issue(cls, *, name: str, created_by=None) -> tuple["ApiKey", str]:
        """Create a key; returns the row and the raw key (the only time it exists in clear)."""
        key = cls(name=name, created_by=created_by)
        raw = key.set_new_secret()
        key.save()
        return key, raw

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])


class ImportJob(models.Model):
    """One file brought in through the admin or a command, with its progress and row errors."""

    class Kind(models.TextChoices):
        CONTACTS = "contacts", _("contacts")
        ORDERS = "orders", _("orders")

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")

    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices, default=Kind.CONTACTS)
    file = models.FileField(_("file"), upload_to="imports/%Y/%m/", max_length=300)
    original_name = models.CharField(_("file name"), max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, blank=True, editable=False)
    layout = models.CharField(_("layout"), max_length=40, blank=True, editable=False)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED)
    dry_run = models.BooleanField(_("dry run"), default=False,
                                  help_text=_("Report what would happen without writing anything."))
    trigger_flows = models.BooleanField(
        _("trigger flows"), default=False,
        help_text=_("Off for history: importing 50,000 old customers must not send 50,000 welcome emails."))
    consent_source = models.CharField(
        _("consent source"), max_length=200, blank=True,
        help_text=_("Only for files without consent columns: where these people agreed (e.g. 'shop signup form')."))
    consent_basis = models.CharField(
        _("consent basis"), max_length=200, blank=True,
        help_text=_("…and on what basis (e.g. 'opt-in checkbox, wording v3'). Both or neither."))
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                              editable=False, related_name="+")
    total_rows = models.PositiveIntegerField(_("rows"), default=0, editable=False)
    rows_done = models.PositiveIntegerField(_("rows done"), default=0, editable=False)
    created = models.PositiveIntegerField(_("created"), default=0, editable=False)
    updated = models.PositiveIntegerField(_("updated"), default=0, editable=False)
    skipped = models.PositiveIntegerField(_("unchanged"), default=0, editable=False)
    errors = models.PositiveIntegerField(_("errors"), default=0, editable=False)
    error_report = models.FileField(_("error report"), upload_to="imports/reports/", blank=True, editable=False)
    message = models.TextField(_("message"), blank=True, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("import job")
        verbose_name_plural = _("import jobs")

    def __str__(self) -> str:
        return f"{self.get_kind_display()} import {self.original_name or self.pk}"

    @property
    def percent(self) -> int:
        if not self.total_rows:
            return 100 if self.status == self.Status.DONE else 0
        return min(100, round(100 * self.rows_done / self.total_rows))


class WebhookDelivery(models.Model):
    """A shop webhook as received: kept so retries are answered once and processing can be re-run."""

    class Status(models.TextChoices):
        RECEIVED = "received", _("received")
        PROCESSING = "processing", _("processing")
        PROCESSED = "processed", _("processed")
        IGNORED = "ignored", _("ignored")
        FAILED = "failed", _("failed")

    platform = models.CharField(_("platform"), max_length=16)  # shopify | woocommerce
    delivery_id = models.CharField(_("delivery id"), max_length=128,
                                   help_text=_("X-Shopify-Webhook-Id / X-WC-Webhook-Delivery-ID."))
    topic = models.CharField(_("topic"), max_length=64)
    shop_domain = models.CharField(_("shop"), max_length=255, blank=True)
    payload = models.JSONField(_("payload"))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.RECEIVED)
    error = models.TextField(_("error"), blank=True)
    received_at = models.DateTimeField(_("received"), auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(_("processed"), null=True, blank=True)

    class Meta:
        ordering = ["-received_at"]
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        constraints = [
            models.UniqueConstraint(fields=["platform", "delivery_id"], name="webhook_delivery_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.platform} {self.topic} {self.delivery_id}"


class InventoryItem(models.Model):
    """A shop's stock-keeping item (Shopify inventory_item_id) and its level per location.

    inventory_levels/update names only the inventory item, so this maps it to our product.
    """

    source = models.CharField(max_length=32, default="shopify")
    external_id = models.CharField(max_length=64)
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="inventory_items")
    levels = models.JSONField(default=dict, blank=True, help_text=_("location id → available"))
    quantity = models.IntegerField(null=True, blank=True, help_text=_("From the variant, when no levels arrived."))

    class Meta:
        verbose_name = _("inventory item")
        verbose_name_plural = _("inventory items")
        constraints = [
            models.UniqueConstraint(fields=["source", "external_id"], name="inventory_item_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.source}:{self.external_id}"

    @property
    def available(self) -> int | None:
        if self.levels:
            return sum(int(v or 0) for v in self.levels.values())
        return self.quantity
