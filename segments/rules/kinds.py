"""The condition kinds the segments app registers itself (contacts, events, orders, engagement, scores)."""

import math
import operator
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from django.db.models import (
    Count,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    OuterRef,
    Q,
    Subquery,
    Sum,
    Value,
    Window,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Coalesce, Round, RowNumber, StrIndex
from django.db.models.lookups import Exact, GreaterThan, GreaterThanOrEqual

from segments.models import Category, Contact, ContactScore, Event, Order, OrderLine, Product, Segment
from segments.models.events import EVENT_TYPE_RE
from segments.models.orders import REVENUE_STATUSES
from segments.rules import tree
from segments.rules.registry import ConditionKind, Context, Facts, RuleError, register
from segments.rules.sql import NUMBER_LOOKUPS, JsonType, json_py, json_q, safe, validate_json_condition

PY_OPS = {"eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gte": operator.ge, "lt": operator.lt,
          "lte": operator.le}
NUMBER_OPS = tuple(PY_OPS)


# -- parameter checks ----------------------------------------------------------------------------

def _only(params: dict, allowed: set[str]) -> None:
    extra = set(params) - allowed
    if extra:
        raise RuleError(f"unknown parameter(s) {', '.join(sorted(extra))}; allowed: {', '.join(sorted(allowed))}")


def _int(params: dict, name: str, *, minimum: int = 0, required: bool = True, maximum: int = 100_000) -> int | None:
    v = params.get(name)
    if v is None:
        if required:
            raise RuleError(f"{name} is required")
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise RuleError(f"{name} must be a whole number, not {v!r}")
    if not minimum <= v <= maximum:
        raise RuleError(f"{name} must be between {minimum} and {maximum}")
    return v


def _number(v, name: str = "value") -> Decimal:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise RuleError(f"{name} must be a number, not {v!r}")
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise RuleError(f"{name} must be a number, not {v!r}") from None
    if not d.is_finite():
        raise RuleError(f"{name} must be a finite number")
    return d


def _op(params: dict, allowed) -> str:
    op = params.get("op")
    if op not in allowed:
        raise RuleError(f"unknown operator {op!r}; use one of {', '.join(allowed)}")
    return op


def _event_type(v, name: str = "type") -> str:
    if not isinstance(v, str) or not EVENT_TYPE_RE.match(v):
        raise RuleError(f"{name} must be an event type such as product_viewed, not {v!r}")
    return v


def _cutoff(ctx: Context, days: int | None):
    return ctx.now - timedelta(days=days) if days else None


# -- Python facts (one contact, per-contact queries: the trigger-check path) --------------------------

def _events(facts: Facts, type_: str) -> list[tuple]:
    return facts.cached(("events", type_), lambda: list(
        Event.objects.filter(contact_id=facts.contact.pk, type=type_).values_list("id", "occurred_at", "properties")))


def _orders(facts: Facts) -> list[dict]:
    def load():
        rows = Order.objects.revenue().filter(contact_id=facts.contact.pk).values(
            "id", "placed_at", "total", "refunded_amount", "discount_code")
        return [{**r, "cents": int(((r["total"] - r["refunded_amount"]) * 100).to_integral_value())} for r in rows]
    return facts.cached("orders", load)


def _lines(facts: Facts) -> list[tuple]:
    return facts.cached("lines", lambda: list(
        OrderLine.objects.filter(order__contact_id=facts.contact.pk, order__status__in=REVENUE_STATUSES)
        .values_list("order__placed_at", "product__sku", "product__category_id")))


def _tags(facts: Facts) -> set[str]:
    return facts.cached("tags", lambda: set(facts.contact.tags.values_list("name", flat=True)))


def _score(facts: Facts):
    return facts.cached("score", lambda: ContactScore.objects.filter(contact_id=facts.contact.pk).first())


def _restrict(qs, ctx: Context):
    """An uncorrelated per-contact subquery, cut to the contacts an incremental refresh is about."""
    return qs.filter(contact_id__in=ctx.only) if ctx.only is not None else qs


def _count_ge(base, n: int, ctx: Context) -> Q:
    """Contacts with at least n rows of `base` (an Event/Order queryset): EXISTS for 1, GROUP BY/HAVING above."""
    if n <= 0:
        return Q(pk__isnull=False)
    if n == 1:
        return Q(Exists(base.filter(contact=OuterRef("pk"))))
    if ctx.only is not None:
        # Incremental: a few contacts, so count each one's rows through the (contact, type, time) index;
        # an uncorrelated GROUP BY restricted by IN may be planned as a scan of every recent row instead.
        per_contact = base.filter(contact=OuterRef("pk")).order_by().values("contact").annotate(c=Count("id"))
        return Q(GreaterThanOrEqual(Coalesce(Subquery(per_contact.values("c")), 0), n))
    grouped = base.order_by().values("contact").annotate(n=Count("id")).filter(n__gte=n)
    return Q(pk__in=grouped.values("contact"))


def _count_q(base, op: str, n: int, ctx: Context) -> Q:
    """count(op)n as set algebra over "at least k", so contacts with no rows (count 0) come out right."""
    ge = {"gte": n, "gt": n + 1}
    if op in ge:
        return _count_ge(base, ge[op], ctx)
    if op == "lt":
        return ~_count_ge(base, n, ctx)
    if op == "lte":
        return ~_count_ge(base, n + 1, ctx)
    exactly = _count_ge(base, n, ctx) & ~_count_ge(base, n + 1, ctx)
    return exactly if op == "eq" else ~exactly


# -- field: a column of the contact ---------------------------------------------------------------------

FIELDS = {
    "email": "text", "first_name": "text", "last_name": "text", "country": "text", "locale": "text",
    "source": "text", "timezone": "text", "phone": "presence",
    "orders_count": "int", "total_spent": "money", "average_order_value": "money",
    "created_at": "datetime", "first_order_at": "datetime", "last_order_at": "datetime",
    "last_activity_at": "datetime",
}
FIELD_OPS = {
    "text": ("eq", "ne", "contains", "in", "is_set", "not_set"),
    "presence": ("is_set", "not_set"),
    "int": NUMBER_OPS, "money": NUMBER_OPS,
    "datetime": ("within_days", "not_within_days", "is_set", "not_set"),
}


def _field_validate(p: dict) -> dict:
    _only(p, {"field", "op", "value"})
    field = p.get("field")
    if field not in FIELDS:
        raise RuleError(f"unknown field {field!r}; choose one of {', '.join(sorted(FIELDS))}")
    ftype = FIELDS[field]
    op = _op(p, FIELD_OPS[ftype])
    value = p.get("value")
    if op in ("is_set", "not_set"):
        return {"field": field, "op": op}
    if op in ("within_days", "not_within_days"):
        return {"field": field, "op": op, "value": _int(p, "value", minimum=1)}
    if ftype == "text":
        if op == "in":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise RuleError(f"{field} in needs a non-empty list of texts")
        elif not isinstance(value, str) or (op == "contains" and not value):
            raise RuleError(f"{field} is text; {value!r} is not")
        return {"field": field, "op": op, "value": value}
    if ftype == "int":
        return {"field": field, "op": op, "value": _int(p, "value")}
    return {"field": field, "op": op, "value": str(_number(value))}


def _field_q(p: dict, ctx: Context) -> Q:
    field, op, value = p["field"], p["op"], p.get("value")
    ftype = FIELDS[field]
    if op == "is_set":
        return Q(**{f"{field}__isnull": False}) & ~Q(**{field: ""}) if ftype in ("text", "presence") \
            else Q(**{f"{field}__isnull": False})
    if op == "not_set":
        return ~_field_q({**p, "op": "is_set"}, ctx)
    if op == "within_days":
        return Q(**{f"{field}__gte": ctx.now - timedelta(days=value)})
    if op == "not_within_days":
        return Q(**{f"{field}__lt": ctx.now - timedelta(days=value)})
    if op == "contains":
        return safe(Q(GreaterThan(StrIndex(F(field), Value(value)), 0)))
    if op == "in":
        return Q(**{f"{field}__in": value})
    if ftype == "money":
        value = Decimal(value)
    if op == "ne":
        return ~Q(**{field: value})
    return Q(**{f"{field}__{'exact' if op == 'eq' else op}": value})


def _field_value(contact, field: str):
    v = getattr(contact, field)
    return str(v) if field == "phone" and v else v


def _field_matches(p: dict, facts: Facts) -> bool:
    field, op, value = p["field"], p["op"], p.get("value")
    v = _field_value(facts.contact, field)
    if op == "is_set":
        return v is not None and v != ""
    if op == "not_set":
        return not (v is not None and v != "")
    if op == "within_days":
        return v is not None and v >= facts.ctx.now - timedelta(days=value)
    if op == "not_within_days":
        return v is not None and v < facts.ctx.now - timedelta(days=value)
    if op == "contains":
        return v is not None and value in v
    if op == "in":
        return v is not None and v in value
    if FIELDS[field] == "money":
        value = Decimal(value)
    if op == "ne":
        return v != value
    return v is not None and PY_OPS[op](v, value)


register(ConditionKind(
    name="field", label="Contact field", validate=_field_validate, to_q=_field_q, matches=_field_matches,
    depends=lambda p: {"contact", "orders"} if p["field"] in ("orders_count", "total_spent", "average_order_value",
                                                                "first_order_at", "last_order_at",
                                                                "last_activity_at") else {"contact"},
    help='{"kind": "field", "field": "country", "op": "eq", "value": "MY"}; '
         '{"kind": "field", "field": "last_order_at", "op": "within_days", "value": 30}',
))


# -- property: a custom property (Contact.properties JSON) -----------------------------------------------

def _property_validate(p: dict) -> dict:
    _only(p, {"key", "op", "value"})
    key, op, value = validate_json_condition(p.get("key"), p.get("op"), p.get("value"))
    return {"key": key, "op": op, **({} if value is None else {"value": value})}


register(ConditionKind(
    name="property", label="Custom property", validate=_property_validate,
    to_q=lambda p, ctx: safe(json_q("properties", p["key"], p["op"], p.get("value"))),
    matches=lambda p, facts: json_py(facts.contact.properties, p["key"], p["op"], p.get("value")),
    depends=lambda p: {"contact"},
    help='{"kind": "property", "key": "plan", "op": "eq", "value": "pro"} (ops: eq ne in contains gt gte lt '
         'lte is_set not_set; numbers compare only with numbers)',
))


# -- tag ---------------------------------------------------------------------------------------------------

def _tag_validate(p: dict) -> dict:
    _only(p, {"tag"})
    if not isinstance(p.get("tag"), str) or not p["tag"]:
        raise RuleError("tag needs a tag name")
    return {"tag": p["tag"]}


register(ConditionKind(
    name="tag", label="Has tag", validate=_tag_validate,
    to_q=lambda p, ctx: Q(Exists(Contact.tags.through.objects.filter(contact_id=OuterRef("pk"), tag__name=p["tag"]))),
    matches=lambda p, facts: p["tag"] in _tags(facts), depends=lambda p: {"tags"},
    help='{"kind": "tag", "tag": "wholesale"} (wrap in {"not": ...} for "has not")',
))


# -- events: count of type T with property filters in a window ---------------------------------------------

def _where_validate(where) -> dict:
    if where in (None, {}):
        return {}
    if not isinstance(where, dict) or len(where) > 5:
        raise RuleError("where must be an object of up to 5 property: value pairs")
    for k, v in where.items():
        validate_json_condition(k, "eq", v)
    return dict(where)


def _event_count_validate(p: dict) -> dict:
    _only(p, {"type", "where", "op", "value", "days"})
    out = {"type": _event_type(p.get("type")), "op": _op(p, NUMBER_OPS), "value": _int(p, "value"),
           "days": _int(p, "days", minimum=1, required=False)}
    where = _where_validate(p.get("where"))
    return {**out, **({"where": where} if where else {})}


def _events_base(type_: str, where: dict, cutoff):
    qs = Event.objects.filter(type=type_)
    if cutoff:
        qs = qs.filter(occurred_at__gte=cutoff)
    for k, v in where.items():
        qs = qs.filter(json_q("properties", k, "eq", v))
    return qs


def _event_rows(facts: Facts, type_: str, where: dict, cutoff) -> list[tuple]:
    return [e for e in _events(facts, type_)
            if (cutoff is None or e[1] >= cutoff) and all(json_py(e[2], k, "eq", v) for k, v in where.items())]


register(ConditionKind(
    name="event_count", label="Did something (count in a window)", validate=_event_count_validate,
    to_q=lambda p, ctx: _count_q(_events_base(p["type"], p.get("where", {}), _cutoff(ctx, p["days"])),
                                 p["op"], p["value"], ctx),
    matches=lambda p, facts: PY_OPS[p["op"]](
        len(_event_rows(facts, p["type"], p.get("where", {}), _cutoff(facts.ctx, p["days"]))), p["value"]),
    depends=lambda p: {f"event:{p['type']}"},
    help='{"kind": "event_count", "type": "product_viewed", "where": {"category": "Kitchen"}, "op": "gte", '
         '"value": 3, "days": 7}',
))


# -- did X and not Y since ------------------------------------------------------------------------------------

def _did_not_validate(p: dict) -> dict:
    _only(p, {"did", "not_event", "not_order", "days"})
    out = {"did": _event_type(p.get("did"), "did"), "days": _int(p, "days", minimum=1, required=False)}
    if p.get("not_event") is not None:
        out["not_event"] = _event_type(p["not_event"], "not_event")
    if p.get("not_order") not in (None, True, False):
        raise RuleError("not_order must be true or false")
    if p.get("not_order"):
        out["not_order"] = True
    if "not_event" not in out and "not_order" not in out:
        raise RuleError("say what must not have happened since: not_event and/or not_order")
    return out


def _did_not_q(p: dict, ctx: Context) -> Q:
    inner = Event.objects.filter(contact=OuterRef("pk"), type=p["did"])
    if p["days"]:
        inner = inner.filter(occurred_at__gte=_cutoff(ctx, p["days"]))
    if p.get("not_event"):
        inner = inner.filter(~Exists(Event.objects.filter(contact=OuterRef("contact"), type=p["not_event"],
                                                          occurred_at__gte=OuterRef("occurred_at"))))
    if p.get("not_order"):
        inner = inner.filter(~Exists(Order.objects.revenue().filter(contact=OuterRef("contact"),
                                                                    placed_at__gte=OuterRef("occurred_at"))))
    return Q(Exists(inner))


def _did_not_matches(p: dict, facts: Facts) -> bool:
    cutoff = _cutoff(facts.ctx, p["days"])
    later = []
    if p.get("not_event"):
        later += [e[1] for e in _events(facts, p["not_event"])]
    if p.get("not_order"):
        later += [o["placed_at"] for o in _orders(facts)]
    last_stop = max(later, default=None)
    return any((cutoff is None or e[1] >= cutoff) and (last_stop is None or last_stop < e[1])
               for e in _events(facts, p["did"]))


register(ConditionKind(
    name="did_not_since", label="Did X and not Y since", validate=_did_not_validate, to_q=_did_not_q,
    matches=_did_not_matches,
    depends=lambda p: {f"event:{p['did']}"} | ({f"event:{p['not_event']}"} if p.get("not_event") else set())
    | ({"orders"} if p.get("not_order") else set()),
    help='{"kind": "did_not_since", "did": "checkout_started", "not_event": "order_placed", "not_order": true, '
         '"days": 7}',
))


# -- orders: count / total / AOV, all time (contact figures) or in the last N days ----------------------------

ORDER_METRICS = {"count": "orders_count", "total": "total_spent", "aov": "average_order_value"}


def _orders_validate(p: dict) -> dict:
    _only(p, {"metric", "op", "value", "days"})
    metric = p.get("metric")
    if metric not in ORDER_METRICS:
        raise RuleError(f"unknown metric {metric!r}; use count, total or aov")
    op = _op(p, NUMBER_OPS)
    value = _int(p, "value") if metric == "count" else str(_number(p.get("value")).quantize(Decimal("0.01")))
    return {"metric": metric, "op": op, "value": value, "days": _int(p, "days", minimum=1, required=False)}


def _cents(value) -> int:
    return int(Decimal(value) * 100)


def _orders_q(p: dict, ctx: Context) -> Q:
    metric, op, value, days = p["metric"], p["op"], p["value"], p["days"]
    if not days:
        return _field_q({"field": ORDER_METRICS[metric], "op": op, "value": value}, ctx)
    base = Order.objects.revenue().filter(placed_at__gte=_cutoff(ctx, days))
    if metric == "count":
        return _count_q(base, op, value, ctx)
    # Money in whole cents: SQLite's decimals are floats, and 0.1 + 0.2 must still equal 0.3.
    per_contact = base.filter(contact=OuterRef("pk")).order_by().values("contact")
    net = ExpressionWrapper((F("total") - F("refunded_amount")) * 100, output_field=DecimalField())
    cents = Subquery(per_contact.annotate(s=Sum(Round(net))).values("s"), output_field=FloatField())
    n = Subquery(per_contact.annotate(n=Count("id")).values("n"))
    target = Value(float(_cents(value))) if metric == "total" else ExpressionWrapper(
        Value(float(_cents(value))) * n, output_field=FloatField())
    if metric == "aov":
        compare = ~Q(Exact(cents, target)) if op == "ne" else Q(NUMBER_LOOKUPS[op](cents, target))
        return safe(Q(GreaterThan(n, 0)) & compare)
    total = Coalesce(cents, Value(0.0))
    if op == "ne":
        return ~safe(Q(Exact(total, target)))
    return safe(Q(NUMBER_LOOKUPS[op](total, target)))


def _orders_matches(p: dict, facts: Facts) -> bool:
    metric, op, value, days = p["metric"], p["op"], p["value"], p["days"]
    if not days:
        return _field_matches({"field": ORDER_METRICS[metric], "op": op, "value": value}, facts)
    cutoff = _cutoff(facts.ctx, days)
    orders = [o for o in _orders(facts) if o["placed_at"] >= cutoff]
    if metric == "count":
        return PY_OPS[op](len(orders), value)
    total = sum(o["cents"] for o in orders)
    if metric == "total":
        return PY_OPS[op](total, _cents(value))
    return bool(orders) and PY_OPS[op](total, _cents(value) * len(orders))


register(ConditionKind(
    name="orders", label="Orders: count, total spent, average order value", validate=_orders_validate,
    to_q=_orders_q, matches=_orders_matches, depends=lambda p: {"orders"},
    help='{"kind": "orders", "metric": "total", "op": "gte", "value": 200} (metric count|total|aov; '
         'optional "days": 90 for the last 90 days only)',
))


def _last_order_validate(p: dict) -> dict:
    _only(p, {"op", "days"})
    return {"op": _op(p, ("within", "not_within")), "days": _int(p, "days", minimum=1)}


def _last_order_as_field(p: dict) -> dict:
    return {"field": "last_order_at", "op": f"{p['op']}_days", "value": p["days"]}


register(ConditionKind(
    name="last_order", label="Last order within / not within N days", validate=_last_order_validate,
    to_q=lambda p, ctx: _field_q(_last_order_as_field(p), ctx),
    matches=lambda p, facts: _field_matches(_last_order_as_field(p), facts), depends=lambda p: {"orders"},
    help='{"kind": "last_order", "op": "not_within", "days": 90} (not_within: has ordered, but not lately)',
))


# -- bought a product or from a category (subcategories included) ----------------------------------------

def _bought_validate(p: dict) -> dict:
    _only(p, {"sku", "category", "days"})
    if bool(p.get("sku")) == bool(p.get("category")):
        raise RuleError("give either sku or category")
    if p.get("sku") and not Product.objects.filter(sku=p["sku"]).exists():
        raise RuleError(f"unknown product SKU {p['sku']!r}")
    if p.get("category") and not Category.objects.filter(slug=p["category"]).exists():
        raise RuleError(f"unknown category {p['category']!r} (use the category's slug)")
    out = {k: p[k] for k in ("sku", "category") if p.get(k)}
    return {**out, "days": _int(p, "days", minimum=1, required=False)}


def _subtree(ctx: Context, slug: str) -> set[int]:
    def load():
        parents = dict(Category.objects.values_list("id", "parent_id"))
        root = Category.objects.filter(slug=slug).values_list("id", flat=True).first()
        found, frontier = {root} if root else set(), {root}
        while frontier:
            frontier = {c for c, parent in parents.items() if parent in frontier} - found
            found |= frontier
        return found
    return ctx.cached(("subtree", slug), load)


def _bought_q(p: dict, ctx: Context) -> Q:
    lines = OrderLine.objects.filter(order__contact=OuterRef("pk"), order__status__in=REVENUE_STATUSES)
    if p["days"]:
        lines = lines.filter(order__placed_at__gte=_cutoff(ctx, p["days"]))
    lines = lines.filter(product__sku=p["sku"]) if p.get("sku") else lines.filter(
        product__category_id__in=_subtree(ctx, p["category"]))
    return Q(Exists(lines))


def _bought_matches(p: dict, facts: Facts) -> bool:
    cutoff = _cutoff(facts.ctx, p["days"])
    cats = _subtree(facts.ctx, p["category"]) if p.get("category") else set()
    return any((cutoff is None or at >= cutoff) and (sku == p["sku"] if p.get("sku") else cat in cats)
               for at, sku, cat in _lines(facts))


register(ConditionKind(
    name="bought", label="Bought a product or from a category", validate=_bought_validate, to_q=_bought_q,
    matches=_bought_matches, depends=lambda p: {"orders"},
    help='{"kind": "bought", "category": "kitchen", "days": 180} or {"kind": "bought", "sku": "MUG-1"}',
))


# -- discount codes: used one, or bought only with one (bargain hunters) ------------------------------------

def _discount_validate(p: dict) -> dict:
    _only(p, {"mode", "code", "days"})
    mode = p.get("mode", "any")
    if mode not in ("any", "all"):
        raise RuleError("mode is any (used a code at least once) or all (every order used one)")
    code = p.get("code") or ""
    if not isinstance(code, str):
        raise RuleError("code must be text")
    return {"mode": mode, "code": code, "days": _int(p, "days", minimum=1, required=False)}


def _discount_q(p: dict, ctx: Context) -> Q:
    scope = Order.objects.revenue().filter(contact=OuterRef("pk"))
    if p["days"]:
        scope = scope.filter(placed_at__gte=_cutoff(ctx, p["days"]))
    discounted = Q(discount_code=p["code"]) if p["code"] else ~Q(discount_code="")
    if p["mode"] == "any":
        return Q(Exists(scope.filter(discounted)))
    return Q(Exists(scope)) & ~Q(Exists(scope.exclude(discounted)))


def _discount_matches(p: dict, facts: Facts) -> bool:
    cutoff = _cutoff(facts.ctx, p["days"])
    orders = [o for o in _orders(facts) if cutoff is None or o["placed_at"] >= cutoff]
    hit = [(o["discount_code"] == p["code"]) if p["code"] else o["discount_code"] != "" for o in orders]
    return any(hit) if p["mode"] == "any" else bool(hit) and all(hit)


register(ConditionKind(
    name="discount", label="Used a discount code", validate=_discount_validate, to_q=_discount_q,
    matches=_discount_matches, depends=lambda p: {"orders"},
    help='{"kind": "discount", "mode": "any", "code": "WELCOME10"}; {"kind": "discount", "mode": "all"} = '
         'only ever bought with a discount',
))


# -- engagement: opened >= k of the last N emails; clicked in N days ----------------------------------------

ENGAGEMENT_EVENTS = ("email_opened", "email_clicked")


def _engagement_validate(p: dict) -> dict:
    _only(p, {"event", "min", "of_last", "days", "sent_type"})
    if p.get("event") not in ENGAGEMENT_EVENTS:
        raise RuleError(f"event must be one of {', '.join(ENGAGEMENT_EVENTS)}")
    out = {"event": p["event"], "min": _int(p, "min", minimum=1),
           "of_last": _int(p, "of_last", minimum=1, required=False, maximum=1000),
           "days": _int(p, "days", minimum=1, required=False)}
    if out["of_last"]:
        if out["days"]:
            raise RuleError("give of_last (the last N emails) or days, not both")
        out["sent_type"] = _event_type(p.get("sent_type") or "email_sent", "sent_type")
    return out


def _engagement_q(p: dict, ctx: Context) -> Q:
    if not p["of_last"]:
        return _count_q(_events_base(p["event"], {}, _cutoff(ctx, p["days"])), "gte", p["min"], ctx)
    ranked = _restrict(Event.objects.filter(type=p["sent_type"], contact__isnull=False), ctx).annotate(
        rn=Window(RowNumber(), partition_by=[F("contact_id")], order_by=[F("occurred_at").desc(), F("id").desc()]))
    last_sent = ranked.filter(rn__lte=p["of_last"]).values("id")
    opened = Event.objects.filter(type=p["event"], contact=OuterRef("contact")).filter(
        Q(Exact(JsonType("properties", "message"), "string")),
        Q(Exact(KeyTextTransform("message", "properties"), OuterRef("message"))))
    hits = (Event.objects.filter(id__in=last_sent).filter(Q(Exact(JsonType("properties", "message"), "string")))
            .annotate(message=KeyTextTransform("message", "properties")).filter(Exists(opened)))
    return Q(pk__in=hits.order_by().values("contact").annotate(n=Count("id")).filter(n__gte=p["min"])
             .values("contact"))


def _engagement_matches(p: dict, facts: Facts) -> bool:
    if not p["of_last"]:
        cutoff = _cutoff(facts.ctx, p["days"])
        return len([e for e in _events(facts, p["event"]) if cutoff is None or e[1] >= cutoff]) >= p["min"]
    sent = sorted(_events(facts, p["sent_type"]), key=lambda e: (e[1], e[0]), reverse=True)[: p["of_last"]]
    engaged = {e[2]["message"] for e in _events(facts, p["event"]) if py_str(e[2], "message")}
    return sum(1 for e in sent if py_str(e[2], "message") and e[2]["message"] in engaged) >= p["min"]


def py_str(props, key: str) -> bool:
    return isinstance(props, dict) and isinstance(props.get(key), str)


register(ConditionKind(
    name="engagement", label="Email engagement", validate=_engagement_validate, to_q=_engagement_q,
    matches=_engagement_matches,
    depends=lambda p: {f"event:{p['event']}"} | ({f"event:{p['sent_type']}"} if p.get("of_last") else set()),
    help='{"kind": "engagement", "event": "email_opened", "min": 3, "of_last": 10} (sends are events of '
         'sent_type, default email_sent, matched by properties.message); '
         '{"kind": "engagement", "event": "email_clicked", "min": 1, "days": 30}',
))


# -- predicted figures and RFM scores ---------------------------------------------------------------------

SCORE_METRICS = ("rfm_recency", "rfm_frequency", "rfm_monetary", "expected_purchases_30", "expected_purchases_90",
                 "p_alive", "churn_risk", "predicted_clv", "best_send_hour")


def _score_validate(p: dict) -> dict:
    _only(p, {"metric", "op", "value"})
    if p.get("metric") not in SCORE_METRICS:
        raise RuleError(f"unknown metric {p.get('metric')!r}; use one of {', '.join(SCORE_METRICS)}")
    return {"metric": p["metric"], "op": _op(p, NUMBER_OPS), "value": float(_number(p.get("value")))}


def _score_q(p: dict, ctx: Context) -> Q:
    m, op, v = p["metric"], p["op"], p["value"]
    scores = ContactScore.objects.filter(contact=OuterRef("pk"), **{f"{m}__isnull": False})
    scores = scores.exclude(**{m: v}) if op == "ne" else scores.filter(**{f"{m}__{'exact' if op == 'eq' else op}": v})
    return Q(Exists(scores))


def _score_matches(p: dict, facts: Facts) -> bool:
    s = _score(facts)
    v = getattr(s, p["metric"]) if s else None
    return v is not None and PY_OPS[p["op"]](v, p["value"])


register(ConditionKind(
    name="score", label="Predicted figure or RFM score", validate=_score_validate, to_q=_score_q,
    matches=_score_matches, depends=lambda p: {"scores"},
    help='{"kind": "score", "metric": "churn_risk", "op": "gte", "value": 0.7} (metrics: '
         + ", ".join(SCORE_METRICS) + ")",
))


# -- rank: top N% of customers by lifetime spend, AOV or order count --------------------------------------

RANK_METRICS = ("total_spent", "average_order_value", "orders_count")


def _rank_validate(p: dict) -> dict:
    _only(p, {"metric", "top_percent"})
    if p.get("metric", "total_spent") not in RANK_METRICS:
        raise RuleError(f"metric must be one of {', '.join(RANK_METRICS)}")
    pct = p.get("top_percent")
    if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 < pct <= 100:
        raise RuleError("top_percent must be a number above 0 and at most 100")
    return {"metric": p.get("metric", "total_spent"), "top_percent": pct}


def _threshold(p: dict, ctx: Context):
    """The metric value of the customer at the top_percent cut; ties at the cut are included."""
    def load():
        customers = Contact.objects.filter(orders_count__gt=0)
        n = customers.count()
        if not n:
            return None
        k = max(1, math.ceil(n * p["top_percent"] / 100))
        return customers.order_by(f"-{p['metric']}").values_list(p["metric"], flat=True)[k - 1]
    return ctx.cached(("threshold", p["metric"], p["top_percent"]), load)


def _rank_q(p: dict, ctx: Context) -> Q:
    t = _threshold(p, ctx)
    return Q(orders_count__gt=0, **{f"{p['metric']}__gte": t}) if t is not None else Q(pk__in=[])


def _rank_matches(p: dict, facts: Facts) -> bool:
    t = _threshold(p, facts.ctx)
    return t is not None and facts.contact.orders_count > 0 and getattr(facts.contact, p["metric"]) >= t


register(ConditionKind(
    name="rank", label="Top N% of customers", validate=_rank_validate, to_q=_rank_q, matches=_rank_matches,
    depends=lambda p: {"orders"},
    help='{"kind": "rank", "metric": "total_spent", "top_percent": 10} (VIP: top 10% by lifetime spend)',
))


# -- membership of another segment (its rule is inlined, so the answer is always fresh) ---------------------

def _segment_validate(p: dict) -> dict:
    _only(p, {"segment"})
    ref = p.get("segment")
    qs = Segment.objects.filter(pk=ref) if isinstance(ref, int) and not isinstance(ref, bool) else \
        Segment.objects.filter(name=ref) if isinstance(ref, str) else Segment.objects.none()
    seg_id = qs.values_list("pk", flat=True).first()
    if seg_id is None:
        raise RuleError(f"unknown segment {ref!r}")
    return {"segment": seg_id}


def _segment_rules(ctx: Context, seg_id: int) -> dict:
    def load():
        rules = Segment.objects.filter(pk=seg_id).values_list("rules", flat=True).first()
        if rules is None:
            raise RuleError(f"segment {seg_id} no longer exists")
        return rules
    return ctx.cached(("segment", seg_id), load)


def _inline(p: dict, ctx: Context, fn):
    seg_id = p["segment"]
    if seg_id in ctx.stack:
        raise RuleError(f"segment {seg_id} refers to itself through {list(ctx.stack)}")
    saved, ctx.stack = ctx.stack, (*ctx.stack, seg_id)
    try:
        return fn(_segment_rules(ctx, seg_id))
    finally:
        ctx.stack = saved


def segment_refs(rules: dict) -> set[int]:
    return {leaf["segment"] for leaf in tree.leaves(rules) if leaf.get("kind") == "segment"}


def _segment_depends(p: dict) -> set[str]:
    ctx = Context()
    return _inline(p, ctx, lambda rules: tree.depends(rules)) | {f"segment:{p['segment']}"}


register(ConditionKind(
    name="segment", label="Member of another segment", validate=_segment_validate,
    to_q=lambda p, ctx: _inline(p, ctx, lambda rules: tree.to_q(rules, ctx)),
    matches=lambda p, facts: _inline(p, facts.ctx, lambda rules: tree.matches(rules, facts)),
    depends=_segment_depends,
    help='{"kind": "segment", "segment": "VIP"} (by name or id; wrap in {"not": ...} to exclude)',
))
