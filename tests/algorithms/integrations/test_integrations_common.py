"""algorithms.integrations without any framework: rows grouped by prompt id, the state in a checkpoint file.

(TRL: tests/test_integrations_trl.py; verl, in its own environment: tests/verl_tests.)
"""

import numpy as np
import pytest
import torch

from algorithms import ConfigError, build_algorithm
from algorithms.integrations import STATE_FILE, FrameworkReweighter, reweight_config
from algorithms.integrations.by_prompt import OutcomeReweighting, group_rows
from algorithms.integrations.common import load_states, save_states

P, G = 6, 4


def ours(reweight):
    return build_algorithm({"name": "grpo", "advantage": {"name": "group_norm"}, "loss": {"name": "ppo_clip"},
                            "aggregation": {"name": "seq_mean_token_mean"}}, reweight)


def rewards_at(step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    return torch.bernoulli(torch.full((P, G), 0.2 + 0.15 * step), generator=g)  # (P, G)


def test_rows_grouped_by_prompt_id_give_our_weights_in_any_row_order():
    run = OutcomeReweighting({"name": "group_norm"}, {"name": "hadw"}, "x")
    algo = ours({"name": "hadw"})
    for step in range(4):
        rewards = rewards_at(step)
        rows = torch.randperm(P * G, generator=torch.Generator().manual_seed(10 + step))  # row r: response rows[r]
        ids = np.array([f"q{int(i) // G}" for i in rows], dtype=object)
        got, stats = run(rewards.reshape(-1)[rows], ids)  # (B,)
        want, want_stats = algo.reweighter(algo.advantage(rewards), rewards)
        torch.testing.assert_close(got, want.reshape(-1)[rows], atol=1e-6, rtol=0)
        assert float(stats["hadw/belief"]) == float(want_stats["hadw/belief"])
    assert run.reweight.batches == 4 and run.config["advantage"] == {"name": "group_norm", "eps": 1e-6}


def test_group_rows_orders_groups_by_first_appearance():
    groups = group_rows([7, 3, 7, 3, 9, 9])
    assert groups.order.tolist() == [0, 2, 1, 3, 4, 5] and (groups.num_groups, groups.group_size) == (3, 2)


@pytest.mark.parametrize("ids,match", [
    (["a", "a", "b"], r"groups of unequal size \(1 to 2 responses per prompt id\)"),
    (["a", "b"], r"one response per prompt id"),
    (None, r"no prompt ids"),
])
def test_group_rows_refuses_groups_it_cannot_read_as_p_by_g(ids, match):
    with pytest.raises(ValueError, match=match):
        group_rows(ids)


def test_state_file_round_trip_continues_exactly_and_refuses_another_config(tmp_path):
    first = FrameworkReweighter({"name": "hadw", "window": 3})
    for step in range(3):
        first(torch.randn(P, G), rewards_at(step))
    save_states({"run": first.state_dict()}, tmp_path)
    assert (tmp_path / STATE_FILE).is_file() and load_states(tmp_path / "absent") is None
    resumed = FrameworkReweighter({"name": "hadw", "window": 3})
    resumed.load_state_dict(load_states(tmp_path)["run"])
    a = torch.randn(P, G)
    out_first, _ = first(a, rewards_at(3))
    out_resumed, _ = resumed(a, rewards_at(3))
    assert torch.equal(out_first, out_resumed) and resumed.batches == 4
    other = FrameworkReweighter({"name": "hadw", "window": 3, "c0": 0.4})
    with pytest.raises(ValueError, match=r"saved with .*'c0': 0.5.*configured with .*'c0': 0.4"):
        other.load_state_dict(load_states(tmp_path)["run"], source="ckpt")


def test_update_false_applies_the_weights_and_leaves_the_state():
    rw = FrameworkReweighter("hadw")
    rw(torch.randn(P, G), rewards_at(0))
    before = rw.state_dict()
    rw(torch.randn(P, G), rewards_at(1), update=False)
    after = rw.state_dict()
    assert torch.equal(before["reweighter"]["prior"], after["reweighter"]["prior"]) and after["batches"] == 1


def test_reweight_config_is_complete_and_errors_name_the_field():
    assert reweight_config("focal") == {"name": "focal", "gamma": 1.0}
    with pytest.raises(ConfigError, match=r"reweight\.gamma: must be >= 0"):
        reweight_config({"name": "focal", "gamma": -1})
    with pytest.raises(ConfigError, match=r"reweight\.name: missing; valid: agrae"):
        reweight_config(None)
