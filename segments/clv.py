"""Predicted purchases, probability alive and CLV: BG/NBD with Gamma-Gamma spend, fitted with scipy.

Models (Fader, Hardie & Lee 2005, "Counting your customers the easy way: an alternative to the Pareto/NBD
model", Marketing Science 24(2); and "RFM and CLV: using iso-value curves for customer base analysis",
JMR 42(4)). Each customer is summarised from the shop's own revenue orders up to `as_of`, with one
transaction per purchase day (orders of the same day are summed), time in weeks:
  x   = repeat purchase days (purchase days - 1),
  t_x = weeks from the first to the last purchase day,
  T   = weeks from the first purchase day to as_of,
  m   = mean net value of the repeat purchase days (Gamma-Gamma uses repeat customers only).
BG/NBD: while alive a customer buys at Poisson rate lambda ~ Gamma(r, alpha); after each purchase they
drop out with probability p ~ Beta(a, b). Gamma-Gamma: mean spend per transaction ~ Gamma(p, v) around a
customer-level mean, with v ~ Gamma(q, gamma); we call the scale parameters p, q, v as the paper does.
Fitted by maximum likelihood (scipy.optimize.minimize on log-parameters). Validated on the CDNOW sample
against the published estimates in tests/segments/test_clv.py.
"""

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from scipy import optimize, special

WEEK_SECONDS = 7 * 24 * 3600


@dataclass
class Summary:
    ids: np.ndarray
    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    m: np.ndarray  # mean repeat-transaction value (0 when x == 0)


@dataclass
class BgNbd:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float


@dataclass
class GammaGamma:
    p: float
    q: float
    v: float
    log_likelihood: float


def summarise(transactions, as_of: datetime) -> Summary:
    """transactions: iterable of (customer_id, day: date, amount). Days after as_of are ignored."""
    days: dict = defaultdict(lambda: defaultdict(float))
    cutoff = as_of.date() if isinstance(as_of, datetime) else as_of
    for cid, day, amount in transactions:
        if day <= cutoff:
            days[cid][day] += float(amount)
    ids, x, t_x, T, m = [], [], [], [], []
    for cid, per_day in days.items():
        ordered = sorted(per_day)
        first, last = ordered[0], ordered[-1]
        ids.append(cid)
        x.append(len(ordered) - 1)
        t_x.append((last - first).days / 7)
        T.append((cutoff - first).days / 7)
        repeat = [per_day[d] for d in ordered[1:]]
        m.append(sum(repeat) / len(repeat) if repeat else 0.0)
    return Summary(np.array(ids), np.array(x, float), np.array(t_x, float), np.array(T, float), np.array(m, float))


def bgnbd_log_likelihood(params, x, t_x, T) -> np.ndarray:
    r, alpha, a, b = params
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = special.betaln(a, b + x) - special.betaln(a, b) - (r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a3 = np.where(x > 0, special.betaln(a + 1, b + np.maximum(x, 1) - 1) - special.betaln(a, b)
                      - (r + x) * np.log(alpha + t_x), -np.inf)
    return a1 + np.logaddexp(a2, a3)


def _fit(neg_ll, start: np.ndarray) -> tuple[np.ndarray, float]:
    best = optimize.minimize(neg_ll, np.log(start), method="Nelder-Mead",
                             options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000, "maxfev": 40000})
    polished = optimize.minimize(neg_ll, best.x, method="L-BFGS-B")
    chosen = polished if polished.success and polished.fun <= best.fun else best
    return np.exp(chosen.x), -float(chosen.fun)


def fit_bgnbd(s: Summary) -> BgNbd:
    def neg_ll(log_params):
        with np.errstate(over="ignore", invalid="ignore"):
            ll = bgnbd_log_likelihood(np.exp(log_params), s.x, s.t_x, s.T).sum()
        return -ll if np.isfinite(ll) else 1e300
    (r, alpha, a, b), ll = _fit(neg_ll, np.array([1.0, 1.0, 1.0, 1.0]))
    return BgNbd(r, alpha, a, b, ll)


def fit_gamma_gamma(s: Summary) -> GammaGamma:
    keep = (s.x > 0) & (s.m > 0)
    x, m = s.x[keep], s.m[keep]

    def neg_ll(log_params):
        p, q, v = np.exp(log_params)
        ll = (special.gammaln(p * x + q) - special.gammaln(p * x) - special.gammaln(q) + q * np.log(v)
              + (p * x - 1) * np.log(m) + p * x * np.log(x) - (p * x + q) * np.log(x * m + v)).sum()
        return -ll if np.isfinite(ll) else 1e300
    (p, q, v), ll = _fit(neg_ll, np.array([1.0, 1.0, 1.0]))
    return GammaGamma(p, q, v, ll)


def expected_purchases(model: BgNbd, t: float, x, t_x, T) -> np.ndarray:
    """E[purchases in the next t weeks | x, t_x, T] (FHL 2005, eq. 10)."""
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    z = t / (alpha + T + t)
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, z)
    first = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp)
    return first / (1 + (x > 0) * a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x))


def p_alive(model: BgNbd, x, t_x, T) -> np.ndarray:
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    with np.errstate(divide="ignore", invalid="ignore"):
        odds = np.where(x > 0, a / (b + x - 1) * ((alpha + T) / (alpha + t_x)) ** (r + x), 0.0)
    return 1 / (1 + odds)


def expected_spend(gg: GammaGamma, x, m) -> np.ndarray:
    """E[value per transaction | x, m]; the population mean p*v/(q-1) for customers without repeats."""
    population = gg.p * gg.v / (gg.q - 1) if gg.q > 1 else float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 0, gg.p * (gg.v + x * m) / (gg.p * x + gg.q - 1), population)


def days_to_weeks(days: float) -> float:
    return days / 7


def is_sane(model: BgNbd) -> bool:
    return all(math.isfinite(v) and v > 0 for v in (model.r, model.alpha, model.a, model.b))
