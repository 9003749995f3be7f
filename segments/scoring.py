"""Per-contact scores: RFM quintiles (ranked in SQL), predicted figures (segments.clv), best send hour."""

from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import numpy as np
from django.db import transaction
from django.db.models import Count, F, Window
from django.db.models.functions import ExtractHour, PercentRank
from django.utils import timezone

from segments import clv
from segments.models import ClvFit, Contact, ContactScore, Event, EventType, Order, Shop

DEFAULT_SEND_HOUR = 10  # when the shop has no opens or clicks at all yet
ENGAGEMENT_TYPES = (EventType.EMAIL_OPENED, EventType.EMAIL_CLICKED)
MIN_CUSTOMERS, MIN_REPEAT_CUSTOMERS = 20, 5


def _upsert(rows: list[ContactScore], fields: list[str]) -> None:
    ContactScore.objects.bulk_create(rows, batch_size=1000, update_conflicts=True, unique_fields=["contact"],
                                     update_fields=fields)


def _quintile(percent_rank: float | None) -> int:
    """PercentRank 0..1 -> 1..5; ties share a rank, so equal figures get equal scores."""
    return 1 + min(4, int((percent_rank or 0) * 5))


@transaction.atomic
def rfm_refresh(*, now: datetime | None = None) -> int:
    """Recency, frequency and monetary quintiles over customers (5 = best), from one windowed query."""
    now = now or timezone.now()
    rows = Contact.objects.filter(orders_count__gt=0).annotate(
        r=Window(PercentRank(), order_by=F("last_order_at").asc()),
        f=Window(PercentRank(), order_by=F("orders_count").asc()),
        m=Window(PercentRank(), order_by=F("total_spent").asc()),
    ).values_list("pk", "r", "f", "m")
    scores = [ContactScore(contact_id=pk, rfm_recency=_quintile(r), rfm_frequency=_quintile(f),
                           rfm_monetary=_quintile(m), rfm_at=now) for pk, r, f, m in rows.iterator(5000)]
    _upsert(scores, ["rfm_recency", "rfm_frequency", "rfm_monetary", "rfm_at"])
    # No longer a customer (everything refunded): no RFM.
    ContactScore.objects.filter(contact__orders_count=0, rfm_recency__isnull=False).update(
        rfm_recency=None, rfm_frequency=None, rfm_monetary=None, rfm_at=now)
    return len(scores)


def _engagement_hours(since: datetime) -> dict[int, Counter]:
    zone = Shop.load().zone
    per_contact: dict[int, Counter] = defaultdict(Counter)
    rows = (Event.objects.filter(type__in=ENGAGEMENT_TYPES, contact__isnull=False, occurred_at__gte=since)
            .annotate(hour=ExtractHour("occurred_at", tzinfo=zone)).order_by()
            .values_list("contact_id", "hour").annotate(n=Count("id")))
    for contact_id, hour, n in rows.iterator(5000):
        per_contact[contact_id][hour] += n
    return per_contact


def _mode(counter: Counter) -> int:
    return min(counter, key=lambda h: (-counter[h], h))  # most opens/clicks; the earlier hour on a tie


def shop_best_send_hour(*, days: int = 180) -> int:
    total: Counter = Counter()
    for counter in _engagement_hours(timezone.now() - timedelta(days=days)).values():
        total.update(counter)
    return _mode(total) if total else DEFAULT_SEND_HOUR


def send_hours_refresh(*, days: int = 180) -> int:
    """Each contact's most frequent open/click hour (shop time zone) over the last `days`."""
    hours = _engagement_hours(timezone.now() - timedelta(days=days))
    _upsert([ContactScore(contact_id=c, best_send_hour=_mode(h)) for c, h in hours.items()], ["best_send_hour"])
    return len(hours)


def best_send_hour(contact: Contact) -> int:
    """The hour to send to this contact: their own best hour, else the shop's."""
    own = ContactScore.objects.filter(contact=contact).values_list("best_send_hour", flat=True).first()
    return own if own is not None else shop_best_send_hour()


class NotEnoughData(Exception):
    pass


@dataclass
class ClvResult:
    fit: ClvFit
    scored: int


def _transactions(as_of: datetime):
    zone = Shop.load().zone
    rows = (Order.objects.revenue().filter(contact__isnull=False, placed_at__lte=as_of)
            .values_list("contact_id", "placed_at", "total", "refunded_amount"))
    for contact_id, placed_at, total, refunded in rows.iterator(5000):
        yield contact_id, timezone.localtime(placed_at, zone).date(), total - refunded


def end_of_day(day: date) -> datetime:
    return datetime.combine(day, time.max, tzinfo=Shop.load().zone)


def clv_fit(*, as_of: datetime | None = None) -> ClvResult:
    """Fit BG/NBD + Gamma-Gamma on revenue orders up to as_of and store every customer's figures."""
    as_of = as_of or timezone.now()
    summary = clv.summarise(_transactions(as_of), timezone.localtime(as_of, Shop.load().zone).date())
    repeaters = int((summary.x > 0).sum())
    if len(summary.ids) < MIN_CUSTOMERS or repeaters < MIN_REPEAT_CUSTOMERS:
        raise NotEnoughData(f"{len(summary.ids)} customers, {repeaters} repeat customers: need at least "
                            f"{MIN_CUSTOMERS} and {MIN_REPEAT_CUSTOMERS}")
    bg = clv.fit_bgnbd(summary)
    gg = clv.fit_gamma_gamma(summary)
    x, t_x, T = summary.x, summary.t_x, summary.T
    exp30 = clv.expected_purchases(bg, 30 / 7, x, t_x, T)
    exp90 = clv.expected_purchases(bg, 90 / 7, x, t_x, T)
    alive = clv.p_alive(bg, x, t_x, T)
    value = clv.expected_purchases(bg, 52, x, t_x, T) * clv.expected_spend(gg, x, summary.m)
    now = timezone.now()
    with transaction.atomic():
        fit = ClvFit.objects.create(as_of=as_of, customers=len(summary.ids), repeat_customers=repeaters, r=bg.r,
                                    alpha=bg.alpha, a=bg.a, b=bg.b, p=gg.p, q=gg.q, v=gg.v,
                                    log_likelihood=bg.log_likelihood)
        rows = [ContactScore(contact_id=int(cid), expected_purchases_30=_num(e30), expected_purchases_90=_num(e90),
                             p_alive=_num(pa), churn_risk=_num(1 - pa), predicted_clv=_num(v), predicted_at=now)
                for cid, e30, e90, pa, v in zip(summary.ids, exp30, exp90, alive, value, strict=True)]
        _upsert(rows, ["expected_purchases_30", "expected_purchases_90", "p_alive", "churn_risk", "predicted_clv",
                       "predicted_at"])
    return ClvResult(fit, len(rows))


def _num(v) -> float | None:
    v = float(v)
    return round(v, 6) if np.isfinite(v) else None
