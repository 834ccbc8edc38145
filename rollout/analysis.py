"""The analysis that decides a canary step: Prometheus queries, canary against primary.

Every step of a rollout ends with one analysis of the window it just ran (the step's
interval). Both sides are measured with the same PromQL over the model servers' own metrics
(``vigil_serving_*``, ``monitoring.metrics``), told apart by a label selector: a scrape label
of the local stack (``rollout_slot="a"``) or the pods' version label on a cluster. The checks
(bounds from ``RolloutSettings``, recorded with the rollout):

==================  ==============================================================================
evidence            the canary answered at least ``min_requests`` requests in the window (and, for
                    the score checks, scored ``min_transactions`` transactions); Prometheus
                    answered at all. No evidence, no pass: the check fails.
success_rate        share of the canary's requests answered without a 5xx >= ``min_success_rate``
p99_latency         canary p99 request latency <= ``max_p99_ms``
p99_vs_primary      canary p99 <= primary p99 * ``max_p99_ratio`` + ``p99_slack_ms``
degraded_share      canary's share of degraded transactions - primary's <= ``max_degraded_increase``
score_psi           population stability index of the canary's score histogram against the
                    primary's (``vigil_serving_score`` buckets) <= ``max_score_psi``
decision_rate       |canary's share of fraud decisions - primary's| <= ``max_decision_rate_diff``
decision_agreement  shadow mode only: share of mirrored transactions whose decision equals the
                    primary's (``vigil_rollout_shadow_transactions_total``) >=
                    ``min_decision_agreement``
==================  ==============================================================================

When the primary answered fewer than ``min_requests`` requests in the window (a 100% step
sends it nothing), its side is measured over the whole rollout so far instead, and the
relative latency check is left out (latency depends on load, and the two sides did not carry
theirs at the same time; the absolute bound still applies). All queries of one analysis are
evaluated at the same instant.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, Final

from vigil.contract import FRAUD_DECISION
from vigil.errors import VigilError
from vigil.settings import RolloutSettings

#: The fields of ``RolloutSettings`` an analysis uses (recorded with each rollout).
BOUND_FIELDS: Final = (
    "min_requests", "min_transactions", "min_success_rate", "max_p99_ms", "max_p99_ratio",
    "p99_slack_ms", "max_degraded_increase", "max_score_psi", "max_decision_rate_diff",
    "min_decision_agreement",
)
#: Smoothing added to every histogram bin before the PSI (no log of zero).
PSI_PSEUDOCOUNT: Final = 0.5


class PrometheusError(VigilError):
    """Prometheus did not answer a query, or answered an error."""


def bounds_from(settings: RolloutSettings) -> dict[str, float]:
    return {name: float(getattr(settings, name)) for name in BOUND_FIELDS}


class Prometheus:
    """Instant queries against Prometheus's HTTP API (``/api/v1/query``)."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """The result vector of ``promql`` at ``at`` (default: now)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        request = urllib.request.Request(
            f"{self.url}/api/v1/query", data=urllib.parse.urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"}, method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read()[:500].decode(errors="replace")
            raise PrometheusError(f"Prometheus at {self.url} answered {e.code}: {detail}") from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise PrometheusError(f"Prometheus at {self.url} is unreachable: {reason}") from e
        except json.JSONDecodeError as e:
            raise PrometheusError(f"Prometheus at {self.url} answered non-JSON: {e}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus query failed: {body.get('error')} ({promql})")
        data = body.get("data", {})
        if data.get("resultType") != "vector":
            raise PrometheusError(f"expected an instant vector from {promql!r}, got "
                                  f"{data.get('resultType')}")
        return list(data.get("result", []))

    def scalar(self, promql: str, at: float | None = None) -> float:
        """Sum of the vector (0 for an empty one: no samples means nothing happened)."""
        return sum(_value(r) for r in self.query(promql, at))

    def by_label(self, promql: str, label: str, at: float | None = None) -> dict[str, float]:
        return {str(r["metric"].get(label, "")): _value(r) for r in self.query(promql, at)}


def _value(result: Mapping[str, Any]) -> float:
    return float(result["value"][1])


@dataclasses.dataclass(frozen=True)
class Side:
    """One side's traffic over a window, from Prometheus."""

    window_s: float
    requests: float
    server_errors: float
    #: p99 request latency in seconds; None without requests.
    p99_s: float | None
    transactions: float
    frauds: float
    degraded: float
    #: Score histogram: upper bounds (``le``) and the count in each bin (not cumulative).
    score_bounds: tuple[float, ...]
    score_counts: tuple[float, ...]

    @property
    def success_rate(self) -> float | None:
        return None if self.requests <= 0 else 1.0 - self.server_errors / self.requests

    @property
    def fraud_share(self) -> float | None:
        return None if self.transactions <= 0 else self.frauds / self.transactions

    @property
    def degraded_share(self) -> float | None:
        return None if self.transactions <= 0 else self.degraded / self.transactions

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["p99_ms"] = None if self.p99_s is None else round(self.p99_s * 1e3, 3)
        return out


def window(seconds: float) -> str:
    """A PromQL range of at least ``seconds`` (whole seconds)."""
    return f"{max(1, math.ceil(seconds))}s"


def measure(prom: Prometheus, selector: str, model_name: str, window_s: float,
            at: float) -> Side:
    """The serving metrics of the pods/processes matching ``selector`` over ``window_s``
    seconds before ``at``."""
    sel = f'{selector},model_name="{model_name}"' if selector else f'model_name="{model_name}"'
    w = window(window_s)
    requests = prom.scalar(f"sum(increase(vigil_serving_requests_total{{{sel}}}[{w}]))", at)
    errors = prom.scalar(
        f'sum(increase(vigil_serving_requests_total{{{sel},status_code=~"5.."}}[{w}]))', at)
    p99 = prom.query(
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(vigil_serving_request_duration_seconds_bucket{{{sel}}}[{w}])))", at)
    p99_s = _value(p99[0]) if p99 else None
    if p99_s is not None and not math.isfinite(p99_s):
        p99_s = None
    decisions = prom.by_label(
        f"sum by (decision) (increase(vigil_serving_transactions_total{{{sel}}}[{w}]))",
        "decision", at)
    degraded = prom.scalar(
        f"sum(increase(vigil_serving_degraded_transactions_total{{{sel}}}[{w}]))", at)
    cumulative = prom.by_label(
        f"sum by (le) (increase(vigil_serving_score_bucket{{{sel}}}[{w}]))", "le", at)
    bounds, counts = histogram_bins(cumulative)
    return Side(
        window_s=window_s,
        requests=requests,
        server_errors=errors,
        p99_s=p99_s,
        transactions=sum(decisions.values()),
        frauds=decisions.get(FRAUD_DECISION, 0.0),
        degraded=degraded,
        score_bounds=bounds,
        score_counts=counts,
    )


def histogram_bins(cumulative: Mapping[str, float]) -> tuple[tuple[float, ...],
                                                            tuple[float, ...]]:
    """Per-bin counts from Prometheus's cumulative ``le`` buckets (``+Inf`` last). Counts of
    a counter's ``increase`` can dip slightly below the previous bucket's through
    extrapolation: clipped at zero."""
    items = sorted((float(le), value) for le, value in cumulative.items())
    bounds = tuple(le for le, _ in items)
    counts = []
    previous = 0.0
    for _, value in items:
        counts.append(max(0.0, value - previous))
        previous = max(previous, value)
    return bounds, tuple(counts)


def psi(expected: Sequence[float], actual: Sequence[float],
        pseudocount: float = PSI_PSEUDOCOUNT) -> float:
    """Population stability index of ``actual`` against ``expected`` (bin counts of the same
    bins): sum over bins of (a - e) * ln(a / e) with shares smoothed by ``pseudocount``."""
    if len(expected) != len(actual):
        raise ValueError(f"PSI of histograms with different bins: {len(expected)} vs "
                         f"{len(actual)}")
    k = len(expected)
    if k == 0:
        raise ValueError("PSI of empty histograms")
    n_e, n_a = sum(expected), sum(actual)
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        pe = (e + pseudocount) / (n_e + pseudocount * k)
        pa = (a + pseudocount) / (n_a + pseudocount * k)
        total += (pa - pe) * math.log(pa / pe)
    return total


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    #: The measured value (None when it could not be measured).
    value: float | None
    bound: float | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Analysis:
    """One analysis: the checks and what they were computed from."""

    at: float
    window_s: float
    checks: tuple[Check, ...]
    canary: Side | None
    primary: Side | None
    shadow_agreement: tuple[float, float] | None = None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        if self.passed:
            return "all checks passed"
        return "; ".join(f"{c.name}: {c.detail}" for c in self.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": round(self.at, 3),
            "window_s": self.window_s,
            "passed": self.passed,
            "checks": [c.to_dict() for c in self.checks],
            "canary": None if self.canary is None else self.canary.to_dict(),
            "primary": None if self.primary is None else self.primary.to_dict(),
            "shadow_agreement": self.shadow_agreement,
            "error": self.error,
        }


def judge(canary: Side, primary: Side, bounds: Mapping[str, float],
          agreement: tuple[float, float] | None = None,
          same_window: bool = True) -> tuple[Check, ...]:
    """The checks of the module docstring. ``agreement`` (shadow mode): transactions whose
    decisions agreed and disagreed. ``same_window=False`` (the primary measured over the
    rollout so far, having had no traffic in the window): no relative latency check, since
    latency depends on the load each side carried and the two did not carry it at the same
    time; score and decision shares do not, and are still compared."""
    b = bounds
    checks: list[Check] = []
    enough = canary.requests >= b["min_requests"]
    checks.append(Check(
        "evidence", enough, round(canary.requests, 1), b["min_requests"],
        f"{canary.requests:.0f} canary requests in {canary.window_s:.0f} s"
        + ("" if enough else f" (fewer than {b['min_requests']:.0f}: no evidence)"),
    ))

    rate = canary.success_rate
    checks.append(Check(
        "success_rate", rate is not None and rate >= b["min_success_rate"], rate,
        b["min_success_rate"],
        "no requests" if rate is None else
        f"{rate:.2%} of {canary.requests:.0f} requests without a 5xx "
        f"(at least {b['min_success_rate']:.2%})",
    ))

    p99 = canary.p99_s
    limit_ms = b["max_p99_ms"]
    checks.append(Check(
        "p99_latency", p99 is not None and p99 * 1e3 <= limit_ms,
        None if p99 is None else round(p99 * 1e3, 3), limit_ms,
        "no latency samples" if p99 is None else
        f"canary p99 {p99 * 1e3:.1f} ms (at most {limit_ms:g} ms)",
    ))
    if same_window:
        checks.append(_relative_latency(p99, primary.p99_s, b))

    scored = min(canary.transactions, primary.transactions)
    if scored < b["min_transactions"]:
        detail = (f"{canary.transactions:.0f} canary and {primary.transactions:.0f} primary "
                  f"transactions (fewer than {b['min_transactions']:.0f}: no evidence)")
        checks += [Check(name, False, None, None, detail)
                   for name in ("degraded_share", "score_psi", "decision_rate")]
    else:
        c_deg, p_deg = canary.degraded_share or 0.0, primary.degraded_share or 0.0
        checks.append(Check(
            "degraded_share", c_deg - p_deg <= b["max_degraded_increase"],
            round(c_deg - p_deg, 6), b["max_degraded_increase"],
            f"degraded {c_deg:.2%} on the canary vs {p_deg:.2%} on the primary "
            f"(at most +{b['max_degraded_increase']:.2%})",
        ))
        if canary.score_bounds != primary.score_bounds or not canary.score_bounds:
            checks.append(Check("score_psi", False, None, b["max_score_psi"],
                                "score histograms missing or with different buckets"))
        else:
            value = psi(primary.score_counts, canary.score_counts)
            checks.append(Check(
                "score_psi", value <= b["max_score_psi"], round(value, 6), b["max_score_psi"],
                f"score PSI {value:.3f} against the primary (at most {b['max_score_psi']:g})",
            ))
        c_rate, p_rate = canary.fraud_share or 0.0, primary.fraud_share or 0.0
        checks.append(Check(
            "decision_rate", abs(c_rate - p_rate) <= b["max_decision_rate_diff"],
            round(c_rate - p_rate, 6), b["max_decision_rate_diff"],
            f"fraud decisions {c_rate:.2%} on the canary vs {p_rate:.2%} on the primary "
            f"(at most {b['max_decision_rate_diff']:.2%} apart)",
        ))

    if agreement is not None:
        agree, disagree = agreement
        compared = agree + disagree
        share = agree / compared if compared > 0 else None
        ok = share is not None and compared >= b["min_transactions"] and \
            share >= b["min_decision_agreement"]
        checks.append(Check(
            "decision_agreement", ok, share, b["min_decision_agreement"],
            "no mirrored transactions compared" if share is None else
            f"{share:.2%} of {compared:.0f} mirrored transactions decided like the primary "
            f"(at least {b['min_decision_agreement']:.2%})"
            + ("" if compared >= b["min_transactions"] else " - too few to judge"),
        ))
    return tuple(checks)


def _relative_latency(canary_s: float | None, primary_s: float | None,
                      b: Mapping[str, float]) -> Check:
    if canary_s is None or primary_s is None:
        return Check("p99_vs_primary", False, None, None, "no latency samples on "
                     + ("the canary" if canary_s is None else "the primary"))
    bound_ms = primary_s * 1e3 * b["max_p99_ratio"] + b["p99_slack_ms"]
    return Check(
        "p99_vs_primary", canary_s * 1e3 <= bound_ms, round(canary_s * 1e3, 3),
        round(bound_ms, 3),
        f"canary p99 {canary_s * 1e3:.1f} ms vs primary {primary_s * 1e3:.1f} ms "
        f"(at most x{b['max_p99_ratio']:g} + {b['p99_slack_ms']:g} ms = {bound_ms:.1f})",
    )


@dataclasses.dataclass(frozen=True)
class Analyzer:
    """Runs analyses for one rollout: where Prometheus is, which selectors, which bounds."""

    prometheus: Prometheus
    model_name: str
    primary_selector: str
    canary_selector: str
    bounds: Mapping[str, float]

    def analyze(self, window_s: float, *, baseline_s: float | None = None,
                shadow: bool = False, at: float | None = None) -> Analysis:
        """Canary against primary over the last ``window_s`` seconds; the primary over
        ``baseline_s`` (the rollout so far) when it had too few requests in the window. A
        Prometheus failure is a failed analysis (no evidence), never an exception."""
        at = time.time() if at is None else at
        try:
            canary = measure(self.prometheus, self.canary_selector, self.model_name,
                             window_s, at)
            primary = measure(self.prometheus, self.primary_selector, self.model_name,
                              window_s, at)
            same_window = True
            if (primary.requests < self.bounds["min_requests"] and baseline_s is not None
                    and baseline_s > window_s):
                primary = measure(self.prometheus, self.primary_selector, self.model_name,
                                  baseline_s, at)
                same_window = False
            agreement = self._agreement(window_s, at) if shadow else None
        except PrometheusError as e:
            check = Check("evidence", False, None, None, f"no evidence: {e}")
            return Analysis(at, window_s, (check,), None, None, error=str(e))
        checks = judge(canary, primary, self.bounds, agreement, same_window)
        return Analysis(at, window_s, checks, canary, primary, agreement)

    def _agreement(self, window_s: float, at: float) -> tuple[float, float]:
        counts = self.prometheus.by_label(
            "sum by (agreement) (increase(vigil_rollout_shadow_transactions_total"
            f'{{model_name="{self.model_name}"}}[{window(window_s)}]))', "agreement", at)
        return counts.get("agree", 0.0), counts.get("disagree", 0.0)
