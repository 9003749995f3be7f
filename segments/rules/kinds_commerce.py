"""Order kinds for segment rules: count / total / AOV, last order, bought product or category, discounts."""


from decimal import Decimal

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
)
from django.db.models.functions import Coalesce, Round
from django.db.models.lookups import Exact, GreaterThan

from segments.models import Category, Order, OrderLine, Product
from segments.models.orders import REVENUE_STATUSES
from segments.rules.kinds import (  # helpers shared with the other kinds
    NUMBER_OPS,
    PY_OPS,
    _count_q,
    _cutoff,
    _field_matches,
    _field_q,
    _int,
    _lines,
    _number,
    _only,
    _op,
    _orders,
)
from segments.rules.registry import ConditionKind, Context, Facts, RuleError, register
from segments.rules.sql import NUMBER_LOOKUPS, safe

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
