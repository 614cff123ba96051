"""The tests of the paper's claims over the seeds: Student's t (a hand-written regularised incomplete beta, so that
only the standard library is needed), Welch's t, the seed spread pooled over configurations, and the verdicts."""
import math

ALPHA = 0.05


def mean_std(values):
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _betacf(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((qam + 2 * m) * (a + 2 * m)),
                    -(a + m) * (qab + m) * x / ((a + 2 * m) * (qap + 2 * m))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a, b, x):
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t, df):
    """Two-sided p-value of Student's t with df (possibly fractional) degrees of freedom."""
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_critical(df, alpha=0.05):
    """The |t| whose two-sided p is alpha (bisection on t_two_sided_p)."""
    lo, hi = 0.0, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_two_sided_p(mid, df) > alpha else (lo, mid)
    return (lo + hi) / 2


def pooled_seed_spread(groups):
    """Within-configuration standard deviation pooled over every configuration with two or more seeds, and its
    degrees of freedom: the seed spread used for configurations that have a single seed."""
    ss, df = 0.0, 0
    for values in groups:
        if len(values) >= 2:
            m = sum(values) / len(values)
            ss += sum((v - m) ** 2 for v in values)
            df += len(values) - 1
    return (math.sqrt(ss / df), df) if df else (None, 0)


def compare(a, b, pooled, same_model=False):
    """Difference of the means of a and b (lists of values over seeds) with a two-sided test. Two variants of one
    model (same_model) are tested with Student's t on the seed spread pooled over that model's configurations
    (pooled = (std, df)): they are assumed to vary alike across seeds, and the pool has far more degrees of freedom
    than either side. Two different models are tested with Welch's t when both sides have two or more seeds (their
    spreads may differ), else with the pooled spread. Returns (difference, p, how, half-width of the (1 - ALPHA)
    confidence interval of the difference); p and the half-width are None while no spread is known."""
    diff = sum(a) / len(a) - sum(b) / len(b)
    spread, df = pooled
    if len(a) >= 2 and len(b) >= 2 and not (same_model and spread is not None):
        va, vb = mean_std(a)[1] ** 2 / len(a), mean_std(b)[1] ** 2 / len(b)
        se = math.sqrt(va + vb)
        if se == 0:
            return diff, (0.0 if diff else 1.0), "Welch", 0.0
        df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
        how = "Welch, df %.1f" % df
    elif spread is None:
        return diff, None, "no seed spread yet", None
    else:
        se, how = spread * math.sqrt(1.0 / len(a) + 1.0 / len(b)), "pooled spread, df %d" % df
    if se == 0:
        return diff, (0.0 if diff else 1.0), how, 0.0
    return diff, t_two_sided_p(diff / se, df), how, t_critical(df, ALPHA) * se


def verdict(diff, p, sign, paper_diff=None, half=None):
    """The verdict on a claim that A beats B (sign +1) or equals it (sign 0); for a claim with the paper's own
    difference (points), also whether that size lies outside our confidence interval: "does it help at all" can be
    undecided while "does it help as much as the paper says" is not."""
    if p is None:
        return "undecided: one seed on each side, no seed spread measured yet"
    significant = p < ALPHA
    if sign == 0:
        return "**contradicted**: they differ" if significant else "consistent: no difference beyond the seed spread"
    if not significant:
        text = "undecided: within the seed spread"
    else:
        text = "**supported**" if diff > 0 else "**contradicted**: the opposite holds"
    if paper_diff is not None and half is not None:
        if paper_diff > 100 * (diff + half):
            text += "; an effect as large as the paper's (%+.2f) is ruled out" % paper_diff
        elif paper_diff < 100 * (diff - half) and diff > 0:
            text += "; by more than the paper's %+.2f" % paper_diff
    return text
