"""``python -m experiments.bench.gpu`` at toy size on the CPU (so that the GPU benchmark cannot rot)."""

import json

import pytest
import torch

from experiments.bench import gpu
from tests.conftest import run_cli


@pytest.mark.slow
def test_the_gpu_bench_prints_its_table_at_toy_size_on_the_cpu(tmp_path):
    out = run_cli("size=toy", "device=cpu", "steps=1", f"out={tmp_path / 'rows.json'}", module="experiments.bench.gpu",
                  timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "CPU, float32: P=2 x G=4, 8 new tokens" in out.stdout and "gen tok/s" in out.stdout
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert [r["shape"] for r in rows] == ["toy", "toy-vocab"]
    for r in rows:
        assert r["sample_tokens_per_s"] > 0 and r["update_s"] > 0 and r["mfu"] is None  # no peak known for a CPU
        assert r["step_s"] == pytest.approx(r["sample_s"] + r["old_logp_s"] + r["reward_s"] + r["update_s"])
        assert "GiB" in r["logprob_pass"]["chunked"] and "GiB" in r["logprob_pass"]["full"]
    assert rows[1]["params"] > gpu.QWEN3_VOCAB * 64  # the real vocabulary


def test_peak_flops_by_gpu_name_or_given(monkeypatch):
    cuda = torch.device("cuda")
    for name, tflops in [("NVIDIA H200", 989.4), ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0),
                         ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA L4", None)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, _n=name: _n)
        assert gpu.peak_flops(cuda, None) == (None if tflops is None else tflops * 1e12), name
    assert gpu.peak_flops(torch.device("cpu"), None) is None and gpu.peak_flops(torch.device("cpu"), 2.0) == 2e12
