"""Small builders for the segment tests (a named cast, as tests/conftest.py does for the shop)."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from segments.models import Category, Contact, Event, Order, OrderLine, Product
from segments.services import contact_stats_refresh


def make_catalog() -> dict:
    kitchen = Category.objects.create(name="Kitchen", slug="kitchen")
    cookware = Category.objects.create(name="Cookware", slug="cookware", parent=kitchen)
    garden = Category.objects.create(name="Garden", slug="garden")
    return {
        "kitchen": kitchen, "cookware": cookware, "garden": garden,
        "pan": Product.objects.create(sku="PAN-1", title="Pan", price=Decimal("30.00"), category=cookware),
        "hose": Product.objects.create(sku="HOSE-1", title="Hose", price=Decimal("20.00"), category=garden),
        "card": Product.objects.create(sku="CARD-1", title="Gift card", price=Decimal("10.00")),
    }


def add_order(contact: Contact, *, days_ago: float, total: str, product: Product | None = None, status="paid",
              discount_code: str = "", refunded: str = "0", now=None, n=[0]) -> Order:  # noqa: B006 (a counter)
    n[0] += 1
    now = now or timezone.now()
    order = Order.objects.create(external_id=f"o{n[0]}", contact=contact, placed_at=now - timedelta(days=days_ago),
                                 status=status, total=Decimal(total), refunded_amount=Decimal(refunded),
                                 discount_code=discount_code)
    if product:
        OrderLine.objects.create(order=order, product=product, sku=product.sku, title=product.title,
                                 unit_price=Decimal(total), total=Decimal(total))
    return order


def add_event(contact: Contact, type_: str, *, days_ago: float = 0, now=None, **properties) -> Event:
    now = now or timezone.now()
    return Event.objects.create(contact=contact, type=type_, occurred_at=now - timedelta(days=days_ago),
                                properties=properties)


def refresh_figures(*contacts: Contact) -> None:
    contact_stats_refresh(contact_ids=[c.pk for c in contacts], currency="USD")
    for c in contacts:
        c.refresh_from_db()


@pytest.fixture
def catalog(db) -> dict:
    return make_catalog()
