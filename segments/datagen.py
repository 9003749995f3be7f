"""A deterministic generator of a believable shop: the demo shop and every benchmark use it.

Same seed and sizes -> the same rows (ids aside). Shapes follow the domain brief: most
visitors browse and leave, some add to cart, fewer buy; a few loyal big spenders; some
customers went dormant. Rows are streamed to the database in chunks with bulk_create, so
a million events never sit in memory at once.
"""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from segments.models import Category, Contact, ContactIdentifier, Event, Order, OrderLine, Product, Shop, Tag
from segments.models.orders import OrderStatus
from segments.money import quantize
from segments.services import contact_stats_refresh


@dataclass(frozen=True)
class Size:
    contacts: int
    products: int
    orders: int
    events: int
    months: int = 18


SIZES = {
    "demo": Size(contacts=2_000, products=150, orders=6_000, events=50_000),
    "small": Size(contacts=10_000, products=300, orders=20_000, events=100_000),
    "full": Size(contacts=100_000, products=1_000, orders=200_000, events=1_000_000),
}

CATEGORIES = [
    ("Kitchen", ["Cookware", "Knives"]), ("Tableware", []), ("Apparel", ["Batik", "Yukata"]),
    ("Skincare", []), ("Tea & Coffee", []), ("Home Fragrance", []), ("Stationery", []), ("Outdoor", []),
]
NOUNS = {
    "Kitchen": ["Wok", "Rice Cooker", "Steamer", "Cutting Board", "Spatula Set", "Donabe Pot"],
    "Cookware": ["Cast Iron Pan", "Tamagoyaki Pan", "Stock Pot", "Saucepan"],
    "Knives": ["Santoku Knife", "Gyuto Knife", "Paring Knife", "Whetstone"],
    "Tableware": ["Ramen Bowl", "Celadon Plate", "Chopstick Set", "Tea Cup Pair", "Serving Tray"],
    "Apparel": ["Linen Shirt", "Tote Bag", "Cotton Scarf", "Sun Hat"],
    "Batik": ["Batik Sarong", "Batik Shirt", "Batik Scarf"],
    "Yukata": ["Summer Yukata", "Obi Belt", "Geta Sandals"],
    "Skincare": ["Rice Toner", "Camellia Oil", "Sheet Mask Set", "Sunscreen SPF50", "Clay Cleanser"],
    "Tea & Coffee": ["Sencha", "Matcha Tin", "Hojicha", "Kopi Beans", "Teh Tarik Mix", "Drip Kettle"],
    "Home Fragrance": ["Incense Sticks", "Pandan Candle", "Hinoki Diffuser", "Room Mist"],
    "Stationery": ["Washi Tape Set", "Fountain Pen", "Notebook A5", "Brush Pen"],
    "Outdoor": ["Camping Stool", "Bento Box", "Insulated Bottle", "Picnic Mat"],
}
ADJECTIVES = ["Classic", "Premium", "Everyday", "Artisan", "Compact", "Deluxe", "Mini", "Heritage", "Travel", "Organic"]
PEOPLE = {
    "MY": (["Siti", "Nur", "Aisyah", "Ahmad", "Muhammad", "Wei Ling", "Jia Hui", "Kumar", "Priya", "Farah", "Hafiz", "Mei"],
           ["Abdullah", "Rahman", "Tan", "Lim", "Wong", "Lee", "Ismail", "Raj", "Ng", "Chong", "Hassan", "Yusof"],
           "ms", "Asia/Kuala_Lumpur", "+6012{:07d}"),
    "JP": (["Yuki", "Haruto", "Aoi", "Sota", "Sakura", "Ren", "Hina", "Yuto", "Mei", "Riku", "Akari", "Kaito"],
           ["Sato", "Suzuki", "Takahashi", "Tanaka", "Watanabe", "Ito", "Yamamoto", "Nakamura", "Kobayashi", "Kato"],
           "ja", "Asia/Tokyo", "+81901{:07d}"),
    "US": (["Emma", "Liam", "Olivia", "Noah", "Ava", "James", "Mia", "Lucas", "Sophia", "Ethan", "Grace", "Ben"],
           ["Smith", "Johnson", "Garcia", "Miller", "Davis", "Martinez", "Lopez", "Wilson", "Clark", "Young"],
           "en", "America/New_York", "+14152{:06d}"),
}
COUNTRY_WEIGHTS = [("MY", 0.5), ("JP", 0.3), ("US", 0.2)]
DOMAINS = {"MY": ["gmail.com", "yahoo.com.my", "hotmail.com", "outlook.com"],
           "JP": ["gmail.com", "yahoo.co.jp", "docomo.ne.jp", "icloud.com"],
           "US": ["gmail.com", "outlook.com", "icloud.com", "yahoo.com"]}
SEARCHES = ["matcha", "wok", "batik shirt", "gift set", "knife", "candle", "sunscreen", "yukata", "tea cup", "bento"]
DISCOUNT_CODES = ["WELCOME10", "RAYA15", "SAKURA10", "FREESHIP", "VIP20", "COMEBACK25"]
# Buyer archetypes: (share of contacts, min orders, max orders). The rest never buy.
ARCHETYPES = [("one_time", 0.27, 1, 1), ("repeat", 0.17, 2, 5), ("loyal", 0.07, 6, 15), ("vip", 0.03, 15, 45)]
DORMANT_SHARE = 0.25  # of buyers: everything happened in the first half of the period
CHUNK = 5_000


class Generator:
    def __init__(self, *, size: Size, seed: int = 42, now: datetime | None = None, currency: str = "MYR",
                 email_prefix: str = ""):
        self.size = size
        self.rnd = random.Random(seed)
        self.now = (now or timezone.now()).replace(microsecond=0)
        self.start = self.now - timedelta(days=30 * size.months)
        self.currency = currency
        self.email_prefix = email_prefix
        self.counts = {"contacts": 0, "products": 0, "categories": 0, "orders": 0, "order_lines": 0, "events": 0}

    # -- helpers ------------------------------------------------------------------------------------
    def _when(self, after: datetime, before: datetime | None = None) -> datetime:
        before = before or self.now
        span = max((before - after).total_seconds(), 60)
        return after + timedelta(seconds=self.rnd.random() * span)

    def _country(self) -> str:
        x, acc = self.rnd.random(), 0.0
        for code, w in COUNTRY_WEIGHTS:
            acc += w
            if x < acc:
                return code
        return "US"

    def run(self) -> dict:
        with transaction.atomic():
            Shop.objects.update_or_create(pk=1, defaults={
                "name": "Sakura & Batik", "currency": self.currency, "timezone": "Asia/Kuala_Lumpur",
                "default_locale": "en", "website_url": "https://shop.example",
                "postal_address": "Lot 3-2, Jalan Bukit Bintang, 55100 Kuala Lumpur, Malaysia",
                "sender_name": "Sakura & Batik", "sender_email": "hello@shop.example",
            })
            products = self._catalog()
        contacts = self._contacts()
        self._orders_and_events(contacts, products)
        contact_stats_refresh(contact_ids=[c[0] for c in contacts], currency=self.currency)
        return self.counts

    # -- catalogue ------------------------------------------------------------------------------------
    def _catalog(self) -> list[tuple]:
        cats: list[Category] = []
        for name, children in CATEGORIES:
            slug = name.lower().replace(" & ", "-").replace(" ", "-")
            parent, _ = Category.objects.get_or_create(slug=slug, defaults={"name": name})
            cats.append(parent)
            for child in children:
                cats.append(Category.objects.get_or_create(slug=child.lower(), defaults={"name": child, "parent": parent})[0])
        self.counts["categories"] = len(cats)
        rows = []
        for i in range(self.size.products):
            cat = cats[i % len(cats)]
            noun = self.rnd.choice(NOUNS[cat.name])
            title = f"{self.rnd.choice(ADJECTIVES)} {noun}"
            price = Decimal(self.rnd.choice([9, 12, 15, 19, 25, 29, 35, 45, 59, 79, 99, 149, 199, 299]))
            if self.currency != "JPY":
                price -= Decimal("0.10")
            else:
                price *= 100
            rows.append(Product(
                sku=f"SKU-{i + 1:05d}", title=title, price=price, currency=self.currency, category=cat,
                url=f"https://shop.example/products/sku-{i + 1:05d}",
                image_url=f"https://shop.example/img/sku-{i + 1:05d}.jpg",
                stock_quantity=self.rnd.choice([0, 3, 12, 40, 100, None]), external_id=str(1000 + i),
            ))
        Product.objects.bulk_create(rows, batch_size=1000)
        self.counts["products"] = len(rows)
        return [(p.id, p.sku, p.title, p.price, p.category.name, p.url)
                for p in Product.objects.select_related("category").order_by("id")]

    # -- contacts -------------------------------------------------------------------------------------
    def _contacts(self) -> list[tuple]:
        rnd = self.rnd
        tags = [Tag.objects.get_or_create(name=n)[0] for n in ("newsletter", "wholesale", "instagram", "popup")]
        out = []
        batch, idents, tag_links = [], [], []
        through = Contact.tags.through
        for i in range(self.size.contacts):
            country = self._country()
            firsts, lasts, locale, tz, phone_prefix = PEOPLE[country]  # phone_prefix: a format
            first, last = rnd.choice(firsts), rnd.choice(lasts)
            created = self._when(self.start, self.now - timedelta(days=1))
            has_email = rnd.random() < 0.96
            has_phone = (not has_email) or rnd.random() < 0.55
            email = (f"{self.email_prefix}{first.lower().replace(' ', '')}.{last.lower()}{i}@{rnd.choice(DOMAINS[country])}"
                     if has_email else None)
            phone = phone_prefix.format(i) if has_phone else None
            batch.append(Contact(email=email, phone=phone, first_name=first, last_name=last, locale=locale,
                                 timezone=tz, country=country, source=rnd.choice(["shopify", "import", "form", "api"]),
                                 properties={"birthday_month": rnd.randint(1, 12)} if rnd.random() < 0.3 else {},
                                 created_at=created))
            if len(batch) >= CHUNK or i == self.size.contacts - 1:
                Contact.objects.bulk_create(batch, batch_size=1000)
                ids = self._ids_for(batch)
                for c, cid in zip(batch, ids, strict=True):
                    out.append((cid, c.created_at, c.email))
                    if rnd.random() < 0.7:
                        idents.append(ContactIdentifier(contact_id=cid, kind="shop_customer", source="shopify",
                                                        value=str(7_000_000 + cid)))
                    if rnd.random() < 0.25:
                        tag_links.append(through(contact_id=cid, tag_id=rnd.choice(tags).id))
                ContactIdentifier.objects.bulk_create(idents, batch_size=1000)
                through.objects.bulk_create(tag_links, batch_size=1000, ignore_conflicts=True)
                batch, idents, tag_links = [], [], []
        self.counts["contacts"] = len(out)
        return out

    @staticmethod
    def _ids_for(batch: list[Contact]) -> list[int]:
        # PostgreSQL returns ids from bulk_create; SQLite >= 3.35 does too (RETURNING).
        if all(c.pk for c in batch):
            return [c.pk for c in batch]
        emails = [c.email for c in batch]
        found = dict(Contact.objects.filter(email__in=[e for e in emails if e]).values_list("email", "id"))
        return [found[e] for e in emails]

    # -- orders and behaviour -------------------------------------------------------------------------
    def _plan_orders(self, contacts: list[tuple]) -> list[tuple[int, datetime, int, bool]]:
        """(contact id, created, number of orders, dormant) per buyer, scaled to the target order count."""
        rnd = self.rnd
        plan = []
        for cid, created, _email in contacts:
            x, acc = rnd.random(), 0.0
            for _name, share, lo, hi in ARCHETYPES:
                acc += share
                if x < acc:
                    plan.append([cid, created, rnd.randint(lo, hi), rnd.random() < DORMANT_SHARE])
                    break
        expected = sum(p[2] for p in plan) or 1
        factor = self.size.orders / expected
        remainder = 0.0
        for p in plan:
            exact = p[2] * factor + remainder
            p[2] = max(1, round(exact))
            remainder = exact - p[2]
        return [tuple(p) for p in plan]

    def _orders_and_events(self, contacts: list[tuple], products: list[tuple]) -> None:
        rnd = self.rnd
        by_cat: dict[str, list[tuple]] = {}
        for p in products:
            by_cat.setdefault(p[4], []).append(p)
        plan = self._plan_orders(contacts)
        midpoint = self.start + (self.now - self.start) / 2
        orders, lines_by_order, events = [], [], []
        order_no = 1000
        for cid, created, n_orders, dormant in plan:
            favourite = rnd.choice(list(by_cat))
            end = midpoint if dormant and created < midpoint else self.now
            for _ in range(n_orders):
                order_no += 1
                placed = self._when(created, end)
                items = [rnd.choice(by_cat[favourite] if rnd.random() < 0.6 else products)
                         for _ in range(rnd.choice([1, 1, 1, 2, 2, 3, 4]))]
                order, lines = self._order(cid, order_no, placed, items)
                orders.append(order)
                lines_by_order.append(lines)
                events.extend(self._purchase_journey(cid, placed, items, order))
            if len(orders) >= CHUNK:
                self._flush_orders(orders, lines_by_order)
                orders, lines_by_order = [], []
            if len(events) >= CHUNK * 4:
                self._flush_events(events)
                events = []
        self._flush_orders(orders, lines_by_order)
        # Browsing without buying fills the rest of the event budget; ~15% is anonymous.
        budget = self.size.events - self.counts["events"] - len(events)
        while budget > 0:
            anon = rnd.random() < 0.15
            contact = None if anon else rnd.choice(contacts)
            session = self._browse_session(contact, f"anon-{rnd.getrandbits(48):012x}" if anon else "", products, by_cat)
            session = session[:budget]
            events.extend(session)
            budget -= len(session)
            if len(events) >= CHUNK * 4:
                self._flush_events(events)
                events = []
        self._flush_events(events)

    def _order(self, cid: int, number: int, placed: datetime, items: list[tuple]) -> tuple[Order, list[OrderLine]]:
        rnd = self.rnd
        lines, subtotal = [], Decimal(0)
        for pid, sku, title, price, _cat, _url in items:
            qty = rnd.choice([1, 1, 1, 2])
            total = price * qty
            subtotal += total
            lines.append(OrderLine(product_id=pid, sku=sku, title=title, quantity=qty, unit_price=price, total=total))
        code = rnd.choice(DISCOUNT_CODES) if rnd.random() < 0.2 else ""
        discount = quantize(subtotal * Decimal("0.10"), self.currency) if code else Decimal(0)
        shipping = Decimal(0) if subtotal > 150 else quantize(Decimal("8.00"), self.currency)
        age = (self.now - placed).days
        status = (OrderStatus.DELIVERED if age > 10 else OrderStatus.FULFILLED if age > 3
                  else OrderStatus.PAID if age > 0 else OrderStatus.PLACED)
        x = rnd.random()
        refunded = Decimal(0)
        if x < 0.02:
            status = OrderStatus.CANCELLED
        elif x < 0.05:
            status = OrderStatus.REFUNDED
            refunded = subtotal - discount + shipping
        order = Order(source="shopify", external_id=str(number), name=f"#{number}", contact_id=cid, placed_at=placed,
                      status=status, currency=self.currency, subtotal=subtotal, discount_code=code,
                      discount_amount=discount, shipping=shipping, total=subtotal - discount + shipping,
                      refunded_amount=refunded)
        return order, lines

    def _flush_orders(self, orders: list[Order], lines_by_order: list[list[OrderLine]]) -> None:
        if not orders:
            return
        with transaction.atomic():
            Order.objects.bulk_create(orders, batch_size=1000)
            if not all(o.pk for o in orders):
                ids = dict(Order.objects.filter(source="shopify", external_id__in=[o.external_id for o in orders])
                           .values_list("external_id", "id"))
                for o in orders:
                    o.pk = ids[o.external_id]
            lines = []
            for order, order_lines in zip(orders, lines_by_order, strict=True):
                for line in order_lines:
                    line.order_id = order.pk
                    lines.append(line)
            OrderLine.objects.bulk_create(lines, batch_size=1000)
        self.counts["orders"] += len(orders)
        self.counts["order_lines"] += len(lines)

    def _product_props(self, p: tuple) -> dict:
        return {"product_id": p[0], "sku": p[1], "title": p[2], "price": str(p[3]), "category": p[4], "url": p[5]}

    def _purchase_journey(self, cid: int, placed: datetime, items: list[tuple], order: Order) -> list[Event]:
        t = placed - timedelta(minutes=self.rnd.randint(5, 90))
        evs = []
        for p in items:
            evs.append(Event(contact_id=cid, type="product_viewed", properties=self._product_props(p), occurred_at=t,
                             received_at=t, source="tracker"))
            t += timedelta(minutes=self.rnd.randint(1, 5))
        cart = {"items": [{"sku": p[1], "quantity": 1, "price": str(p[3])} for p in items],
                "value": str(order.subtotal), "currency": self.currency}
        evs.append(Event(contact_id=cid, type="cart_updated", properties=cart, occurred_at=t, received_at=t,
                         source="tracker"))
        evs.append(Event(contact_id=cid, type="checkout_started", properties=cart, occurred_at=placed - timedelta(minutes=2),
                         received_at=placed, source="shopify"))
        evs.append(Event(contact_id=cid, type="order_placed", occurred_at=placed, received_at=placed, source="shopify",
                         properties={"order_id": order.external_id, "value": str(order.total), "currency": self.currency,
                                     "discount_code": order.discount_code},
                         idempotency_key=f"order-{order.external_id}"))
        return evs

    def _browse_session(self, contact: tuple | None, anon_id: str, products: list[tuple], by_cat: dict) -> list[Event]:
        rnd = self.rnd
        cid = contact[0] if contact else None
        start = self._when(contact[1] if contact else self.start)
        t = start
        evs = []
        cat = rnd.choice(list(by_cat))

        def add(kind: str, props: dict) -> None:
            nonlocal t
            evs.append(Event(contact_id=cid, anonymous_id=anon_id, type=kind, properties=props, occurred_at=t,
                             received_at=t, source="tracker"))
            t += timedelta(seconds=rnd.randint(10, 240))

        if rnd.random() < 0.3:
            add("category_viewed", {"category": cat})
        if rnd.random() < 0.15:
            add("searched", {"query": rnd.choice(SEARCHES)})
        viewed = [rnd.choice(by_cat[cat]) for _ in range(rnd.choice([1, 1, 2, 2, 3, 4, 6]))]
        for p in viewed:
            add("product_viewed", self._product_props(p))
        if rnd.random() < 0.18:  # added to cart and left: the cart abandoners
            items = viewed[:2]
            value = sum((p[3] for p in items), Decimal(0))
            add("cart_updated", {"items": [{"sku": p[1], "quantity": 1, "price": str(p[3])} for p in items],
                                 "value": str(value), "currency": self.currency,
                                 "checkout_url": f"https://shop.example/cart/{rnd.getrandbits(32):08x}"})
            if rnd.random() < 0.35:
                add("checkout_started", {"value": str(value), "currency": self.currency})
        if rnd.random() < 0.02:
            add("wishlist_added", self._product_props(viewed[0]))
        return evs

    def _flush_events(self, events: list[Event]) -> None:
        if events:
            Event.objects.bulk_create(events, batch_size=2000)
            self.counts["events"] += len(events)


def generate(*, size: str | Size = "demo", seed: int = 42, now: datetime | None = None, currency: str = "MYR") -> dict:
    spec = SIZES[size] if isinstance(size, str) else size
    return Generator(size=spec, seed=seed, now=now, currency=currency).run()
