"""build_params: every field of its annotated kind (bool, finite float, list), unknown keys with a
suggestion, and --stages' defaults as a user writes them."""

import math

import attrs
import pytest

import experiments.training.build  # noqa: F401 - registers every stage, policy and env preset
from algorithms import ConfigError, registries
from algorithms.registry import build_params, check_kind, shown_default
from policies import POLICIES
from rlvr_env import TASKS


@attrs.frozen
class Toy:
    flag: bool = True
    maybe_flag: bool | None = None
    rate: float = 0.1
    count: int | float = 3
    pair: tuple[float, float] = attrs.field(default=(1.0, 2.0), converter=tuple)
    ks: tuple[int, ...] = attrs.field(default=(1, 4), converter=tuple)
    steps: int = 5
    table: dict = attrs.field(factory=dict)
    needed: str = "x"


def error(cfg: dict) -> str:
    with pytest.raises(ConfigError) as info:
        build_params(Toy, cfg, "toy")
    return str(info.value)


@pytest.mark.parametrize("value", ["maybe", "no", "yes", 1, 0, "true", None])
def test_a_bool_field_takes_true_or_false_only(value):
    assert error({"flag": value}) == f"toy.flag: must be true or false, got {value!r}"


def test_bools_floats_and_lists_that_are_right_pass():
    toy = build_params(Toy, {"flag": False, "maybe_flag": None, "rate": 2, "count": 1e-3, "pair": [0.5, 3],
                             "ks": [1, 2, 8]}, "toy")
    assert (toy.flag, toy.maybe_flag, toy.rate, toy.count, toy.pair, toy.ks) == (False, None, 2, 1e-3, (0.5, 3), (1, 2, 8))


@pytest.mark.parametrize("field", ["rate", "count"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_float_field_refuses_nan_and_inf(field, value):
    assert error({field: value}) == f"toy.{field}: must be finite, got {value!r}"


def test_a_list_field_given_a_scalar_names_the_field_and_an_example():
    assert error({"pair": 0.5}) == "toy.pair: a list is expected (e.g. toy.pair=[1.0,2.0]), got 0.5"
    assert error({"ks": 4}) == "toy.ks: a list is expected (e.g. toy.ks=[1,4]), got 4"
    assert error({"ks": "14"}) == "toy.ks: a list is expected (e.g. toy.ks=[1,4]), got '14'"
    assert error({"pair": [math.nan, 1.0]}) == "toy.pair: must be finite, got [nan, 1.0]"


def test_an_unknown_field_lists_the_valid_ones_and_the_closest():
    valid = "count, flag, ks, maybe_flag, needed, pair, rate, steps, table"
    assert error({"stepz": 5}) == f"toy.stepz: unknown field; valid fields: {valid}; did you mean steps?"
    assert error({"zzz": 5}) == f"toy.zzz: unknown field; valid fields: {valid}"


def params_classes():
    seen = {}
    for registry in [*registries().values(), POLICIES, TASKS]:
        for name in registry.names():
            cls = registry.entry(name).params
            seen[cls.__qualname__] = cls
    from algorithms.optim import OptimParams
    from experiments.evaluation.evaluator import EvalParams
    from experiments.training.trainer import TrainParams
    from policies.hf import LoraParams
    return {**seen, "TrainParams": TrainParams, "OptimParams": OptimParams, "EvalParams": EvalParams,
            "LoraParams": LoraParams}


def fields_typed(kind: str):
    return [(cls, f) for cls in params_classes().values() for f in attrs.fields(cls)
            if [k.strip() for k in str(f.type).split("|") if k.strip() != "None"] == [kind]]


def test_every_bool_and_float_field_of_every_params_class_is_checked():
    """The check is generic: each bool field refuses 'maybe', each float field nan, by its name."""
    bools, floats = fields_typed("bool"), fields_typed("float")
    names = {f.name for _, f in bools}
    assert {"progress", "allow_download", "gradient_checkpointing", "chat_template"} <= names
    assert {"lr", "weight_decay", "lambda_scale", "temperature"} <= {f.name for _, f in floats}
    for _, field in bools:
        with pytest.raises(ConfigError, match=rf"^x\.{field.name}: must be true or false, got 'maybe'$"):
            check_kind(field, "maybe", f"x.{field.name}")
    for _, field in floats:
        with pytest.raises(ConfigError, match=rf"^x\.{field.name}: must be finite, got nan$"):
            check_kind(field, math.nan, f"x.{field.name}")


def test_defaults_are_shown_as_values_and_required_fields_as_required():
    shown = {f.name: shown_default(f) for f in attrs.fields(Toy)}
    assert shown == {"flag": "true", "maybe_flag": "null", "rate": "0.1", "count": "3", "pair": "[1.0, 2.0]",
                     "ks": "[1, 4]", "steps": "5", "table": "{}", "needed": "x"}
    text = "\n\n".join(r.describe() for r in [*registries().values(), POLICIES, TASKS])
    assert "NOTHING" not in text and "Factory(" not in text and "takes_self" not in text
    assert "[max_length=(required)]" in text and "allow_download=false" in text and "chat_template_kwargs={}" in text
    # the first paragraph whole, not its first line
    assert ("A problem file as a training task: a JSONL benchmark (MATH500, GSM8K, AIME, AMC, Minerva, OlympiadBench), "
            "any file in those formats, or any JSONL / Parquet / datasets folder with ``env.columns`` "
            "(``rlvr_env.sources.load_problems``: checked, exact duplicates dropped).") in text


def test_a_field_of_another_stage_says_how_to_drop_it():
    """``algo=grpo algo.advantage.name=rloo``: grpo's preset still sets group_norm's eps."""
    from algorithms.advantages import ADVANTAGES

    with pytest.raises(ConfigError) as info:
        ADVANTAGES.make_params({"name": "rloo", "eps": 1e-6}, "algo.advantage")
    owners = sorted(name for name in ADVANTAGES.names()
                    if "eps" in {f.name for f in attrs.fields(ADVANTAGES.entry(name).params)})
    assert "group_norm" in owners and "rloo" not in owners
    assert str(info.value) == ("algo.advantage.eps: unknown field; valid fields: none; rloo does not take it "
                               f"({', '.join(owners)} do): drop the preset's "
                               "value with ~algo.advantage.eps")
    with pytest.raises(ConfigError, match=r"unknown field; valid fields: eps; did you mean eps\?$"):
        ADVANTAGES.make_params({"name": "group_norm", "epz": 1e-6}, "algo.advantage")  # a typo: no other owner
