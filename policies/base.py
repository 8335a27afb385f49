"""The policy protocol shared by every backend (tabular, transformers, vLLM).

A policy samples G responses per prompt and scores sampled responses. The trainer
only uses this protocol, so it never knows which backend it drives.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs
import torch


@attrs.frozen
class PromptBatch:
    """The P prompts of one step."""

    ids: torch.Tensor
    """[P] long: index of each prompt in its problem source (row of the tabular policy)."""
    texts: tuple[str, ...]
    """[P] prompt strings (what a language model reads)."""

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@attrs.frozen
class Rollout:
    """B = P * G sampled responses, prompt-major: response b answers prompt b // G."""

    tokens: torch.Tensor
    """[B, T] long: response token ids (for the tabular policy, T = 1: the answer index)."""
    mask: torch.Tensor
    """[B, T] float: 1 on response tokens, 0 on padding."""
    logp: torch.Tensor
    """[B, T] float: log-probabilities of the tokens under the sampling policy (detached)."""
    prompt_ids: torch.Tensor
    """[B] long: source index of the prompt each response answers."""
    group_size: int
    """G."""
    texts: tuple[str, ...] = ()
    """[B] decoded completions (what a verifier reads); empty where not needed."""

    @property
    def num_prompts(self) -> int:
        return self.tokens.shape[0] // self.group_size

    def select(self, index: torch.Tensor) -> "Rollout":
        """Responses ``index`` [b] (a minibatch). Group structure is not kept."""
        texts = tuple(self.texts[i] for i in index.tolist()) if self.texts else ()
        return attrs.evolve(
            self,
            tokens=self.tokens[index],
            mask=self.mask[index],
            logp=self.logp[index],
            prompt_ids=self.prompt_ids[index],
            group_size=1,
            texts=texts,
        )


@runtime_checkable
class Policy(Protocol):
    """What the trainer needs from a policy backend."""

    def sample(self, prompts: PromptBatch, group_size: int, generator: torch.Generator) -> Rollout:
        """Draw ``group_size`` responses per prompt; B = P * G, prompt-major."""
        ...

    def logprobs(self, rollout: Rollout) -> torch.Tensor:
        """[B, T] log-probabilities of ``rollout.tokens`` under the current parameters (with grad)."""
        ...

    def parameters(self):  # torch.nn.Module.parameters
        ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict): ...
