"""B3: segment rebuild, full and incremental (shared/PERFORMANCE.md section 5, B3).

Workload (full / small): 100k / 10k contacts, 1M / 100k events, 200k / 20k orders with one line each,
ten segment definitions from a plain attribute to nested AND/OR over events and orders. In the same run,
on the same data, each definition is measured three ways:

- ours: segments.membership.segment_refresh from an empty membership (the compiled ORM query, INSERT ...
  SELECT of the diff, member count and freshness bookkeeping);
- hand SQL: a hand-written INSERT ... SELECT with EXISTS / GROUP BY ... HAVING into the same table, the
  practical limit (reference for the <= 2.5x target);
- per-contact Python: segments.rules.matches for each contact of a sample, with per-contact ORM queries
  (what a Mautic-style loop does), extrapolated to all contacts (reference for the >= 50x target). The
  sample is 2,000 contacts at full size (1,000 at small), not PERFORMANCE.md's 10,000, so that ten
  definitions on two databases fit in a run of ~10 minutes; the cost per contact is flat, so the
  extrapolation is linear.

Then the incremental case: 10,000 new events through the events_ingested receiver, and 1,000 attribute
changes through segment_refresh_for_contacts. After every step the stored membership must equal the
hand-SQL answer. Data are generated here with bulk_create and a seeded random.Random, in a throwaway
database created next to the configured one (`<name>` -> bench database), destroyed afterwards.
"""

import random
import statistics
import time
from datetime import timedelta
from decimal import Decimal

from django.conf import settings as django_settings
from django.db import connection, transaction
from django.utils import timezone

SIZES = {"full": (100_000, 1_000_000, 200_000, 2_000), "small": (10_000, 100_000, 20_000, 1_000)}
EVENT_TYPES = [("product_viewed", 50), ("category_viewed", 15), ("cart_updated", 8), ("checkout_started", 5),
               ("order_placed", 5), ("email_sent", 10), ("email_opened", 5), ("email_clicked", 2)]
CATEGORIES = ["Kitchen", "Garden", "Toys", "Books"]
REVENUE = ("placed", "paid", "fulfilled", "delivered")

KITCHEN_3_IN_7 = {"kind": "event_count", "type": "product_viewed", "where": {"category": "Kitchen"}, "op": "gte",
                  "value": 3, "days": 7}
CART = {"kind": "did_not_since", "did": "checkout_started", "not_event": "order_placed", "not_order": True,
        "days": 7}
DEFINITIONS = [
    ("pro plan", {"kind": "property", "key": "plan", "op": "eq", "value": "pro"}),
    ("wholesale tag", {"kind": "tag", "tag": "wholesale"}),
    ("kitchen viewers 3+ in 7d", KITCHEN_3_IN_7),
    ("cart abandoners", CART),
    ("big recent spenders", {"all": [{"kind": "orders", "metric": "total", "op": "gte", "value": 500},
                                     {"kind": "last_order", "op": "within", "days": 30}]}),
    ("kitchen browsers, never ordered", {"all": [KITCHEN_3_IN_7, {"kind": "orders", "metric": "count", "op": "eq",
                                                                  "value": 0}]}),
    ("kitchen buyers 90d", {"kind": "bought", "category": "kitchen", "days": 90}),
    ("nested and/or", {"all": [
        {"any": [{"kind": "property", "key": "plan", "op": "eq", "value": "pro"}, {"kind": "tag", "tag": "wholesale"}]},
        {"any": [{"kind": "event_count", "type": "product_viewed", "op": "gte", "value": 5, "days": 30},
                 {"kind": "orders", "metric": "count", "op": "gte", "value": 3}]},
        {"not": CART}]}),
    ("clicked in 30d, never ordered", {"all": [
        {"kind": "engagement", "event": "email_clicked", "min": 1, "days": 30},
        {"kind": "orders", "metric": "count", "op": "eq", "value": 0}]}),
    ("emailable and opened in 30d", {"all": [
        {"kind": "field", "field": "email", "op": "is_set"},
        {"kind": "property", "key": "accepts_marketing", "op": "eq", "value": True},
        {"kind": "event_count", "type": "email_opened", "op": "gte", "value": 1, "days": 30}]}),
]


# -- hand-written SQL for the same ten definitions -------------------------------------------------------------

def _t(model) -> str:
    return f'"{model._meta.db_table}"'


def _jtext(col: str, key: str) -> str:
    return f"json_extract({col}, '$.{key}')" if connection.vendor == "sqlite" else f"({col} ->> '{key}')"


def _jtrue(col: str, key: str) -> str:
    return f"json_type({col}, '$.{key}') = 'true'" if connection.vendor == "sqlite" else f"({col} -> '{key}') = 'true'::jsonb"


def hand_where(name: str, kitchen_ids: list[int]) -> str:
    """The WHERE clause over contact c; %(d7)s etc. are cut-off timestamps bound as parameters."""
    from segments.models import Category, Contact, Event, Order, OrderLine, Product, Tag

    c, e, o, ol, p = _t(Contact), _t(Event), _t(Order), _t(OrderLine), _t(Product)
    ct, tag = _t(Contact.tags.through), _t(Tag)
    del Category
    revenue = ", ".join(f"'{s}'" for s in REVENUE)
    pro = f"{_jtext('c.properties', 'plan')} = 'pro'"
    wholesale = (f"EXISTS (SELECT 1 FROM {ct} ct JOIN {tag} t ON t.id = ct.tag_id "
                 f"WHERE ct.contact_id = c.id AND t.name = 'wholesale')")
    kitchen3 = (f"c.id IN (SELECT contact_id FROM {e} WHERE type = 'product_viewed' AND occurred_at >= %(d7)s "
                f"AND {_jtext('properties', 'category')} = 'Kitchen' GROUP BY contact_id HAVING COUNT(*) >= 3)")
    cart = (f"EXISTS (SELECT 1 FROM {e} x WHERE x.contact_id = c.id AND x.type = 'checkout_started' "
            f"AND x.occurred_at >= %(d7)s AND NOT EXISTS (SELECT 1 FROM {e} y WHERE y.contact_id = c.id "
            f"AND y.type = 'order_placed' AND y.occurred_at >= x.occurred_at) AND NOT EXISTS (SELECT 1 FROM {o} z "
            f"WHERE z.contact_id = c.id AND z.status IN ({revenue}) AND z.placed_at >= x.occurred_at))")
    views5 = (f"c.id IN (SELECT contact_id FROM {e} WHERE type = 'product_viewed' AND occurred_at >= %(d30)s "
              f"GROUP BY contact_id HAVING COUNT(*) >= 5)")
    kitchen = ", ".join(str(i) for i in kitchen_ids)
    return {
        "pro plan": pro,
        "wholesale tag": wholesale,
        "kitchen viewers 3+ in 7d": kitchen3,
        "cart abandoners": cart,
        "big recent spenders": "c.total_spent >= 500 AND c.last_order_at >= %(d30)s",
        "kitchen browsers, never ordered": f"{kitchen3} AND c.orders_count = 0",
        "kitchen buyers 90d": (f"EXISTS (SELECT 1 FROM {ol} l JOIN {o} z ON z.id = l.order_id JOIN {p} pr "
                               f"ON pr.id = l.product_id WHERE z.contact_id = c.id AND z.status IN ({revenue}) "
                               f"AND z.placed_at >= %(d90)s AND pr.category_id IN ({kitchen}))"),
        "nested and/or": f"({pro} OR {wholesale}) AND ({views5} OR c.orders_count >= 3) AND NOT {cart}",
        "clicked in 30d, never ordered": (f"EXISTS (SELECT 1 FROM {e} x WHERE x.contact_id = c.id AND "
                                          f"x.type = 'email_clicked' AND x.occurred_at >= %(d30)s) "
                                          f"AND c.orders_count = 0"),
        "emailable and opened in 30d": (f"c.email IS NOT NULL AND c.email <> '' AND {_jtrue('c.properties', 'accepts_marketing')} "
                                        f"AND EXISTS (SELECT 1 FROM {e} x WHERE x.contact_id = c.id AND "
                                        f"x.type = 'email_opened' AND x.occurred_at >= %(d30)s)"),
    }[name].replace(f"FROM {c} ", f"FROM {c} c ")


def _cutoffs(now) -> dict:
    adapt = connection.ops.adapt_datetimefield_value
    return {f"d{d}": adapt(now - timedelta(days=d)) for d in (7, 30, 90)}


def hand_select(name: str, now, kitchen_ids) -> set[int]:
    from segments.models import Contact

    with connection.cursor() as cur:
        cur.execute(f"SELECT c.id FROM {_t(Contact)} c WHERE {hand_where(name, kitchen_ids)}", _cutoffs(now))
        return {r[0] for r in cur.fetchall()}


def hand_insert(name: str, segment_id: int, now, kitchen_ids) -> float:
    from segments.models import Contact, SegmentMembership

    params = {**_cutoffs(now), "seg": segment_id, "now": connection.ops.adapt_datetimefield_value(now)}
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(f"INSERT INTO {_t(SegmentMembership)} (segment_id, contact_id, entered_at) "
                    f"SELECT %(seg)s, c.id, %(now)s FROM {_t(Contact)} c WHERE {hand_where(name, kitchen_ids)}",
                    params)
    return time.perf_counter() - started


# -- data --------------------------------------------------------------------------------------------------------

def generate(size: str, seed: int = 3) -> dict:
    """Deterministic shop: contacts, tags, catalog, orders with lines, events. Returns facts for the run."""
    from segments.models import Category, Contact, Order, OrderLine, Product, Tag

    n_contacts, n_events, n_orders, _sample = SIZES[size]
    rnd = random.Random(seed)
    now = timezone.now().replace(microsecond=0)
    cats = {}
    for name in CATEGORIES:
        cats[name] = Category.objects.create(name=name, slug=name.lower())
    Category.objects.create(name="Cookware", slug="cookware", parent=cats["Kitchen"])
    products = Product.objects.bulk_create([
        Product(sku=f"SKU-{i}", title=f"Product {i}", price=Decimal(rnd.randint(5, 300)),
                category=cats[CATEGORIES[i % len(CATEGORIES)]]) for i in range(200)])
    kitchen_ids = list(Category.objects.filter(slug__in=["kitchen", "cookware"]).values_list("pk", flat=True))

    # Orders: 40% of contacts are customers, some buy often.
    customers = rnd.sample(range(1, n_contacts + 1), int(n_contacts * 0.4))
    orders = []
    for i in range(n_orders):
        cid = customers[min(int(rnd.paretovariate(1.2)) - 1, len(customers) - 1)] if rnd.random() < 0.3 \
            else rnd.choice(customers)
        orders.append((i + 1, cid, now - timedelta(seconds=rnd.randint(0, 365 * 86400)),
                       "refunded" if rnd.random() < 0.05 else "paid", Decimal(rnd.randint(500, 30000)) / 100,
                       "SAVE10" if rnd.random() < 0.2 else "", rnd.choice(products)))
    figures: dict[int, list] = {}
    for _i, cid, at, status, total, _code, _p in orders:
        if status in REVENUE:
            f = figures.setdefault(cid, [0, Decimal(0), at, at])
            f[0] += 1
            f[1] += total
            f[2], f[3] = min(f[2], at), max(f[3], at)

    weights = [w for _t_, w in EVENT_TYPES]
    names = [t for t, _w in EVENT_TYPES]
    events = []
    last_event: dict[int, object] = {}
    for _ in range(n_events):
        cid = rnd.randint(1, n_contacts)
        at = now - timedelta(seconds=rnd.randint(0, 30 * 86400))
        events.append((cid, rnd.choices(names, weights)[0], at, rnd.randint(0, 10**6)))
        if at > last_event.get(cid, at - timedelta(1)):
            last_event[cid] = at

    contacts = []
    for cid in range(1, n_contacts + 1):
        f = figures.get(cid)
        last = max([t for t in (f[3] if f else None, last_event.get(cid)) if t], default=None)
        contacts.append(Contact(
            id=cid, email=f"c{cid}@bench.example" if rnd.random() < 0.95 else None,
            phone=None if rnd.random() < 0.95 else f"+6011{cid:08d}",
            properties={"plan": rnd.choices(["free", "pro", "team"], [70, 20, 10])[0],
                        "accepts_marketing": rnd.random() < 0.6},
            orders_count=f[0] if f else 0, total_spent=f[1] if f else 0,
            average_order_value=(f[1] / f[0]).quantize(Decimal("0.01")) if f else 0,
            first_order_at=f[2] if f else None, last_order_at=f[3] if f else None, last_activity_at=last))
        if contacts[-1].email is None and contacts[-1].phone is None:
            contacts[-1].email = f"c{cid}@bench.example"
    Contact.objects.bulk_create(contacts, batch_size=5000)
    wholesale = Tag.objects.create(name="wholesale")
    Contact.tags.through.objects.bulk_create([Contact.tags.through(contact_id=cid, tag_id=wholesale.pk)
                                              for cid in range(1, n_contacts + 1) if rnd.random() < 0.05])
    Order.objects.bulk_create([Order(id=i, external_id=str(i), contact_id=cid, placed_at=at, status=status,
                                     total=total, discount_code=code) for i, cid, at, status, total, code, _p
                               in orders], batch_size=5000)
    OrderLine.objects.bulk_create([OrderLine(order_id=i, product=p, sku=p.sku, title=p.title, unit_price=total,
                                             total=total) for i, _c, _a, _s, total, _d, p in orders], batch_size=5000)
    insert_events(events, rnd)
    with connection.cursor() as cur:
        # PostgreSQL: VACUUM too, as autovacuum would soon after such a load: it sets the visibility map,
        # without which index-only scans (the (contact, type, time) index) still read every heap page.
        cur.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")
    return {"now": now, "kitchen_ids": kitchen_ids, "n_contacts": n_contacts}


def _event_props(type_: str, r: int) -> dict:
    if type_ in ("product_viewed", "category_viewed"):
        return {"category": "Kitchen" if r % 10 < 4 else CATEGORIES[1 + r % 3], "sku": f"SKU-{r % 200}"}
    if type_.startswith("email_"):
        return {"message": f"m{r % 40}"}
    return {"value": r % 300}


def insert_events(events: list[tuple], rnd: random.Random) -> list[int]:
    from segments.models import Event

    ids = []
    for i in range(0, len(events), 20_000):
        chunk = [Event(contact_id=cid, type=t, occurred_at=at, received_at=at, properties=_event_props(t, r))
                 for cid, t, at, r in events[i:i + 20_000]]
        ids += [e.pk for e in Event.objects.bulk_create(chunk, batch_size=5000)]
    return ids


# -- the run ------------------------------------------------------------------------------------------------------

def _median(fn, repeat: int = 3) -> float:
    return statistics.median(fn() for _ in range(repeat))


def _row(variant, db, n, seconds, ratio=None, ok=True) -> dict:
    return {"bench": "b3", "variant": variant, "db": db, "n": n, "seconds": round(seconds, 4),
            "rate": round(n / seconds, 1) if seconds else None,
            "ratio_to_reference": None if ratio is None else round(ratio, 2), "ok": bool(ok)}


def measure(size: str, db: str, data: dict) -> list[dict]:
    from segments import rules as engine
    from segments.membership import on_events_ingested, segment_refresh, segment_refresh_for_contacts
    from segments.models import Contact, Segment, SegmentMembership

    now, kitchen_ids, n = data["now"], data["kitchen_ids"], data["n_contacts"]
    sample_size = SIZES[size][3]
    ctx = engine.Context(now)
    rows = []
    segments = {}
    for name, rules in DEFINITIONS:
        seg = Segment.objects.create(name=name, rules=engine.validate(rules))
        hand_seg = Segment.objects.create(name=f"{name} (hand SQL)", rules={"kind": "tag", "tag": "-"},
                                          is_active=False)
        segments[name] = seg

        def ours(seg=seg) -> float:
            SegmentMembership.objects.filter(segment=seg).delete()
            Segment.objects.filter(pk=seg.pk).update(baseline_rules_at=None)
            started = time.perf_counter()
            segment_refresh(segment=seg, ctx=engine.Context(now))
            return time.perf_counter() - started

        def hand(hand_seg=hand_seg, name=name) -> float:
            SegmentMembership.objects.filter(segment=hand_seg).delete()
            return hand_insert(name, hand_seg.pk, now, kitchen_ids)

        t_ours, t_hand = _median(ours), _median(hand)
        expected = hand_select(name, now, kitchen_ids)
        got = set(SegmentMembership.objects.current().filter(segment=seg).values_list("contact_id", flat=True))
        hand_got = set(SegmentMembership.objects.filter(segment=hand_seg).values_list("contact_id", flat=True))
        equal = got == expected == hand_got
        # Steady state: the same rebuild again, nothing changed (the scheduled 15-minute run).
        started = time.perf_counter()
        steady = segment_refresh(segment=seg, ctx=engine.Context(now))
        t_steady = time.perf_counter() - started
        # Naive: each contact of a sample evaluated in Python with per-contact queries, extrapolated.
        sample = random.Random(11).sample(range(1, n + 1), sample_size)
        started = time.perf_counter()
        naive = {pk for pk in sample
                 if engine.matches(seg.rules, engine.Facts(Contact.objects.get(pk=pk), ctx))}
        t_naive = (time.perf_counter() - started) * n / sample_size
        naive_equal = naive == expected & set(sample)
        rows += [
            _row(f"full rebuild: {name} ({len(got)} members)", db, n, t_ours, t_ours / t_hand,
                 equal and t_ours <= 1 and t_ours <= 2.5 * t_hand),
            _row(f"hand SQL: {name}", db, n, t_hand, 1.0, equal),
            _row(f"steady-state rebuild: {name}", db, n, t_steady, t_steady / t_hand,
                 not steady.entered and not steady.exited),
            _row(f"per-contact Python (x{n // sample_size} from {sample_size}): {name}", db, n, t_naive,
                 t_naive / t_ours, naive_equal and t_naive >= 50 * t_ours),
        ]

    # Incremental: 10,000 new events (now), through the events_ingested receiver.
    from segments.models import Event

    rnd = random.Random(5)
    names = [t for t, _w in EVENT_TYPES]
    weights = [w for _t, w in EVENT_TYPES]
    fresh = [(rnd.randint(1, n), rnd.choices(names, weights)[0], now, rnd.randint(0, 10**6)) for _ in range(10_000)]
    Event.objects.filter(type__startswith="segment_").delete()
    ids = insert_events(fresh, rnd)
    import os
    trace = []
    def _w(execute, sql, params, many, context):
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            trace.append((time.perf_counter() - t0, sql, params))
    started = time.perf_counter()
    if os.environ.get("B3_TRACE"):
        with connection.execute_wrapper(_w):
            on_events_ingested(sender=None, event_ids=ids)
    else:
        on_events_ingested(sender=None, event_ids=ids)
    t_inc = time.perf_counter() - started
    if trace:
        print("TRACE total", t_inc, "sql", sum(t[0] for t in trace))
        for d, sql, params in sorted(trace, key=lambda t: -t[0])[:6]:
            print(f"TRACE {d:.4f} {sql[:150]}")
            if sql.startswith("SELECT") and connection.vendor == "postgresql":
                with connection.cursor() as cur:
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                    for r in cur.fetchall():
                        print("TRACE    ", r[0][:160])
    inc_ok = all(
        set(SegmentMembership.objects.current().filter(segment=s).values_list("contact_id", flat=True))
        == hand_select(name, now, kitchen_ids) for name, s in segments.items())
    moved = Event.objects.filter(type__startswith="segment_").count()
    rows.append(_row(f"incremental: 10,000 new events, all segments ({moved} moves, {_eq(inc_ok)})", db, 10_000,
                     t_inc, None, inc_ok and t_inc <= 0.2))

    # Incremental: 1,000 attribute changes (plan), through segment_refresh_for_contacts.
    changed = rnd.sample(range(1, n + 1), 1000)
    with transaction.atomic():  # as an import or a sync would write them
        for pk in changed:
            Contact.objects.filter(pk=pk).update(properties={"plan": rnd.choice(["free", "pro"]),
                                                              "accepts_marketing": rnd.random() < 0.6})
    started = time.perf_counter()
    segment_refresh_for_contacts(contact_ids=changed, changed={"contact"})
    t_attr = time.perf_counter() - started
    attr_ok = all(
        set(SegmentMembership.objects.current().filter(segment=s).values_list("contact_id", flat=True))
        == hand_select(name, now, kitchen_ids) for name, s in segments.items())
    rows.append(_row(f"incremental: 1,000 attribute changes, all segments ({_eq(attr_ok)})", db, 1000, t_attr,
                     None, attr_ok and t_attr <= 0.2))
    return rows


def _eq(ok: bool) -> str:
    return "membership equal" if ok else "MEMBERSHIP DIFFERS"


def _check_db(db: str) -> None:
    vendor = {"sqlite": "sqlite", "pg": "postgresql"}[db]
    if connection.vendor != vendor:
        raise ValueError(f"--db {db} but the configured database is {connection.vendor}: "
                         f"run with DATABASE_URL={'postgres://...' if db == 'pg' else '(unset)'}")


def run(*, size: str = "small", db: str = "sqlite", own_database: bool = True) -> list[dict]:
    """Generate the data, measure, print a table and return the rows (own_database: in a throwaway DB)."""
    _check_db(db)
    old_name = None
    if own_database:
        settings_dict = connection.settings_dict
        if db == "sqlite":
            settings_dict.setdefault("TEST", {})["NAME"] = str(django_settings.VAR_DIR / "bench-b3.sqlite3")
        else:
            settings_dict.setdefault("TEST", {})["NAME"] = f"bench_b3_{settings_dict['NAME']}"
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        started = time.perf_counter()
        # DEBUG=true would log every statement (bulk inserts, long IN lists) and measure the logging.
        settings_debug, django_settings.DEBUG = django_settings.DEBUG, False
        data = generate(size)
        print(f"B3 data ({size}, {db}): generated in {time.perf_counter() - started:.0f} s")
        rows = measure(size, db, data)
    finally:
        django_settings.DEBUG = settings_debug
        if own_database:
            connection.creation.destroy_test_db(old_name, verbosity=0)
    print_table(rows)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'variant':<78} {'seconds':>9} {'ratio':>7}  ok")
    for r in rows:
        ratio = "" if r["ratio_to_reference"] is None else f"{r['ratio_to_reference']:.2f}"
        print(f"{r['variant'][:78]:<78} {r['seconds']:>9.4f} {ratio:>7}  {'yes' if r['ok'] else 'NO'}")
