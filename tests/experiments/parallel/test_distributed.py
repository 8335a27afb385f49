"""Two processes (gloo, CPU): the summed gradient equals one process's gradient of the same global batch,
with replicas (DistributedEngine) and with the model sharded (FSDPEngine, a tiny Qwen3)."""

import datetime
import os

import pytest
import torch
import torch.multiprocessing as mp

from algorithms import build_algorithm
from experiments.parallel.engine import DistributedEngine, LocalEngine
from experiments.parallel.launch import end_process
from tests.hf_fixtures import tiny_dir  # noqa: F401
from tests.test_interfaces import make_rollout

pytestmark = pytest.mark.slow  # subprocess runs and multi-process jobs: python -m pytest -m 'not slow' skips them

AGGS = [{"name": "token_mean"}, {"name": "seq_mean_token_mean"}, {"name": "seq_mean_token_sum_norm", "max_length": 9}]
LENGTHS = [5, 1, 3, 7, 2, 6, 4, 9, 8, 2]  # uneven, so the aggregations differ


class ToyLM(torch.nn.Module):
    """log pi(token_t | token_{t-1}) from an embedding and an output matrix: a tiny causal LM."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.embed = torch.nn.Parameter(torch.randn(50, 8, generator=g))
        self.out = torch.nn.Parameter(torch.randn(8, 50, generator=g) * 0.3)

    def logprobs(self, rollout):
        prev = torch.cat([rollout.prompt_tokens[:, -1:], rollout.tokens[:, :-1]], dim=1)  # (B, T)
        logp = torch.log_softmax(self.embed[prev] @ self.out, dim=-1)  # (B, T, V)
        return logp.gather(2, rollout.tokens[..., None]).squeeze(2)


def gradients(engine, model, rollout, agg):
    algo = build_algorithm({"name": "x", "advantage": {"name": "group_norm"}, "loss": {"name": "ppo_clip"}, "aggregation": agg})
    totals = engine.totals(rollout.mask)
    loss, _ = algo.objective(model.logprobs(rollout), rollout, totals)
    engine.backward(loss, sync=True)
    if isinstance(engine, DistributedEngine):
        engine.reduce_gradients()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def worker(rank, world, init_file, out_file):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = ToyLM()
        engine = DistributedEngine(torch.optim.SGD(model.parameters(), lr=0.1))
        rollout = make_rollout(LENGTHS, width=9, seed=4)
        mine = rollout.select(torch.arange(len(LENGTHS))[rank::world])  # interleaved, uneven shares
        result = {a["name"]: gradients(engine, model, mine, a) for a in AGGS}
        gathered = engine.gather(torch.arange(3 * (rank + 1)).view(-1, 1) + 100 * rank)
        if rank == 0:
            torch.save({"grads": result, "gathered": gathered}, out_file)
    finally:
        dist.destroy_process_group()
    end_process(0)  # no interpreter finalization: gloo's threads outlive the process group


def test_two_process_gradient_equals_the_single_process_gradient(tmp_path):
    out = tmp_path / "out.pt"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    model = ToyLM()
    engine = LocalEngine(torch.optim.SGD(model.parameters(), lr=0.1))
    rollout = make_rollout(LENGTHS, width=9, seed=4)
    for agg in AGGS:
        expected = gradients(engine, model, rollout, agg)
        for g, e in zip(got["grads"][agg["name"]], expected):
            assert e.abs().sum() > 0
            torch.testing.assert_close(g, e, atol=1e-5, rtol=0)
    assert got["gathered"].view(-1).tolist() == [0, 1, 2, 100, 101, 102, 103, 104, 105]


def policy_gradients(engine, policy, rollout, agg, micro: int):
    """Full gradients [every weight] of the objective over ``rollout`` in micro-batches of ``micro``
    rows, each process running as many passes as the busiest (the trainer's rule)."""
    algo = build_algorithm({"name": "x", "advantage": {"name": "group_norm"}, "loss": {"name": "ppo_clip"}, "aggregation": agg})
    engine.optimizer.zero_grad(set_to_none=True)
    totals = engine.totals(rollout.mask)
    for part, last in engine.micro_batches(rollout, micro):  # as many passes as the busiest process (idle ones)
        loss, _ = algo.objective(policy.logprobs(part), part, totals)
        engine.backward(loss, sync=last)
    return [full_tensor(p.grad).clone() for p in policy.parameters()]


def full_tensor(x):
    return x.full_tensor() if hasattr(x, "full_tensor") else x


def fsdp_worker(rank, world, init_file, out_file, model_dir):
    import torch.distributed as dist

    from algorithms import ConfigError
    from experiments.parallel.fsdp import FSDPEngine, FSDPSettings
    from tests.hf_fixtures import make_policy

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))  # a mismatched collective fails, not hangs
    try:
        policy = make_policy(model_dir, logprob_chunk=5, device="cpu")  # gloo processes
        with pytest.raises(ConfigError, match="no module of the model is a Nope; set fsdp_transformer_layer_cls"):
            FSDPEngine(policy, torch.optim.SGD, lambda optimizer: None, FSDPSettings(layer_classes=("Nope",)))
        engine = FSDPEngine(policy, lambda params: torch.optim.SGD(params, lr=0.1), lambda optimizer: None)
        assert len(engine.layers) == policy.causal.config.num_hidden_layers > 1  # every decoder layer a unit
        rollout = make_rollout(LENGTHS, width=9, seed=4)
        mine = rollout.select(torch.arange(7) if rank == 0 else torch.arange(7, 10))  # 4 passes vs 2 (+2 idle)
        result = {a["name"]: policy_gradients(engine, policy, mine, a, micro=2) for a in AGGS}
        norm = engine.step(max_grad_norm=0.01)  # the last aggregation's gradient, clipped over every shard
        with engine.full_weights():
            weights = policy.state_dict()
        shard = sum(p.to_local().numel() for p in policy.parameters())
        if rank == 0:
            torch.save({"grads": result, "norm": norm, "weights": weights, "shard": shard}, out_file)
    finally:
        dist.destroy_process_group()
    end_process(0)  # no interpreter finalization: gloo's threads outlive the process group


def test_fsdp_gradient_equals_the_single_process_gradient(tmp_path, tiny_dir):  # noqa: F811
    from tests.hf_fixtures import make_policy

    out = tmp_path / "out.pt"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(fsdp_worker, args=(2, str(tmp_path / "init"), str(out), tiny_dir), nprocs=2, join=True)
    got = torch.load(out)
    policy = make_policy(tiny_dir, logprob_chunk=5, device="cpu")  # gloo processes
    engine = LocalEngine(torch.optim.SGD(policy.parameters(), lr=0.1))
    rollout = make_rollout(LENGTHS, width=9, seed=4)
    for agg in AGGS:
        expected = policy_gradients(engine, policy, rollout, agg, micro=len(rollout))
        for g, e in zip(got["grads"][agg["name"]], expected):
            assert e.abs().sum() > 0
            torch.testing.assert_close(g, e, atol=1e-5, rtol=0)
    norm = engine.step(max_grad_norm=0.01)
    assert norm > 0.02  # the clip bites
    torch.testing.assert_close(got["norm"], norm, atol=1e-5, rtol=1e-6)
    for name, weight in policy.state_dict().items():
        torch.testing.assert_close(got["weights"][name], weight, atol=1e-6, rtol=0)
    total = sum(p.numel() for p in policy.parameters())
    assert total // 2 <= got["shard"] < total // 2 + 1000  # each process holds half of every weight


def test_distributed_engine_needs_an_initialised_group():
    with pytest.raises(RuntimeError, match="accelerate launch"):
        DistributedEngine(torch.optim.SGD(ToyLM().parameters(), lr=0.1))


def test_unsupported_launch_modes_are_refused_before_joining(monkeypatch):
    from algorithms import ConfigError
    from experiments.parallel.launch import init_processes

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    for key, value, message in [("FSDP_VERSION", "1", "fsdp_version 1 is not supported"),
                                ("FSDP_OFFLOAD_PARAMS", "true", "fsdp_offload_params: CPU offload is not supported"),
                                ("FSDP_ACTIVATION_CHECKPOINTING", "true", "use policy.gradient_checkpointing=true"),
                                ("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT", "SHARDED_STATE_DICT is not supported"),
                                ("FSDP_AUTO_WRAP_POLICY", "SIZE_BASED_WRAP", "SIZE_BASED_WRAP is not supported"),
                                ("FSDP_RESHARD_AFTER_FORWARD", "FULL_SHARD", "FSDP2 takes true or false")]:
        with monkeypatch.context() as env:
            env.setenv("FSDP_VERSION", "2")
            env.setenv(key, value)
            with pytest.raises(ConfigError, match=message):
                init_processes()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ConfigError, match="DeepSpeed is not supported"):
        init_processes()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        init_processes()


@pytest.mark.parametrize("n,world", [(7, 2), (8, 2), (5, 3), (2, 2), (3, 4)])
def test_shards_are_contiguous_in_rank_order_and_cover_every_row(n, world):
    from experiments.parallel.engine import shard

    rows = [list(range(n))[shard(n, r, world)] for r in range(world)]
    assert sum(rows, []) == list(range(n))
    assert [len(r) for r in rows] == [len(t) for t in torch.arange(n).tensor_split(world)]


def test_data_parallel_refusals():
    from algorithms import ConfigError
    from experiments.parallel.launch import check_data_parallel

    class One:
        multi_process = False

    class Many:
        multi_process = True

    check_data_parallel(1, One(), "tabular", object(), 1)  # one process: anything goes
    with pytest.raises(ConfigError, match="policy=tabular: this policy runs in one process only"):
        check_data_parallel(2, One(), "tabular", None, 8)
    with pytest.raises(ConfigError, match="exact success probabilities"):
        check_data_parallel(2, Many(), "x", object(), 8)
    with pytest.raises(ConfigError, match="train.prompts_per_step: 1 prompts cannot be shared by 2"):
        check_data_parallel(2, Many(), "x", None, 1)


def test_fsdp_settings_and_refusals(monkeypatch):
    from algorithms import ConfigError
    from experiments.parallel.launch import check_data_parallel
    from experiments.parallel.fsdp import FSDPSettings, fsdp_settings

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "2")
    assert fsdp_settings() == FSDPSettings()  # accelerate's defaults: every decoder layer, resharded after forward
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "Qwen3DecoderLayer, LlamaDecoderLayer")
    assert fsdp_settings() == FSDPSettings(False, ("Qwen3DecoderLayer", "LlamaDecoderLayer"), True)

    class Tabular:
        multi_process = True

    class Lora:
        multi_process, scorer = True, object()
        params = type("P", (), {"lora": type("L", (), {"r": 4})})

    with pytest.raises(ConfigError, match="policy=tabular: FSDP shards a transformers policy's model"):
        check_data_parallel(2, Tabular(), "tabular", None, 8)
    with pytest.raises(ConfigError, match="FSDP with LoRA"):
        check_data_parallel(2, Lora(), "tiny-qwen3", None, 8)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    check_data_parallel(2, Lora(), "tiny-qwen3", None, 8)  # DDP trains LoRA
