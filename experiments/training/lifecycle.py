"""The one run lifecycle: validate and build, create the directory, train, close.

    cfg, run_dir, resuming = resolve_config(hydra_cfg, overrides)     # a new run's name, or the run resumed
    with TrainingRun.resume(cfg, run_dir) if resuming else TrainingRun.start(cfg, run_dir) as run:
        run.train(on_step)                             # Ctrl-C: a checkpoint, then KeyboardInterrupt

    RunDirectory(path): config.yaml, TensorBoard events, checkpoints/, model/
    load_trained(run_dir) -> (Trainer, config)         # a run's config and newest checkpoint (evaluation)

Every entry point that writes a run goes through here (``experiments.run``, the arena, sweeps,
the claims runner): the config is validated and every component built before the directory
is touched; the main process alone writes (config, events, checkpoints, model); the Trainer
gets its logger and prompt stream at construction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from algorithms import ConfigError
from algorithms.algorithm import algorithm_label
from experiments.training.build import build_trainer, override_key
from experiments.parallel.launch import is_main_process
from experiments.training.checkpoint import list_checkpoints, load_latest
from experiments.training.tracking import TensorBoardLogger
from experiments.training.trainer import Trainer

CONFIG_FILE = "config.yaml"
"""The resolved config a run directory holds (written before its logger starts)."""
RESUMABLE_OVERRIDES = ("resume", "train.steps", "train.progress", "train.checkpoint_every", "train.keep_checkpoints")
"""What may change when a run is resumed (everything else is the run's own config)."""


def config_yaml(cfg: dict[str, Any]) -> str:
    """The text of a run's config file."""
    return OmegaConf.to_yaml(OmegaConf.create(cfg))


class RunDirectory:
    """A run's folder: ``config.yaml``, the TensorBoard events, ``checkpoints/``, ``model/``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    def write_config(self, cfg: dict[str, Any]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(config_yaml(cfg))

    def read_config(self, field: str = "resume") -> dict[str, Any]:
        """The run's resolved config; a ConfigError naming ``field`` and the file where there is none."""
        if not self.config_file.is_file():
            raise ConfigError(f"{field}: {self.config_file} not found ({field} takes a run directory)")
        return OmegaConf.to_container(OmegaConf.load(self.config_file), resolve=True)

    def latest_checkpoint(self, field: str = "resume") -> tuple[Path, dict]:
        """(path, state) of the newest readable checkpoint; a ConfigError naming ``field`` where there is none."""
        found = load_latest(self.path)
        if found is None:
            raise ConfigError(f"{field}: no readable checkpoint in {self.path}/checkpoints")
        return found

    def has_checkpoints(self) -> bool:
        return bool(list_checkpoints(self.path))

    def logger(self, config_text: str | None = None, history: list[dict[str, float]] | None = None):
        """The run's TensorBoard logger, writing nothing until its first event (then the config
        as text: ``config_text``, else its config file's; ``history``: a resumed run's,
        rewritten into one event file)."""
        if config_text is None and self.config_file.is_file():
            config_text = self.config_file.read_text()
        return TensorBoardLogger(self.path, config_text, history)


class TrainingRun:
    """One run: its directory, its Trainer (logger attached), closed on exit."""

    def __init__(self, trainer: Trainer, directory: RunDirectory, config: dict[str, Any], resumed_from: Path | None,
                 writes: bool):
        self.trainer, self.directory, self.config = trainer, directory, config
        self.resumed_from, self.writes = resumed_from, writes

    @classmethod
    def prepare(cls, cfg: dict[str, Any], run_dir: str | Path, *, state: dict | None = None,
                resumed_from: Path | None = None, prompt_source: Callable | None = None,
                write: bool = True) -> "TrainingRun":
        """Build every component of ``cfg`` (validating it) and restore ``state`` (a checkpoint
        to continue from); nothing is written yet (``commit``). With ``write``, the main process
        gets a logger, which writes nothing until its first event."""
        directory = RunDirectory(run_dir)
        writes = write and is_main_process()  # only the main process writes
        logger = None
        if writes:
            logger = (directory.logger(config_yaml(cfg)) if state is None else
                      directory.logger(history=list(state["history"])))
        trainer = build_trainer(cfg, directory.path, logger, prompt_source)  # validates before the disk
        if state is not None:
            try:
                trainer.load_state_dict(state)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return cls(trainer, directory, cfg, resumed_from, writes)

    def commit(self) -> "TrainingRun":
        """Create the run directory with its config (a new run, on the main process)."""
        if self.writes and self.resumed_from is None:
            self.directory.write_config(self.config)
        return self

    @classmethod
    def start(cls, cfg: dict[str, Any], run_dir: str | Path, **kwargs) -> "TrainingRun":
        """``prepare`` then ``commit``."""
        return cls.prepare(cfg, run_dir, **kwargs).commit()

    @classmethod
    def resume(cls, cfg: dict[str, Any], run_dir: str | Path) -> "TrainingRun":
        """The run in ``run_dir`` from its newest checkpoint, with ``cfg`` (its own config, plus
        the overrides a resume may change)."""
        path, state = RunDirectory(run_dir).latest_checkpoint()
        return cls.start(cfg, run_dir, state=state, resumed_from=path)

    def train(self, on_step: Callable | None = None) -> list[dict[str, float]]:
        return self.trainer.train(on_step)

    def close(self) -> None:
        if self.trainer.logger is not None:
            self.trainer.logger.close()

    def __enter__(self) -> "TrainingRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_trained(run_dir: str | Path, field: str = "run") -> tuple[Trainer, dict[str, Any]]:
    """A trained run's Trainer (its config, its newest checkpoint restored) and config; writes nothing."""
    directory = RunDirectory(run_dir)
    cfg = directory.read_config(field)
    trainer = build_trainer(cfg, directory.path)
    trainer.load_state_dict(directory.latest_checkpoint(field)[1])
    return trainer, cfg


def resolve_config(cfg: DictConfig, overrides: list[str]) -> tuple[dict[str, Any], Path, bool]:
    """The run's config, its directory and whether it resumes an earlier run."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    if not plain.get("resume"):
        return plain, new_run_dir(plain), False
    run_dir = Path(plain["resume"])
    saved = RunDirectory(run_dir).config_file
    if not saved.is_file():
        raise ConfigError(f"resume: {saved} not found (resume takes a run directory)")
    changed = [o for o in overrides if override_key(o) not in RESUMABLE_OVERRIDES]
    if changed:
        raise ConfigError(
            f"resume: cannot change {', '.join(changed)} when resuming; the run's config is {saved} "
            f"(allowed: {', '.join(RESUMABLE_OVERRIDES[1:])})"
        )
    resumed = OmegaConf.load(saved)
    explicit = {override_key(o) for o in overrides}
    for key in explicit - {"resume"}:
        OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), merge=False)
    resumed.resume = str(run_dir)
    return OmegaConf.to_container(resumed, resolve=True), run_dir, True


def new_run_dir(cfg: dict[str, Any]) -> Path:
    root = Path(cfg["train"]["log_dir"])
    name = cfg["train"]["run_name"]
    if name is not None:
        run_dir = root / name
        if RunDirectory(run_dir).has_checkpoints():
            raise ConfigError(f"train.run_name: {run_dir} already holds a run; resume={run_dir} continues it")
        return run_dir
    base = f"{algorithm_label(cfg['algo'], cfg.get('reweight'))}-{cfg['env']['name']}-s{cfg['seed']}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, n = root / base, 1
    while run_dir.exists():
        run_dir, n = root / f"{base}-{n}", n + 1
    return run_dir
