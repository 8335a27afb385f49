"""The conditional bias of every advantage estimator, exactly and by simulation.

Setting of ``algorithms.theory``: binary rewards, groups of G, success rate p, S = {1 <= R <=
G - 1}. Response i has reward r and the other G - 1 of its group are Binomial(G - 1, p): the
exact conditioning, where ``corrected_bias`` draws p_hat from its law given S whatever r
(the paper's convention; for a leave-one-out baseline only the exact one is meaningful).

    estimator_bias(name, p, G, reward)  E[A_hat_i - A | S, r_i = reward]; reward None: averaged
                                        over r_i given S (-advantage_bias(p, G) for every estimator
                                        whose advantages sum to zero in a group: E[A_hat | S] = 0,
                                        E[r - p | S] = E[p_hat | S] - p; the per-reward biases
                                        tell the estimators apart)
    mc_estimator_bias(...)              the same by simulating reward groups (MCResult)

``target`` picks A: "pass@1" is r - p for every estimator; "own" is the advantage of the
objective the estimator is unbiased for (without conditioning on S): passk k (1 - p)^(k-1)
(r - p) (the pass@k gradient), maxrl (1 - (1 - p)^G) (r - p) / p (sum of pass@k / k, k <= G),
r - p for the others. Group-local estimators have closed forms (sums over the others' count);
batch estimators (reinforce_pp, shrinkage) are stated for a model: this prompt in a batch
with prompts of success rates ``others`` (G responses each), enumerated exactly through the
registered estimator (G (G + 1)^len(others) batches at most 200 000), or simulated.
p in [0, 1]; at p in {0, 1}, where P(S) = 0, the limit is evaluated at 1e-12 from the edge.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from algorithms.advantages import ADVANTAGES
from algorithms.theory import MCResult, _binomial_pmf, _check_group, _mean_se

BATCH_ESTIMATORS = ("reinforce_pp", "shrinkage")
MAX_BATCHES = 200_000
EDGE = 1e-12


def pkpo_rho(n: int, c, k: int):
    """PKPO's unbiased pass@k estimate from n samples with c correct: 1 - C(n - c, k) / C(n, k)."""
    if k == 0:
        return np.zeros_like(np.asarray(c, dtype=np.float64))
    return 1.0 - np.array([math.comb(n - int(ci), k) for ci in np.ravel(c)]).reshape(np.shape(c)) / math.comb(n, k)


def closed_form_advantage(name: str, r: int, others: np.ndarray, g: int, **params) -> np.ndarray:
    """Advantage of a response with reward r whose G - 1 group mates hold ``others`` correct
    answers (array), for the group-local estimators (std, eps and mean guards aside: on S)."""
    c = r + others
    if name == "group_mean":
        return r - c / g
    if name == "group_norm":
        return (r - c / g) / np.sqrt(c * (g - c) / (g * (g - 1)))
    if name == "rloo":
        return r - others / (g - 1)
    if name == "passk":
        k = params["k"]
        s = k * (1.0 if r else pkpo_rho(g - 1, others, k - 1))
        return s - k * pkpo_rho(g - 1, others, min(k, g - 1))
    if name == "maxrl":
        return g * r / c - 1.0
    if name == "optimal_baseline":
        kappa = params.get("kappa", 1.0)
        return r - kappa * others / (kappa * others + (g - 1 - others))
    raise ValueError(f"no closed form for advantage {name!r}; batch estimators: pass others=(...)")


def target_advantage(name: str, r, p, g: int, target: str = "pass@1", **params):
    """A for a response with reward r: r - p, or the estimator's own objective's advantage."""
    if target not in ("pass@1", "own"):
        raise ValueError(f"target must be 'pass@1' or 'own', got {target!r}")
    base = r - p
    if target == "own" and name == "passk":
        return params["k"] * (1 - p) ** (params["k"] - 1) * base
    if target == "own" and name == "maxrl":
        return -np.expm1(g * np.log1p(-p)) * base / p
    return base


def _rates(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("success rate p must lie in [0, 1]")
    return np.clip(p, EDGE, 1 - EDGE)


def _average(p, g, reward, value, target_of):
    """E[value(r, c') - target(r, p) | S(, r_i = reward)] with value [G] over c' = 0..G-1."""
    pmf = _binomial_pmf(p, g - 1)  # (..., G): the others' count
    rewards = (0, 1) if reward is None else (reward,)
    num = den = 0.0
    for r in rewards:
        on_s = np.array([1 <= r + c <= g - 1 for c in range(g)], dtype=np.float64)
        weight = pmf * on_s * (p[..., None] if r else 1 - p[..., None])  # P(r_i = r, c', S)
        with np.errstate(divide="ignore", invalid="ignore"):  # off S (c = 0 or G) a value may be undefined
            vals = np.where(on_s > 0, value(r), 0.0)
        num = num + (weight * vals).sum(-1) - weight.sum(-1) * target_of(r)
        den = den + weight.sum(-1)
    out = num / den
    return out if np.ndim(out) else float(out)


def estimator_bias(name: str, p, g: int, reward: int | None = None, others=(), target: str = "pass@1", **params):
    """E[A_hat - A | S] for a response with reward ``reward`` (None: averaged given S), exact.

    Group-local estimators in closed form; with ``others`` (the success rates of the batch's
    other prompts) or for a batch estimator, by enumerating every batch through the registered
    estimator (``others`` must then be given)."""
    _check_group(g)
    if reward not in (None, 0, 1):
        raise ValueError(f"reward must be 0, 1 or None, got {reward!r}")
    p = _rates(p)
    counts = np.arange(g)
    if others or name in BATCH_ESTIMATORS:
        return enumerated_bias(name, p, g, reward, others, target, **params)
    return _average(p, g, reward, lambda r: closed_form_advantage(name, r, counts, g, **params),
                    lambda r: target_advantage(name, r, p, g, target, **params))


def _batch(r: int, own: int, counts: tuple, g: int) -> list[list[float]]:
    """One batch [P, G]: this prompt (response 0 = r, then ``own`` correct), the others' counts."""
    first = [float(r)] + [1.0] * own + [0.0] * (g - 1 - own)
    return [first] + [[1.0] * c + [0.0] * (g - c) for c in counts]


def enumerated_bias(name: str, p, g: int, reward: int | None = None, others=(), target: str = "pass@1", **params):
    """``estimator_bias`` by enumerating every batch: this prompt's other G - 1 answers and the
    counts of the prompts in ``others``, the registered estimator on each batch [N, P, G]."""
    _check_group(g)
    if name in BATCH_ESTIMATORS and not others:
        raise ValueError(f"{name} is a batch estimator: give the success rates of the batch's other prompts (others=...)")
    if g * (g + 1) ** len(others) > MAX_BATCHES:
        raise ValueError(f"{g * (g + 1) ** len(others)} batches to enumerate (max {MAX_BATCHES}): use mc_estimator_bias")
    p = _rates(p)
    estimate = ADVANTAGES.build({"name": name, **params})
    grid = list(itertools.product(range(g + 1), repeat=len(others)))  # the other prompts' counts
    weight_others = np.array([math.prod(_binomial_pmf(q, g)[c] for q, c in zip(others, cs)) for cs in grid])
    values = {}
    for r in (0, 1):
        batches = torch.tensor([_batch(r, own, cs, g) for own in range(g) for cs in grid], dtype=torch.float64)
        adv = estimate(batches)[:, 0, 0].numpy().reshape(g, len(grid))  # (own count, others' counts)
        values[r] = adv @ weight_others  # E over the other prompts, per own count: (G,)
    return _average(p, g, reward, lambda r: values[r], lambda r: target_advantage(name, r, p, g, target, **params))


def mc_estimator_bias(name: str, p: float, g: int, reward: int | None = None, others=(), target: str = "pass@1",
                      n: int = 200_000, seed: int = 0, chunk: int = 50_000, **params) -> MCResult:
    """Monte-Carlo ``estimator_bias``: n simulated batches (this prompt with rate p, then
    ``others``), response 0's advantage from the registered estimator, batches on S kept."""
    _check_group(g)
    estimate = ADVANTAGES.build({"name": name, **params})
    rng = np.random.default_rng(seed)
    rates = np.array([p, *others], dtype=np.float64)[:, None]  # (P, 1)
    values = []
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        rewards = (rng.random((m, len(rates), g)) < rates).astype(np.float64)  # (m, P, G)
        if reward is not None:
            rewards[:, 0, 0] = reward
        total = rewards[:, 0].sum(-1)
        keep = (total >= 1) & (total <= g - 1)
        adv = estimate(torch.from_numpy(rewards[keep]))[:, 0, 0].numpy()
        values.append(adv - target_advantage(name, rewards[keep][:, 0, 0], p, g, target, **params))
    return _mean_se(np.concatenate(values))
