"""Platform-neutral writes for shop data arriving live: orders, customers, products and stock."""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import transaction

from segments.ingest.services import Identity, resolve_contacts, state_consents, store_events
from segments.models import Contact, Event, EventType, InventoryItem, Order, OrderLine, OrderStatus, Product, Tag
from segments.services import contact_stats_refresh
from segments.signals import StatedConsent

ORDER_FIELDS = ("name", "placed_at", "status", "currency", "subtotal", "discount_code", "discount_amount",
                "shipping", "tax", "total")


@dataclass
class OrderData:
    source: str
    external_id: str
    name: str
    placed_at: datetime
    status: str
    currency: str
    subtotal: Decimal
    discount_code: str
    discount_amount: Decimal
    shipping: Decimal
    tax: Decimal
    total: Decimal
    lines: list[dict]  # sku, title, quantity, unit_price, product_external_id
    identity: Identity
    refunds: list[tuple[str, Decimal, datetime | None]] = field(default_factory=list)  # (refund id, amount, at)


def order_upsert(data: OrderData, *, topic_events: list[Event] = ()) -> Order:
    """Create or update an order and its lines, its events and its contact's figures.

    order_placed (and every topic event) carries an idempotency key derived from the shop's
    ids, so a retried or out-of-order webhook and a later CSV import of the same order never
    store it twice. Refunds are stored as order_refunded events, one per shop refund id, and
    the order's refunded amount is their sum: replaying a refund cannot count it twice.
    """
    with transaction.atomic():
        contact_id = resolve_contacts([data.identity], source=data.source).contact_ids[0]
        order = Order.objects.select_for_update().filter(source=data.source, external_id=data.external_id).first()
        previous_contact = order.contact_id if order else None
        created = order is None
        order = order or Order(source=data.source, external_id=data.external_id)
        for f in ORDER_FIELDS:
            setattr(order, f, getattr(data, f))
        order.contact_id = contact_id or previous_contact
        order.save()
        _replace_lines(order, data.lines)
        events = [*topic_events]
        if created:
            events.append(_event(order, EventType.ORDER_PLACED, "placed", order.placed_at, {
                "items": [{k: str(v) for k, v in li.items()} for li in data.lines]}))
        for refund_id, amount, at in data.refunds:
            events.append(Event(contact_id=order.contact_id, type=EventType.ORDER_REFUNDED,
                                occurred_at=at or order.placed_at, source=data.source,
                                idempotency_key=f"refund:{refund_id}",
                                properties={"order_id": order.external_id, "name": order.name, "amount": str(amount),
                                            "currency": order.currency}))
        for e in events:
            e.contact_id = order.contact_id
        store_events(events)
        _refresh_refunds(order)
        contact_stats_refresh(contact_ids={order.contact_id, previous_contact} - {None})
    return order


def _event(order: Order, kind: str, suffix: str, at: datetime, extra: dict | None = None) -> Event:
    return Event(contact_id=order.contact_id, type=kind, occurred_at=at, source=order.source,
                 idempotency_key=f"order:{order.external_id}:{suffix}",
                 properties={"order_id": order.external_id, "name": order.name, "total": str(order.total),
                             "currency": order.currency, **(extra or {})})


def order_event(order_source: str, external_id: str, kind: str, suffix: str, at: datetime) -> Event:
    """An event about an order that will be upserted in the same call (fulfilled, cancelled)."""
    return Event(type=kind, occurred_at=at, source=order_source, idempotency_key=f"order:{external_id}:{suffix}",
                 properties={"order_id": external_id})


def _replace_lines(order: Order, lines: list[dict]) -> None:
    wanted = sorted((li["sku"], li["title"], li["quantity"], li["unit_price"]) for li in lines)
    have = sorted(order.lines.values_list("sku", "title", "quantity", "unit_price"))
    if wanted == have:
        return
    order.lines.all().delete()
    skus = {li["sku"] for li in lines if li["sku"]}
    products = dict(Product.objects.filter(sku__in=skus).values_list("sku", "id")) if skus else {}
    OrderLine.objects.bulk_create([
        OrderLine(order=order, sku=li["sku"][:64], title=li["title"][:255], quantity=li["quantity"],
                  unit_price=li["unit_price"], total=li["unit_price"] * li["quantity"],
                  product_id=products.get(li["sku"]))
        for li in lines])


def _refresh_refunds(order: Order) -> None:
    amounts = Event.objects.filter(source=order.source, type=EventType.ORDER_REFUNDED,
                                   properties__order_id=order.external_id).values_list("properties", flat=True)
    refunded = sum((Decimal(p.get("amount", "0")) for p in amounts), Decimal(0))
    status = order.status
    if refunded and refunded >= order.total and order.status != OrderStatus.CANCELLED:
        status = OrderStatus.REFUNDED
    if refunded != order.refunded_amount or status != order.status:
        order.refunded_amount, order.status = refunded, status
        order.save(update_fields=["refunded_amount", "status", "updated_at"])


@dataclass
class CustomerData:
    source: str
    identity: Identity
    country: str = ""
    locale: str = ""
    tags: list[str] = field(default_factory=list)
    consents: list[tuple[str, str, datetime | None, dict]] = field(default_factory=list)  # channel, state, at, proof


def customer_upsert(data: CustomerData) -> Contact | None:
    """Create or update the contact of a shop customer and state the consent the shop reports."""
    with transaction.atomic():
        contact_id = resolve_contacts([data.identity], source=data.source).contact_ids[0]
        if contact_id is None:
            return None
        contact = Contact.objects.select_for_update().get(pk=contact_id)
        changed = []
        for f, value in (("first_name", data.identity.first_name[:100]), ("last_name", data.identity.last_name[:100]),
                         ("country", data.country), ("locale", data.locale[:10])):
            if value and getattr(contact, f) != value:
                setattr(contact, f, value)
                changed.append(f)
        if data.identity.email and not contact.email and not Contact.objects.filter(email=data.identity.email).exists():
            contact.email = data.identity.email
            changed.append("email")
        if data.identity.phone and not contact.phone and not Contact.objects.filter(phone=data.identity.phone).exists():
            contact.phone = data.identity.phone
            changed.append("phone")
        if changed:
            contact.save(update_fields=[*changed, "updated_at"])
        if data.tags:
            Tag.objects.bulk_create([Tag(name=t[:64]) for t in data.tags], ignore_conflicts=True)
            contact.tags.add(*Tag.objects.filter(name__in=[t[:64] for t in data.tags]))
        state_consents([StatedConsent(contact_id=contact.pk, channel=channel, state=state, source="shop_webhook",
                                      proof=proof, occurred_at=at)
                        for channel, state, at, proof in data.consents
                        if (channel == "email" and contact.email) or (channel == "sms" and contact.phone)])
    return contact


@dataclass
class ProductData:
    source: str
    external_id: str
    sku: str
    title: str
    price: Decimal
    currency: str
    url: str
    image_url: str
    is_active: bool
    items: list[tuple[str, int | None]]  # (inventory item id, quantity)


def product_upsert(data: ProductData) -> Product:
    """Create or update a product; a product coming back in stock is recorded as an event."""
    with transaction.atomic():
        product = (Product.objects.select_for_update().filter(external_id=data.external_id).first()
                   or Product.objects.select_for_update().filter(sku=data.sku).first()
                   or Product(external_id=data.external_id))
        before = product.stock_quantity if product.pk else None
        for f in ("sku", "title", "price", "currency", "url", "image_url", "is_active", "external_id"):
            setattr(product, f, getattr(data, f))
        product.save()
        for item_id, quantity in data.items:
            if item_id:
                InventoryItem.objects.update_or_create(source=data.source, external_id=item_id,
                                                       defaults={"product": product, "quantity": quantity})
        stock_refresh(product, before=before, source=data.source)
    return product


def inventory_level_set(*, source: str, item_id: str, location_id: str, available: int | None,
                        at: datetime | None) -> Product | None:
    """One location's stock of one item changed (Shopify inventory_levels/update)."""
    with transaction.atomic():
        item = InventoryItem.objects.select_for_update().select_related("product").filter(
            source=source, external_id=item_id).first()
        if item is None:
            return None  # an item of a product we have not seen yet: products/update will bring it
        before = item.product.stock_quantity
        item.levels = {**item.levels, str(location_id): available}
        item.save(update_fields=["levels"])
        stock_refresh(item.product, before=before, source=source)
        return item.product


def stock_refresh(product: Product, *, before: int | None, source: str) -> None:
    quantities = [i.available for i in product.inventory_items.all()]
    known = [q for q in quantities if q is not None]
    stock = sum(known) if known else None
    if stock != product.stock_quantity:
        product.stock_quantity = stock
        product.save(update_fields=["stock_quantity", "updated_at"])
    if before is not None and before <= 0 and stock is not None and stock > 0:
        # Back-in-stock flows look for this event; one per restock (the key holds the new level).
        store_events([Event(type="product_back_in_stock", source=source,
                            idempotency_key=f"product:{product.external_id}:restock:{product.updated_at.isoformat()}",
                            properties={"product_id": product.external_id, "sku": product.sku,
                                        "title": product.title, "url": product.url, "stock": stock})])
