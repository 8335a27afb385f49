"""The bias of group-relative advantages, exactly and by simulation.

Setting (Yang et al. 2026, arXiv:2601.08521, Sec. 2): a prompt with success rate p, G
binary rewards, R = sum ~ Binomial(G, p), group mean p_hat = R / G, and the
non-degenerate event S = {1 <= R <= G - 1} (the only groups that carry a gradient).
The group-relative advantage of a response with reward r is A_hat = r - p_hat, the true
one A = r - p; conditioned on S, E[A_hat - A | S] = p - E[p_hat | S] = -advantage_bias.

Every function accepts scalars or numpy arrays for p (broadcast) and returns floats or
arrays. At p in {0, 1}, where P(S) = 0, conditional quantities are their limits.
Monte-Carlo counterparts (``mc_*``) simulate reward matrices and return ``MCResult``
(estimate, standard error, number of groups kept).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import numpy as np

# ----------------------------------------------------------------- binomial pieces


def _binomial_pmf(p: np.ndarray, g: int) -> np.ndarray:
    """[..., G + 1] P(R = k), k = 0..G, stable at p in {0, 1}."""
    p = np.asarray(p, dtype=np.float64)[..., None]
    k = np.arange(g + 1)
    log_choose = np.array([math.lgamma(g + 1) - math.lgamma(i + 1) - math.lgamma(g - i + 1) for i in k])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pmf = log_choose + np.where(k > 0, k * np.log(p), 0.0) + np.where(k < g, (g - k) * np.log1p(-p), 0.0)
    return np.exp(log_pmf)


def _check_group(g: int) -> None:
    if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 2:
        raise ValueError(f"group size G must be an integer >= 2, got {g!r}")


def _conditional_mean(p, g: int, value: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """E[value(k / G, p) | S] by summing over k = 1..G-1, with the p -> 0 / p -> 1 limits.

    The limits: as p -> 0 the conditional law of R concentrates on R = 1, as p -> 1 on R = G-1.
    """
    _check_group(g)
    p = np.asarray(p, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("success rate p must lie in [0, 1]")
    k = np.arange(1, g)
    pmf = _binomial_pmf(p, g)[..., 1:g]  # (..., G - 1)
    p_s = pmf.sum(-1)
    vals = value(k / g, p[..., None])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (pmf * vals).sum(-1) / p_s
    low = np.broadcast_to(value(np.array([1 / g]), p[..., None])[..., 0], p.shape)
    high = np.broadcast_to(value(np.array([(g - 1) / g]), p[..., None])[..., 0], p.shape)
    out = np.where(p_s > 1e-300, out, np.where(p < 0.5, low, high))
    return out if out.ndim else float(out)


def non_degenerate_probability(p, g: int):
    """P(S) = 1 - (1 - p)^G - p^G."""
    _check_group(g)
    p = np.asarray(p, dtype=np.float64)
    out = -np.expm1(g * np.log1p(-np.minimum(p, 1 - 1e-300))) - p**g
    out = np.where(p >= 1, 0.0, out)
    return out if out.ndim else float(out)


# ----------------------------------------------------------------- Theorems 1, 2; Corollaries 1, 3


def expected_group_mean(p, g: int):
    """E[p_hat | S] = (p - p^G) / (1 - (1 - p)^G - p^G)   (Theorem 1; Lemma 2)."""
    return _conditional_mean(p, g, lambda phat, p_: np.broadcast_to(phat, np.broadcast_shapes(phat.shape, p_.shape)))


def advantage_bias(p, g: int):
    """E[p_hat | S] - p: > 0 for p < 1/2 (advantage under-estimated), < 0 for p > 1/2, 0 at 1/2."""
    out = np.asarray(expected_group_mean(p, g)) - np.asarray(p, dtype=np.float64)
    return out if out.ndim else float(out)


def tail_probability(p, g: int, eps: float, side: str = "under"):
    """P(A - A_hat > eps | S) (``side="under"``, Theorem 2: hard prompts), or its mirror
    P(A_hat - A > eps | S) (``side="over"``: easy prompts). A - A_hat = p_hat - p."""
    if side not in ("under", "over"):
        raise ValueError(f"side must be 'under' or 'over', got {side!r}")
    sign = 1.0 if side == "under" else -1.0
    return _conditional_mean(p, g, lambda phat, p_: (sign * (phat - p_) > eps).astype(np.float64))


def _probability_above(phat: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (phat > p).astype(np.float64)


def underestimation_probability(g: int, a: float, b: float, nodes: int = 48):
    """Mean over p ~ U(a, b) of P(p_hat > p | S) = P(A_hat < A | S)   (Corollary 1).

    Exact: the sum over R is exact, and P(p_hat > p | S) is a smooth function of p between
    the breakpoints k / G, so Gauss-Legendre quadrature on each piece converges to machine
    precision (48 nodes per piece by default).
    """
    _check_group(g)
    if not 0.0 <= a < b <= 1.0:
        raise ValueError(f"need 0 <= a < b <= 1, got a={a}, b={b}")
    cuts = np.unique(np.r_[a, b, np.arange(1, g) / g])
    cuts = cuts[(cuts >= a) & (cuts <= b)]
    x, w = np.polynomial.legendre.leggauss(nodes)
    total = 0.0
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        p = 0.5 * (hi - lo) * x + 0.5 * (hi + lo)
        total += 0.5 * (hi - lo) * float(np.dot(w, _conditional_mean(p, g, _probability_above)))
    return total / (b - a)


def certainty_region(g: int) -> tuple[float, float]:
    """Corollary 3: on S, A_hat < A surely for p < 1/G and A_hat > A surely for p > (G-1)/G."""
    _check_group(g)
    return 1.0 / g, (g - 1.0) / g


# ----------------------------------------------------------------- what the fixes do


@attrs.frozen
class HADWFix:
    """HA-DW weight at a fixed anchor: Phi = lambda_scale * exp(-sgn(A_hat) sgn(p_hat - C) |p_hat - C|)."""

    anchor: float = 0.5
    lambda_scale: float = 1.5

    def __call__(self, a_hat, phat):
        diff = phat - self.anchor
        return a_hat * self.lambda_scale * np.exp(-np.sign(a_hat) * np.sign(diff) * np.abs(diff))


@attrs.frozen
class FocalFix:
    """F-GRPO: (1 - p_hat)^gamma * A_hat."""

    gamma: float = 1.0

    def __call__(self, a_hat, phat):
        return a_hat * (1.0 - phat) ** self.gamma


@attrs.frozen
class AGRAEFix:
    """A-GRAE at batch accuracy p_bar (the released formula, on A_hat = r - p_hat)."""

    p_bar: float = 0.5
    alpha: float = 1.0
    eps: float = 1e-6

    def __call__(self, a_hat, phat):
        root = np.sqrt(phat)
        mixed = (1 - self.p_bar) * 0.5 * a_hat / (1 - root + self.eps) + self.p_bar * 0.5 * a_hat / (root + self.eps)
        return np.where(mixed > 0, mixed * min(1.0, self.p_bar / self.alpha), mixed)


def corrected_bias(p, g: int, reward: int, fix: Callable | None = None):
    """E[fix(A_hat) | S] - A for a response with reward ``reward`` in {0, 1}.

    A_hat = r - p_hat and A = r - p, with p_hat distributed as R / G given S (the paper's
    convention: r is held fixed, Lemma 2 and Theorem 3). ``fix`` maps (A_hat, p_hat) to the
    reweighted advantage; None is plain GRPO, whose value is -advantage_bias(p, G).
    """
    if reward not in (0, 1):
        raise ValueError(f"reward must be 0 or 1, got {reward!r}")
    fix = fix or (lambda a_hat, phat: a_hat)

    def value(phat, p_):
        return fix(reward - phat, phat) - (reward - p_)

    return _conditional_mean(p, g, value)


# ----------------------------------------------------------------- F-GRPO rare modes


def rare_mode_miss_probability(n, mu: float, tau: float):
    """P(a group of N is mixed yet holds no sample of a rare correct mode of mass tau).

    Each sample is rare-correct (tau), other-correct (mu - tau) or wrong (1 - mu):
    P = (1 - tau)^N - (mu - tau)^N - (1 - mu)^N   (no rare sample, minus all-other-correct,
    minus all-wrong). Zero at N = 1, rising then falling in N (Plyusov et al. 2026).
    """
    if not 0.0 <= tau <= mu <= 1.0:
        raise ValueError(f"need 0 <= tau <= mu <= 1, got tau={tau}, mu={mu}")
    n = np.asarray(n, dtype=np.float64)
    out = (1 - tau) ** n - (mu - tau) ** n - (1 - mu) ** n
    return out if out.ndim else float(out)


# ----------------------------------------------------------------- Monte Carlo


@attrs.frozen
class MCResult:
    estimate: float
    stderr: float
    groups: int
    """Groups in the conditioning event (the estimate averages over these)."""


def _mean_se(values: np.ndarray) -> MCResult:
    n = values.size
    if n == 0:
        return MCResult(math.nan, math.nan, 0)
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return MCResult(float(values.mean()), se, n)


def simulate_binary_groups(p: float, g: int, n: int, rng: np.random.Generator, chunk: int = 250_000) -> np.ndarray:
    """[n] number of correct answers R of n simulated groups of G Bernoulli(p) rewards."""
    _check_group(g)
    out = np.empty(n, dtype=np.int64)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        out[start:start + m] = (rng.random((m, g)) < p).sum(1)  # (m, G) rewards -> R
    return out


def mc_expected_group_mean(p: float, g: int, n: int = 1_000_000, seed: int = 0) -> MCResult:
    """Monte-Carlo E[p_hat | S]."""
    r = simulate_binary_groups(p, g, n, np.random.default_rng(seed))
    keep = (r >= 1) & (r <= g - 1)
    return _mean_se(r[keep] / g)


def mc_tail_probability(p: float, g: int, eps: float, n: int = 1_000_000, seed: int = 0, side: str = "under") -> MCResult:
    """Monte-Carlo P(A - A_hat > eps | S) (or the ``over`` mirror)."""
    r = simulate_binary_groups(p, g, n, np.random.default_rng(seed))
    keep = (r >= 1) & (r <= g - 1)
    gap = r[keep] / g - p
    return _mean_se(((gap if side == "under" else -gap) > eps).astype(np.float64))


def mc_underestimation_probability(g: int, a: float, b: float, n: int = 1_000_000, seed: int = 0) -> MCResult:
    """Monte-Carlo mean over p ~ U(a, b) of P(p_hat > p | S), one p per group.

    Note the exact quantity averages the conditional probability uniformly over p; the
    simulation must weight each p alike, so it reweights groups by 1 / P(S | p).
    """
    rng = np.random.default_rng(seed)
    p = rng.uniform(a, b, n)
    r = (rng.random((n, g)) < p[:, None]).sum(1)
    keep = (r >= 1) & (r <= g - 1)
    weight = 1.0 / non_degenerate_probability(p[keep], g)
    values = (r[keep] / g > p[keep]).astype(np.float64)
    est = float(np.sum(weight * values) / np.sum(weight))
    # delta-method standard error of a ratio estimator
    z = weight * (values - est)
    se = float(np.sqrt(np.sum(z**2)) / np.sum(weight))
    return MCResult(est, se, int(keep.sum()))


def mc_rare_mode_miss_probability(n_samples: int, mu: float, tau: float, groups: int = 1_000_000, seed: int = 0) -> MCResult:
    """Monte-Carlo probability that a group is mixed and misses the rare correct mode."""
    rng = np.random.default_rng(seed)
    u = rng.random((groups, n_samples))
    rare, correct = u < tau, u < mu
    event = ~rare.any(1) & correct.any(1) & ~correct.all(1)
    return _mean_se(event.astype(np.float64))


# ----------------------------------------------------------------- bounded non-binary rewards


def sample_beta_rewards(p: float, concentration: float):
    """Sampler of Beta rewards with mean p: Beta(p k, (1 - p) k)."""

    def sample(rng: np.random.Generator, shape):
        return rng.beta(p * concentration, (1 - p) * concentration, size=shape)

    return sample


def sample_truncated_gaussian_rewards(mu: float, xi: float):
    """Sampler of N(mu, xi^2) rewards truncated to [0, 1] (inverse-CDF sampling)."""
    import torch

    lo, hi = (torch.special.ndtr(torch.tensor((0.0 - mu) / xi, dtype=torch.float64)),
              torch.special.ndtr(torch.tensor((1.0 - mu) / xi, dtype=torch.float64)))

    def sample(rng: np.random.Generator, shape):
        u = torch.as_tensor(rng.uniform(float(lo), float(hi), size=shape))
        return np.clip((mu + xi * torch.special.ndtri(u)).numpy(), 0.0, 1.0)

    return sample


def truncated_gaussian_mean(mu: float, xi: float) -> float:
    """E[r] of N(mu, xi^2) truncated to [0, 1]: mu + xi (phi(a) - phi(b)) / (Phi(b) - Phi(a))."""
    a, b = (0 - mu) / xi, (1 - mu) / xi
    phi = lambda x: math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)  # noqa: E731
    big_phi = lambda x: 0.5 * math.erfc(-x / math.sqrt(2))  # noqa: E731
    return mu + xi * (phi(a) - phi(b)) / (big_phi(b) - big_phi(a))


def mc_nonbinary_bias(sampler, mean: float, g: int, sigma: float = 0.0, n: int = 400_000, seed: int = 0) -> MCResult:
    """Monte-Carlo E[p_hat | S_sigma] - E[r] for bounded rewards from ``sampler``.

    Conditioning event (Theorem 4): S_sigma = {max_i r_i - min_i r_i > sigma}, the groups
    whose rewards differ by more than sigma (sigma = 0: not all equal). ``mean`` is E[r].
    """
    rewards = sampler(np.random.default_rng(seed), (n, g))  # (n, G)
    keep = rewards.max(1) - rewards.min(1) > sigma
    res = _mean_se(rewards[keep].mean(1))
    return MCResult(res.estimate - mean, res.stderr, res.groups)
