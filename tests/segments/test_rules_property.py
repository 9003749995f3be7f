"""Property test: for random rules over random data, the SQL answer equals the Python answer per contact."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments import rules as engine
from segments.membership import segment_queryset
from segments.models import Contact, ContactScore, Event, Order, OrderLine, Segment, SegmentMembership, Tag
from segments.services import contact_stats_refresh
from tests.segments.conftest import make_catalog

pytestmark = pytest.mark.django_db(transaction=False)

EVENT_TYPES = ["product_viewed", "checkout_started", "order_placed", "email_sent", "email_opened", "email_clicked"]
SCALARS = st.one_of(st.sampled_from(["Kitchen", "Garden", "pro", "m1", "m2", "", "Kit"]),
                    st.integers(-3, 5), st.sampled_from([0.5, 2.0]), st.booleans(), st.none())
KEYS = ["plan", "age", "vip"]
NUMBER_OPS = ["eq", "ne", "gt", "gte", "lt", "lte"]

contact_data = st.fixed_dictionaries({
    "email": st.one_of(st.none(), st.sampled_from(["a@x.io", "kit@y.io", "b@kitchen.io"])),
    "first_name": st.sampled_from(["", "Aiko", "Siti"]),
    "country": st.sampled_from(["", "MY", "JP"]),
    "properties": st.dictionaries(st.sampled_from(KEYS), SCALARS, max_size=3),
    "tags": st.sets(st.sampled_from(["a", "b"])),
    "events": st.lists(st.fixed_dictionaries({
        # Coarse 12-hour steps, so ties (an order at the very time of a checkout) happen often.
        "type": st.sampled_from(EVENT_TYPES), "hours_ago": st.integers(0, 80).map(lambda h: h * 12),
        "properties": st.dictionaries(st.sampled_from(["category", "message"]), SCALARS, max_size=2),
    }), max_size=8),
    "orders": st.lists(st.fixed_dictionaries({
        "hours_ago": st.integers(0, 240).map(lambda h: h * 12), "cents": st.integers(0, 20000), "refunded_cents": st.integers(0, 500),
        "status": st.sampled_from(["paid", "placed", "cancelled", "refunded"]),
        "code": st.sampled_from(["", "", "X10"]), "product": st.sampled_from(["pan", "hose", "card", None]),
    }), max_size=4),
    "score": st.one_of(st.none(), st.fixed_dictionaries({
        "rfm_recency": st.one_of(st.none(), st.integers(1, 5)), "p_alive": st.one_of(st.none(), st.floats(0, 1)),
    })),
})


DAYS = st.one_of(st.none(), st.sampled_from([1, 7, 30, 90]))


def event_leaf():
    """The kinds whose answer new events can change."""
    days = DAYS
    return st.one_of(
        st.builds(lambda t, w, op, n, d: {"kind": "event_count", "type": t, "where": w, "op": op, "value": n,
                                          "days": d},
                  st.sampled_from(EVENT_TYPES), st.dictionaries(st.just("category"),
                                                                st.sampled_from(["Kitchen", 3, True]), max_size=1),
                  st.sampled_from(NUMBER_OPS), st.integers(0, 3), days),
        st.builds(lambda did, ne, no, d: {"kind": "did_not_since", "did": did, "not_event": ne, "not_order": no,
                                          "days": d},
                  st.sampled_from(EVENT_TYPES), st.sampled_from(EVENT_TYPES), st.booleans(), days),
        st.builds(lambda e, k, n: {"kind": "engagement", "event": e, "min": k, "of_last": n},
                  st.sampled_from(["email_opened", "email_clicked"]), st.integers(1, 2), st.integers(1, 3)),
        st.builds(lambda e, k, d: {"kind": "engagement", "event": e, "min": k, "days": d},
                  st.sampled_from(["email_opened", "email_clicked"]), st.integers(1, 2), days),
    )


def leaf():
    days = DAYS
    return st.one_of(
        st.builds(lambda f, op, v: {"kind": "field", "field": f, "op": op, "value": v},
                  st.sampled_from(["email", "first_name", "country"]), st.sampled_from(["eq", "ne", "contains"]),
                  st.sampled_from(["MY", "Aiko", "kit", "0a@x.io", "i"])),
        st.builds(lambda f, op: {"kind": "field", "field": f, "op": op},
                  st.sampled_from(["email", "phone", "first_name", "last_order_at"]),
                  st.sampled_from(["is_set", "not_set"])),
        st.builds(lambda f, op, v: {"kind": "field", "field": f, "op": op, "value": v},
                  st.sampled_from(["orders_count", "total_spent", "average_order_value"]),
                  st.sampled_from(NUMBER_OPS), st.sampled_from([0, 1, 2, 50, 100.5])).map(
            lambda p: {**p, "value": int(p["value"])} if p["field"] == "orders_count" else p),
        st.builds(lambda op, d: {"kind": "field", "field": "last_activity_at", "op": op, "value": d},
                  st.sampled_from(["within_days", "not_within_days"]), st.sampled_from([1, 7, 30])),
        st.builds(lambda k, op, v: {"kind": "property", "key": k, "op": op, "value": v}, st.sampled_from(KEYS),
                  st.sampled_from(["eq", "ne"]), st.one_of(st.sampled_from(["pro", "Kit", ""]), st.integers(-1, 3),
                                                           st.booleans())),
        st.builds(lambda k, op, v: {"kind": "property", "key": k, "op": op, "value": v}, st.sampled_from(KEYS),
                  st.sampled_from(["gt", "gte", "lt", "lte"]), st.sampled_from([0, 1, 2.0, -1])),
        st.builds(lambda k, op: {"kind": "property", "key": k, "op": op}, st.sampled_from(KEYS),
                  st.sampled_from(["is_set", "not_set"])),
        st.builds(lambda k: {"kind": "property", "key": k, "op": "contains", "value": "Ki"}, st.sampled_from(KEYS)),
        st.builds(lambda t: {"kind": "tag", "tag": t}, st.sampled_from(["a", "b", "c"])),
        event_leaf(),
        st.builds(lambda m, op, v, d: {"kind": "orders", "metric": m, "op": op, "value": v, "days": d},
                  st.sampled_from(["count", "total", "aov"]), st.sampled_from(NUMBER_OPS),
                  st.sampled_from([0, 1, 2, 50, 99.99]), days).map(
            lambda p: {**p, "value": int(p["value"])} if p["metric"] == "count" else p),
        st.builds(lambda op, d: {"kind": "last_order", "op": op, "days": d},
                  st.sampled_from(["within", "not_within"]), st.sampled_from([1, 30, 90])),
        st.builds(lambda c, d: {"kind": "bought", "category": c, "days": d},
                  st.sampled_from(["kitchen", "cookware", "garden"]), days),
        st.builds(lambda s, d: {"kind": "bought", "sku": s, "days": d}, st.sampled_from(["PAN-1", "CARD-1"]), days),
        st.builds(lambda m, c, d: {"kind": "discount", "mode": m, "code": c, "days": d},
                  st.sampled_from(["any", "all"]), st.sampled_from(["", "X10"]), days),
        st.builds(lambda m, op, v: {"kind": "score", "metric": m, "op": op, "value": v},
                  st.sampled_from(["rfm_recency", "p_alive"]), st.sampled_from(NUMBER_OPS),
                  st.sampled_from([0.5, 3, 1])),
        st.builds(lambda m, p: {"kind": "rank", "metric": m, "top_percent": p},
                  st.sampled_from(["total_spent", "average_order_value", "orders_count"]),
                  st.sampled_from([10, 50, 100])),
        st.just({"kind": "segment", "segment": "S1"}),
    )


rules_strategy = st.recursive(
    leaf(),
    lambda children: st.one_of(
        st.builds(lambda cs: {"all": cs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda cs: {"any": cs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, children),
    ),
    max_leaves=6,
)


def build(contacts: list[dict], now) -> None:
    catalog = make_catalog()
    tags = {n: Tag.objects.create(name=n) for n in ("a", "b", "c")}
    made = []
    for i, data in enumerate(contacts):
        email = f"{i}{data['email']}" if data["email"] else None
        c = Contact.objects.create(email=email, phone=None if email and i % 2 else f"+601234{i:05d}",
                                   first_name=data["first_name"], country=data["country"],
                                   properties=data["properties"])
        c.tags.set([tags[t] for t in data["tags"]])
        Event.objects.bulk_create([Event(contact=c, type=e["type"], properties=e["properties"],
                                         occurred_at=now - timedelta(hours=e["hours_ago"])) for e in data["events"]])
        for j, o in enumerate(data["orders"]):
            order = Order.objects.create(
                external_id=f"{i}-{j}", contact=c, placed_at=now - timedelta(hours=o["hours_ago"]), status=o["status"],
                total=Decimal(o["cents"]) / 100, refunded_amount=Decimal(min(o["refunded_cents"], o["cents"])) / 100,
                discount_code=o["code"])
            if o["product"]:
                p = catalog[o["product"]]
                OrderLine.objects.create(order=order, product=p, sku=p.sku, title=p.title, unit_price=order.total,
                                         total=order.total)
        if data["score"]:
            ContactScore.objects.create(contact=c, **data["score"])
        made.append(c.pk)
    contact_stats_refresh(contact_ids=made, currency="USD")


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(contacts=st.lists(contact_data, min_size=1, max_size=6), rules=rules_strategy, s1=leaf())
def test_sql_and_python_agree_on_random_rules_and_data(contacts, rules, s1):
    now = timezone.now().replace(microsecond=0)
    with transaction.atomic():
        build(contacts, now)
        if s1.get("kind") == "segment":
            s1 = {"kind": "tag", "tag": "a"}
        Segment.objects.create(name="S1", rules=engine.validate(s1))
        cleaned = engine.validate(rules)
        ctx = engine.Context(now)
        sql = set(segment_queryset(cleaned, ctx).values_list("pk", flat=True))
        python = {c.pk for c in Contact.objects.all() if engine.matches(cleaned, engine.Facts(c, ctx))}
        assert sql == python, (cleaned, sql, python)
        # Incremental refreshes compile the rule for a few contacts (correlated counts instead of GROUP BY).
        some = sorted(Contact.objects.values_list("pk", flat=True))[::2]
        scoped_ctx = engine.Context(now)
        scoped_ctx.only = some
        scoped = set(segment_queryset(cleaned, scoped_ctx).filter(pk__in=some).values_list("pk", flat=True))
        assert scoped == sql & set(some), (cleaned, scoped, sql)
        transaction.set_rollback(True)


event_rules = st.recursive(
    st.one_of(event_leaf(), st.builds(lambda t: {"kind": "tag", "tag": t}, st.sampled_from(["a", "b"]))),
    lambda children: st.one_of(
        st.builds(lambda cs: {"all": cs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda cs: {"any": cs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda c: {"not": c}, children),
    ),
    max_leaves=4,
)
new_event_data = st.lists(st.fixed_dictionaries({
    "contact": st.integers(0, 2), "type": st.sampled_from(EVENT_TYPES),
    "hours_ago": st.sampled_from([0, 0, 12, 200]),
    "properties": st.dictionaries(st.sampled_from(["category", "message"]), SCALARS, max_size=2),
}), min_size=1, max_size=8)


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(contacts=st.lists(contact_data, min_size=1, max_size=3), rules=st.one_of(event_rules, event_rules, rules_strategy), s1=leaf(),
       new=new_event_data)
def test_incremental_refresh_after_new_events_equals_a_full_evaluation(contacts, rules, s1, new):
    """New events through the events_ingested receiver leave the same members as evaluating the rule anew,
    whichever way the events can move the rule (segments.rules.event_effects: TRUER, FALSER, EITHER, under
    NOT, did_not_since, "last N emails" ...), so re-checking only non-members or only members is safe."""
    from segments.membership import on_events_ingested, segment_refresh

    now = timezone.now().replace(microsecond=0)
    with transaction.atomic():
        build(contacts, now)
        # Bystanders, so the few contacts of the new events stay under a quarter of all: the scoped path.
        Contact.objects.bulk_create([Contact(email=f"by{i}@x.io") for i in range(30)])
        if s1.get("kind") == "segment":
            s1 = {"kind": "tag", "tag": "a"}
        Segment.objects.create(name="S1", rules=engine.validate(s1))
        segment = Segment.objects.create(name="S", rules=engine.validate(rules))
        segment_refresh(segment=segment)  # the baseline
        made = list(Contact.objects.order_by("pk").values_list("pk", flat=True)[:len(contacts)])
        ids = [e.pk for e in Event.objects.bulk_create([
            Event(contact_id=made[e["contact"] % len(made)], type=e["type"], properties=e["properties"],
                  occurred_at=now - timedelta(hours=e["hours_ago"])) for e in new])]
        on_events_ingested(sender=None, event_ids=ids)
        members = set(SegmentMembership.objects.current().filter(segment=segment).values_list("contact_id", flat=True))
        expected = set(segment_queryset(segment.rules).values_list("pk", flat=True))
        assert members == expected, (segment.rules, new, members, expected)
        transaction.set_rollback(True)
