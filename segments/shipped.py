"""The segments every shop gets (DOMAIN.md "Segments"), installed by `manage.py install_segments`.

References to other shipped segments are written "@key" and resolved to ids at install time. Lifecycle
stages and the six value x activity groups are mutually exclusive by construction (each excludes the
stages before it), so every contact has at most one stage and one group, kept current like any segment.
"""

from django.db import transaction
from django.utils.text import slugify

from segments import rules as engine
from segments.membership import segment_rules_changed
from segments.models import Category, Segment

CART_ABANDONER = {"any": [
    {"kind": "did_not_since", "did": "checkout_started", "not_event": "order_placed", "not_order": True, "days": 7},
    {"kind": "did_not_since", "did": "cart_updated", "not_event": "order_placed", "not_order": True, "days": 7},
]}
DORMANT = {"any": [
    {"kind": "field", "field": "last_activity_at", "op": "not_within_days", "value": 90},
    {"all": [{"kind": "field", "field": "last_activity_at", "op": "not_set"},
             {"kind": "field", "field": "created_at", "op": "not_within_days", "value": 90}]},
]}
VIP = {"kind": "rank", "metric": "total_spent", "top_percent": 10}
HIGH_VALUE = {"kind": "score", "metric": "rfm_monetary", "op": "gte", "value": 4}
LOW_VALUE = {"kind": "score", "metric": "rfm_monetary", "op": "lte", "value": 3}
ACTIVE = {"kind": "last_order", "op": "within", "days": 90}
INACTIVE = {"kind": "last_order", "op": "not_within", "days": 90}


def _not(*keys: str) -> list[dict]:
    return [{"not": {"kind": "segment", "segment": f"@{k}"}} for k in keys]


def _count(op: str, n: int) -> dict:
    return {"kind": "orders", "metric": "count", "op": op, "value": n}


SHIPPED: list[tuple[str, str, str, dict]] = [
    # Behavioural
    ("recent_buyers", "Recent buyers", "Ordered in the last 30 days.", {"kind": "last_order", "op": "within",
                                                                         "days": 30}),
    ("active_browsers", "Active browsers", "Viewed a product or category in the last 7 days.", {"any": [
        {"kind": "event_count", "type": "product_viewed", "op": "gte", "value": 1, "days": 7},
        {"kind": "event_count", "type": "category_viewed", "op": "gte", "value": 1, "days": 7}]}),
    ("cart_abandoners", "Cart abandoners", "Started a checkout or changed the cart in the last 7 days and has "
     "not ordered since.", CART_ABANDONER),
    ("email_engagers", "Email engagers", "Opened at least 3 of their last 10 emails.",
     {"kind": "engagement", "event": "email_opened", "min": 3, "of_last": 10}),
    ("dormant", "Dormant", "No activity for 90 days or more.", DORMANT),
    # Value
    ("vip", "VIP", "Top 10% of customers by lifetime spend.", VIP),
    ("high_potential", "High potential", "High average order (top 25%) but at most 2 orders.", {"all": [
        {"kind": "rank", "metric": "average_order_value", "top_percent": 25}, _count("lte", 2)]}),
    ("bargain_hunters", "Bargain hunters", "Every order used a discount code.", {"kind": "discount", "mode": "all"}),
    ("one_time_buyers", "One-time buyers", "Exactly one order.", _count("eq", 1)),
    # Lifecycle stages, most urgent first
    ("stage_dormant", "Stage: dormant", "Lifecycle stage: no activity for 90+ days.", {"kind": "segment",
                                                                                       "segment": "@dormant"}),
    ("stage_at_risk", "Stage: at risk", "Lifecycle stage: a repeat customer with no order for 60+ days.",
     {"all": [_count("gte", 2), {"kind": "last_order", "op": "not_within", "days": 60}, *_not("stage_dormant")]}),
    ("stage_vip", "Stage: VIP", "Lifecycle stage: top 10% by spend.",
     {"all": [VIP, *_not("stage_dormant", "stage_at_risk")]}),
    ("stage_loyal", "Stage: loyal", "Lifecycle stage: 4 or more orders.",
     {"all": [_count("gte", 4), *_not("stage_dormant", "stage_at_risk", "stage_vip")]}),
    ("stage_repeat", "Stage: repeat customer", "Lifecycle stage: 2 or 3 orders.",
     {"all": [_count("gte", 2), *_not("stage_dormant", "stage_at_risk", "stage_vip", "stage_loyal")]}),
    ("stage_first_time", "Stage: first-time buyer", "Lifecycle stage: one order.",
     {"all": [_count("eq", 1), *_not("stage_dormant", "stage_vip")]}),
    ("stage_subscriber", "Stage: subscriber", "Lifecycle stage: no order yet.",
     {"all": [_count("eq", 0), *_not("stage_dormant")]}),
    # The six value x activity groups (value = RFM monetary quintile, activity = ordered in 90 days)
    ("group_never_bought", "Group: subscribers who never bought", "Value x activity: no order, not a cart "
     "abandoner.", {"all": [_count("eq", 0), *_not("cart_abandoners")]}),
    ("group_cart_abandoners", "Group: cart abandoners", "Value x activity: abandoned a cart.",
     {"kind": "segment", "segment": "@cart_abandoners"}),
    ("group_loyal", "Group: loyal", "Value x activity: high value (RFM M 4-5), active.",
     {"all": [HIGH_VALUE, ACTIVE, *_not("cart_abandoners")]}),
    ("group_frequent_low_aov", "Group: frequent but low value", "Value x activity: low value (M 1-3), active.",
     {"all": [LOW_VALUE, ACTIVE, *_not("cart_abandoners")]}),
    ("group_at_risk", "Group: at risk", "Value x activity: high value, no order for 90 days.",
     {"all": [HIGH_VALUE, INACTIVE, *_not("cart_abandoners")]}),
    ("group_non_target", "Group: non-target", "Value x activity: low value, inactive. Exclude from paid "
     "audiences.", {"all": [LOW_VALUE, INACTIVE, *_not("cart_abandoners")]}),
]


def _resolve(node, ids: dict[str, int]):
    if isinstance(node, dict):
        if node.get("kind") == "segment" and str(node.get("segment", "")).startswith("@"):
            return {**node, "segment": ids[node["segment"][1:]]}
        return {k: _resolve(v, ids) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, ids) for v in node]
    return node


def _category_segments() -> list[tuple[str, str, str, dict]]:
    return [(f"category_{slugify(c.slug)[:40]}", f"Category buyers: {c.name}", f"Bought from {c.name} "
             "(or a subcategory).", {"kind": "bought", "category": c.slug})
            for c in Category.objects.filter(parent__isnull=True).order_by("name")]


@transaction.atomic
def segments_install(*, reset: bool = False) -> tuple[int, int]:
    """Create the shipped segments that are missing (or, with reset, restore their definitions).

    Idempotent: a second run changes nothing; a shop owner's edits to a shipped segment are kept unless
    reset is asked for. Returns (created, updated). New or reset segments get their baseline at once.
    """
    ids = dict(Segment.objects.filter(shipped_key__isnull=False).values_list("shipped_key", "pk"))
    created = updated = 0
    for key, name, description, rules in [*SHIPPED, *_category_segments()]:
        segment = Segment.objects.filter(shipped_key=key).first()
        if segment and not reset:
            continue
        cleaned = engine.validate(_resolve(rules, ids))
        if segment:
            segment.name, segment.description, segment.rules = name, description, cleaned
            segment.save(update_fields=["name", "description", "rules", "updated_at"])
            updated += 1
        else:
            segment = Segment.objects.create(shipped_key=key, name=name, description=description, rules=cleaned)
            created += 1
        ids[key] = segment.pk
        segment_rules_changed(segment=segment)
    return created, updated
