"""Advantage reweighters: (advantages [P, G], rewards [P, G]) -> (advantages' [P, G], stats).

A reweighter multiplies each response's advantage by a weight (one weight for every
token of the response). Some hold state across steps (HA-DW's belief); they expose
``state_dict`` / ``load_state_dict`` so that a resumed run continues exactly.

Leading dimensions are independent runs (the batched simulator): advantages and rewards
[R, P, G], state such as HA-DW's belief [R], every stat [R]. A fresh reweighter takes its
run shape from its first call.

Stats are detached tensors (0-dim for one run), read at logging time only:
``phi/correct`` and ``phi/incorrect`` are the mean weight of responses above and
below their group's baseline (for binary rewards: correct and wrong answers of mixed
groups; degenerate groups carry no gradient and are left out).
"""

from __future__ import annotations

import attrs
import torch

from algorithms.losses import nan_masked_mean
from algorithms.registry import NoParams, Registry, between, ge, gt, integer

REWEIGHTERS = Registry("reweighter", "advantages [P, G], rewards [P, G] -> (advantages [P, G], stats)")


def weight_stats(weights: torch.Tensor, advantages: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean weight over responses with A > 0 and with A < 0, per run; NaN where there are none (no host sync)."""
    return {"phi/correct": nan_masked_mean(weights, advantages > 0, dim=(-2, -1)),
            "phi/incorrect": nan_masked_mean(weights, advantages < 0, dim=(-2, -1))}


def hadw_phi(advantages: torch.Tensor, rewards: torch.Tensor, anchor: torch.Tensor, lambda_scale: float) -> torch.Tensor:
    """HA-DW weight Phi [..., P, G] = lambda_scale * exp(D * M) for an anchor C [...] (one per run).

    diff = p_hat - C per prompt; D = -sgn(A_hat) * sgn(diff); M = |diff|.
    """
    p_hat = rewards.mean(dim=-1, keepdim=True)  # (..., P, 1)
    diff = p_hat - anchor.to(rewards.dtype)[..., None, None]
    direction = -torch.sign(advantages) * torch.sign(diff)  # D, (..., P, G)
    return lambda_scale * torch.exp(direction * diff.abs())


def per_run_state(state: torch.Tensor, runs: torch.Size, fresh: bool, what: str) -> torch.Tensor:
    """``state`` [k, *old] as [k, *runs]: a fresh state (identical for every run) is copied to
    the run shape of the rewards; a state that has already seen other runs is refused."""
    if state.shape[1:] == runs:
        return state
    if not fresh:
        raise ValueError(f"{what}: state holds runs of shape {tuple(state.shape[1:])}, rewards have {tuple(runs)}")
    return state[(slice(None),) + (None,) * len(runs)].expand(-1, *runs).clone()


def hadw_output(phi: torch.Tensor, advantages: torch.Tensor, anchor: torch.Tensor, **extra: torch.Tensor):
    """(Phi * A, stats) with the anchor used (per run), the weight stats and any extra stats."""
    stats = {"hadw/belief": torch.broadcast_to(anchor.float(), phi.shape[:-2]), **{k: v.float() for k, v in extra.items()}}
    stats.update(weight_stats(phi, advantages))
    return phi * advantages, stats


class Reweighter:
    """Base class: stateless by default."""

    def __init__(self, params=NoParams()):
        self.params = params

    def __call__(self, advantages: torch.Tensor, rewards: torch.Tensor):
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@REWEIGHTERS.register("none")
class Identity(Reweighter):
    """No reweighting: A' = A (every weight 1)."""

    def __call__(self, advantages, rewards):
        return advantages, weight_stats(torch.ones_like(advantages), advantages)


@attrs.frozen
class HADWParams:
    lambda_scale: float = attrs.field(default=1.5, validator=gt(0.0))
    """Scale of the weight Phi = lambda_scale * exp(D * M) (paper's best: 1.5)."""
    eta: float = attrs.field(default=1.0, validator=gt(0.0))
    """Base gain: eta_t = eta * sigma_t, clipped to [0, 1] (paper: no default; see module doc)."""
    window: int = attrs.field(default=10, validator=integer(2))
    """m: number of past beliefs whose standard deviation sets the gain."""
    c0: float = attrs.field(default=0.5, validator=between(0.0, 1.0))
    """Initial belief C_0 about the batch accuracy, before any data."""
    sigma_floor: float = attrs.field(default=0.05, validator=between(0.0, 0.5))
    """Lower bound on sigma_t (ours; 0 = the paper's recursion exactly, which can freeze)."""


# Standard deviation used while fewer than two beliefs exist: 0.5 is the largest
# standard deviation any set of accuracies in [0, 1] can have (maximal uncertainty,
# so the first observation moves the belief the most: eta_1 = eta / 2).
SIGMA_NO_HISTORY = 0.5


@REWEIGHTERS.register("hadw", HADWParams)
class HADW(Reweighter):
    """HA-DW (Yang et al. 2026, arXiv 2601.08521, Sec. 3): history-aware difficulty weights.

    Per step t, with all responses of the batch:
        y_t     = K_t / B_t                                   batch accuracy
        sigma_t = max(std of the last ``window`` beliefs, sigma_floor)   (population std)
        eta_t   = clip(eta * sigma_t, 0, 1)
        diff_i  = p_hat_i - C_t^-                             per prompt, prior belief
        D       = -sgn(A_hat) * sgn(diff),  M = |diff|
        Phi     = lambda_scale * exp(D * M),  A' = Phi * A_hat
        C_t^+   = (1 - eta_t) C_t^- + eta_t y_t,  C_{t+1}^- = C_t^+

    Defaults, which the paper does not state:
    * ``c0 = 0.5``: the uninformative belief, and the accuracy at which the group baseline
      is unbiased. Initialising from the first batch instead would make the first two
      beliefs equal, sigma = 0 and the gain zero for good: the belief would freeze.
    * fewer than two beliefs (step 1 only): sigma_t = 0.5, the maximal possible std.
    * ``sigma_floor = 0.05`` (our addition, the analogue of a Kalman filter's process
      noise): the paper's recursion has an absorbing state. Once two consecutive beliefs
      are equal (or nearly: the belief barely moves while accuracy is flat), sigma_t = 0,
      eta_t = 0 and the belief never moves again, however far the accuracy drifts. On the
      default bandit without the floor the belief stays at 0.507 while accuracy climbs
      from 0.5 to 0.97. With the floor the gain is at least eta * 0.05 per step.
      ``sigma_floor = 0`` restores the paper's recursion exactly.
    * ``eta = 1``, ``window = 10``: the gain is then 5% per step when the belief is
      steady (a time constant of 20 steps) and up to 50% when recent beliefs spread
      widely (the model is changing fast). With eta = 0.1 the time constant would be
      200 steps: the anchor would lag a whole run behind the accuracy.
    The weights use the prior C_t^- (the belief before this batch) so that the anchor is
    history: the batch does not judge its own difficulty.
    """

    def __init__(self, params: HADWParams):
        super().__init__(params)
        self.prior = torch.tensor(params.c0, dtype=torch.float64)  # (...,) one belief per run
        self.history = torch.zeros(params.window, dtype=torch.float64)  # (window, ...)
        self.history[0] = params.c0
        self.count = 1  # beliefs recorded so far (host-side integer: no sync)

    def gain(self) -> torch.Tensor:
        """eta_t from the standard deviation of the recorded beliefs."""
        n = min(self.count, self.params.window)
        if n < 2:
            sigma = torch.full(self.prior.shape, SIGMA_NO_HISTORY, dtype=torch.float64)
        else:
            sigma = self.history[:n].std(dim=0, unbiased=False).clamp_min(self.params.sigma_floor)
        return (self.params.eta * sigma).clamp(0.0, 1.0)

    def __call__(self, advantages, rewards):
        fresh = self.count == 1
        self.history = per_run_state(self.history, rewards.shape[:-2], fresh, "hadw")
        self.prior = self.prior.expand(self.history.shape[1:]).clone() if fresh else self.prior
        prior = self.prior.to(rewards.device)
        phi = hadw_phi(advantages, rewards, prior, self.params.lambda_scale)
        eta_t = self.gain().to(rewards.device)
        y_t = rewards.detach().to(torch.float64).mean(dim=(-2, -1))
        posterior = (1.0 - eta_t) * prior + eta_t * y_t
        self.prior = posterior.cpu()
        self.history[self.count % self.params.window] = self.prior
        self.count += 1
        return hadw_output(phi, advantages, prior, **{"hadw/eta": eta_t, "hadw/batch_acc": y_t})

    def state_dict(self) -> dict:
        return {"prior": self.prior.clone(), "history": self.history.clone(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        if state["history"].shape[0] != self.params.window:
            raise ValueError(
                f"HA-DW checkpoint has window {state['history'].shape[0]}, config has {self.params.window}"
            )
        self.prior = state["prior"].clone()
        self.history = state["history"].clone()
        self.count = int(state["count"])



@attrs.frozen
class HADWWindowParams:
    lambda_scale: float = attrs.field(default=1.5, validator=gt(0.0))
    """Scale of Phi (the authors' code: 1.5)."""
    window: int = attrs.field(default=10, validator=integer(1))
    """k: the anchor is the mean of the last k batch accuracies (the authors' code: 10)."""


@REWEIGHTERS.register("hadw_window", HADWWindowParams)
class HADWWindow(Reweighter):
    """HA-DW as in the authors' released code: anchor = mean of the last k batch accuracies.

    The current batch's accuracy is appended *before* the weights are computed, so the
    anchor includes this batch (unlike ``hadw``, whose anchor is the prior belief).
    """

    def __init__(self, params: HADWWindowParams):
        super().__init__(params)
        self.accuracies = torch.zeros(params.window, dtype=torch.float64)  # (window, ...)
        self.count = 0

    def __call__(self, advantages, rewards):
        self.accuracies = per_run_state(self.accuracies, rewards.shape[:-2], self.count == 0, "hadw_window")
        self.accuracies[self.count % self.params.window] = rewards.detach().to(torch.float64).mean(dim=(-2, -1)).cpu()
        self.count += 1
        anchor = self.accuracies[: min(self.count, self.params.window)].mean(dim=0)
        phi = hadw_phi(advantages, rewards, anchor.to(rewards.device), self.params.lambda_scale)
        return hadw_output(phi, advantages, anchor)

    def state_dict(self) -> dict:
        return {"accuracies": self.accuracies.clone(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        if state["accuracies"].shape[0] != self.params.window:
            raise ValueError(f"hadw_window checkpoint has window {state['accuracies'].shape[0]}, config has {self.params.window}")
        self.accuracies = state["accuracies"].clone()
        self.count = int(state["count"])


@attrs.frozen
class HADWFixedParams:
    lambda_scale: float = attrs.field(default=1.5, validator=gt(0.0))
    """Scale of Phi."""
    anchor: float = attrs.field(default=0.5, validator=between(0.0, 1.0))
    """The constant anchor C (the paper's ablation: 0.4, 0.5, 0.6)."""


@REWEIGHTERS.register("hadw_fixed", HADWFixedParams)
class HADWFixed(Reweighter):
    """HA-DW with a constant anchor C: the ablation without history (arXiv:2601.08521)."""

    def __call__(self, advantages, rewards):
        anchor = torch.tensor(self.params.anchor, dtype=rewards.dtype, device=rewards.device)
        return hadw_output(hadw_phi(advantages, rewards, anchor, self.params.lambda_scale), advantages, anchor)


@attrs.frozen
class FocalParams:
    gamma: float = attrs.field(default=1.0, validator=ge(0.0))
    """Focusing exponent: weight (1 - p_hat)^gamma (0 = no reweighting; default ours)."""


@REWEIGHTERS.register("focal", FocalParams)
class Focal(Reweighter):
    """F-GRPO (Plyusov et al. 2026, arXiv:2602.06717): A' = (1 - p_hat)^gamma * A per group.

    Down-weights high-success groups, whose updates concentrate mass on the common correct
    mode and shrink unsampled rare correct modes. gamma defaults to 1 (our choice; the
    paper treats it as a tuned hyperparameter, gamma = 0 recovers the base algorithm).
    """

    def __call__(self, advantages, rewards):
        p_hat = rewards.mean(dim=-1, keepdim=True)  # (..., P, 1)
        weight = (1.0 - p_hat).clamp_min(0.0).pow(self.params.gamma).expand_as(advantages)  # (..., P, G)
        return weight * advantages, weight_stats(weight, advantages)


@attrs.frozen
class AGRAEParams:
    alpha: float = attrs.field(default=1.0, validator=gt(0.0))
    """Positive advantages are scaled by min(1, p_bar / alpha) (the authors: 1 for math)."""
    eps: float = attrs.field(default=1e-6, validator=gt(0.0))
    """Added to the denominators sqrt(p_hat) and 1 - sqrt(p_hat)."""


@REWEIGHTERS.register("agrae", AGRAEParams)
class AGRAE(Reweighter):
    """A-GRAE (arXiv:2602.05548), following the authors' released code.

    With p_bar the batch accuracy and p_hat each group's:
        A_hard = 0.5 A / (sqrt(p_hat) + eps)        focus on hard prompts
        A_easy = 0.5 A / (1 - sqrt(p_hat) + eps)    focus on easy prompts
        A'     = (1 - p_bar) A_easy + p_bar A_hard   moves from easy to hard as p_bar grows
        A'     = A' * min(1, p_bar / alpha)          for A' > 0 only (asymmetry)
    The released code guards this whole branch with ``weight == 2.0`` while its schedule
    starts the weight off 2.0, so as released it never runs; this is the intended
    behaviour, applied every step. Degenerate groups have A = 0 and stay 0 (finite for
    p_hat in {0, 1}).
    """

    def __call__(self, advantages, rewards):
        eps = self.params.eps
        p_hat = rewards.mean(dim=-1, keepdim=True).clamp(0.0, 1.0)  # (..., P, 1)
        p_bar = rewards.mean(dim=(-2, -1), keepdim=True).clamp(0.0, 1.0)  # (..., 1, 1) batch accuracy per run
        root = p_hat.sqrt()
        a_hard = 0.5 * advantages / (root + eps)
        a_easy = 0.5 * advantages / (1.0 - root + eps)
        mixed = (1.0 - p_bar) * a_easy + p_bar * a_hard
        positive_scale = torch.clamp(p_bar / self.params.alpha, max=1.0)
        out = torch.where(mixed > 0, mixed * positive_scale, mixed)
        weight = torch.where(advantages != 0, out / advantages, torch.ones_like(advantages))  # effective Phi
        stats = {"agrae/batch_acc": p_bar.float()[..., 0, 0]}
        stats.update(weight_stats(weight, advantages))
        return out, stats
