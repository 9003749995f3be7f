from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from segments import timeline
from segments.ingest.resources import ContactResource, IngestImportExportMixin, OrderResource
from segments.middleware import current_shop, forget_shop
from segments.models import (
    Category,
    Contact,
    ContactIdentifier,
    Event,
    EventType,
    Order,
    OrderLine,
    Product,
    Shop,
    Tag,
)
from segments.money import format_money
from segments.services import contact_stats_refresh


class CappedCountPaginator(Paginator):
    """Counts at most CAP rows, so a list over millions of events never runs a full COUNT(*)."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[: self.CAP].count()


@admin.register(Shop)
class ShopAdmin(admin.ModelAdmin):
    fieldsets = [
        (None, {"fields": ["name", "website_url", "currency", "timezone", "default_locale"]}),
        (_("Sender identity (required before any marketing email)"),
         {"fields": ["sender_name", "sender_email", "reply_to_email", "postal_address"]}),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not Shop.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        super().save_model(request, obj, form, change)
        forget_shop()


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    search_fields = ["name"]


class IdentifierInline(admin.TabularInline):
    model = ContactIdentifier
    extra = 0


class HasOrdersFilter(admin.SimpleListFilter):
    title = _("customer")
    parameter_name = "customer"

    def lookups(self, request, model_admin):
        return [("yes", _("has ordered")), ("repeat", _("ordered twice or more")), ("no", _("never ordered"))]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(orders_count__gt=0)
        if self.value() == "repeat":
            return queryset.filter(orders_count__gt=1)
        if self.value() == "no":
            return queryset.filter(orders_count=0)
        return queryset


class ReachFilter(admin.SimpleListFilter):
    title = _("reachable by")
    parameter_name = "reach"

    def lookups(self, request, model_admin):
        return [("email", _("email")), ("sms", _("phone")), ("both", _("email and phone"))]

    def queryset(self, request, queryset):
        if self.value() == "email":
            return queryset.filter(email__isnull=False)
        if self.value() == "sms":
            return queryset.filter(phone__isnull=False)
        if self.value() == "both":
            return queryset.filter(email__isnull=False, phone__isnull=False)
        return queryset


class LocaleFilter(admin.SimpleListFilter):
    """From settings.LANGUAGES, not a DISTINCT over every contact."""

    title = _("language")
    parameter_name = "locale"

    def lookups(self, request, model_admin):
        return [(code, name) for code, name in settings.LANGUAGES] + [("-", _("not set"))]

    def queryset(self, request, queryset):
        if self.value() == "-":
            return queryset.filter(locale="")
        return queryset.filter(locale=self.value()) if self.value() else queryset


@admin.register(Contact)
class ContactAdmin(IngestImportExportMixin, admin.ModelAdmin):
    resource_classes = [ContactResource]
    list_display = ["__str__", "full_name", "phone", "orders_count", "spent", "last_order_at", "created_at"]
    list_filter = [HasOrdersFilter, ReachFilter, "source", LocaleFilter, "tags", "created_at"]
    search_fields = ["email", "phone", "first_name", "last_name"]  # and shop/anonymous ids, exactly
    ordering = ["-id"]
    filter_horizontal = ["tags"]
    inlines = [IdentifierInline]
    readonly_fields = ["orders_count", "spent", "aov", "first_order_at", "last_order_at", "last_activity_at",
                       "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["email", "phone", ("first_name", "last_name")]}),
        (_("Language and place"), {"fields": ["locale", "timezone", "country"]}),
        (_("Attributes"), {"fields": ["source", "tags", "properties"]}),
        (_("Figures (kept current from orders)"),
         {"fields": [("orders_count", "spent", "aov"), ("first_order_at", "last_order_at"), "last_activity_at",
                     ("created_at", "updated_at")]}),
    ]
    actions = ["refresh_figures"]
    show_full_result_count = False

    def get_search_results(self, request, queryset, search_term):
        """Also find a contact by an exact shop customer or visitor id, through EXISTS: a join on
        identifiers would make the admin fall back to SELECT DISTINCT over every column (B8)."""
        base = queryset
        queryset, _duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if term:
            queryset = queryset | base.filter(Exists(ContactIdentifier.objects.filter(contact=OuterRef("pk"), value=term)))
        return queryset, False

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "locale":
            return forms.ChoiceField(label=db_field.verbose_name, required=False, help_text=db_field.help_text,
                                     choices=[("", _("shop default"))] + list(settings.LANGUAGES))
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description=_("name"))
    def full_name(self, obj: Contact) -> str:
        return obj.full_name

    @admin.display(description=_("total spent"), ordering="total_spent")
    def spent(self, obj: Contact) -> str:
        return format_money(obj.total_spent, current_shop().currency) if obj.pk else "—"

    @admin.display(description=_("average order"))
    def aov(self, obj: Contact) -> str:
        return format_money(obj.average_order_value, current_shop().currency) if obj.pk else "—"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Contact]:
        return super().get_queryset(request).defer("properties")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        contact = self.get_object(request, object_id)
        extra = {"timeline": timeline.for_contact(contact) if contact else None}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **extra})

    @admin.action(description=_("Recompute figures from orders"))
    def refresh_figures(self, request, queryset) -> None:
        n = contact_stats_refresh(contact_ids=queryset.values_list("pk", flat=True))
        self.message_user(request, _("Recomputed the figures of %(n)d contact(s).") % {"n": n}, messages.SUCCESS)


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "parent", "slug"]
    list_select_related = ["parent"]
    prepopulated_fields = {"slug": ["name"]}
    search_fields = ["name"]


class StockFilter(admin.SimpleListFilter):
    title = _("stock")
    parameter_name = "stock"

    def lookups(self, request, model_admin):
        return [("out", _("out of stock")), ("in", _("in stock"))]

    def queryset(self, request, queryset):
        if self.value() == "out":
            return queryset.filter(stock_quantity__lte=0)
        if self.value() == "in":
            return queryset.exclude(stock_quantity__lte=0)
        return queryset


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ["title", "sku", "category", "price_display", "stock_quantity", "is_active"]
    list_filter = ["category", StockFilter, "is_active"]
    list_select_related = ["category"]
    search_fields = ["title", "sku"]
    autocomplete_fields = ["category"]

    @admin.display(description=_("price"), ordering="price")
    def price_display(self, obj: Product) -> str:
        return format_money(obj.price, obj.currency)


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 0
    autocomplete_fields = ["product"]


@admin.register(Order)
class OrderAdmin(IngestImportExportMixin, admin.ModelAdmin):
    resource_classes = [OrderResource]
    list_display = ["__str__", "contact", "placed_at", "status", "total_display", "discount_code", "source"]
    list_filter = ["status", "source", "currency", "placed_at"]
    list_select_related = ["contact"]
    search_fields = ["name", "external_id", "contact__email", "discount_code"]
    ordering = ["-placed_at"]
    raw_id_fields = ["contact"]
    inlines = [OrderLineInline]
    show_full_result_count = False

    @admin.display(description=_("total"), ordering="total")
    def total_display(self, obj: Order) -> str:
        return format_money(obj.total, obj.currency)

    def save_related(self, request, form, formsets, change) -> None:
        super().save_related(request, form, formsets, change)
        # The contact's figures follow its orders; the previous owner's too if it moved.
        ids = {form.instance.contact_id, form.initial.get("contact")} - {None}
        contact_stats_refresh(contact_ids=ids)


class EventTypeFilter(admin.SimpleListFilter):
    """From the documented vocabulary: a DISTINCT over millions of events would be slow."""

    title = _("type")
    parameter_name = "type"

    def lookups(self, request, model_admin):
        return EventType.choices

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ["type", "contact_link", "anonymous_id", "occurred_at", "received_at", "source"]
    list_filter = [EventTypeFilter]
    search_fields = ["=contact__email", "=anonymous_id", "=idempotency_key"]
    # Newest received first: ids follow arrival, and the primary key serves it (no index on occurred_at
    # alone is kept: segments.models.events). Filtered by type, newest occurred first: the (type,
    # occurred_at) index gives that order, where "type = ? ORDER BY id" leaves the planner to choose
    # between walking the ids and sorting the type's events (SQLite without statistics sorted 200k rows
    # of 1M: 1.4 s, benchmark B8).
    ordering = ["-id"]

    def get_ordering(self, request: HttpRequest) -> list[str]:
        if request.GET.get(EventTypeFilter.parameter_name):
            return ["-occurred_at"]
        return super().get_ordering(request)
    raw_id_fields = ["contact"]
    readonly_fields = ["received_at"]
    paginator = CappedCountPaginator
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Event]:
        return super().get_queryset(request).select_related("contact").only(
            "id", "type", "anonymous_id", "occurred_at", "source", "contact__id", "contact__email", "contact__phone",
            "properties", "received_at", "idempotency_key", "contact_id",
        )

    @admin.display(description=_("contact"))
    def contact_link(self, obj: Event) -> str:
        if not obj.contact_id:
            return "—"
        return format_html('<a href="../contact/{}/change/">{}</a>', obj.contact_id, obj.contact)


from segments import segment_admin  # noqa: E402,F401  (segments, scores and the contact's segment history)
from segments.ingest import admin as ingest_admin  # noqa: E402, F401 (API keys, import jobs, webhooks)
