"""Defaults are declared once, in the attrs classes: every YAML file that states a component's
defaults (the base config's train / eval / optim, the env, reweighter and policy backends'
presets) agrees with its class. Algorithm presets and model presets (qwen3-8b, tiny-qwen3)
choose their own values on purpose (a paper's clip range, a model's learning rate) and are
not checked; the composed result of every preset is validated by building it (test_presets)."""


import attrs
import pytest
from omegaconf import OmegaConf

from algorithms.optim import OptimParams
from algorithms.reweighters import REWEIGHTERS
from experiments.evaluation.evaluator import EvalParams
from experiments.training.params import TrainParams
from policies import POLICIES
from policies.hf.samplers import SAMPLERS
from rlvr_env import TASKS
from tests.conftest import ROOT

CONF = ROOT / "experiments" / "conf"


def load(path: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / path), resolve=False)


def disagreements(section: dict, cls: type, where: str) -> list[str]:
    """Keys of ``section`` that are no field of ``cls``, or whose value is not the field's default."""
    out = []
    fields = {f.name: f for f in attrs.fields(cls)}
    for key, value in section.items():
        if key in ("defaults", "name"):
            continue
        if cls.__name__.endswith("HFParams") and key in SAMPLERS.names():  # a sampler's own settings
            out += disagreements(value or {}, SAMPLERS.entry(key).params, f"{where}.{key}")
            continue
        if key not in fields:
            out.append(f"{where}.{key}: not a field of {cls.__name__}")
            continue
        default = fields[key].default
        if default is attrs.NOTHING:
            continue
        default = default.factory() if isinstance(default, attrs.Factory) else default
        if attrs.has(type(default)) and isinstance(value, dict):
            out += disagreements(value, type(default), f"{where}.{key}")
        elif value != (list(default) if isinstance(default, tuple) else default) and not str(value).startswith("${"):
            out.append(f"{where}.{key}: the YAML says {value!r}, {cls.__name__} says {default!r}")
    return out


def sections():
    base = load("config.yaml")
    yield "train", base["train"], TrainParams
    yield "eval", base["eval"], EvalParams
    yield "optim", base["optim"], OptimParams
    for path in sorted((CONF / "env").glob("*.yaml")):
        cfg = load(f"env/{path.name}")
        if "name" in cfg:  # not a preset over another env (env_presets)
            yield f"env/{path.stem}", cfg, TASKS.entry(cfg["name"]).params
    for path in sorted((CONF / "reweight").glob("*.yaml")):
        cfg = load(f"reweight/{path.name}")
        yield f"reweight/{path.stem}", cfg, REWEIGHTERS.entry(cfg["name"]).params
    for name in ("tabular", "loglinear", "hf"):  # the backends' own presets
        cfg = load(f"policy/{name}.yaml")["policy"]
        yield f"policy/{name}", cfg, POLICIES.entry(cfg["name"]).params


@pytest.mark.parametrize("where, section, cls", list(sections()), ids=lambda x: x if isinstance(x, str) else "")
def test_yaml_defaults_agree_with_the_attrs_classes(where, section, cls):
    assert disagreements(section, cls, where) == []


def env_presets():
    """Env files that build on another env file (``defaults: [arithmetic, _self_]``): presets that
    choose their own values on purpose, like the model presets; only their keys are checked."""
    for path in sorted((CONF / "env").glob("*.yaml")):
        cfg = load(f"env/{path.name}")
        if "name" not in cfg:
            (parent,) = [d for d in cfg["defaults"] if d != "_self_"]
            yield f"env/{path.stem}", cfg, TASKS.entry(load(f"env/{parent}.yaml")["name"]).params


@pytest.mark.parametrize("where, section, cls", list(env_presets()), ids=lambda x: x if isinstance(x, str) else "")
def test_env_presets_set_only_fields_of_their_task(where, section, cls):
    fields = {f.name for f in attrs.fields(cls)}
    assert [k for k in section if k != "defaults" and k not in fields] == []


def test_the_check_sees_a_changed_default():
    assert disagreements({"steps": 201, "nope": 1}, TrainParams, "train") == [
        "train.steps: the YAML says 201, TrainParams says 200", "train.nope: not a field of TrainParams"]
