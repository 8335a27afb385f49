"""verify_batch's worker processes: scripts without a main guard, threads, routing, deadlines."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from rlvr_env import verifier_pool
from rlvr_env.verifier import VerifyConfig
from rlvr_env.verifier_pool import verify, verify_batch
from rlvr_env.verifier_pool import VerifierPool
from tests.conftest import ROOT


# k/2 as a fraction against a decimal: every item needs sympy; correct unless 3 divides k
COMPLETIONS = [rf"\boxed{{\frac{{{k}}}{{2}}}}" for k in range(40)]
ANSWERS = [str(k / 2 + (k % 3 == 0)) for k in range(40)]
EXPECTED = [float(k % 3 != 0) for k in range(40)]


@pytest.mark.slow
def test_script_without_main_guard_gets_correct_rewards(tmp_path):
    """The README snippet pasted into a script, no ``if __name__ == "__main__":``, run as a user would."""
    script = tmp_path / "score.py"
    script.write_text(textwrap.dedent(f"""\
        import json, sys, threading
        sys.path.insert(0, {str(ROOT)!r})
        from rlvr_env import verify_batch
        from rlvr_env.verifier_pool import VerifierPool
        print("script body runs")
        completions, answers = {COMPLETIONS!r}, {ANSWERS!r}
        out = {{"default": [v.reward for v in verify_batch(completions, answers, workers=2)]}}
        with VerifierPool(2, in_process_seconds=0) as pool:  # every item in a worker
            out["workers"] = [v.reward for v in pool.map(completions, answers)]
            out["counts"] = pool.last_counts
        thread = threading.Thread(target=lambda: out.update(thread=[v.reward for v in verify_batch(completions, answers)]))
        thread.start()
        thread.join()
        print(json.dumps(out))
        """))
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "script body runs" and len(lines) == 2  # workers never ran the script
    out = json.loads(lines[1])
    assert out["default"] == out["workers"] == out["thread"] == EXPECTED
    assert out["counts"] == {"cheap": 0, "sympy_here": 0, "sympy_workers": 40}


def test_cheap_items_and_a_few_sympy_items_start_no_process():
    completions = [r"\boxed{7}", r"so it is $\boxed{7}$.", "no answer here", r"\boxed{" + "1" * 600 + "}", r"\boxed{8}"]
    with VerifierPool(2, in_process_seconds=60, in_process=True) as pool:  # a budget no three items use up
        verdicts = pool.map(completions, ["7"] * 5)
        assert [v.reason for v in verdicts] == ["correct", "correct", "no_answer", "answer_too_long", "wrong"]
        assert pool.last_counts == {"cheap": 5, "sympy_here": 0, "sympy_workers": 0}
        assert pool.map(COMPLETIONS[:3], ANSWERS[:3]) == [verify(c, a) for c, a in zip(COMPLETIONS[:3], ANSWERS[:3])]
        assert pool.last_counts == {"cheap": 0, "sympy_here": 3, "sympy_workers": 0}
        assert pool.running == 0


def test_workers_start_once_the_caller_has_spent_its_budget():
    with VerifierPool(2, in_process_seconds=1e-9, in_process=True) as pool:
        pool.map(COMPLETIONS[:1], ANSWERS[:1])  # spends the budget here
        assert pool.last_counts["sympy_here"] == 1 and pool.running == 0
        pool.start(wait_ready=True)
        assert [v.reward for v in pool.map(COMPLETIONS, ANSWERS)] == EXPECTED
        assert pool.last_counts == {"cheap": 0, "sympy_here": 0, "sympy_workers": 40}
        assert pool.running == 2


def test_with_workers_up_each_call_goes_where_items_went_faster():
    with VerifierPool(2, in_process_seconds=1e-9, in_process=True) as pool:
        pool.start(wait_ready=True)
        pool.map(COMPLETIONS[:4], ANSWERS[:4])  # first the way not yet timed: workers
        assert pool.last_counts["sympy_workers"] == 4 and pool.seconds_per_item["here"] is None
        pool.map(COMPLETIONS[:4], ANSWERS[:4])  # then here
        assert pool.last_counts["sympy_here"] == 4 and None not in pool.seconds_per_item.values()
        ways = []
        for faster in ("here", "workers"):
            pool.seconds_per_item = {"here": 1.0, "workers": 1.0, faster: 1e-9}  # stays the faster way
            for _ in range(verifier_pool.PROBE_EVERY):
                assert [v.reward for v in pool.map(COMPLETIONS[:4], ANSWERS[:4])] == EXPECTED[:4]
                ways.append("here" if pool.last_counts["sympy_here"] else "workers")
        # every PROBE_EVERY-th call (counting all calls) tries the slower way again
        assert ways.count("here") == ways.count("workers") == verifier_pool.PROBE_EVERY
        assert sorted(set(ways[:verifier_pool.PROBE_EVERY])) == ["here", "workers"]


def test_verify_batch_off_the_main_thread_uses_workers():
    out = []
    thread = threading.Thread(target=lambda: out.append(verify_batch(COMPLETIONS[:5], ANSWERS[:5], workers=1)))
    thread.start()
    thread.join()
    assert out[0] == [verify(c, a) for c, a in zip(COMPLETIONS[:5], ANSWERS[:5])]


def test_a_stuck_worker_is_killed_and_the_rest_still_verified():
    slow = r"\boxed{\int_0^{\infty} e^{x^{x^{x}}} dx}"  # about a second of sympy
    completions = COMPLETIONS[:6] + [slow] + COMPLETIONS[6:12]
    answers = ANSWERS[:6] + ["5"] + ANSWERS[6:12]
    # deadline 3 * 1 - 2.7 = 0.3 s per item: the slow one is killed, the items queued behind it go again
    with VerifierPool(1, VerifyConfig(timeout=1), grace=-2.7, in_process_seconds=0) as pool:
        pool.start(wait_ready=True)
        first = pool._workers[0].proc
        verdicts = pool.map(completions, answers)
        assert first.returncode == -signal.SIGKILL and pool.running == 1  # killed, replaced
    assert verdicts[6].reason == "timeout"
    assert [v.reward for v in verdicts[:6] + verdicts[7:]] == EXPECTED[:12]


def test_a_worker_that_cannot_start_is_an_error(monkeypatch):
    monkeypatch.setattr(verifier_pool, "_WORKER_MAIN", "import sys; sys.exit(3)")
    with VerifierPool(1, in_process_seconds=0) as pool, pytest.raises(RuntimeError, match="exited with code 3"):
        pool.map(COMPLETIONS[:2], ANSWERS[:2])


def test_bad_settings_are_refused():
    for kwargs in ({"workers": -1}, {"in_process_seconds": -1}, {"grace": -10}):
        with pytest.raises(ValueError, match="need workers"):
            VerifierPool(**kwargs)


PINNED_PROBE = """
import json, sys
sys.path.insert(0, {root!r})
from rlvr_env.verifier import hash_pinned
from rlvr_env.verifier_pool import VerifierPool
with VerifierPool(2) as pool:
    pool.map({completions!r}, {answers!r})
    print(json.dumps({{"pinned": hash_pinned(), "counts": pool.last_counts}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("seed, here", [("0", True), ("7", False), (None, False)])
def test_sympy_items_are_verified_here_only_where_the_hash_seed_is_the_workers(seed, here):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONHASHSEED"} | ({"PYTHONHASHSEED": seed} if seed else {})
    script = PINNED_PROBE.format(root=str(ROOT), completions=COMPLETIONS[:3], answers=ANSWERS[:3])
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["pinned"] == here
    assert out["counts"] == ({"cheap": 0, "sympy_here": 3, "sympy_workers": 0} if here else
                             {"cheap": 0, "sympy_here": 0, "sympy_workers": 3})
