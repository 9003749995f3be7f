"""Engagement, predicted-figure, RFM, top-N% and segment-membership kinds for segment rules."""


import math

from django.db.models import (
    Count,
    Exists,
    F,
    OuterRef,
    Q,
    Window,
)
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import RowNumber
from django.db.models.lookups import Exact

from segments.models import Contact, ContactScore, Event, Segment
from segments.rules import tree
from segments.rules.kinds import (  # helpers shared with the other kinds
    NUMBER_OPS,
    PY_OPS,
    _count_q,
    _cutoff,
    _event_type,
    _events,
    _events_base,
    _int,
    _number,
    _only,
    _op,
    _restrict,
    _score,
)
from segments.rules.registry import ConditionKind, Context, Facts, RuleError, register
from segments.rules.sql import JsonType

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


def _engagement_effects(p: dict) -> list[tuple[Q, int]]:
    """In N days: a count of at least min (TRUER). Of the last N emails: a new send pushes an old one out and
    a new open may match one, so either way."""
    if not p.get("of_last"):
        return [(Q(type=p["event"]), tree.TRUER)]
    return [(Q(type__in=sorted({p["event"], p["sent_type"]})), tree.EITHER)]


register(ConditionKind(
    name="engagement", label="Email engagement", validate=_engagement_validate, to_q=_engagement_q,
    matches=_engagement_matches,
    depends=lambda p: {f"event:{p['event']}"} | ({f"event:{p['sent_type']}"} if p.get("of_last") else set()),
    event_effects=_engagement_effects,
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
    event_effects=lambda p: _inline(p, Context(), lambda rules: tree.event_effects(rules)),
    help='{"kind": "segment", "segment": "VIP"} (by name or id; wrap in {"not": ...} to exclude)',
))
