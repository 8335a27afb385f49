"""The backend-neutral shapes: Rollout, exact micro-batch aggregation, the engine, typed tasks,
one generation budget, and an acyclic ``experiments`` package."""

import ast
import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms import build_algorithm
from algorithms.aggregation import Totals
from experiments.training.build import build_trainer, compose_config, override_key
from policies.base import Rollout
from rlvr_env.protocol import ExactTask, Task, exact_view

ROOT = Path(__file__).resolve().parents[1]
AGG_CFGS = [{"name": "token_mean"}, {"name": "seq_mean_token_mean"}, {"name": "seq_mean_token_sum"},
            {"name": "seq_mean_token_sum_norm", "max_length": 12}]


def make_rollout(lengths: list[int], width: int, seed: int = 0, prompt_width: int = 3) -> Rollout:
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()  # (B, T) right-padded
    pmask = (torch.arange(prompt_width)[None, :] >= torch.randint(0, prompt_width, (b, 1), generator=g)).float()
    return Rollout(
        prompt_index=torch.arange(b) // 2,
        prompt_tokens=torch.randint(1, 50, (b, prompt_width), generator=g) * pmask.long(),
        prompt_mask=pmask,
        tokens=torch.randint(1, 50, (b, width), generator=g) * mask.long(),
        mask=mask,
        old_logp=-torch.rand(b, width, generator=g) * mask,
        texts=tuple(f"r{i}" for i in range(b)),
        group_size=2,
        advantages=torch.randn(b, generator=g),
    )


def grad_of(algo, rollout: Rollout, theta: torch.Tensor, pieces: int) -> torch.Tensor:
    """Gradient wrt ``theta`` (logp = old_logp + theta) of one minibatch, split into ``pieces`` micro-batches."""
    theta = theta.clone().requires_grad_(True)
    totals = Totals.of(rollout.mask)
    size = -(-len(rollout) // pieces)
    for part, th in zip(rollout.split(size), theta.split(size)):
        loss, _ = algo.objective(part.old_logp + th, part, totals)
        loss.backward()
    return theta.grad


@pytest.mark.parametrize("agg", AGG_CFGS, ids=lambda c: c["name"])
@pytest.mark.parametrize("loss", ["ppo_clip", "cispo"])
@pytest.mark.parametrize("pieces", [2, 3])
def test_micro_batch_gradients_add_up_to_the_minibatch_gradient(agg, loss, pieces):
    """Uneven response lengths: the summed micro-batch gradients equal the minibatch gradient."""
    rollout = make_rollout([5, 1, 3, 7, 2, 6, 4], width=7)
    theta = torch.randn(7, 7, generator=torch.Generator().manual_seed(1)) * 0.3
    algo = build_algorithm({"name": "x", "advantage": {"name": "group_norm"}, "loss": {"name": loss}, "aggregation": agg})
    whole = grad_of(algo, rollout, theta, 1)
    split = grad_of(algo, rollout, theta, pieces)
    assert whole.abs().sum() > 0
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("agg", AGG_CFGS, ids=lambda c: c["name"])
def test_padding_with_inf_or_nan_leaves_loss_and_gradient_unchanged(agg):
    rollout = make_rollout([4, 2, 3, 1], width=4, seed=2).with_(ref_logp=-torch.rand(4, 4))
    algo = build_algorithm({"name": "x", "advantage": {"name": "group_norm"}, "loss": {"name": "ppo_clip"},
                            "aggregation": agg, "kl": {"beta": 0.1}})
    pad = rollout.mask == 0
    results = []
    for fill in (None, float("-inf"), float("nan")):
        logp = (rollout.old_logp + 0.1).clone()
        old, ref = rollout.old_logp.clone(), rollout.ref_logp.clone()
        if fill is not None:
            logp[pad], old[pad], ref[pad] = fill, fill, fill
        logp.requires_grad_(True)
        loss, stats = algo.objective(logp, rollout.with_(old_logp=old, ref_logp=ref), Totals.of(rollout.mask))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
        assert all(torch.isfinite(v) for v in stats.values())
        assert torch.count_nonzero(logp.grad[pad]) == 0
        results.append((loss.detach(), logp.grad))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])


def test_rollout_select_split_concat_are_generic():
    a, b = make_rollout([2, 3, 1, 2], width=3, prompt_width=2), make_rollout([5, 1], width=5, seed=1, prompt_width=4)
    both = Rollout.concat([a, b])
    assert both.tokens.shape == (6, 5) and both.prompt_tokens.shape == (6, 4)
    # responses padded on the right, prompts on the left
    assert torch.equal(both.tokens[:4, :3], a.tokens) and torch.count_nonzero(both.mask[:4, 3:]) == 0
    assert torch.equal(both.prompt_tokens[:4, 2:], a.prompt_tokens) and torch.count_nonzero(both.prompt_mask[:4, :2]) == 0
    assert both.texts == a.texts + b.texts and torch.equal(both.advantages[4:], b.advantages)
    assert both.sampler_logp is None and both.ref_logp is None
    picked = both.select(torch.tensor([5, 0]))
    assert picked.texts == ("r1", "r0") and torch.equal(picked.tokens[0], both.tokens[5])
    parts = both.split(4)
    assert [len(p) for p in parts] == [4, 2] and Rollout.concat(parts).texts == both.texts
    assert torch.equal(Rollout.concat(parts).old_logp, both.old_logp)
    assert both.select_groups(torch.tensor([2])).texts == ("r0", "r1")
    assert both.to("cpu").tokens.device.type == "cpu"
    with pytest.raises(ValueError, match="rows"):
        a.with_(advantages=torch.zeros(3))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=9), st.integers(1, 9))
def test_split_then_concat_is_the_identity(lengths, size):
    r = make_rollout(lengths, width=6)
    back = Rollout.concat(r.split(size))
    assert back.texts == r.texts
    for name in ("tokens", "mask", "old_logp", "prompt_tokens", "prompt_mask", "advantages", "prompt_index"):
        assert torch.equal(getattr(back, name), getattr(r, name)), name


def test_micro_batched_cli_run_gives_the_same_numbers(tmp_path):
    """train.micro_batch_size = half a minibatch: same final numbers as without (to 1e-5)."""
    base = ["algo=grpo_hadw", "train.steps=30", "train.minibatches=2", "train.ppo_epochs=2", "algo.kl.beta=0.05"]
    runs = []
    for extra in ([], ["train.micro_batch_size=128"]):  # minibatch = 64 * 8 / 2 = 256 responses
        cfg = compose_config(*base, *extra, "train.progress=false")
        runs.append(build_trainer(cfg, tmp_path / str(len(runs))).train())
    last_a, last_b = runs[0][-1], runs[1][-1]
    assert last_a.keys() == last_b.keys()
    for key in ("accuracy/all", "accuracy/hard", "hadw/belief", "loss/value", "loss/kl_ref"):
        assert last_b[key] == pytest.approx(last_a[key], abs=1e-5), key


def test_reference_logprobs_are_computed_once_per_step(tmp_path):
    cfg = compose_config("algo=grpo", "algo.kl.beta=0.1", "train.steps=3", "train.ppo_epochs=2", "train.minibatches=4",
                         "train.micro_batch_size=16", "train.progress=false")
    trainer = build_trainer(cfg, tmp_path)
    calls = {"ref": 0, "logp": 0}
    ref, logp = trainer.policy.ref_logprobs, trainer.policy.logprobs
    trainer.policy.ref_logprobs = lambda r: (calls.__setitem__("ref", calls["ref"] + 1), ref(r))[1]
    trainer.policy.logprobs = lambda r: (calls.__setitem__("logp", calls["logp"] + 1), logp(r))[1]
    trainer.train()
    assert calls["ref"] == 3  # once per step
    assert calls["logp"] == 3 * 2 * 512 // 16  # every micro-batch of every minibatch and epoch


def test_tasks_are_typed_and_exactness_is_decided_at_build_time(tmp_path):
    for env in ("env=bandit", "env=arithmetic"):
        trainer = build_trainer(compose_config(env, "train.progress=false"), tmp_path / env)
        assert isinstance(trainer.task, Task) and isinstance(trainer.task, ExactTask)
        assert trainer.exact is trainer.task  # tabular policy: exact p known
        assert exact_view(trainer.task, object()) is None  # a policy without an answer distribution
        roll = trainer.policy.sample(trainer.task.sample_prompts(4), 3, torch.Generator().manual_seed(0))
        assert all(t in trainer.task.candidates[i] for t, i in zip(roll.texts, roll.prompt_index.tolist()))
    with pytest.raises(TypeError, match="Task protocol"):
        exact_view(object(), None)


def test_one_generation_budget_for_dr_grpo_and_dapo():
    cfg = compose_config("algo=dr_grpo")
    assert cfg["algo"]["aggregation"]["max_length"] == cfg["policy"]["max_new_tokens"] == 1
    cfg = compose_config("algo=dapo", "policy.max_new_tokens=1")
    assert cfg["algo"]["shaping"]["max_length"] == 1
    for path in (ROOT / "experiments/conf/algo").glob("*.yaml"):  # no preset hard-codes L_max
        text = path.read_text()
        for line in text.splitlines():
            if line.strip().startswith("max_length:"):
                assert "${policy.max_new_tokens}" in line, f"{path.name}: {line}"


def test_override_key_strips_hydra_prefixes():
    assert [override_key(o) for o in ("+resume=x", "++train.steps=3", "~arena", "seed=1")] == \
        ["resume", "train.steps", "arena", "seed"]


PACKAGES = ("algorithms", "experiments", "policies", "rlvr_env")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (module level and inside functions), over every package."""
    modules = {module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from . import x, from .y import z
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                deps.add(base)
                deps.update(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
        graph[name] = {d for d in deps if d in modules} - {name}
    return graph


def test_no_import_cycle_anywhere():
    graph = import_graph()
    assert "experiments.training.build" in graph and "experiments.run" in graph and "policies.hf.policy" in graph
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if dep.startswith(node + ".") or node.startswith(dep + "."):
                continue  # a package and its own modules (__init__ re-exports)
            assert state.get(dep) != 1, "import cycle: " + " -> ".join(path + [dep])
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_library_packages_never_import_experiments():
    offenders = {m: sorted(d for d in deps if d.startswith("experiments"))
                 for m, deps in import_graph().items() if not m.startswith("experiments")}
    assert {m: d for m, d in offenders.items() if d} == {}


@pytest.mark.slow
def test_each_experiments_module_imports_alone():
    modules = sorted(module_name(p) for p in (ROOT / "experiments").rglob("*.py") if p.stem != "__main__")
    # A fresh interpreter each: no module relies on another having been imported first. As many
    # at a time as there are cores (all ~50 at once overloaded a shared machine past the timeout).
    def imports(m: str) -> tuple[str, subprocess.CompletedProcess]:
        return m, subprocess.run([sys.executable, "-c", f"import {m}"], cwd=ROOT, capture_output=True, text=True,
                                 timeout=300)

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for m, out in pool.map(imports, modules):
            assert out.returncode == 0, f"{m}: {out.stderr[-2000:]}"


def test_no_name_is_defined_in_two_modules():
    """Every top-level function, class and constant of the packages has one home (CLI entry points
    are all ``main``); a second definition elsewhere would be a second meaning."""
    homes: dict[str, list[str]] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.parse(path.read_text()).body:
                names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
                    [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name) and t.id.isupper()]
                for name in names:
                    homes.setdefault(name, []).append(module_name(path))
    assert {n: m for n, m in homes.items() if len(m) > 1 and n != "main"} == {}


def test_no_module_is_over_400_lines():
    """The house issue's bound: a module that grows past it is split where its parts separate."""
    long = {str(p.relative_to(ROOT)): n for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long
