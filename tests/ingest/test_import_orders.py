"""import_orders: Shopify's orders export (one row per line item), contacts, figures, events."""

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from segments.models import Contact, Event, Order, OrderStatus, Product

pytestmark = pytest.mark.django_db

HEADER = ("Name,Email,Financial Status,Paid at,Fulfillment Status,Fulfilled at,Accepts Marketing,Currency,Subtotal,"
          "Shipping,Taxes,Total,Discount Code,Discount Amount,Shipping Method,Created at,Lineitem quantity,"
          "Lineitem name,Lineitem price,Lineitem compare at price,Lineitem sku,Lineitem requires shipping,"
          "Lineitem taxable,Lineitem fulfillment status,Billing Name,Billing Street,Billing Address1,Billing Address2,"
          "Billing Company,Billing City,Billing Zip,Billing Province,Billing Country,Billing Phone,Shipping Name,"
          "Shipping Street,Shipping Address1,Shipping Address2,Shipping Company,Shipping City,Shipping Zip,"
          "Shipping Province,Shipping Country,Shipping Phone,Notes,Note Attributes,Cancelled at,Payment Method,"
          "Payment Reference,Refunded Amount,Vendor,Outstanding Balance,Employee,Location,Device ID,Id,Tags,"
          "Risk Level,Source,Lineitem discount,Tax 1 Name,Tax 1 Value,Tax 2 Name,Tax 2 Value,Tax 3 Name,Tax 3 Value,"
          "Tax 4 Name,Tax 4 Value,Tax 5 Name,Tax 5 Value,Phone,Receipt Number,Duties,Billing Province Name,"
          "Shipping Province Name,Payment ID,Payment Terms Name,Next Payment Due At,Payment References")


def row(**cells) -> str:
    cols = HEADER.split(",")
    return ",".join(cells.get(c.replace(" ", "_").lower(), "") for c in cols)


ORDERS = "\n".join([
    HEADER,
    # #1001: two line items; order-level cells only on the first row, as Shopify exports them.
    row(name="#1001", email="Mei@Example.com", financial_status="paid", fulfillment_status="fulfilled",
        currency="MYR", subtotal="150.00", shipping="10.00", taxes="0.00", total="160.00", discount_code="",
        discount_amount="0.00", created_at="2024-01-15 10:23:45 +0800", lineitem_quantity="2",
        lineitem_name="Teh tarik mug", lineitem_price="50.00", lineitem_sku="MUG-1", billing_name="Mei Lin",
        billing_country="MY", billing_phone="'012-345 6789", id="5512345678901", refunded_amount="0.00"),
    row(name="#1001", email="Mei@Example.com", lineitem_quantity="1", lineitem_name="Kaya jar",
        lineitem_price="50.00", lineitem_sku="KAYA-1"),
    # #1002: a second order of the same person, partly refunded.
    row(name="#1002", email="mei@example.com", financial_status="partially_refunded", currency="MYR",
        subtotal="80.00", shipping="0.00", taxes="0.00", total="80.00", created_at="2024-02-01 09:00:00 +0800",
        lineitem_quantity="1", lineitem_name="Kopi beans", lineitem_price="80.00", lineitem_sku="KOPI-1",
        id="5512345678902", refunded_amount="30.00"),
    # #1003: cancelled; does not count as revenue.
    row(name="#1003", email="raj@example.com", financial_status="voided", currency="MYR", total="20.00",
        created_at="2024-02-03 09:00:00 +0800", lineitem_quantity="1", lineitem_name="Tote", lineitem_price="20.00",
        cancelled_at="2024-02-03 10:00:00 +0800", id="5512345678903"),
    # #1004: a bad amount; reported on its first line, the rest still goes in.
    row(name="#1004", email="bad@example.com", financial_status="paid", currency="MYR", total="abc",
        created_at="2024-02-04 09:00:00 +0800", lineitem_quantity="1", lineitem_name="X", lineitem_price="1.00",
        id="5512345678904"),
]) + "\n"


def test_it_imports_orders_lines_contacts_and_brings_figures_up_to_date(write_file, consents, ingested, shop,
                                                                         django_capture_on_commit_callbacks):
    Product.objects.create(sku="MUG-1", title="Teh tarik mug", price=Decimal("50.00"), currency="MYR")
    with django_capture_on_commit_callbacks(execute=True):
        out = call_command("import_orders", write_file("orders_export_1.csv", ORDERS))
    assert out.startswith("created 3, updated 0, skipped 0, errors 1")
    first = Order.objects.get(external_id="5512345678901")
    assert (first.name, first.status, first.total, first.shipping) == ("#1001", OrderStatus.FULFILLED,
                                                                       Decimal("160.00"), Decimal("10.00"))
    assert sorted(first.lines.values_list("sku", "quantity", "total")) == [
        ("KAYA-1", 1, Decimal("50.00")), ("MUG-1", 2, Decimal("100.00"))]
    assert first.lines.get(sku="MUG-1").product is not None
    mei = Contact.objects.get(email="mei@example.com")
    assert (mei.first_name, mei.last_name, str(mei.phone), mei.source) == ("Mei", "Lin", "+60123456789", "shopify")
    # Figures: 160 + (80 - 30) refunded; the cancelled order of another person does not count.
    assert (mei.orders_count, mei.total_spent) == (2, Decimal("210.00"))
    assert Contact.objects.get(email="raj@example.com").orders_count == 0
    # A customer not yet known becomes a contact without marketing consent.
    assert consents.calls == []
    placed = Event.objects.filter(type="order_placed", source="shopify")
    assert placed.count() == 3
    assert ingested.calls and all(c["trigger_flows"] is False for c in ingested.calls)
    assert sorted(i for c in ingested.calls for i in c["event_ids"]) == sorted(placed.values_list("pk", flat=True))


def test_reimporting_orders_changes_nothing_and_an_edited_order_updates(write_file, shop):
    path = write_file("orders_export_1.csv", ORDERS)
    call_command("import_orders", path)
    out = call_command("import_orders", path)
    assert out.startswith("created 0, updated 0, skipped 3, errors 1")
    assert Order.objects.count() == 3 and Event.objects.filter(type="order_placed").count() == 3
    edited = write_file("orders_export_2.csv", ORDERS.replace("refunded_amount", "").replace(",30.00,", ",80.00,"))
    out = call_command("import_orders", edited)
    assert "updated 1" in out
    assert Contact.objects.get(email="mei@example.com").total_spent == Decimal("160.00")


def test_the_bad_order_is_reported_with_its_line(write_file, shop):
    path = write_file("orders_export_1.csv", ORDERS)
    call_command("import_orders", path)
    text = (path[:-4] + ".errors.csv")
    with open(text) as f:
        lines = f.read().splitlines()
    assert lines[1] == "6,error,order #1004: Total: 'abc' is not an amount"


def test_a_contacts_file_is_not_an_orders_export(write_file):
    with pytest.raises(CommandError, match="missing Name, Financial Status"):
        call_command("import_orders", write_file("c.csv", "Email,First Name\na@example.com,A\n"))
