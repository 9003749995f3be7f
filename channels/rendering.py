"""Render templates written by shop staff, safely, with each contact's data.

Authors write Django template syntax, but through a separate engine that has no `include`,
`extends`, `load`, `debug`, `url` or `csrf_token`, and the context holds only plain data
(strings, numbers, lists, dicts) or zero-argument functions returning plain data, built here
from the contact. Django refuses names starting with an underscore, so `{{ x.__class__ }}`
tricks resolve to nothing; `{{ settings }}` is simply not in the context.

Expensive blocks (recently viewed, recommendations, best sellers) are functions, so a
template that does not use them costs no query; within one render each runs at most once.
"""

from collections import OrderedDict
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from decimal import Decimal
from functools import cache

from django.db.models import Count, Sum
from django.template import Context, Engine, Library, defaultfilters, defaulttags
from django.template.base import FilterExpression, TextNode, Variable, VariableNode
from django.utils import timezone, translation
from django.utils.safestring import SafeString

from segments.middleware import current_shop
from segments.models import Contact, Event, Order, OrderLine, Product
from segments.money import format_money

UNSAFE_TAGS = {"debug", "load", "include", "extends", "block", "url", "csrf_token", "ssi", "lorem"}
UNSAFE_FILTERS = {"pprint"}
CACHE_SIZE = 256


def _safe_library(source: Library, unsafe: set[str]) -> Library:
    lib = Library()
    lib.tags = {k: v for k, v in source.tags.items() if k not in unsafe}
    lib.filters = {k: v for k, v in source.filters.items() if k not in unsafe}
    return lib


@cache
def engine() -> Engine:
    eng = Engine(dirs=[], app_dirs=False, autoescape=True, debug=False, string_if_invalid="")
    eng.template_builtins = [_safe_library(defaulttags.register, UNSAFE_TAGS),
                             _safe_library(defaultfilters.register, UNSAFE_FILTERS)]
    return eng


_compiled: "OrderedDict[tuple, object]" = OrderedDict()


def compile_template(source: str, *, key: tuple | None = None):
    """Compile once per (template, version, field); compiling per message costs 2.2x (PERFORMANCE.md)."""
    if key is not None:
        hit = _compiled.get(key)
        # The source is compared too: a SQLite rowid can be reused (a deleted template's id given
        # to the next one, at version 1 again), and a worker must never render the old content.
        if hit is not None and (hit[0] is source or hit[0] == source):
            _compiled.move_to_end(key)
            return hit[1]
    template = engine().from_string(source or "")
    if key is not None:
        _compiled[key] = (source, template)
        if len(_compiled) > CACHE_SIZE:
            _compiled.popitem(last=False)
    return template


def render_string(source: str, context: dict, *, key: tuple | None = None, autoescape: bool = True) -> str:
    template = compile_template(source, key=key)
    shared, names = _SHARED.get(), getattr(context, "shared_names", frozenset())
    if shared is None or key is None or not names:
        return template.render(Context(context, autoescape=autoescape))
    return _render_sharing(template, Context(context, autoescape=autoescape), shared, key, names)


# -- fragments that are the same for every contact, rendered once per batch --------------------------
#
# A campaign's product block ("{% for p in best_sellers %}...") reads nothing about the contact,
# yet was most of each message's template work. Within `shared_fragments()` (one delivery batch),
# a top-level node whose free variables are all contact-independent (CONTACT_INDEPENDENT, unless
# the message's own context overrides the name) is rendered once per template version, language
# and escaping mode, and its output reused. Only node kinds whose variables can be read off
# (text, variables, for, if, with, comments, autoescape) qualify; any other tag is rendered per
# message. Fragments see the batch's snapshot of the shop and best sellers.

CONTACT_INDEPENDENT = frozenset({"shop", "best_sellers"})
_SHARED: ContextVar[dict | None] = ContextVar("channels_shared_fragments", default=None)
_free: dict = {}
_ANY = frozenset({"*"})  # "reads something we cannot name": never shared


@contextmanager
def shared_fragments():
    token = _SHARED.set({})
    try:
        yield
    finally:
        _SHARED.reset(token)


class RenderContext(dict):
    """A template context that knows which of its names hold contact-independent values."""

    shared_names: frozenset = frozenset()


def _render_sharing(template, context: Context, shared: dict, key: tuple, names: frozenset) -> str:
    free = _free.get(key)
    if free is None or free[0] is not template:
        free = _free[key] = (template, [free_variables(node) for node in template.nodelist])
    parts = []
    with context.render_context.push_state(template), context.bind_template(template):
        for index, (node, needs) in enumerate(zip(template.nodelist, free[1], strict=True)):
            if needs and needs <= names:
                cache_key = (key, index, context.autoescape, translation.get_language())
                out = shared.get(cache_key)
                if out is None:
                    out = shared[cache_key] = node.render_annotated(context)
            else:
                out = node.render_annotated(context)
            parts.append(str(out))
    return SafeString("".join(parts))


def _expression_names(expression) -> frozenset:
    if isinstance(expression, FilterExpression):
        names = set()
        if isinstance(expression.var, Variable) and expression.var.lookups:
            names.add(expression.var.lookups[0])
        for _func, args in expression.filters:
            names.update(arg.lookups[0] for is_var, arg in args if is_var and arg.lookups)
        return frozenset(names)
    if expression is None:
        return frozenset()
    # {% if %} conditions: smartif operators (first/second) over literals (value)
    names = set()
    for part in ("value", "first", "second"):
        child = getattr(expression, part, None)
        if child is not None:
            names |= _expression_names(child)
    return frozenset(names)


def _nodelist_names(nodelist) -> frozenset:
    names: set = set()
    for node in nodelist or []:
        names |= free_variables(node)
    return frozenset(names)


def free_variables(node) -> frozenset:
    """The context names a node reads (`_ANY` for kinds we cannot analyse)."""
    if isinstance(node, TextNode | defaulttags.CommentNode):
        return frozenset()
    if isinstance(node, VariableNode):
        return _expression_names(node.filter_expression)
    if isinstance(node, defaulttags.ForNode):
        inner = _nodelist_names(node.nodelist_loop) | _nodelist_names(node.nodelist_empty)
        return _expression_names(node.sequence) | (inner - set(node.loopvars) - {"forloop"})
    if isinstance(node, defaulttags.IfNode):
        names: frozenset = frozenset()
        for condition, nodelist in node.conditions_nodelists:
            names |= _expression_names(condition) | _nodelist_names(nodelist)
        return names
    if isinstance(node, defaulttags.WithNode):
        bound = frozenset().union(*(_expression_names(v) for v in node.extra_context.values()))
        return bound | (_nodelist_names(node.nodelist) - set(node.extra_context))
    if isinstance(node, defaulttags.AutoEscapeControlNode):
        return _nodelist_names(node.nodelist)
    return _ANY


def validate_template(source: str) -> str | None:
    """The syntax error in an author's template, or None."""
    try:
        engine().from_string(source or "")
    except Exception as exc:  # TemplateSyntaxError and friends: shown to the author, never raised
        return str(exc)
    return None


# -- the context -------------------------------------------------------------------------------------

def _product(p: Product, currency: str) -> dict:
    return {"title": p.title, "url": p.url, "image_url": p.image_url, "price": format_money(p.price, p.currency or currency),
            "sku": p.sku, "category": p.category.name if p.category_id else "", "in_stock": p.in_stock}


def _once(fn):
    box = {}

    def wrapper():
        if "v" not in box:
            box["v"] = fn()
        return box["v"]

    return wrapper


_best: dict = {}
BEST_SELLERS_SECONDS = 300


def best_sellers(limit: int = 4, days: int = 90) -> list[dict]:
    """The shop's best sellers; the same for everyone, so computed once per process every 5 minutes."""
    import time

    key = (limit, days)
    hit = _best.get(key)
    if hit and time.monotonic() - hit[0] < BEST_SELLERS_SECONDS:
        return hit[1]
    value = _best_sellers(limit, days)
    _best[key] = (time.monotonic(), value)
    return value


def _best_sellers(limit: int, days: int) -> list[dict]:
    since = timezone.now() - timedelta(days=days)
    currency = current_shop().currency
    ids = list(OrderLine.objects.filter(order__placed_at__gte=since, product__isnull=False, product__is_active=True)
               .values("product").annotate(n=Sum("quantity")).order_by("-n").values_list("product", flat=True)[:limit])
    products = Product.objects.select_related("category").in_bulk(ids)
    return [_product(products[i], currency) for i in ids if i in products]


def recommendations_for(contact: Contact, limit: int = 4) -> list[dict]:
    """"Others who bought what you bought also bought": co-purchases, best sellers as fallback."""
    currency = current_shop().currency
    mine = set(OrderLine.objects.filter(order__contact=contact, product__isnull=False).values_list("product", flat=True))
    if mine:
        orders = OrderLine.objects.filter(product__in=mine).exclude(order__contact=contact).values("order")
        ids = list(OrderLine.objects.filter(order__in=orders, product__isnull=False, product__is_active=True)
                   .exclude(product__in=mine).values("product").annotate(n=Count("id")).order_by("-n")
                   .values_list("product", flat=True)[:limit])
        if ids:
            products = Product.objects.select_related("category").in_bulk(ids)
            return [_product(products[i], currency) for i in ids if i in products]
    return [p for p in best_sellers(limit + len(mine)) if p["sku"] not in
            set(Product.objects.filter(pk__in=mine).values_list("sku", flat=True))][:limit]


def recently_viewed(contact: Contact, limit: int = 4) -> list[dict]:
    currency = current_shop().currency
    skus: list[str] = []
    for props in (Event.objects.filter(contact=contact, type="product_viewed").order_by("-occurred_at")
                  .values_list("properties", flat=True)[:50]):
        sku = (props or {}).get("sku") if isinstance(props, dict) else None
        if sku and sku not in skus:
            skus.append(sku)
        if len(skus) == limit:
            break
    products = {p.sku: p for p in Product.objects.select_related("category").filter(sku__in=skus)}
    return [_product(products[s], currency) for s in skus if s in products]


def latest_cart(contact: Contact) -> dict:
    """The contact's last cart (from the cart_updated event), with product pictures and links."""
    event = Event.objects.filter(contact=contact, type="cart_updated").order_by("-occurred_at").first()
    return cart_from_properties(event.properties if event else {})


def cart_from_properties(props: dict) -> dict:
    currency = (props or {}).get("currency") or current_shop().currency
    items = [i for i in (props or {}).get("items", []) if isinstance(i, dict)]
    products = {p.sku: p for p in Product.objects.filter(sku__in=[i.get("sku") for i in items if i.get("sku")])}
    lines = []
    for item in items:
        p = products.get(item.get("sku"))
        lines.append({"title": item.get("title") or (p.title if p else item.get("sku", "")),
                      "quantity": item.get("quantity", 1),
                      "price": format_money(Decimal(str(item.get("price") or (p.price if p else 0))), currency),
                      "image_url": item.get("image_url") or (p.image_url if p else ""),
                      "url": item.get("url") or (p.url if p else "")})
    value = props.get("value") if props else None
    return {"items": lines, "value": format_money(Decimal(str(value)), currency) if value else "",
            "checkout_url": (props or {}).get("checkout_url", "")}


def last_order(contact: Contact) -> dict | None:
    order = Order.objects.filter(contact=contact).order_by("-placed_at").prefetch_related("lines").first()
    if order is None:
        return None
    return {"name": order.name or order.external_id, "placed_at": order.placed_at.date().isoformat(),
            "total": format_money(order.total, order.currency), "status": order.status,
            "items": [{"title": line.title, "quantity": line.quantity} for line in order.lines.all()]}


def categories_bought(contact: Contact) -> list[str]:
    return sorted(set(OrderLine.objects.filter(order__contact=contact, product__category__isnull=False)
                      .values_list("product__category__name", flat=True)))


def contact_context(contact: Contact, extra: dict | None = None) -> dict:
    """Everything a template may use about one contact, as plain data (see the module docstring)."""
    shop = current_shop()
    props = {k: v for k, v in (contact.properties or {}).items()
             if isinstance(k, str) and not k.startswith("_") and isinstance(v, str | int | float | bool)}
    vip_threshold = (extra or {}).get("vip_threshold")
    context = RenderContext({
        "contact": {
            "first_name": contact.first_name, "last_name": contact.last_name, "full_name": contact.full_name,
            "email": contact.email or "", "locale": contact.locale, "country": contact.country,
            "orders_count": contact.orders_count, "total_spent": format_money(contact.total_spent, shop.currency),
            "points": props.get("points", 0),
            "vip": bool(props.get("vip")) or (vip_threshold is not None and contact.total_spent >= Decimal(str(vip_threshold))),
            "properties": props,
        },
        "shop": {"name": shop.name, "url": shop.website_url, "currency": shop.currency},
        "last_order": _once(lambda: last_order(contact)),
        "categories_bought": _once(lambda: categories_bought(contact)),
        "recently_viewed": _once(lambda: recently_viewed(contact)),
        "recommendations": _once(lambda: recommendations_for(contact)),
        "best_sellers": _once(best_sellers),
        "cart": _once(lambda: cart_from_properties((extra or {}).get("cart")) if (extra or {}).get("cart")
                      else latest_cart(contact)),
    })
    for key, value in (extra or {}).items():
        if key not in ("cart",) and not key.startswith("_"):
            context[key] = value
    context.shared_names = CONTACT_INDEPENDENT - set(extra or {})
    return context
