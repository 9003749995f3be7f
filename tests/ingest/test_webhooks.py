"""Shopify and WooCommerce webhooks fed the platforms' documented sample payloads (tests/ingest/payloads)."""

import base64
import hashlib
import hmac
import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.test import override_settings

from segments.models import (
    Contact,
    ContactIdentifier,
    Event,
    InventoryItem,
    Order,
    OrderStatus,
    Product,
    WebhookDelivery,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("sync_tasks")]
PAYLOADS = Path(__file__).parent / "payloads"
SHOPIFY_SECRET = "shpss_test_secret"
WOO_SECRET = "woo test secret"


@pytest.fixture
def sync_tasks(monkeypatch, settings):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
    settings.SHOPIFY_WEBHOOK_SECRET = SHOPIFY_SECRET
    settings.WOOCOMMERCE_WEBHOOK_SECRET = WOO_SECRET


def payload(name: str) -> dict:
    return json.loads((PAYLOADS / name).read_text())


def sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def shopify(client, topic: str, data: dict, *, webhook_id: str | None = None, signature: str | None = None,
            capture=None):
    body = json.dumps(data).encode()
    headers = {"HTTP_X_SHOPIFY_TOPIC": topic, "HTTP_X_SHOPIFY_SHOP_DOMAIN": "kedai.myshopify.com",
               "HTTP_X_SHOPIFY_WEBHOOK_ID": webhook_id or f"{topic}-{hashlib.md5(body).hexdigest()}",  # noqa: S324
               "HTTP_X_SHOPIFY_HMAC_SHA256": signature or sign(body, SHOPIFY_SECRET),
               "HTTP_X_SHOPIFY_API_VERSION": "2026-07"}
    with capture(execute=True):
        return client.post("/webhooks/shopify/", data=body, content_type="application/json", **headers)


def woo(client, topic: str, data: dict, *, delivery: str, capture, secret: str = WOO_SECRET):
    body = json.dumps(data).encode()
    resource, event = topic.split(".")
    headers = {"HTTP_X_WC_WEBHOOK_TOPIC": topic, "HTTP_X_WC_WEBHOOK_RESOURCE": resource,
               "HTTP_X_WC_WEBHOOK_EVENT": event, "HTTP_X_WC_WEBHOOK_SOURCE": "https://shop.example/",
               "HTTP_X_WC_WEBHOOK_ID": "12", "HTTP_X_WC_WEBHOOK_DELIVERY_ID": delivery,
               "HTTP_X_WC_WEBHOOK_SIGNATURE": sign(body, secret)}
    with capture(execute=True):
        return client.post("/webhooks/woocommerce/", data=body, content_type="application/json", **headers)


@pytest.fixture
def cap(django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


def test_a_bad_shopify_signature_is_a_401_and_stores_nothing(client, cap):
    r = shopify(client, "orders/create", payload("shopify_orders_create.json"), signature=sign(b"other", SHOPIFY_SECRET),
                capture=cap)
    assert r.status_code == 401
    assert WebhookDelivery.objects.count() == 0 and Order.objects.count() == 0


@override_settings(SHOPIFY_WEBHOOK_SECRET="")
def test_without_a_configured_secret_every_webhook_is_refused(client, cap):
    data = payload("shopify_orders_create.json")
    body = json.dumps(data).encode()
    assert shopify(client, "orders/create", data, signature=sign(body, ""), capture=cap).status_code == 401


def test_orders_create_stores_the_order_its_lines_the_customer_and_an_event(client, cap, ingested):
    r = shopify(client, "orders/create", payload("shopify_orders_create.json"), capture=cap)
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    order = Order.objects.get(source="shopify", external_id="820982911946154508")
    # The documented sample is a voided, cancelled order: it is stored as such and counts no revenue.
    assert (order.name, order.status, order.total, order.subtotal) == ("#9999", OrderStatus.CANCELLED,
                                                                      Decimal("404.95"), Decimal("404.95"))
    assert (order.shipping, order.discount_amount) == (Decimal("10.00"), Decimal("20.00"))
    assert order.lines.count() == 5
    assert order.contact.email == "jon@example.com"
    assert ContactIdentifier.objects.filter(source="shopify", value="115310627314723954").exists()
    assert set(Event.objects.values_list("type", flat=True)) == {"order_placed", "order_cancelled"}
    assert WebhookDelivery.objects.get().status == WebhookDelivery.Status.PROCESSED
    assert ingested.calls and ingested.calls[0]["trigger_flows"] is True


def test_a_retried_delivery_is_answered_once_and_not_processed_again(client, cap, ingested):
    data = payload("shopify_orders_create.json")
    shopify(client, "orders/create", data, webhook_id="b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", capture=cap)
    n_events = Event.objects.count()
    r = shopify(client, "orders/create", data, webhook_id="b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", capture=cap)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    assert WebhookDelivery.objects.count() == 1 and Event.objects.count() == n_events
    assert len(ingested.calls) == 1


def test_orders_updated_paid_and_fulfilled_then_refunds_create(client, cap, shop):
    data = payload("shopify_orders_create.json")
    # The same documented Order object as a live, paid order (values of documented fields changed).
    data.update(cancelled_at=None, cancel_reason=None, financial_status="paid")
    shopify(client, "orders/updated", data, capture=cap)
    order = Order.objects.get()
    assert order.status == OrderStatus.PAID
    assert order.contact.total_spent == Decimal("404.95")
    data["fulfillment_status"] = "fulfilled"
    shopify(client, "orders/fulfilled", data, capture=cap)
    order.refresh_from_db()
    assert order.status == OrderStatus.FULFILLED
    assert Event.objects.filter(type="order_fulfilled").count() == 1
    shopify(client, "refunds/create", payload("shopify_refunds_create.json"), capture=cap)
    order.refresh_from_db()
    assert order.refunded_amount == Decimal("85.00")  # the two refund transactions, 75.00 + 10.00
    assert order.contact.__class__.objects.get(pk=order.contact_id).total_spent == Decimal("319.95")
    # orders/updated afterwards lists the same refund: it is not counted twice.
    data["refunds"] = [payload("shopify_refunds_create.json")]
    shopify(client, "orders/updated", data, capture=cap)
    order.refresh_from_db()
    assert order.refunded_amount == Decimal("85.00")
    assert Event.objects.filter(type="order_refunded").count() == 1


def test_checkouts_create_and_update_record_the_cart_with_its_recovery_url(client, cap):
    data = payload("shopify_checkouts_create.json")
    shopify(client, "checkouts/create", data, capture=cap)
    started = Event.objects.get(type="checkout_started")
    assert started.contact.email == "example@email.com"
    assert started.properties["abandoned_checkout_url"].startswith("https://checkout.local/548380009/checkouts/")
    assert started.properties["value"] == "421.88" and len(started.properties["items"]) == 2
    assert started.properties["items"][0]["sku"] == "IPOD2008PINK"
    data["updated_at"] = "2021-12-31T19:05:00-05:00"
    shopify(client, "checkouts/update", data, capture=cap)
    assert Event.objects.filter(type="checkout_started").count() == 1
    assert Event.objects.filter(type="cart_updated").count() == 1


def test_customers_create_then_consent_topics_state_email_and_sms_consent(client, cap, consents):
    shopify(client, "customers/create", payload("shopify_customers_create.json"), capture=cap)
    bob = Contact.objects.get(email="bob@biller.com")
    assert (bob.first_name, bob.last_name, bob.country) == ("Bob", "Biller", "CA")
    assert consents.calls == []  # the 2026-07 customer payload says nothing about consent
    shopify(client, "customers_email_marketing_consent/update",
            payload("shopify_customers_email_marketing_consent_update.json"), capture=cap)
    (call,) = consents.calls
    assert (call["contact"].pk, call["channel"], call["state"], call["source"]) == (
        bob.pk, "email", "not_subscribed", "shop_webhook")
    # The documented SMS sample has state null (nothing stated); with a phone and a state it is recorded.
    shopify(client, "customers_marketing_consent/update", payload("shopify_customers_marketing_consent_update.json"),
            capture=cap)
    assert len(consents.calls) == 1
    sms = payload("shopify_customers_marketing_consent_update.json")
    sms["phone"] = "+16135550123"
    sms["sms_marketing_consent"].update(state="subscribed", opt_in_level="single_opt_in",
                                        consent_updated_at="2021-12-31T19:00:00-05:00")
    shopify(client, "customers_marketing_consent/update", sms, capture=cap)
    call = consents.calls[-1]
    assert (call["channel"], call["state"], call["proof"]["opt_in_level"]) == ("sms", "subscribed", "single_opt_in")


def test_customers_update_with_nested_consent_from_older_api_versions(client, cap, consents):
    data = payload("shopify_customers_create.json")
    data["email_marketing_consent"] = {"state": "unsubscribed", "opt_in_level": "single_opt_in",
                                       "consent_updated_at": "2022-01-01T00:00:00-05:00"}
    shopify(client, "customers/update", data, capture=cap)
    assert [(c["channel"], c["state"]) for c in consents.calls] == [("email", "unsubscribed")]


def test_products_update_and_inventory_levels_update_detect_back_in_stock(client, cap):
    product = payload("shopify_products_update.json")
    for v in product["variants"]:
        v["inventory_quantity"] = 0
    product["variants"][0]["inventory_item_id"] = 271878346596884015  # the item the inventory sample names
    shopify(client, "products/update", product, capture=cap)
    p = Product.objects.get(external_id="788032119674292922")
    assert (p.title, p.price, p.stock_quantity) == ("Example T-Shirt", Decimal("19.99"), 0)
    assert InventoryItem.objects.filter(external_id="271878346596884015", product=p).exists()
    assert not Event.objects.filter(type="product_back_in_stock").exists()
    shopify(client, "inventory_levels/update", payload("shopify_inventory_levels_update.json"), capture=cap)
    p.refresh_from_db()
    assert p.stock_quantity == 10
    restock = Event.objects.get(type="product_back_in_stock")
    assert restock.properties["product_id"] == "788032119674292922" and restock.contact is None


def test_an_unsubscribed_topic_is_acknowledged_and_ignored(client, cap):
    r = shopify(client, "app/uninstalled", {"id": 548380009}, capture=cap)
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    assert WebhookDelivery.objects.count() == 0


def test_woocommerce_order_created_and_updated(client, cap, shop):
    r = woo(client, "order.created", payload("woocommerce_order_created.json"), delivery="1", capture=cap)
    assert r.status_code == 200
    order = Order.objects.get(source="woocommerce", external_id="727")
    assert (order.status, order.total, order.shipping, order.lines.count()) == (
        OrderStatus.PAID, Decimal("29.35"), Decimal("10.00"), 2)
    # The sample's "(555) 555-5555" is not a valid US number: the contact keeps the email only.
    assert order.contact.email == "john.doe@example.com" and order.contact.phone is None
    r = woo(client, "order.updated", payload("woocommerce_order_updated.json"), delivery="2", capture=cap)
    done = Order.objects.get(source="woocommerce", external_id="723")
    assert (done.status, done.refunded_amount) == (OrderStatus.FULFILLED, Decimal("19.00"))
    assert done.contact.email == "joao.silva@example.com"
    assert ContactIdentifier.objects.filter(source="woocommerce", value="26", contact=done.contact).exists()


def test_woocommerce_customer_created_and_bad_signature(client, cap, consents):
    data = payload("woocommerce_customer_created.json")
    assert woo(client, "customer.created", data, delivery="3", capture=cap, secret="wrong").status_code == 401
    assert woo(client, "customer.created", data, delivery="3", capture=cap).status_code == 200
    john = Contact.objects.get(email="john.doe@example.com")
    assert (john.first_name, john.country) == ("John", "US")
    assert consents.calls == []  # WooCommerce customers carry no marketing consent
    r = woo(client, "customer.created", data, delivery="3", capture=cap)
    assert r.json()["status"] == "duplicate"


def test_woocommerce_ping_on_webhook_creation_is_acknowledged(client):
    body = b"webhook_id=12"
    r = client.post("/webhooks/woocommerce/", data=body, content_type="application/x-www-form-urlencoded",
                    HTTP_X_WC_WEBHOOK_SIGNATURE=sign(body, WOO_SECRET))
    assert r.status_code == 200 and r.json()["status"] == "ignored"
