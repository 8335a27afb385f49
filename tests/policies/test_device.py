"""The tiny Qwen3's warm start and a training step on the test device (``RLVR_TEST_DEVICE``:
the CPU here, the GPU under ``bash .ci/gpu``)."""

import hashlib
import importlib
import json
import math

import attrs
import torch

from tests.hf_fixtures import DEVICE

from experiments.training.build import build_trainer, compose_config  # noqa: E402
from policies.hf.tiny import TINY_CONFIG, WarmStartParams, ensure_tiny_qwen3  # noqa: E402

W = importlib.import_module("policies.hf.tiny.warm_start")  # the module (the package exports its function)


def test_the_warm_start_trains_on_the_policy_device_in_its_own_folder(tmp_path, monkeypatch):
    devices = []
    original = W.target_loss

    def spy(model, *tensors_and_smoothing):
        devices.append({model.device.type, *(t.device.type for t in tensors_and_smoothing[:4])})
        return original(model, *tensors_and_smoothing)

    monkeypatch.setattr(W, "target_loss", spy)
    params = WarmStartParams(steps=3, batch_size=4, levels=(1,))
    folder = ensure_tiny_qwen3(tmp_path, params, device=DEVICE)
    assert devices == [{torch.device(DEVICE).type}] * 3  # model and batches on the device, every step
    assert math.isfinite(json.loads((folder / "warm_start.json").read_text())["final_loss"])
    key = {**attrs.asdict(params), "chat_template": True, "config": TINY_CONFIG}
    if DEVICE != "cpu":  # other last bits: its own folder; the CPU's folder name is the one it always was
        key["device"] = torch.device(DEVICE).type
    assert folder.name == "warm-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def test_a_training_step_on_the_device(tmp_path):
    cfg = compose_config("policy=tiny-qwen3", "env=arithmetic", "algo=grpo_hadw", f"policy.model_path={tmp_path / 'c'}",
                         "policy.warm_start.steps=0", f"policy.device={DEVICE}", "policy.dtype=float32",
                         "policy.max_new_tokens=6", "train.prompts_per_step=2", "train.group_size=3",
                         "train.progress=false", "algo.kl.beta=0.1")
    trainer = build_trainer(cfg, tmp_path / "run")
    assert next(trainer.policy.model.parameters()).device.type == torch.device(DEVICE).type
    values = trainer.train_step()
    assert math.isfinite(values["loss/value"]) and math.isfinite(values["loss/grad_norm"])
    assert values["loss/kl_ref"] == 0.0  # the reference is the policy before its first update


def test_the_gpu_stage_runs_these_device_aware_tests():
    """``.ci/gpu`` names test files that exist and take their device from ``RLVR_TEST_DEVICE``."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = (root / ".ci" / "gpu").read_text()
    assert "RLVR_TEST_DEVICE=cuda" in script
    files = re.findall(r"tests/\S+\.py", script)
    assert Path(__file__).relative_to(root).as_posix() in files and "tests/policies/test_hf_policy.py" in files
    for name in files:
        assert "make_policy" in (root / name).read_text() or "DEVICE" in (root / name).read_text(), name
