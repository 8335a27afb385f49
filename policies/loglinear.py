"""Log-linear policy over candidate answers: prompts share parameters through latent skills.

    logits[i, a] = (1 - s) u[i, a] + s theta . phi(i, a),   phi(i, a) = M[i] (x) e_a
                 = (1 - s) u[i, a] + s (M @ theta)[i, a]

M [P_total, S] is fixed: each prompt a random mixture of S latent skills (Dirichlet rows drawn
from ``seed``); theta [S, K] are the shared parameters (how much each skill favours each answer
index); u [P_total, K] the per-prompt terms. The knob s = ``sharing``: at 0 only u exists, the
tabular policy exactly (same parameter, same operations, same numbers); at 1 only theta, so an
update on one prompt moves the success probability of every prompt that shares a skill with it.
The whole answer distribution stays known (``AnswerDistribution``): exact accuracy and the true
advantage bias are logged as with the tabular policy. "Log-linear": the logits are linear in the
features phi, the usual name of this policy class in policy-gradient theory.
"""

from __future__ import annotations

import attrs
import numpy as np
import torch
from torch import nn

from algorithms.registry import between, gt, integer
from policies.registry import POLICIES
from policies.tabular import AnswerTablePolicy, TabularInit, TabularParams, answer_table, check_logits


@attrs.frozen
class LogLinearInit(TabularInit):
    sharing: float = attrs.field(default=0.5, validator=between(0.0, 1.0))
    """s: weight of the shared part theta . phi(i, a); 1 - s weights the per-prompt terms (0: the tabular policy, 1: no per-prompt terms)."""
    skills: int = attrs.field(default=8, validator=integer(1))
    """S: latent skills; each prompt is a fixed mixture of them (a row of M)."""
    concentration: float = attrs.field(default=0.5, validator=gt(0.0))
    """Dirichlet concentration of each prompt's skill mixture (small: a prompt draws on few skills)."""
    seed: int = attrs.field(default=0, validator=integer(0))
    """Seed of the mixing matrix M (the same M for every run that shares the policy config)."""


def skill_mixture(num_prompts: int, skills: int, concentration: float, seed: int) -> torch.Tensor:
    """[P_total, S] M: row i is prompt i's mixture of S skills, Dirichlet(concentration) (rows sum to 1)."""
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.dirichlet(np.full(skills, float(concentration)), size=num_prompts), dtype=torch.float32)


def fit_skills(mixing: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """[S, K] theta whose shared logits M @ theta are the least-squares fit of ``logits`` [P_total, K]
    (centred per prompt: a softmax ignores a row's offset)."""
    centred = logits - logits.mean(-1, keepdim=True)
    return torch.linalg.lstsq(mixing.double(), centred.double()).solution.float()


class LogLinearPolicy(AnswerTablePolicy):
    """pi(a | i) = softmax((1 - s) u[i] + s M[i] @ theta)[a] (module docstring).

    Initial weights (``init_logits`` [P_total, K], the task's: each prompt's initial p):
    theta is their least-squares fit by the skills, and u what makes the table equal to them
    (for s < 1 the initial policy is the task's; at s = 1 it is the best shared fit).
    """

    def __init__(self, table: TabularParams, sharing: float, mixing: torch.Tensor,
                 init_logits: torch.Tensor | None = None, candidates: tuple[tuple[str, ...], ...] | None = None):
        shape = (table.num_prompts, table.num_answers)
        super().__init__(shape, candidates)
        if not 0.0 <= sharing <= 1.0:
            raise ValueError(f"sharing must be in [0, 1], got {sharing}")
        if mixing.dim() != 2 or mixing.shape[0] != shape[0]:
            raise ValueError(f"mixing has shape {tuple(mixing.shape)}, expected ({shape[0]}, S)")
        self.sharing = float(sharing)
        self.register_buffer("mixing", mixing.float())
        target = check_logits(init_logits, shape).clone().float()
        if self.sharing > 0:
            self.theta = nn.Parameter(fit_skills(self.mixing, target))
        if self.sharing == 0:
            self.per_prompt = nn.Parameter(target)  # the tabular policy's parameter, as it has it
        elif self.sharing < 1:
            with torch.no_grad():
                self.per_prompt = nn.Parameter((target - self.sharing * (self.mixing @ self.theta)) / (1 - self.sharing))
        self.freeze_reference()

    def logit_table(self, weights: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        w = self.weights() if weights is None else weights
        s = self.sharing
        if s == 0:  # no shared part at all: bit for bit the tabular policy
            return w["per_prompt"]
        shared = torch.matmul(self.mixing, w["theta"])  # (..., P_total, K)
        if s == 1:
            return shared
        return (1 - s) * w["per_prompt"] + s * shared


@POLICIES.register("loglinear", LogLinearInit)
def loglinear_policy(task, reference: bool = False, *, init: str, max_new_tokens: int, sharing: float,
                     skills: int, concentration: float, seed: int) -> LogLinearPolicy:
    """Log-linear softmax over the task's candidate answers; prompts share ``skills`` latent skills.

    The reference of the KL penalty (the initial table) is a small buffer, kept either way.
    """
    table, candidates = answer_table(task, "loglinear")
    mixing = skill_mixture(table.num_prompts, skills, concentration, seed)
    return LogLinearPolicy(table, sharing, mixing, task.initial_logits if init == "task" else None, candidates)
