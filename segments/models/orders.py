from django.db import models
from django.utils.translation import gettext_lazy as _

from segments.models.catalog import Product
from segments.models.contacts import Contact
from segments.money import AMOUNT_DECIMAL_PLACES, AMOUNT_MAX_DIGITS, CURRENCY_CHOICES


def _amount(label: str, **kwargs) -> models.DecimalField:
    return models.DecimalField(label, max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES, **kwargs)


class OrderStatus(models.TextChoices):
    PLACED = "placed", _("placed")
    PAID = "paid", _("paid")
    FULFILLED = "fulfilled", _("fulfilled")
    DELIVERED = "delivered", _("delivered")
    CANCELLED = "cancelled", _("cancelled")
    REFUNDED = "refunded", _("refunded")


# Orders that count as revenue, for the per-contact figures, RFM and CLV.
REVENUE_STATUSES = (OrderStatus.PLACED, OrderStatus.PAID, OrderStatus.FULFILLED, OrderStatus.DELIVERED)


class OrderQuerySet(models.QuerySet):
    def revenue(self) -> "OrderQuerySet":
        return self.filter(status__in=REVENUE_STATUSES)


class Order(models.Model):
    source = models.CharField(_("source"), max_length=32, default="shop",
                              help_text=_("The system the order came from: shopify, woocommerce, import, api."))
    external_id = models.CharField(_("shop order id"), max_length=64)
    name = models.CharField(_("order number"), max_length=64, blank=True, help_text=_("As the shop shows it, e.g. #1001."))
    contact = models.ForeignKey(Contact, on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="orders", verbose_name=_("contact"))
    placed_at = models.DateTimeField(_("placed at"))
    status = models.CharField(_("status"), max_length=16, choices=OrderStatus.choices, default=OrderStatus.PLACED)
    currency = models.CharField(_("currency"), max_length=3, choices=CURRENCY_CHOICES, default="USD")
    subtotal = _amount(_("subtotal"), default=0)
    discount_code = models.CharField(_("discount code"), max_length=64, blank=True)
    discount_amount = _amount(_("discount"), default=0)
    shipping = _amount(_("shipping"), default=0)
    tax = _amount(_("tax"), default=0)
    total = _amount(_("total"), default=0)
    refunded_amount = _amount(_("refunded"), default=0, help_text=_("Partial refunds reduce the revenue counted."))
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = OrderQuerySet.as_manager()

    class Meta:
        verbose_name = _("order")
        verbose_name_plural = _("orders")
        constraints = [
            models.UniqueConstraint(fields=["source", "external_id"], name="order_unique_per_source"),
        ]
        indexes = [
            # Per-contact figures and segments: "orders of contact C since X".
            models.Index(fields=["contact", "placed_at"], name="order_contact_placed_idx"),
            # Dashboard and reports: "revenue since X".
            models.Index(fields=["placed_at"], name="order_placed_idx"),
        ]

    def __str__(self) -> str:
        return self.name or f"{self.source}:{self.external_id}"

    @property
    def net_total(self):
        return self.total - self.refunded_amount


class OrderLine(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.SET_NULL, null=True, blank=True,
                                related_name="order_lines", verbose_name=_("product"))
    sku = models.CharField(_("SKU"), max_length=64, blank=True)
    title = models.CharField(_("title"), max_length=255)
    quantity = models.PositiveIntegerField(_("quantity"), default=1)
    unit_price = _amount(_("unit price"))
    total = _amount(_("line total"))

    class Meta:
        verbose_name = _("order line")
        verbose_name_plural = _("order lines")

    def __str__(self) -> str:
        return f"{self.quantity} × {self.title}"
