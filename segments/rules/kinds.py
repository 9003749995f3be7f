"""The condition kinds the segments app registers itself, with the helpers they share.

This module holds the contact and event kinds; kinds_commerce (orders) and kinds_scores (engagement,
predictions, ranks, segment membership) hold the rest. segments/rules/__init__.py imports all three.
"""

import operator
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from functools import reduce

from django.db.models import (
    Count,
    Exists,
    F,
    OuterRef,
    Q,
    Subquery,
    Value,
)
from django.db.models.functions import Coalesce, StrIndex
from django.db.models.lookups import GreaterThan, GreaterThanOrEqual

from segments.models import Contact, ContactScore, Event, Order, OrderLine, Tag
from segments.models.events import EVENT_TYPE_RE
from segments.models.orders import REVENUE_STATUSES
from segments.rules.registry import ConditionKind, Context, Facts, RuleError, register
from segments.rules.sql import json_py, json_q, safe, validate_json_condition
from segments.rules.tree import EITHER, FALSER, TRUER

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


def _count_ge(base, n: int, ctx: Context, wider=None) -> Q:
    """Contacts with at least n rows of `base` (an Event/Order queryset): EXISTS for 1, GROUP BY/HAVING above.

    COUNT(*), not COUNT(id): the (contact, type, occurred_at) index then answers alone. With COUNT(id),
    PostgreSQL read every event row through the contact index (1.45 s instead of 0.26 s at 1M events).

    wider: the same rows without the filters the index cannot answer (event properties), if any.
    """
    if n <= 0:
        return Q(pk__isnull=False)
    if n == 1:
        return Q(Exists(base.filter(contact=OuterRef("pk"))))
    if ctx.only is not None:
        # Incremental: a few contacts, so count each one's rows through the (contact, type, time) index;
        # an uncorrelated GROUP BY restricted by IN may be planned as a scan of every recent row instead.
        at_least = _per_contact_ge(base, n)
        # With property filters each candidate row is read from the table; counting the wider rows in the
        # index alone first (fewer than n of them: fewer than n filtered rows too) skips those reads for
        # most contacts ("3 Kitchen views in 7 days": ~2 views in 7 days each).
        return _per_contact_ge(wider, n) & at_least if wider is not None else at_least
    grouped = base.order_by().values("contact").annotate(n=Count("*")).filter(n__gte=n)
    return Q(pk__in=grouped.values("contact"))


def _per_contact_ge(base, n: int) -> Q:
    """COUNT(*) of the contact's rows of `base` >= n, as a correlated subquery (never NULL)."""
    per_contact = base.filter(contact=OuterRef("pk")).order_by().values("contact").annotate(c=Count("*"))
    return Q(GreaterThanOrEqual(Coalesce(Subquery(per_contact.values("c")), 0), n))


def _count_q(base, op: str, n: int, ctx: Context, wider=None) -> Q:
    """count(op)n as set algebra over "at least k", so contacts with no rows (count 0) come out right."""
    ge = {"gte": n, "gt": n + 1}
    if op in ge:
        return _count_ge(base, ge[op], ctx, wider)
    if op == "lt":
        return ~_count_ge(base, n, ctx, wider)
    if op == "lte":
        return ~_count_ge(base, n + 1, ctx, wider)
    exactly = _count_ge(base, n, ctx, wider) & ~_count_ge(base, n + 1, ctx, wider)
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


def _tag_q(p: dict, ctx: Context) -> Q:
    """The tag's id is looked up once per evaluation: a plain EXISTS on the link table, no join with tags.

    With the join, PostgreSQL costed the (hashed) subquery so high that it tested it after a count over
    every contact's events instead of before it (B3 "nested and/or": 0.65 s -> 0.41 s).
    """
    tag_id = ctx.cached(("tag", p["tag"]), lambda: Tag.objects.filter(name=p["tag"]).values_list("pk", flat=True)
                        .first())
    if tag_id is None:
        return Q(pk__in=[])  # no such tag: nobody has it (Django compiles this to FALSE, and NOT of it to TRUE)
    return Q(Exists(Contact.tags.through.objects.filter(contact_id=OuterRef("pk"), tag_id=tag_id)))


register(ConditionKind(
    name="tag", label="Has tag", validate=_tag_validate,
    to_q=_tag_q,
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


def _event_count_q(p: dict, ctx: Context) -> Q:
    """The count of the type's events in the window, with the property filters; `wider` without them."""
    cutoff = _cutoff(ctx, p["days"])
    where = p.get("where", {})
    return _count_q(_events_base(p["type"], where, cutoff), p["op"], p["value"], ctx,
                    wider=_events_base(p["type"], {}, cutoff) if where else None)


def _event_rows(facts: Facts, type_: str, where: dict, cutoff) -> list[tuple]:
    return [e for e in _events(facts, type_)
            if (cutoff is None or e[1] >= cutoff) and all(json_py(e[2], k, "eq", v) for k, v in where.items())]


# More events can only raise a count: "at least" can only become true, "fewer than" only false.
_COUNT_EFFECT = {"gte": TRUER, "gt": TRUER, "lt": FALSER, "lte": FALSER, "eq": EITHER, "ne": EITHER}


register(ConditionKind(
    name="event_count", label="Did something (count in a window)", validate=_event_count_validate,
    to_q=lambda p, ctx: _event_count_q(p, ctx),
    matches=lambda p, facts: PY_OPS[p["op"]](
        len(_event_rows(facts, p["type"], p.get("where", {}), _cutoff(facts.ctx, p["days"]))), p["value"]),
    depends=lambda p: {f"event:{p['type']}"},
    event_effects=lambda p: [(reduce(operator.and_, [json_q("properties", k, "eq", v) for k, v in p.get("where", {}).items()],
                                     Q(type=p["type"])), _COUNT_EFFECT[p["op"]])],
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


def _did_not_effects(p: dict) -> list[tuple[Q, int]]:
    """A new X adds a candidate (TRUER); a new Y can only disqualify candidates (FALSER); both if X is Y."""
    if p.get("not_event") == p["did"]:
        return [(Q(type=p["did"]), EITHER)]
    return [(Q(type=p["did"]), TRUER)] + ([(Q(type=p["not_event"]), FALSER)] if p.get("not_event") else [])


register(ConditionKind(
    name="did_not_since", label="Did X and not Y since", validate=_did_not_validate, to_q=_did_not_q,
    matches=_did_not_matches,
    depends=lambda p: {f"event:{p['did']}"} | ({f"event:{p['not_event']}"} if p.get("not_event") else set())
    | ({"orders"} if p.get("not_order") else set()),
    event_effects=_did_not_effects,
    help='{"kind": "did_not_since", "did": "checkout_started", "not_event": "order_placed", "not_order": true, '
         '"days": 7}',
))
