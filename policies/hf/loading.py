"""Find, load and prepare a causal LM: weights check before anything heavy, dtype, device,
LoRA, gradient checkpointing, frozen reference."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from pathlib import Path

import torch

from algorithms.registry import ConfigError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "adapter_model.safetensors")


def missing_weights_message(model_path: str, reason: str, hub_id: bool) -> str:
    name = Path(model_path).name or "model"
    if hub_id:
        how = (f"The hub is not contacted from here: download the weights where it is reachable "
               f"(hf download {model_path} --local-dir /data/{name}), copy the folder to this machine and "
               f"run with policy.model_path=/data/{name} (or set policy.allow_download=true on a machine with hub "
               f"access).")
    else:
        how = ("Put the model's files there (config.json, *.safetensors, tokenizer files) or run with "
               "policy.model_path=/path/to/the/model/folder.")
    return f"policy.model_path: no model weights at {model_path!r} ({reason}). {how}"


def has_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any((folder / f).is_file() for f in WEIGHT_FILES)


def resolve_model_path(model_path: str, allow_download: bool) -> str:
    """A local folder holding config.json and weights, checked before anything is loaded or
    written: ``model_path`` itself, or a hub id's snapshot in the local Hugging Face cache."""
    folder = Path(model_path).expanduser()
    if folder.is_dir():
        if not has_weights(folder):
            raise ConfigError(missing_weights_message(model_path, "the folder has no config.json and weights", False))
        return str(folder)
    is_hub_id = model_path.count("/") == 1 and not model_path.startswith((".", "/", "~"))
    if not is_hub_id:
        raise ConfigError(missing_weights_message(model_path, "no such folder", False))
    if allow_download:
        return model_path
    from huggingface_hub import snapshot_download

    try:
        cached = Path(snapshot_download(model_path, local_files_only=True))
    except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
        raise ConfigError(missing_weights_message(model_path, "no such folder, and not in the local Hugging Face cache",
                                                  True)) from None
    if not has_weights(cached):
        raise ConfigError(missing_weights_message(model_path, f"the cached snapshot {cached} is incomplete", True))
    return str(cached)


@contextlib.contextmanager
def main_process_first():
    """Under several processes, the main one runs the block first (builds a cache, say) while
    the others wait, then they run it (and find the cache). One process: just the block."""
    import torch.distributed as dist

    several = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    main = not several or dist.get_rank() == 0
    if not main:
        dist.barrier()
    try:
        yield
    finally:
        if several and main:
            dist.barrier()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("policy.device: cuda requested but no GPU is available")
    return torch.device(name)


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, name)


def load_model(path: str, params, device: torch.device, dtype: torch.dtype):
    """The causal LM in train mode on ``device``: trainable weights in float32 (the optimizer's
    precision), LoRA adapters when ``params.lora.r > 0`` (base weights frozen in ``dtype``)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line per run is enough: the trainer has its own bar
    lora = params.lora.r > 0
    storage = dtype if lora else torch.float32
    model = AutoModelForCausalLM.from_pretrained(path, dtype=storage, attn_implementation=params.attn_implementation)
    model.to(device)
    model.config.use_cache = False  # training passes; sampling asks for the cache explicitly
    if params.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        from peft import LoraConfig, get_peft_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.lora.init_seed)
            model = get_peft_model(model, LoraConfig(r=params.lora.r, lora_alpha=params.lora.alpha,
                                                     lora_dropout=params.lora.dropout,
                                                     target_modules=params.lora.target_modules, task_type="CAUSAL_LM"))
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    model.train()
    return model


def frozen_copy(model):
    """The reference policy of the KL penalty: a frozen copy of the initial weights."""
    ref = copy.deepcopy(model)
    ref.requires_grad_(False)
    ref.eval()
    return ref


def load_tokenizer(path: str, chat_template: bool):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if chat_template and tokenizer.chat_template is None:
        raise ConfigError(f"policy.chat_template: the tokenizer at {path} has no chat template; "
                          "set policy.chat_template=false to feed prompts as plain text")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode_prompt(tokenizer, text: str, chat_template: bool, chat_template_kwargs: dict | None = None) -> list[int]:
    """Prompt ids: a user turn of the chat template with the generation prompt, or the plain text."""
    if chat_template:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=True, return_dict=False,
                                            add_generation_prompt=True, **(chat_template_kwargs or {}))
    else:
        ids = tokenizer(text)["input_ids"]
    return list(ids)


def stop_token_ids(tokenizer, model) -> list[int]:
    """Every id that ends a response: the tokenizer's eos and the generation config's eos ids."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


@functools.cache
def _forward_takes_cache(module_type: type) -> bool:
    return "cache" in inspect.signature(module_type.forward).parameters


def cache_kwarg(module, cache) -> dict:
    """``{"cache": cache}`` for a forward that takes ``cache`` (transformers >= 5.2x renamed it),
    else ``{"past_key_values": cache}``: no deprecation warning on every step, either version.
    The signature is read once per module class (this runs every decode step)."""
    return {"cache": cache} if _forward_takes_cache(type(module)) else {"past_key_values": cache}
