"""An algorithm is a preset that names one item per stage; this module binds them.

    grpo      = group_norm + ppo_clip(0.2, 0.2) + seq_mean_token_mean
    dapo      = group_norm + ppo_clip(0.2, 0.28) + token_mean + dynamic_sampling + overlong
    grpo_hadw = grpo + reweight: hadw

``build_algorithm(algo_cfg, reweight_cfg)`` validates every stage's config once, checks
that the stages fit together, and returns an ``Algorithm`` of plain callables.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch

from algorithms.advantages import ADVANTAGES
from algorithms.aggregation import AGGREGATIONS, Totals
from algorithms.filters import FILTERS
from algorithms.losses import LOSSES, k3_kl, masked_mean
from algorithms.registry import ConfigError, build_params, ge, gt
from algorithms.reweighters import REWEIGHTERS, Reweighter
from algorithms.shaping import SHAPERS

REQUIRED_STAGES = ("advantage", "loss", "aggregation")
# Optional stages and their defaults (documented in the README): no filter, no shaping, no KL,
# no truncated importance sampling.
OPTIONAL_STAGES = {"filter": {"name": "none"}, "shaping": {"name": "none"}, "kl": {"beta": 0.0},
                   "tis": {"cap": None}}
META_KEYS = ("name", "paper")


@attrs.frozen
class KLParams:
    beta: float = attrs.field(default=0.0, validator=ge(0.0))
    """Weight of the k3 KL penalty to the reference policy (0: off, no reference needed)."""


@attrs.frozen
class TISParams:
    cap: float | None = attrs.field(default=None, validator=gt(0.0))
    """Truncated importance sampling for a separate generation engine (Yao et al. 2025, "Your
    Efficient RL Framework Secretly Brings You Off-Policy RL Training"): every token's policy
    loss is multiplied by the detached min(exp(old_logp - sampler_logp), cap). None: off. Needs
    rollouts with ``sampler_logp`` (policy.sampler=vllm); typical cap 2."""


def truncated_is_weight(old_logp: torch.Tensor, sampler_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """[B, T] min(pi_trainer / pi_sampler, cap) per token, detached: the sampled tokens came from
    the engine, the ratio's denominator ``old_logp`` is the trainer's."""
    return torch.exp(old_logp - sampler_logp).clamp(max=cap).detach()


@attrs.define
class Algorithm:
    """The bound stages of one algorithm (see DESIGN.md, "The pipeline")."""

    name: str
    """Label: the preset's base name, plus ``_<reweighter>`` when one is on."""
    advantage: Callable
    """rewards [P, G] -> advantages [P, G]."""
    reweighter: Reweighter
    """(advantages [P, G], rewards [P, G]) -> (advantages [P, G], stats); may hold state."""
    loss: Callable
    """(logp, old_logp, advantages, mask) -> (per_token [B, T], stats)."""
    aggregate: Callable
    """(per_token [b, T], mask [b, T], totals) -> scalar (see ``algorithms.aggregation``)."""
    filter: Any = attrs.field(factory=lambda: FILTERS.build({"name": "none"}))
    """``keep(rewards [P, G]) -> [P] bool`` and ``max_extra_rounds``."""
    shape: Callable = attrs.field(factory=lambda: SHAPERS.build({"name": "none"}))
    """(rewards [P, G], lengths [P, G]) -> rewards [P, G]."""
    kl_beta: float = 0.0
    """Weight of the k3 KL penalty to the reference policy."""
    tis_cap: float | None = None
    """Cap of the truncated importance-sampling weight on the policy loss (None: off)."""

    def objective(self, logp: torch.Tensor, mb, totals: Totals) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The scalar loss of one micro-batch ``mb`` (a ``Rollout`` with ``advantages``, and
        ``ref_logp`` when the KL penalty is on) and its stats.

        ``logp`` [b, T] are the current log-probs (with grad). Padded positions may hold
        anything, -inf or NaN included: they are replaced by 0 before any arithmetic, so
        neither the loss nor its gradient sees them. ``totals`` are the whole minibatch's
        counts, so the scalars of a minibatch's micro-batches add up to its loss. With
        ``tis_cap`` the policy loss of each token (not the KL penalty) is multiplied by
        ``truncated_is_weight(old_logp, sampler_logp, tis_cap)``.
        """
        valid = mb.mask.bool()
        zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
        logp = torch.where(valid, logp, zero)
        old_logp = torch.where(valid, mb.old_logp, zero)
        advantages = mb.advantages[:, None].to(logp.dtype)  # (b, 1): one value per response
        per_token, stats = self.loss(logp, old_logp, advantages, mb.mask)  # (b, T)
        if self.tis_cap is not None:
            if mb.sampler_logp is None:
                raise ValueError("algo.tis.cap is set but the rollout has no sampler_logp: truncated importance "
                                 "sampling corrects a separate generation engine (policy.sampler=vllm)")
            weight = truncated_is_weight(old_logp, torch.where(valid, mb.sampler_logp, zero), self.tis_cap)  # (b, T)
            per_token = per_token * weight
            stats = {**stats, "tis_weight": masked_mean(weight, mb.mask),
                     "tis_capped_frac": masked_mean((weight >= self.tis_cap).to(logp.dtype), mb.mask)}
        if self.kl_beta > 0:
            kl = k3_kl(logp, torch.where(valid, mb.ref_logp, zero))  # (b, T)
            per_token = per_token + self.kl_beta * kl
            stats = {**stats, "kl_ref": masked_mean(kl.detach(), mb.mask)}
        return self.aggregate(per_token, mb.mask, totals), stats


def as_group_rewards(rewards) -> torch.Tensor:
    """Rewards as a float tensor [P, G] (one row per prompt's group; leading run dimensions
    allowed). Lists and numpy arrays are converted; anything else is refused by name."""
    if not isinstance(rewards, torch.Tensor):
        try:
            rewards = torch.as_tensor(rewards, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"rewards must be a torch tensor [P, G] (or a nested list / numpy array of numbers), "
                            f"got {type(rewards).__name__}: {exc}") from None
    if rewards.dim() < 2 or rewards.shape[-1] < 1:
        raise ValueError(f"rewards must have shape [P, G] (one row of G rewards per prompt), got {tuple(rewards.shape)}")
    return rewards if rewards.is_floating_point() else rewards.float()


def _tensor_input(stage: Callable) -> Callable:
    """The advantage stage, accepting lists / numpy arrays (see ``as_group_rewards``)."""

    @functools.wraps(stage)
    def advantage(rewards):
        return stage(as_group_rewards(rewards))

    return advantage


def algorithm_label(algo_cfg: Mapping[str, Any], reweight_cfg: Mapping[str, Any] | None) -> str:
    """The preset's base name, plus ``_<reweighter>`` when one is on (e.g. ``cispo_focal``)."""
    reweight = (reweight_cfg or {}).get("name", "none")
    return algo_cfg["name"] if reweight == "none" else f"{algo_cfg['name']}_{reweight}"


def build_algorithm(algo_cfg: Mapping[str, Any], reweight_cfg: Mapping[str, Any] | None = None,
                    group_size: int | None = None) -> Algorithm:
    """Build an ``Algorithm`` from plain mappings (e.g. Hydra's ``cfg.algo`` and ``cfg.reweight``).

    ``algo_cfg`` has ``name`` and one sub-mapping per stage (``advantage``, ``loss``,
    ``aggregation``; optionally ``filter``, ``shaping``, ``kl``, ``tis``), each with its own
    ``name`` and hyperparameters. With ``group_size`` (G) an advantage whose parameters do not
    fit groups of G (passk's k > G) is refused here.
    """
    algo_cfg = dict(algo_cfg)
    valid = REQUIRED_STAGES + tuple(OPTIONAL_STAGES) + META_KEYS
    unknown = sorted(set(algo_cfg) - set(valid))
    if unknown:
        raise ConfigError(f"algo.{unknown[0]}: unknown key; valid: {', '.join(valid)}")
    for key in ("name",) + REQUIRED_STAGES:
        if key not in algo_cfg:
            raise ConfigError(f"algo.{key}: missing")
    stages = {**OPTIONAL_STAGES, **{k: v for k, v in algo_cfg.items() if k in OPTIONAL_STAGES and v is not None}}
    reweight_cfg = dict(reweight_cfg or {"name": "none"})
    check_compatible(algo_cfg)
    if group_size is not None:
        check_group_size(algo_cfg, group_size)
    return Algorithm(
        name=algorithm_label(algo_cfg, reweight_cfg),
        advantage=_tensor_input(ADVANTAGES.build(algo_cfg["advantage"], "algo.advantage")),
        reweighter=REWEIGHTERS.build(reweight_cfg, "reweight"),
        loss=LOSSES.build(algo_cfg["loss"], "algo.loss"),
        aggregate=AGGREGATIONS.build(algo_cfg["aggregation"], "algo.aggregation"),
        filter=FILTERS.build(stages["filter"], "algo.filter"),
        shape=SHAPERS.build(stages["shaping"], "algo.shaping"),
        kl_beta=build_params(KLParams, stages["kl"], "algo.kl").beta,
        tis_cap=build_params(TISParams, stages["tis"], "algo.tis").cap,
    )


def check_compatible(algo_cfg: Mapping[str, Any]) -> None:
    """Refuse stage combinations that compute something other than what their paper defines."""
    loss = LOSSES.entry(algo_cfg["loss"].get("name"), "algo.loss")
    aggregation = algo_cfg["aggregation"].get("name")
    allowed = loss.meta.get("aggregations")
    if allowed is not None and aggregation not in allowed:
        raise ConfigError(
            f"algo.aggregation.name: loss {loss.name!r} requires {' or '.join(allowed)}, got {aggregation!r}: "
            "its token-form sequence ratio yields the sequence-level gradient only when each response's "
            "tokens are averaged (other aggregations weight responses by their length)"
        )


def check_group_size(algo_cfg: Mapping[str, Any], group_size: int) -> None:
    """Refuse an advantage estimator whose params do not fit groups of ``group_size`` (a params
    class may define ``check_group_size(group_size, where)``, e.g. passk's 1 <= k <= G)."""
    _, params = ADVANTAGES.make_params(algo_cfg["advantage"], "algo.advantage")
    check = getattr(params, "check_group_size", None)
    if check is not None:
        check(group_size, "algo.advantage")


def registries() -> dict[str, Any]:
    """All stage registries by stage name (for listing and ``--stages``)."""
    return {
        "advantage": ADVANTAGES,
        "reweight": REWEIGHTERS,
        "loss": LOSSES,
        "aggregation": AGGREGATIONS,
        "filter": FILTERS,
        "shaping": SHAPERS,
    }
