"""The CLV model against the published BG/NBD and Gamma-Gamma results on the CDNOW sample."""

import csv
from datetime import UTC, datetime
from decimal import Decimal
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from segments import clv
from segments.models import ClvFit, Contact, ContactScore, Order, Shop

DATA = Path(__file__).resolve().parent.parent / "data" / "cdnow"
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_GG = {"p": 6.25, "q": 3.74, "v": 15.44}


def _published_summary() -> clv.Summary:
    rows = list(csv.DictReader((DATA / "cdnow_customers_summary_with_transactions.csv").open()))
    col = lambda k: np.array([float(r[k]) for r in rows])  # noqa: E731
    return clv.Summary(np.array([int(r["ID"]) for r in rows]), col("x"), col("t_x"), col("T"), col("zbar"))


def _close(actual: float, published: float, rel: float = 0.01) -> bool:
    # Published figures have 3-4 significant digits: 1% covers their rounding and nothing more.
    return abs(actual - published) <= rel * published


def test_bgnbd_fit_reproduces_the_published_cdnow_estimates():
    model = clv.fit_bgnbd(_published_summary())
    fitted = {"r": model.r, "alpha": model.alpha, "a": model.a, "b": model.b}
    assert all(_close(fitted[k], v) for k, v in PUBLISHED_BGNBD.items()), fitted
    assert model.log_likelihood == pytest.approx(-9582.4, abs=0.1)  # FHL 2005, p. 279


def test_gamma_gamma_fit_reproduces_the_published_cdnow_estimates():
    gg = clv.fit_gamma_gamma(_published_summary())
    assert all(_close(getattr(gg, k), v) for k, v in PUBLISHED_GG.items()), gg


def test_conditional_expectation_and_p_alive_match_the_paper_example():
    # FHL 2005: a customer with x=2, t_x=30.43, T=38.86 is expected to buy 1.226 times in the next 39 weeks.
    model = clv.BgNbd(r=0.243, alpha=4.414, a=0.793, b=2.426, log_likelihood=0)
    one = (np.array([2.0]), np.array([30.43]), np.array([38.86]))
    assert clv.expected_purchases(model, 39, *one)[0] == pytest.approx(1.226, abs=0.002)
    assert 0 < clv.p_alive(model, *one)[0] < 1
    assert clv.p_alive(model, np.array([0.0]), np.array([0.0]), np.array([38.86]))[0] == 1.0


@pytest.mark.django_db
def test_fit_clv_command_on_the_cdnow_transaction_log_reproduces_the_paper():
    """The whole path: orders in the database -> summary -> fit -> stored figures, for the 39-week calibration."""
    Shop.objects.create(timezone="UTC")
    lines = [ln.split() for ln in (DATA / "CDNOW_sample.txt").read_text().splitlines() if ln.strip()]
    sample_ids = sorted({int(parts[1]) for parts in lines})
    Contact.objects.bulk_create([Contact(email=f"cdnow{i}@example.com") for i in sample_ids], batch_size=1000)
    ids = dict(Contact.objects.filter(email__startswith="cdnow").values_list("email", "pk"))
    Order.objects.bulk_create([
        Order(external_id=f"cdnow-{n}", contact_id=ids[f"cdnow{int(sid)}@example.com"],
              placed_at=datetime.strptime(day, "%Y%m%d").replace(hour=12, tzinfo=UTC), total=Decimal(dollars))
        for n, (_cust, sid, day, _cds, dollars) in enumerate(lines)
    ], batch_size=2000)

    out = StringIO()
    call_command("fit_clv", "--as-of", "1997-09-30", stdout=out)

    fit = ClvFit.objects.get()
    assert fit.customers == 2357 and fit.repeat_customers == 946
    for k, v in {**PUBLISHED_BGNBD, **PUBLISHED_GG}.items():
        assert _close(getattr(fit, k), v), (k, getattr(fit, k))
    assert "r=0.243 alpha=4.414 a=0.793 b=2.426" in out.getvalue()
    assert ContactScore.objects.filter(p_alive__isnull=False).count() == 2357
    first = ContactScore.objects.get(contact_id=ids["cdnow1@example.com"])  # x=2, t_x=30.43, T=38.86
    assert first.churn_risk == pytest.approx(1 - first.p_alive)
    assert 0 < first.expected_purchases_30 < first.expected_purchases_90 < 1.226
    assert first.predicted_clv > 0


@pytest.mark.django_db
def test_fit_clv_refuses_a_shop_without_enough_history():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Not enough order history"):
        call_command("fit_clv", stdout=StringIO())
