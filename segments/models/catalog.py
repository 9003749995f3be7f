from django.db import models
from django.utils.translation import gettext_lazy as _

from segments.money import AMOUNT_DECIMAL_PLACES, AMOUNT_MAX_DIGITS, CURRENCY_CHOICES


class Category(models.Model):
    """A simple category tree: Kitchen > Cookware."""

    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"), max_length=120, unique=True, allow_unicode=True)
    parent = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True,
                               related_name="children", verbose_name=_("parent"))

    class Meta:
        ordering = ["name"]
        verbose_name = _("category")
        verbose_name_plural = _("categories")

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    sku = models.CharField(_("SKU"), max_length=64, unique=True)
    title = models.CharField(_("title"), max_length=255)
    url = models.URLField(_("product page"), max_length=500, blank=True)
    image_url = models.URLField(_("image"), max_length=500, blank=True)
    price = models.DecimalField(_("price"), max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES)
    currency = models.CharField(_("currency"), max_length=3, choices=CURRENCY_CHOICES, default="USD")
    category = models.ForeignKey(Category, on_delete=models.SET_NULL, null=True, blank=True,
                                 related_name="products", verbose_name=_("category"))
    stock_quantity = models.IntegerField(_("in stock"), null=True, blank=True,
                                         help_text=_("Empty when the shop does not track stock."))
    is_active = models.BooleanField(_("active"), default=True)
    external_id = models.CharField(_("shop product id"), max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["title"]
        verbose_name = _("product")
        verbose_name_plural = _("products")

    def __str__(self) -> str:
        return self.title

    @property
    def in_stock(self) -> bool:
        return self.stock_quantity is None or self.stock_quantity > 0
