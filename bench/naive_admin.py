"""The reference for B8: the same models in a plain, untuned Django admin.

Full COUNT(*) on every list, foreign keys and tags shown without select/prefetch (N+1),
a DISTINCT filter over event types and date drill-downs, and OFFSET pagination.
"""

from django.contrib import admin

from segments.models import Contact, Event, Order

site = admin.AdminSite(name="naive_admin")


@admin.register(Contact, site=site)
class NaiveContactAdmin(admin.ModelAdmin):
    list_display = ["email", "phone", "first_name", "last_name", "orders_count", "total_spent", "tag_list",
                    "created_at"]
    list_filter = ["source", "locale", "tags", "created_at"]
    search_fields = ["email", "phone", "first_name", "last_name", "identifiers__value"]

    def tag_list(self, obj):
        return ", ".join(t.name for t in obj.tags.all())


@admin.register(Order, site=site)
class NaiveOrderAdmin(admin.ModelAdmin):
    list_display = ["name", "contact", "placed_at", "status", "total"]
    list_filter = ["status", "source", "currency"]
    date_hierarchy = "placed_at"


@admin.register(Event, site=site)
class NaiveEventAdmin(admin.ModelAdmin):
    list_display = ["type", "contact", "anonymous_id", "occurred_at", "source"]
    list_filter = ["type", "source"]
    ordering = ["-occurred_at"]
