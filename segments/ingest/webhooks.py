"""Shopify and WooCommerce webhooks: verify, store once, answer fast, process in a task.

The view does three things: check the HMAC signature of the raw body (constant-time compare),
store the delivery under the platform's delivery id (a retry hits the unique constraint and
is answered 200 without processing again), and enqueue segments.ingest.tasks.process_delivery
after commit. Mapping a payload to our models happens in that task (the functions below).
"""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from segments.ingest import shop
from segments.ingest.formats import RowError, clean_country, clean_email, clean_phone, split_tags
from segments.ingest.services import Identity, resolve_contacts, store_events
from segments.models import Event, EventType, OrderStatus, WebhookDelivery
from segments.models.shop import Shop
from segments.money import MoneyError, parse_amount

SHOPIFY_TOPICS = {"orders/create", "orders/updated", "orders/fulfilled", "orders/cancelled", "orders/paid",
                  "refunds/create", "checkouts/create", "checkouts/update", "customers/create", "customers/update",
                  "products/create", "products/update", "inventory_levels/update",
                  # Since API 2024-xx the customer payloads no longer carry consent; these topics do.
                  "customers_email_marketing_consent/update", "customers_marketing_consent/update"}
WOO_TOPICS = {"order.created", "order.updated", "customer.created", "customer.updated"}


def signature_ok(body: bytes, received: str, secret: str) -> bool:
    """base64(HMAC-SHA256(raw body, secret)) compared in constant time; no secret → never ok."""
    if not secret or not received:
        return False
    expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
    return hmac.compare_digest(expected, received.strip().encode())


def _receive(*, platform: str, delivery_id: str, topic: str, shop_domain: str, body: bytes) -> JsonResponse:
    from django_q.tasks import async_task

    try:
        payload = json.loads(body)
    except ValueError:
        return JsonResponse({"error": "body is not JSON"}, status=400)
    if not delivery_id:
        # Without the platform's delivery id, dedupe on the body itself (same body, same delivery).
        delivery_id = "sha256:" + hashlib.sha256(body).hexdigest()
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(platform=platform, delivery_id=delivery_id[:128],
                                                      topic=topic[:64], shop_domain=shop_domain[:255],
                                                      payload=payload)
    except IntegrityError:
        return JsonResponse({"status": "duplicate", "delivery_id": delivery_id})
    transaction.on_commit(lambda: async_task("segments.ingest.tasks.process_delivery", delivery.pk,
                                             task_name=f"webhook {platform} {topic} {delivery.pk}"))
    return JsonResponse({"status": "accepted", "delivery_id": delivery_id})


@csrf_exempt
@require_POST
def shopify(request: HttpRequest) -> JsonResponse:
    body = request.body
    if not signature_ok(body, request.headers.get("X-Shopify-Hmac-Sha256", ""), settings.SHOPIFY_WEBHOOK_SECRET):
        return JsonResponse({"error": "bad signature"}, status=401)
    topic = request.headers.get("X-Shopify-Topic", "")
    if topic not in SHOPIFY_TOPICS:
        return JsonResponse({"status": "ignored", "topic": topic})  # 200: Shopify would retry anything else
    return _receive(platform="shopify", delivery_id=request.headers.get("X-Shopify-Webhook-Id", ""), topic=topic,
                    shop_domain=request.headers.get("X-Shopify-Shop-Domain", ""), body=body)


@csrf_exempt
@require_POST
def woocommerce(request: HttpRequest) -> JsonResponse:
    body = request.body
    if not signature_ok(body, request.headers.get("X-WC-Webhook-Signature", ""),
                        settings.WOOCOMMERCE_WEBHOOK_SECRET):
        return JsonResponse({"error": "bad signature"}, status=401)
    topic = request.headers.get("X-WC-Webhook-Topic", "")
    if topic not in WOO_TOPICS:
        # Includes the ping WooCommerce sends when the webhook is saved (body 'webhook_id=N').
        return JsonResponse({"status": "ignored", "topic": topic})
    return _receive(platform="woocommerce", delivery_id=request.headers.get("X-WC-Webhook-Delivery-ID", ""),
                    topic=topic, shop_domain=request.headers.get("X-WC-Webhook-Source", ""), body=body)


# --- processing (runs in the task) ---------------------------------------------------------

def _time(value) -> datetime | None:
    if not value:
        return None
    parsed = parse_datetime(str(value))
    if parsed is not None and parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _money(value, currency: str) -> Decimal:
    try:
        return parse_amount(value if value not in (None, "") else "0", currency)
    except MoneyError:
        # Shops send prices with more decimals than the currency has (e.g. "3" vs "3.00"): round them.
        return Decimal(str(value)).quantize(Decimal("0.01"))


def _identity(*, email=None, phone=None, country="", customer_id=None, source="shopify", first="", last=""):
    try:
        email = clean_email(email or "")
    except RowError:
        email = None
    try:
        phone = clean_phone(phone or "", country)
    except RowError:
        phone = None
    return Identity(email=email, phone=str(phone) if phone else None,
                    customer_id=str(customer_id) if customer_id else "", customer_source=source,
                    first_name=first or "", last_name=last or "")


def _shopify_order_identity(p: dict) -> Identity:
    customer = p.get("customer") or {}
    address = p.get("billing_address") or p.get("shipping_address") or customer.get("default_address") or {}
    return _identity(email=p.get("email") or p.get("contact_email") or customer.get("email"),
                     phone=p.get("phone") or customer.get("phone") or address.get("phone"),
                     country=clean_country(address.get("country_code") or ""), customer_id=customer.get("id"),
                     first=customer.get("first_name") or address.get("first_name"),
                     last=customer.get("last_name") or address.get("last_name"))


def _shopify_status(p: dict) -> str:
    if p.get("cancelled_at"):
        return OrderStatus.CANCELLED
    financial = p.get("financial_status") or ""
    if financial == "refunded":
        return OrderStatus.REFUNDED
    if financial == "voided":
        return OrderStatus.CANCELLED
    if financial in ("paid", "partially_refunded"):
        return OrderStatus.FULFILLED if p.get("fulfillment_status") == "fulfilled" else OrderStatus.PAID
    return OrderStatus.PLACED


def _shopify_refunds(p: dict, currency: str) -> list:
    out = []
    for refund in p.get("refunds") or []:
        amount = sum((_money(t.get("amount"), currency) for t in refund.get("transactions") or []
                      if t.get("kind") == "refund" and t.get("status", "success") == "success"), Decimal(0))
        out.append((str(refund["id"]), amount, _time(refund.get("created_at"))))
    return out


def shopify_order(p: dict, topic: str) -> None:
    currency = p.get("currency") or "USD"
    external_id = str(p["id"])
    at = _time(p.get("updated_at")) or _time(p.get("created_at"))
    topic_events = []
    if topic == "orders/fulfilled" or p.get("fulfillment_status") == "fulfilled":
        topic_events.append(shop.order_event("shopify", external_id, EventType.ORDER_FULFILLED, "fulfilled", at))
    if topic == "orders/cancelled" or p.get("cancelled_at"):
        topic_events.append(shop.order_event("shopify", external_id, "order_cancelled", "cancelled",
                                             _time(p.get("cancelled_at")) or at))
    shop.order_upsert(shop.OrderData(
        source="shopify", external_id=external_id, name=str(p.get("name") or ""),
        placed_at=_time(p.get("processed_at")) or _time(p.get("created_at")), status=_shopify_status(p),
        currency=currency, subtotal=_money(p.get("subtotal_price"), currency),
        discount_code=((p.get("discount_codes") or [{}])[0].get("code") or "")[:64],
        discount_amount=_money(p.get("total_discounts"), currency),
        shipping=sum((_money(s.get("price"), currency) for s in p.get("shipping_lines") or []), Decimal(0)),
        tax=_money(p.get("total_tax"), currency), total=_money(p.get("total_price"), currency),
        lines=[{"sku": li.get("sku") or "", "title": li.get("title") or li.get("name") or "",
                "quantity": int(li.get("quantity") or 1), "unit_price": _money(li.get("price"), currency)}
               for li in p.get("line_items") or []],
        identity=_shopify_order_identity(p), refunds=_shopify_refunds(p, currency)), topic_events=topic_events)


def shopify_refund(p: dict) -> None:
    """refunds/create names the order by id; the refund becomes an event and the order's refunded sum."""
    from segments.models import Order

    order = Order.objects.filter(source="shopify", external_id=str(p["order_id"])).first()
    currency = order.currency if order else ((p.get("transactions") or [{}])[0].get("currency") or "USD")
    (refund_id, amount, at), = _shopify_refunds({"refunds": [p]}, currency)
    event = Event(contact_id=order.contact_id if order else None, type=EventType.ORDER_REFUNDED,
                  occurred_at=at or _time(p.get("processed_at")) or datetime.now(UTC), source="shopify",
                  idempotency_key=f"refund:{refund_id}",
                  properties={"order_id": str(p["order_id"]), "amount": str(amount), "currency": currency,
                              "name": order.name if order else ""})
    with transaction.atomic():
        store_events([event])
        if order:
            shop._refresh_refunds(order)
            from segments.services import contact_stats_refresh

            if order.contact_id:
                contact_stats_refresh(contact_ids=[order.contact_id])


def shopify_checkout(p: dict, topic: str) -> None:
    """A cart with an email or phone: checkout_started once, then cart_updated per change."""
    currency = p.get("presentment_currency") or p.get("currency") or "USD"
    token = str(p.get("token") or p.get("id"))
    address = p.get("billing_address") or p.get("shipping_address") or {}
    customer = p.get("customer") or {}
    identity = _identity(email=p.get("email") or customer.get("email"),
                         phone=p.get("phone") or p.get("sms_marketing_phone") or customer.get("phone"),
                         country=clean_country(address.get("country_code") or ""), customer_id=customer.get("id"),
                         first=customer.get("first_name"), last=customer.get("last_name"))
    properties = {
        "checkout_token": token, "cart_token": p.get("cart_token"), "currency": currency,
        "value": str(_money(p.get("total_price"), currency)),
        "abandoned_checkout_url": p.get("abandoned_checkout_url") or "",
        "completed_at": p.get("completed_at"),
        "items": [{"product_id": str(li.get("product_id") or ""), "variant_id": str(li.get("variant_id") or ""),
                   "sku": li.get("sku") or "", "title": li.get("title") or "", "quantity": li.get("quantity") or 1,
                   "price": str(_money(li.get("price"), currency))} for li in p.get("line_items") or []],
    }
    at = _time(p.get("updated_at")) or _time(p.get("created_at")) or datetime.now(UTC)
    with transaction.atomic():
        contact_id = resolve_contacts([identity], source="shopify").contact_ids[0]
        events = [Event(contact_id=contact_id, type=EventType.CHECKOUT_STARTED, occurred_at=_time(
            p.get("created_at")) or at, source="shopify", idempotency_key=f"checkout:{token}:started",
            anonymous_id="" if contact_id else f"checkout:{token}"[:64], properties=properties)]
        if topic == "checkouts/update":
            events.append(Event(contact_id=contact_id, type=EventType.CART_UPDATED, occurred_at=at, source="shopify",
                                idempotency_key=f"checkout:{token}:{p.get('updated_at') or at.isoformat()}",
                                anonymous_id=events[0].anonymous_id, properties=properties))
        store_events(events)


SHOPIFY_CONSENT = {"subscribed": "subscribed", "not_subscribed": "not_subscribed", "unsubscribed": "unsubscribed",
                   "pending": "pending", "invalid": "cleaned"}  # "redacted" states nothing


def shopify_customer(p: dict, topic: str) -> None:
    address = p.get("default_address") or (p.get("addresses") or [{}])[0] or {}
    country = clean_country(address.get("country_code") or "")
    consents = []
    for channel, key in (("email", "email_marketing_consent"), ("sms", "sms_marketing_consent")):
        consent = p.get(key) or {}
        state = SHOPIFY_CONSENT.get(consent.get("state") or "")
        if state:
            proof = {"platform": "shopify", "topic": topic, "customer_id": str(p["id"]),
                     **{k: consent.get(k) for k in ("opt_in_level", "consent_updated_at", "consent_collected_from")
                        if consent.get(k)}}
            consents.append((channel, state, _time(consent.get("consent_updated_at")), proof))
    shop.customer_upsert(shop.CustomerData(
        source="shopify",
        identity=_identity(email=p.get("email"), phone=p.get("phone") or (p.get("sms_marketing_consent") or {}).get(
            "phone"), country=country, customer_id=p.get("id"), first=p.get("first_name"), last=p.get("last_name")),
        country=country, locale=(p.get("locale") or "")[:10], tags=split_tags(p.get("tags") or ""),
        consents=consents))


def shopify_consent_update(p: dict, topic: str) -> None:
    """customers_email_marketing_consent/update and customers_marketing_consent/update (SMS)."""
    if topic.startswith("customers_email"):
        channel, consent, customer_id = "email", p.get("email_marketing_consent") or {}, p.get("customer_id")
        identity = _identity(email=p.get("email_address"), customer_id=customer_id)
    else:
        channel, consent, customer_id = "sms", p.get("sms_marketing_consent") or {}, p.get("id")
        identity = _identity(phone=p.get("phone"), customer_id=customer_id)
    state = SHOPIFY_CONSENT.get(consent.get("state") or "")
    if not state:
        return
    proof = {"platform": "shopify", "topic": topic, "customer_id": str(customer_id),
             **{k: v for k, v in consent.items() if k != "state" and v}}
    shop.customer_upsert(shop.CustomerData(source="shopify", identity=identity,
                                           consents=[(channel, state, _time(consent.get("consent_updated_at")), proof)]))


def shopify_product(p: dict) -> None:
    variants = p.get("variants") or []
    first = variants[0] if variants else {}
    currency = Shop.load().currency
    website = Shop.load().website_url.rstrip("/")
    shop.product_upsert(shop.ProductData(
        source="shopify", external_id=str(p["id"]), sku=(first.get("sku") or f"shopify-{p['id']}")[:64],
        title=(p.get("title") or "")[:255], price=_money(first.get("price"), currency), currency=currency,
        url=f"{website}/products/{p['handle']}" if website and p.get("handle") else "",
        image_url=((p.get("image") or {}).get("src") or "")[:500], is_active=p.get("status", "active") == "active",
        items=[(str(v.get("inventory_item_id") or ""), v.get("inventory_quantity")) for v in variants]))


def shopify_inventory(p: dict) -> None:
    shop.inventory_level_set(source="shopify", item_id=str(p["inventory_item_id"]), location_id=str(p["location_id"]),
                             available=p.get("available"), at=_time(p.get("updated_at")))


WOO_STATUS = {"pending": OrderStatus.PLACED, "on-hold": OrderStatus.PLACED, "processing": OrderStatus.PAID,
              "completed": OrderStatus.FULFILLED, "cancelled": OrderStatus.CANCELLED, "failed": OrderStatus.CANCELLED,
              "refunded": OrderStatus.REFUNDED}


def woo_order(p: dict, topic: str) -> None:
    currency = p.get("currency") or "USD"
    billing = p.get("billing") or {}
    external_id = str(p["id"])
    status = WOO_STATUS.get(p.get("status") or "", OrderStatus.PLACED)
    at = _time(p.get("date_modified_gmt")) or _time(p.get("date_created_gmt"))
    topic_events = []
    if status == OrderStatus.FULFILLED:
        topic_events.append(shop.order_event("woocommerce", external_id, EventType.ORDER_FULFILLED, "fulfilled",
                                             _time(p.get("date_completed_gmt")) or at))
    refunds = [(str(r["id"]), abs(_money(r.get("total"), currency)), None) for r in p.get("refunds") or []]
    shop.order_upsert(shop.OrderData(
        source="woocommerce", external_id=external_id, name=f"#{p.get('number') or external_id}",
        placed_at=_time(p.get("date_created_gmt")) or at, status=status, currency=currency,
        subtotal=sum((_money(li.get("subtotal"), currency) for li in p.get("line_items") or []), Decimal(0)),
        discount_code=((p.get("coupon_lines") or [{}])[0].get("code") or "")[:64],
        discount_amount=_money(p.get("discount_total"), currency), shipping=_money(p.get("shipping_total"), currency),
        tax=_money(p.get("total_tax"), currency), total=_money(p.get("total"), currency),
        lines=[{"sku": li.get("sku") or "", "title": li.get("name") or "", "quantity": int(li.get("quantity") or 1),
                "unit_price": _money(li.get("price"), currency)} for li in p.get("line_items") or []],
        identity=_identity(email=billing.get("email"), phone=billing.get("phone"),
                           country=clean_country(billing.get("country") or ""),
                           customer_id=p.get("customer_id") or None, source="woocommerce",
                           first=billing.get("first_name"), last=billing.get("last_name")),
        refunds=refunds), topic_events=topic_events)


def woo_customer(p: dict) -> None:
    billing = p.get("billing") or {}
    country = clean_country(billing.get("country") or "")
    shop.customer_upsert(shop.CustomerData(
        source="woocommerce", country=country,
        identity=_identity(email=p.get("email") or billing.get("email"), phone=billing.get("phone"), country=country,
                           customer_id=p.get("id"), source="woocommerce", first=p.get("first_name"),
                           last=p.get("last_name"))))


def process(delivery: WebhookDelivery) -> None:
    p, topic = delivery.payload, delivery.topic
    if delivery.platform == "shopify":
        if topic.startswith("orders/"):
            shopify_order(p, topic)
        elif topic == "refunds/create":
            shopify_refund(p)
        elif topic.startswith("checkouts/"):
            shopify_checkout(p, topic)
        elif topic.startswith("customers/"):
            shopify_customer(p, topic)
        elif topic.startswith("customers_"):
            shopify_consent_update(p, topic)
        elif topic.startswith("products/"):
            shopify_product(p)
        elif topic == "inventory_levels/update":
            shopify_inventory(p)
    elif delivery.platform == "woocommerce":
        if topic.startswith("order."):
            woo_order(p, topic)
        elif topic.startswith("customer."):
            woo_customer(p)
