from datetime import timedelta
from decimal import Decimal

import phonenumbers
import pytest
from django.core.management import CommandError, call_command
from django.db.models import Count, Sum
from django.utils import timezone

from segments.datagen import Generator, Size
from segments.models import Contact, Event, Order, Product
from segments.models.orders import REVENUE_STATUSES

pytestmark = pytest.mark.django_db

TINY = Size(contacts=300, products=40, orders=600, events=4_000)


def _fingerprint() -> tuple:
    return (
        list(Contact.objects.order_by("email", "phone").values_list("email", "phone", "first_name", "orders_count",
                                                                "total_spent")),
        list(Order.objects.order_by("external_id").values_list("external_id", "placed_at", "total", "status")),
        Event.objects.count(),
    )


def test_the_generator_is_deterministic_for_a_seed():
    now = timezone.now().replace(microsecond=0)
    Generator(size=TINY, seed=7, now=now).run()
    first = _fingerprint()
    for model in (Event, Order, Contact, Product):
        model.objects.all().delete()
    Generator(size=TINY, seed=7, now=now).run()
    assert _fingerprint() == first


def test_the_demo_shop_has_believable_shapes():
    counts = Generator(size=TINY, seed=1).run()
    assert counts["contacts"] == 300 and counts["events"] == 4_000
    assert abs(counts["orders"] - 600) <= 600 * 0.05

    buyers = Contact.objects.filter(orders_count__gt=0).count()
    assert 0.35 * 300 < buyers < 0.75 * 300  # many never buy
    # A few loyal big spenders hold a large share of revenue.
    spend = list(Contact.objects.order_by("-total_spent").values_list("total_spent", flat=True))
    top_decile = sum(spend[:30])
    assert top_decile > sum(spend) * Decimal("0.3")
    # Some customers went dormant.
    assert Contact.objects.filter(orders_count__gt=0, last_order_at__lt=timezone.now() - timedelta(days=90)).exists()
    # Most sessions browse and leave: more product views than carts, more carts than orders.
    by_type = dict(Event.objects.values_list("type").annotate(n=Count("id")))
    assert by_type["product_viewed"] > by_type["cart_updated"] > by_type["order_placed"]
    assert Event.objects.filter(contact__isnull=True).exclude(anonymous_id="").exists()
    # Every phone is a valid E.164 number; figures agree with the orders.
    for phone in Contact.objects.exclude(phone=None).values_list("phone", flat=True):
        assert phonenumbers.is_valid_number(phonenumbers.parse(str(phone)))
    revenue = Order.objects.filter(status__in=REVENUE_STATUSES).aggregate(t=Sum("total"), r=Sum("refunded_amount"))
    assert Contact.objects.aggregate(s=Sum("total_spent"))["s"] == revenue["t"] - revenue["r"]


def test_seed_demo_refuses_to_overwrite_without_flush():
    Contact.objects.create(email="keep@example.com")
    with pytest.raises(CommandError, match="--flush"):
        call_command("seed_demo")
    assert Contact.objects.filter(email="keep@example.com").exists()
    call_command("seed_demo", "--if-empty")
    assert Contact.objects.count() == 1
