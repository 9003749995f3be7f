from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from segments.models import Contact, Event, Order, OrderStatus
from segments.money import MoneyError, format_money, parse_amount
from segments.services import contact_stats_refresh

pytestmark = pytest.mark.django_db


def test_email_is_stored_trimmed_and_lower_cased():
    c = Contact.objects.create(email="  Aiko.Tanaka@Example.JP ")
    assert Contact.objects.get(pk=c.pk).email == "aiko.tanaka@example.jp"


def test_email_is_unique_after_normalisation():
    Contact.objects.create(email="siti@example.my")
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.create(email=" SITI@example.my")


def test_phone_is_stored_in_e164_and_unique():
    c = Contact.objects.create(phone="+60 12-345 6789")
    assert str(Contact.objects.get(pk=c.pk).phone) == "+60123456789"
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.create(phone="+60123456789")


def test_many_phone_only_and_email_only_contacts_coexist():
    Contact.objects.create(phone="+60123456781")
    Contact.objects.create(phone="+60123456782")
    Contact.objects.create(email="a@example.com", phone="")
    Contact.objects.create(email="b@example.com", phone="")
    assert Contact.objects.filter(email__isnull=True).count() == 2
    assert Contact.objects.filter(phone__isnull=True).count() == 2


def test_a_contact_without_email_and_phone_is_refused():
    with pytest.raises(ValidationError):
        Contact(first_name="Nobody").full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.create(first_name="Nobody")


def test_timezone_must_be_an_iana_name():
    with pytest.raises(ValidationError) as err:
        Contact(email="x@example.com", timezone="Mars/Olympus").full_clean()
    assert "timezone" in err.value.message_dict


def test_event_idempotency_key_is_unique_per_source_but_empty_keys_repeat():
    Event.objects.create(type="product_viewed", idempotency_key="k1", source="api")
    Event.objects.create(type="product_viewed", idempotency_key="k1", source="shopify")
    Event.objects.create(type="product_viewed")
    Event.objects.create(type="product_viewed")
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.create(type="cart_updated", idempotency_key="k1", source="api")


def test_event_type_must_follow_the_vocabulary_rules():
    Event(type="quiz_completed").full_clean()  # custom types are fine
    with pytest.raises(ValidationError):
        Event(type="Product Viewed!").full_clean()


def test_amounts_respect_the_currency_minor_unit():
    assert parse_amount("1,200", "JPY") == Decimal("1200")
    assert parse_amount("12.50", "MYR") == Decimal("12.50")
    assert parse_amount(19.99, "USD") == Decimal("19.99")
    with pytest.raises(MoneyError, match="JPY"):
        parse_amount("100.5", "JPY")
    with pytest.raises(MoneyError, match="not an amount"):
        parse_amount("twelve", "USD")
    assert format_money(Decimal("1200"), "JPY") == "¥1,200"
    assert format_money(Decimal("12.5"), "MYR") == "RM12.50"


def _order(contact, ext, total, days_ago, status=OrderStatus.PAID, refunded=0):
    return Order.objects.create(contact=contact, external_id=ext, total=Decimal(total), currency="MYR",
                                placed_at=timezone.now() - timedelta(days=days_ago), status=status,
                                refunded_amount=Decimal(refunded))


def test_figures_follow_refunds_and_out_of_order_imports(shop):
    c = Contact.objects.create(email="lee@example.my")
    _order(c, "2", "50.00", days_ago=10)
    contact_stats_refresh(contact_ids=[c.pk])
    c.refresh_from_db()
    assert (c.orders_count, c.total_spent) == (1, Decimal("50.00"))

    # An older order arrives later (history import): first order moves back, last stays.
    _order(c, "1", "30.00", days_ago=100)
    # A refund of the newest order and a partial refund of another.
    _order(c, "3", "70.00", days_ago=1, status=OrderStatus.REFUNDED)
    _order(c, "4", "40.00", days_ago=5, refunded="15.00")
    contact_stats_refresh(contact_ids=[c.pk])
    c.refresh_from_db()
    assert c.orders_count == 3
    assert c.total_spent == Decimal("105.00")  # 50 + 30 + (40 - 15)
    assert c.average_order_value == Decimal("35.00")
    assert c.first_order_at < c.last_order_at
    assert (timezone.now() - c.last_order_at).days == 5
    assert c.last_activity_at == c.last_order_at

    # Refreshing again changes nothing (idempotent).
    contact_stats_refresh(contact_ids=[c.pk])
    c2 = Contact.objects.get(pk=c.pk)
    assert (c2.orders_count, c2.total_spent, c2.average_order_value) == (3, Decimal("105.00"), Decimal("35.00"))


def test_jpy_figures_have_no_minor_unit(db):
    from segments.models import Shop

    Shop.objects.create(currency="JPY", timezone="Asia/Tokyo")
    c = Contact.objects.create(email="sato@example.jp")
    for i, total in enumerate(["1000", "1000", "1001"]):
        Order.objects.create(contact=c, external_id=str(i), total=Decimal(total), currency="JPY",
                             placed_at=timezone.now(), status=OrderStatus.PAID)
    contact_stats_refresh(contact_ids=[c.pk])
    c.refresh_from_db()
    assert c.average_order_value == Decimal("1000")  # 3001 / 3 rounded to whole yen


def test_postgresql_contacts_keep_their_unique_indexes_but_no_like_prefix_ones(db):
    """Migration 0005: every index an import must update is one some query uses (B1)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (only its schema editor adds varchar_pattern_ops indexes)")
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'segments_contact'")
        indexes = dict(cursor.fetchall())
    assert not [name for name, definition in indexes.items() if "pattern_ops" in definition], indexes
    unique = [d for d in indexes.values() if d.startswith("CREATE UNIQUE INDEX")]
    assert any("(email)" in d for d in unique) and any("(phone)" in d for d in unique), indexes
    assert any(d.endswith("(source)") for d in indexes.values()), indexes  # the admin's source filter


def test_value_indexes_are_partial_and_still_serve_the_segment_queries(db):
    """Migration 0006: contacts without orders or activity stay out of the three value indexes, which
    still answer a recency range and the top-N% threshold (orders_count > 0)."""
    from django.db import connection

    now = timezone.now()
    Contact.objects.create(email="mei@example.com", orders_count=2, total_spent=Decimal("120.00"),
                           last_order_at=now, last_activity_at=now)
    queries = {
        "contact_last_order_idx": Contact.objects.filter(last_order_at__gte=now - timedelta(days=30)),
        "contact_last_activity_idx": Contact.objects.filter(last_activity_at__lt=now - timedelta(days=90)),
    }
    if connection.vendor == "postgresql":  # SQLite cannot match orders_count > ? to the index's condition
        queries["contact_total_spent_idx"] = Contact.objects.filter(orders_count__gt=0).order_by("-total_spent")[:1]
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # the test table is tiny: ask for an index
    for index, qs in queries.items():
        assert index in str(qs.explain()), (index, qs.explain())
    assert Contact.objects.filter(last_order_at__gte=now - timedelta(days=1)).count() == 1


def test_events_are_indexed_by_arrival_not_by_occurred_at_alone(db):
    """Migration 0007: the time index of the events follows received_at (an insert appends to it); the
    dashboard's last-24-hours count still reads it. occurred_at is indexed only behind type or contact."""
    from django.db import connection

    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Event._meta.db_table)
    leading = {name: c["columns"] for name, c in constraints.items() if c["index"]}
    assert ["occurred_at"] not in leading.values(), leading
    assert leading["event_received_idx"] == ["received_at"]
    assert leading["event_type_time_idx"] == ["type", "occurred_at"]
    qs = Event.objects.filter(received_at__gte=timezone.now() - timedelta(hours=24))
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # the test table is tiny: ask for an index
    assert "event_received_idx" in qs.explain(), qs.explain()
