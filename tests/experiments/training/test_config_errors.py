"""Bad values on the command line: one ``error: FIELD: ...`` line naming the field, exit 2, no
traceback, nothing written (python -m experiments.run as a user runs it)."""

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # subprocess runs: python -m pytest -m 'not slow' skips them

TRAIN_FIELDS = ("checkpoint_every, eval_every, group_size, keep_checkpoints, log_dir, loggers, "
                "max_skipped_in_a_row, micro_batch_size, minibatches, on_nonfinite, ppo_epochs, progress, "
                "prompts_per_step, run_name, samples_every, samples_shown, steps")

CASES = {
    "scalar-for-beta": (["env.beta=0.5"], "env.beta: a list is expected (e.g. env.beta=[1.0,1.0]), got 0.5"),
    "scalar-for-p_range": (["env.p_range=0.5"], "env.p_range: a list is expected (e.g. env.p_range=[0.02,0.98]), got 0.5"),
    "scalar-for-levels": (["policy=hf", "policy.model_path=/nonexistent", "policy.max_new_tokens=8", "env=arithmetic",
                           "env.levels=3"], "env.levels: a list is expected (e.g. env.levels=[1,2,3,4,5]), got 3"),
    "scalar-for-eval.k": (["eval.k=4", "train.eval_every=1"], "eval.k: a list is expected (e.g. eval.k=[1,4]), got 4"),
    "mistyped-key": (["train.stepz=5"], f"train.stepz: unknown field; valid fields: {TRAIN_FIELDS}; did you mean steps?"),
    "mistyped-key-with-plus": (["+train.stepz=5"], f"train.stepz: unknown field; valid fields: {TRAIN_FIELDS}; did you mean steps?"),
    "mistyped-reweight-key": (["reweight=hadw", "reweight.lambda_scal=1.3"],
                              "reweight.lambda_scal: unknown field; valid fields: c0, eta, lambda_scale, name, sigma_floor, "
                              "window; did you mean lambda_scale?"),
    "bool-maybe": (["train.progress=maybe"], "train.progress: must be true or false, got 'maybe'"),
    "bool-no": (["policy=hf", "policy.model_path=/nonexistent", "policy.max_new_tokens=8", "env=arithmetic",
                 "policy.allow_download=no"], "policy.allow_download: must be true or false, got 'no'"),
    "lr-nan": (["optim.lr=nan"], "optim.lr: must be finite, got nan"),
    "lr-inf": (["optim.lr=inf"], "optim.lr: must be finite, got inf"),
    "float-inf": (["reweight=hadw", "reweight.lambda_scale=-inf"], "reweight.lambda_scale: must be finite, got -inf"),
}


@pytest.mark.parametrize("args, message", list(CASES.values()), ids=list(CASES))
def test_bad_value_is_one_error_line_naming_the_field(args, message, tmp_path):
    out = run_cli(*args, "train.steps=1", f"train.log_dir={tmp_path / 'runs'}")
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [f"error: {message}"]
    assert "Traceback" not in out.stderr and "HYDRA_FULL_ERROR" not in out.stderr
    assert not (tmp_path / "runs").exists()  # nothing written
