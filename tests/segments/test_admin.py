from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from segments.models import Contact, ContactIdentifier, Event, Order, Tag

pytestmark = pytest.mark.django_db


def _contacts(n: int, start: int = 0) -> None:
    tag = Tag.objects.get_or_create(name="vip")[0]
    contacts = Contact.objects.bulk_create(
        [Contact(email=f"person{i}@example.com", phone=f"+6012{i:07d}", first_name=f"P{i}", total_spent=Decimal(i),
                 orders_count=i % 3) for i in range(start, start + n)])
    for c in contacts[::5]:
        c.tags.add(tag)
        ContactIdentifier.objects.create(contact=c, kind="shop_customer", source="shopify", value=f"cust-{c.pk}")


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return len(ctx.captured_queries)


@pytest.mark.parametrize("url_name", ["admin:segments_contact_changelist", "admin:segments_order_changelist",
                                      "admin:segments_event_changelist", "admin:segments_product_changelist"])
def test_list_pages_use_a_constant_number_of_queries(staff_client, shop, url_name):
    _contacts(20)
    for c in Contact.objects.all()[:20]:
        Order.objects.create(contact=c, external_id=f"o{c.pk}", placed_at=timezone.now(), total=10, currency="MYR")
        Event.objects.create(contact=c, type="product_viewed", properties={"title": "Wok"})
    url = reverse(url_name) + "?all="
    staff_client.get(url)  # warm the per-process Shop cache
    small = _queries(staff_client, url)
    _contacts(180, start=20)
    for c in Contact.objects.order_by("-id")[:180]:
        Order.objects.create(contact=c, external_id=f"o{c.pk}", placed_at=timezone.now(), total=10, currency="MYR")
        Event.objects.create(contact=c, type="product_viewed", properties={"title": "Wok"})
    assert Contact.objects.count() == 200
    big = _queries(staff_client, url)
    assert big == small, f"{url_name}: {small} queries for 20 rows, {big} for 200"


def test_contact_search_finds_email_phone_name_and_external_id(staff_client, shop):
    _contacts(10)
    target = Contact.objects.get(email="person5@example.com")
    ContactIdentifier.objects.create(contact=target, kind="shop_customer", source="woo", value="W-777")
    url = reverse("admin:segments_contact_changelist")
    for q in ["PERSON5@example.com", "+60120000005", "P5", "W-777"]:
        body = staff_client.get(url, {"q": q}).content.decode()
        assert "person5@example.com" in body, q
        assert "person6@example.com" not in body, q


def test_invalid_email_or_phone_gives_a_field_error_and_saves_nothing(staff_client, shop):
    url = reverse("admin:segments_contact_add")
    # Every inline on the page (other apps add theirs) posts an empty management form.
    inlines = staff_client.get(url).context["inline_admin_formsets"]
    base = {"properties": "{}", "source": "admin"}
    for inline in inlines:
        prefix = inline.formset.prefix
        base.update({f"{prefix}-TOTAL_FORMS": "0", f"{prefix}-INITIAL_FORMS": "0"})
    r = staff_client.post(url, {**base, "email": "not-an-email", "phone": "+60123456789"})
    assert r.status_code == 200
    assert "email" in r.context["adminform"].form.errors
    r = staff_client.post(url, {**base, "email": "ok@example.com", "phone": "12345"})
    assert "phone" in r.context["adminform"].form.errors
    r = staff_client.post(url, {**base, "email": "", "phone": ""})
    assert "email address, a phone number, or both" in r.content.decode()
    r = staff_client.post(url, {**base, "email": "ok@example.com", "phone": "", "timezone": "Nowhere/Else"})
    assert "timezone" in r.context["adminform"].form.errors
    assert not Contact.objects.exists()
    r = staff_client.post(url, {**base, "email": " OK@Example.com ", "phone": "+60 12-345 6789",
                                "timezone": "Asia/Kuala_Lumpur"})
    assert r.status_code == 302
    c = Contact.objects.get()
    assert (c.email, str(c.phone)) == ("ok@example.com", "+60123456789")


def test_contact_page_shows_events_and_orders_in_one_timeline_newest_first(staff_client, shop):
    c = Contact.objects.create(email="aiko@example.jp")
    now = timezone.now()
    Event.objects.create(contact=c, type="product_viewed", properties={"title": "Matcha Tin"},
                         occurred_at=now - timedelta(days=3))
    Order.objects.create(contact=c, external_id="1001", name="#1001", placed_at=now - timedelta(days=2), total=45,
                         currency="MYR")
    Event.objects.create(contact=c, type="cart_updated", properties={"value": "12.00"}, occurred_at=now - timedelta(days=1))
    body = staff_client.get(reverse("admin:segments_contact_change", args=[c.pk])).content.decode()
    timeline = body[body.index('id="timeline"'):]
    assert timeline.index("cart updated") < timeline.index("Order #1001") < timeline.index("product viewed")
    assert "Matcha Tin" in timeline and "RM45.00" in timeline


def test_dates_are_shown_in_the_shops_time_zone(staff_client, shop):
    c = Contact.objects.create(email="zone@example.my")
    # 2026-01-01 20:30 UTC is 2026-01-02 04:30 in Kuala Lumpur (UTC+8).
    from datetime import UTC, datetime

    Order.objects.create(contact=c, external_id="z1", placed_at=datetime(2026, 1, 1, 20, 30, tzinfo=UTC), total=1)
    body = staff_client.get(reverse("admin:segments_contact_change", args=[c.pk])).content.decode()
    assert "2026-01-02 04:30" in body


def test_dashboard_shows_the_headline_numbers(staff_client, shop):
    c = Contact.objects.create(email="buyer@example.my", orders_count=2)
    Contact.objects.create(email="browser@example.my")
    Order.objects.create(contact=c, external_id="d1", placed_at=timezone.now(), total=Decimal("120.00"), currency="MYR")
    Order.objects.create(contact=c, external_id="d2", placed_at=timezone.now(), total=Decimal("80.00"), currency="MYR")
    Order.objects.create(contact=c, external_id="d3", placed_at=timezone.now(), total=Decimal("999.00"), currency="MYR",
                         status="cancelled")
    body = staff_client.get(reverse("admin:index")).content.decode()
    headline = body[body.index('id="headline"'):]
    assert "RM200.00" in headline  # cancelled orders are not revenue
    assert "RM100.00" in headline  # average order


def test_staff_without_permissions_cannot_see_contacts(client, django_user_model, shop):
    Contact.objects.create(email="private@example.com")
    user = django_user_model.objects.create_user("clerk", password="pw", is_staff=True)
    client.force_login(user)
    assert client.get(reverse("admin:segments_contact_changelist")).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_contact"))
    r = client.get(reverse("admin:segments_contact_changelist"))
    assert r.status_code == 200 and "private@example.com" in r.content.decode()
    assert client.post(reverse("admin:segments_contact_add"), {"email": "x@example.com"}).status_code == 403


def test_order_edits_in_the_admin_keep_the_contact_figures_current(staff_client, shop):
    c = Contact.objects.create(email="fig@example.my")
    url = reverse("admin:segments_order_add")
    data = {"source": "admin", "external_id": "A-1", "contact": c.pk, "placed_at_0": "2026-01-05",
            "placed_at_1": "10:00:00", "status": "paid", "currency": "MYR", "subtotal": "50.00", "discount_amount": "0",
            "shipping": "0", "tax": "0", "total": "50.00", "refunded_amount": "0",
            "lines-TOTAL_FORMS": "0", "lines-INITIAL_FORMS": "0"}
    assert staff_client.post(url, data).status_code == 302
    c.refresh_from_db()
    assert (c.orders_count, c.total_spent) == (1, Decimal("50.00"))
    order = Order.objects.get()
    data["status"] = "refunded"
    assert staff_client.post(reverse("admin:segments_order_change", args=[order.pk]), data).status_code == 302
    c.refresh_from_db()
    assert (c.orders_count, c.total_spent) == (0, Decimal("0"))


def test_healthz_reports_the_database(client, db):
    assert client.get("/healthz").json() == {"status": "ok"}


def test_event_list_shows_the_newest_received_first_and_by_type_the_newest_occurred_first(staff_client, shop):
    """Migration 0007: the list follows arrival (ids), so a late delivery of an old event is on top; filtered
    by type it follows the (type, occurred_at) index."""
    c = Contact.objects.create(email="late@example.my")
    now = timezone.now()
    Event.objects.create(contact=c, type="cart_updated", idempotency_key="first", occurred_at=now - timedelta(hours=1))
    Event.objects.create(contact=c, type="product_viewed", idempotency_key="between", occurred_at=now)
    Event.objects.create(contact=c, type="cart_updated", idempotency_key="late", occurred_at=now - timedelta(days=3))
    url = reverse("admin:segments_event_changelist")
    for query, expected in (("", ["late", "between", "first"]), ("?type=cart_updated", ["first", "late"])):
        response = staff_client.get(url + query)
        assert response.status_code == 200
        listed = [e.idempotency_key for e in response.context["cl"].result_list]
        assert listed == expected, (query, listed)


def test_dashboard_counts_the_events_received_in_the_last_24_hours(staff_client, shop):
    c = Contact.objects.create(email="count@example.my")
    now = timezone.now()
    Event.objects.create(contact=c, type="product_viewed", occurred_at=now - timedelta(days=3))  # late, received now
    Event.objects.create(contact=c, type="product_viewed", occurred_at=now - timedelta(hours=30),
                         received_at=now - timedelta(hours=30))
    Event.objects.bulk_create([Event(contact=c, type="searched", received_at=now - timedelta(minutes=m))
                               for m in range(1, 1235)])
    body = staff_client.get(reverse("admin:index")).content.decode()
    headline = body[body.index('id="headline"'):]
    assert "1,235" in headline, headline[:2000]
