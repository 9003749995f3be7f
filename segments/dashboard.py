"""The admin landing page's headline numbers: a handful of indexed aggregate queries."""

from datetime import timedelta

from django.db.models import Count, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from segments.models import Contact, Event, Order, Shop
from segments.money import format_money


def headline_numbers() -> list[dict]:
    shop = Shop.load()
    now = timezone.now()
    since = now - timedelta(days=30)
    contacts = Contact.objects.aggregate(
        total=Count("id"),
        customers=Count("id", filter=models_q(orders_count__gt=0)),
        repeat=Count("id", filter=models_q(orders_count__gt=1)),
        new=Count("id", filter=models_q(created_at__gte=since)),
    )
    orders = Order.objects.revenue().filter(placed_at__gte=since, currency=shop.currency).aggregate(
        n=Count("id"), revenue=Sum("total"), refunded=Sum("refunded_amount"))
    revenue = (orders["revenue"] or 0) - (orders["refunded"] or 0)
    aov = revenue / orders["n"] if orders["n"] else 0
    events_24h = Event.objects.filter(received_at__gte=now - timedelta(hours=24)).count()  # event_received_idx
    repeat_rate = contacts["repeat"] / contacts["customers"] * 100 if contacts["customers"] else 0
    return [
        {"label": _("Contacts"), "value": f"{contacts['total']:,}", "note": _("%(n)s new in 30 days") % {"n": f"{contacts['new']:,}"}},
        {"label": _("Customers"), "value": f"{contacts['customers']:,}", "note": _("repeat rate %(r).1f%%") % {"r": repeat_rate}},
        {"label": _("Revenue, 30 days"), "value": format_money(revenue, shop.currency), "note": _("%(n)s orders") % {"n": f"{orders['n']:,}"}},
        {"label": _("Average order, 30 days"), "value": format_money(aov, shop.currency), "note": shop.currency},
        {"label": _("Events, 24 hours"), "value": f"{events_24h:,}", "note": _("browsing, carts, orders")},
    ]


def models_q(**kwargs):
    from django.db.models import Q

    return Q(**kwargs)
