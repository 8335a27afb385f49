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

import os
import sys
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from algorithms import ConfigError
from algorithms.algorithm import algorithm_label
from experiments.training.build import build_trainer, override_key
from experiments.parallel.launch import broadcast_object, is_main_process, launched_as_main
from experiments.training.checkpoint import list_checkpoints, readable_checkpoints
from experiments.training.lock import RunLock, RunLocked
from experiments.training.tracking import make_logger
from experiments.training.trainer import Trainer

CONFIG_FILE = "config.yaml"
"""The resolved config a run directory holds (written before its logger starts)."""
RESUMABLE_OVERRIDES = ("resume", "resume_accept", "train.steps", "train.progress", "train.checkpoint_every",
                       "train.keep_checkpoints", "train.loggers")
"""What may change when a run is resumed (everything else is the run's own config, unless
named in ``resume_accept``)."""
LOCK_FILE = "run.lock"
EVENTS_PREFIX = "events.out.tfevents."
RESUMES_LOG = "resumes.log"
"""Config changes accepted on resume (``resume_accept``), one line each."""


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

    @property
    def model_dir(self) -> Path:
        """The final export (renamed into place whole: it exists only complete)."""
        return self.path / "model"

    def write_config(self, cfg: dict[str, Any]) -> None:
        """``config.yaml``, written to a temporary file then renamed (removed if the write fails)."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{CONFIG_FILE}.tmp"
        try:
            tmp.write_text(config_yaml(cfg))
            os.replace(tmp, self.config_file)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def lock(self, field: str) -> RunLock:
        """Take the run's lock (held until ``release``); a ConfigError naming ``field`` and the
        live process that holds it."""
        try:
            return RunLock(self.path / LOCK_FILE)
        except RunLocked as exc:
            raise ConfigError(f"{field}: {exc}; a run directory is written by one process at a time "
                              "(wait for that run to end, or stop it; Ctrl-C saves a checkpoint)") from None

    def check_not_live(self, field: str) -> None:
        """A ConfigError naming the live process that holds the run's lock, if one does
        (creates nothing where there is no lock file). Only the launcher's main process looks:
        the others would find each other's brief test locks."""
        if launched_as_main() and (self.path / LOCK_FILE).is_file():
            self.lock(field).release()

    def create(self, field: str, unique: bool) -> tuple[Path, RunLock]:
        """Make the directory and lock it. ``unique`` (a default name): a new folder, suffixed
        ``-1``, ``-2``, ... where the name is taken (two runs started in the same second); else
        the named folder, refused while it holds checkpoints or a live run, its old event files
        and model removed. Returns the folder and its lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        base, n = self.path, 1
        while unique:
            try:
                self.path.mkdir()
                break
            except FileExistsError:
                self.path, n = base.with_name(f"{base.name}-{n}"), n + 1
        self.path.mkdir(exist_ok=True)
        lock = self.lock(field)
        if self.has_checkpoints():
            lock.release()
            raise ConfigError(f"{field}: {self.path} already holds a run; resume={self.path} continues it")
        stale = [p for p in self.path.iterdir() if p.name.startswith(EVENTS_PREFIX)]
        for old in stale:
            old.unlink()
        if self.model_dir.exists():
            import shutil

            shutil.rmtree(self.model_dir)
            stale.append(self.model_dir)
        if stale:
            print(f"{field}: reusing {self.path} (no checkpoints): removed {len(stale)} file(s) of an earlier run",
                  file=sys.stderr)
        return self.path, lock

    def read_config(self, field: str = "resume") -> dict[str, Any]:
        """The run's resolved config; a ConfigError naming ``field`` and the file where there is none."""
        if not self.config_file.is_file():
            raise ConfigError(f"{field}: {self.config_file} not found ({field} takes a run directory)")
        return OmegaConf.to_container(OmegaConf.load(self.config_file), resolve=True)

    def has_checkpoints(self) -> bool:
        return bool(list_checkpoints(self.path))

    def logger(self, config_text: str | None = None, history: list[dict[str, float]] | None = None,
               loggers=("tensorboard",), config: dict[str, Any] | None = None):
        """The run's loggers (``train.loggers``; TensorBoard by default), writing nothing until
        their first event (then the config: ``config_text``, else its config file's; ``history``:
        a resumed run's, rewritten into one event file)."""
        if config_text is None and self.config_file.is_file():
            config_text = self.config_file.read_text()
        return make_logger(loggers, self.path, config, config_text, history)


class TrainingRun:
    """One run: its directory (locked by the main process while the run lives), its Trainer
    (logger attached), closed on exit."""

    def __init__(self, trainer: Trainer, directory: RunDirectory, config: dict[str, Any], resumed_from: Path | None,
                 writes: bool, lock: RunLock | None = None):
        self.trainer, self.directory, self.config = trainer, directory, config
        self.resumed_from, self.writes, self.lock = resumed_from, writes, lock

    @classmethod
    def prepare(cls, cfg: dict[str, Any], run_dir: str | Path, *, resume: bool = False,
                prompt_source: Callable | None = None, write: bool = True) -> TrainingRun:
        """Build every component of ``cfg`` (validating it); ``resume``: lock the directory and
        restore its newest checkpoint that verifies, fits and recorded this config. A new
        run writes nothing yet (``commit``). With ``write``, the main process gets a logger,
        which writes nothing until its first event."""
        directory = RunDirectory(run_dir)
        writes = write and is_main_process()  # only the main process writes
        trainer = build_trainer(cfg, directory.path, None, prompt_source)  # validates before the disk
        trainer.config = cfg
        lock, resumed_from = None, None
        if resume:
            lock = directory.lock("resume") if writes else None
            try:
                resumed_from = restore(trainer, directory, cfg, report=writes)
            except BaseException:
                if lock is not None:
                    lock.release()
                raise
        if writes:
            loggers = trainer.params.loggers
            trainer.logger = (directory.logger(config_yaml(cfg), loggers=loggers, config=cfg) if not resume else
                              directory.logger(history=list(trainer.history), loggers=loggers, config=cfg))
        return cls(trainer, directory, cfg, resumed_from, writes, lock)

    def commit(self) -> TrainingRun:
        """A new run: create (or reuse, see ``RunDirectory.create``) the directory, lock it and
        write its config (the main process; every process learns the final name)."""
        if self.resumed_from is None:
            path = self.directory.path
            if self.writes:
                unique = self.config["train"].get("run_name") is None
                path, self.lock = self.directory.create("train.run_name", unique)
                try:
                    self.directory.write_config(self.config)
                except BaseException:
                    self.close()
                    raise
            path = Path(broadcast_object(str(path)))  # several processes: the main one's name
            self.directory.path = self.trainer.run_dir = path
            if self.trainer.logger is not None:
                self.trainer.logger.run_dir = path
        return self

    @classmethod
    def start(cls, cfg: dict[str, Any], run_dir: str | Path, **kwargs) -> TrainingRun:
        """``prepare`` then ``commit``."""
        return cls.prepare(cfg, run_dir, **kwargs).commit()

    @classmethod
    def resume(cls, cfg: dict[str, Any], run_dir: str | Path) -> TrainingRun:
        """The run in ``run_dir`` from its newest usable checkpoint, with ``cfg`` (its own
        config, plus the overrides a resume may change)."""
        return cls.prepare(cfg, run_dir, resume=True)

    @property
    def exported(self) -> bool:
        return self.directory.model_dir.is_dir()

    def train(self, on_step: Callable | None = None) -> list[dict[str, float]]:
        return self.trainer.train(on_step)

    def close(self) -> None:
        if self.trainer.logger is not None:
            self.trainer.logger.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> TrainingRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def restore(trainer: Trainer, directory: RunDirectory, cfg: dict[str, Any] | None, field: str = "resume",
            report: bool = True) -> Path:
    """Load the newest checkpoint of ``directory`` that verifies and fits ``trainer``'s model
    into it, skipping (with a warning naming why) damaged ones and ones that do not fit;
    refuse one that recorded another config than ``cfg`` (up to the resumable fields and
    ``resume_accept``; ``cfg`` None: no comparison). Returns its path; a ConfigError naming
    the files when none is usable."""
    for path, state in readable_checkpoints(directory.path):
        try:
            trainer.load_state_dict(state)  # a successful load sets every part of the state
        except ConfigError:
            raise
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError) as exc:  # another model's
            why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            warnings.warn(f"skipping checkpoint {path}: does not fit this run's model ({why})", stacklevel=2)
            continue
        if cfg is not None:
            check_config(state.get("config"), cfg, path, report)
        return path
    listed = [p.name for p in list_checkpoints(directory.path)]
    raise ConfigError(f"{field}: no usable checkpoint in {directory.path / 'checkpoints'}"
                      + (f" (tried {', '.join(reversed(listed))}; see the warnings above)" if listed else ""))


def check_config(recorded: dict[str, Any] | None, cfg: dict[str, Any], path: Path, report: bool) -> None:
    """A resumed run's ``cfg`` against the config its checkpoint ``path`` recorded: a changed
    field (other than the resumable ones) is refused unless named in ``cfg["resume_accept"]``,
    and an accepted one is reported (stderr) and logged (``resumes.log`` of the run)."""
    if recorded is None:  # a checkpoint written before configs were recorded
        return
    accepted = list(cfg.get("resume_accept") or [])
    changes = [(k, a, b) for k, a, b in config_changes(recorded, cfg) if not k.startswith(RESUMABLE_OVERRIDES)]
    refused = [c for c in changes if not any(c[0] == a or c[0].startswith(a + ".") for a in accepted)]
    if refused:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in refused)
        raise ConfigError(f"resume: the config differs from the one {path.name} recorded ({listed}); "
                          f"resume_accept=[{','.join(k for k, _, _ in refused)}] continues with the new values")
    if changes and report:
        line = f"resume from {path.name}: accepted " + "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in changes)
        print(line, file=sys.stderr)
        with open(path.parents[1] / RESUMES_LOG, "a") as f:
            f.write(f"{datetime.now():%Y-%m-%d %H:%M:%S} {line}\n")


def config_changes(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in ``a``, value in ``b``) of every leaf that differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            out += config_changes(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [(prefix[:-1], a, b)]


def load_trained(run_dir: str | Path, field: str = "run") -> tuple[Trainer, dict[str, Any]]:
    """A trained run's Trainer (its config, its newest checkpoint restored) and config; writes nothing."""
    directory = RunDirectory(run_dir)
    cfg = directory.read_config(field)
    trainer = build_trainer(cfg, directory.path)
    restore(trainer, directory, None, field)
    return trainer, cfg


def resolve_config(cfg: DictConfig, overrides: list[str]) -> tuple[dict[str, Any], Path, bool]:
    """The run's config, its directory and whether it resumes an earlier run."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    literal = [o.split("=", 1)[1] for o in overrides if override_key(o) == "train.run_name" and "=" in o]
    if literal and plain["train"]["run_name"] is not None:  # the text typed, not what YAML made of it (1e3, nan)
        plain["train"]["run_name"] = literal[-1].strip("'\"")
    if not plain.get("resume"):
        return plain, new_run_dir(plain), False
    run_dir = Path(plain["resume"])
    saved = RunDirectory(run_dir).config_file
    if not saved.is_file():
        raise ConfigError(f"resume: {saved} not found (resume takes a run directory)")
    RunDirectory(run_dir).check_not_live("resume")  # before anything is built
    accepted = plain.get("resume_accept") or []
    accepted = [accepted] if isinstance(accepted, str) else accepted
    if not isinstance(accepted, list) or not all(isinstance(k, str) for k in accepted):
        raise ConfigError(f"resume_accept: a list of config keys is expected (resume_accept=[optim.lr]), got {accepted!r}")
    plain["resume_accept"] = accepted
    accepted = tuple(accepted)
    changed = [o for o in overrides if not override_key(o).startswith(RESUMABLE_OVERRIDES + accepted)]
    if changed:
        raise ConfigError(
            f"resume: cannot change {', '.join(changed)} when resuming; the run's config is {saved} "
            f"(allowed: {', '.join(RESUMABLE_OVERRIDES[2:])}; resume_accept=[KEY,...] allows more)"
        )
    resumed = OmegaConf.load(saved)
    explicit = {override_key(o) for o in overrides}
    for key in explicit - {"resume"}:
        OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), merge=False)
    resumed.resume = str(run_dir)
    resumed.resume_accept = list(accepted)
    return OmegaConf.to_container(resumed, resolve=True), run_dir, True


def new_run_dir(cfg: dict[str, Any]) -> Path:
    """A new run's directory: ``train.run_name`` under ``train.log_dir`` (refused where it holds
    a run), else a name from the algorithm, env, seed and time (made unique when created)."""
    root = Path(cfg["train"]["log_dir"])
    name = cfg["train"]["run_name"]
    if name is not None:
        name = str(name)
        if not name.strip() or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ConfigError(f"train.run_name: must be a folder name under train.log_dir, got {name!r}")
        run_dir = root / name
        RunDirectory(run_dir).check_not_live("train.run_name")
        if RunDirectory(run_dir).has_checkpoints():
            raise ConfigError(f"train.run_name: {run_dir} already holds a run; resume={run_dir} continues it")
        return run_dir
    base = f"{algorithm_label(cfg['algo'], cfg.get('reweight'))}-{cfg['env']['name']}-s{cfg['seed']}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir, n = root / base, 1
    while run_dir.exists():
        run_dir, n = root / f"{base}-{n}", n + 1
    return run_dir
