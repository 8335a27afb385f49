"""Keep the README's sample outputs true: ``python -m experiments.docs.readme [write=true] [only=TEXT]``.

A sample is a fenced block right after a marker line

    <!-- sample: python -m experiments.run algo=grpo -->
    <!-- sample[from=paired comparison, numbers]: python -m experiments.run "arena=[grpo,grpo_hadw]" train.steps=100 -->

whose first line is ``$ <command>`` and the rest the command's output. Commands run through
bash, one scratch directory for all samples in README order (a sample may use what an
earlier one wrote). ``write=true`` runs every command (in a scratch directory, as a user
would from a fresh clone) and rewrites the blocks; by default it runs them and lists the
blocks that drifted (exit 1), which is what the test suite does. Timings, dates and scratch paths are masked before comparing; a sample marked
``numbers`` (benchmark figures that vary from run to run) is compared with every number
masked. Options: ``from=TEXT`` keeps the output from the first line containing TEXT,
``head=N`` keeps N lines, ``stderr`` shows standard error instead of standard output.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import attrs

from experiments.cli import parse_args

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MARKER = re.compile(r"^<!-- sample(?:\[(?P<opts>[^\]]*)\])?: (?P<cmd>.+?) -->$")
VOLATILE = [
    (re.compile(r"\b\d+(\.\d+)? s\b"), "<t> s"),  # durations
    (re.compile(r"\d{8}-\d{6}(-\d+)?"), "<time>"),  # run-directory timestamps
    (re.compile(r"\d+(\.\d+)?(e[-+]?\d+)?/s\b"), "<rate>/s"),  # throughputs
]
NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?x?")


@attrs.frozen
class Sample:
    command: str
    options: dict[str, str]
    start: int
    """Line index of the block's opening fence."""
    end: int
    """Line index of the block's closing fence."""
    text: str
    """The block's content (``$ command`` and the output)."""


def find_samples(lines: list[str]) -> list[Sample]:
    samples = []
    for i, line in enumerate(lines):
        m = MARKER.match(line.strip())
        if not m:
            continue
        if i + 1 >= len(lines) or not lines[i + 1].startswith("```"):
            raise ValueError(f"README line {i + 1}: a sample marker must be followed by a fenced block")
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        opts = {}
        for opt in filter(None, (o.strip() for o in (m.group("opts") or "").split(","))):
            key, _, value = opt.partition("=")
            opts[key.strip()] = value.strip()
        samples.append(Sample(m.group("cmd"), opts, i + 1, end, "\n".join(lines[i + 2:end])))
    return samples


def run_sample(sample: Sample, workdir: Path) -> str:
    """``$ command`` and its (trimmed) output, run from ``workdir`` with the repository importable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RLVR_DATA_DIR": str(ROOT.parent / "shared" / "data"),
           "HYDRA_FULL_ERROR": "0", "COLUMNS": "100",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # `python` is this one
    done = subprocess.run(["bash", "-c", sample.command], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=900)
    out = (done.stderr if "stderr" in sample.options else done.stdout).rstrip().splitlines()
    if "from" in sample.options:
        key = sample.options["from"]
        first = next((k for k, line in enumerate(out) if key in line), None)
        if first is None:
            raise RuntimeError(f"{sample.command}: no output line contains {key!r}:\n" + "\n".join(out[-20:]))
        out = out[first:]
    if "head" in sample.options:
        out = out[: int(sample.options["head"])]
    text = "\n".join(line.rstrip().replace(str(workdir), ".") for line in out)
    return f"$ {sample.command}\n{text}"


def masked(text: str, numbers: bool) -> str:
    for pattern, repl in VOLATILE:
        text = pattern.sub(repl, text)
    return NUMBER.sub("<n>", text) if numbers else text


def drifted(sample: Sample, fresh: str) -> bool:
    numbers = "numbers" in sample.options
    return masked(sample.text, numbers) != masked(fresh, numbers)


@attrs.frozen
class ReadmeOptions:
    write: bool = False
    """Rewrite the README's sample blocks with fresh output (default: check, listing those that drifted)."""
    only: str = ""
    """Only samples whose command contains this text."""
    readme: Path = attrs.field(default=README, converter=Path)
    """The Markdown file."""


def main(argv: list[str] | None = None) -> int:
    args, _ = parse_args(argv, ReadmeOptions, "python -m experiments.docs.readme", __doc__)
    lines = args.readme.read_text().split("\n")
    samples = [s for s in find_samples(lines) if args.only in s.command]
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for sample in samples:
            fresh = run_sample(sample, Path(tmp))
            print(f"{'ok   ' if not drifted(sample, fresh) else 'DRIFT'} {sample.command}", file=sys.stderr)
            if drifted(sample, fresh):
                stale.append((sample, fresh))
    if args.write:
        for sample, fresh in sorted(stale, key=lambda x: -x[0].start):  # bottom-up keeps line numbers valid
            lines[sample.start + 1:sample.end] = fresh.split("\n")
        args.readme.write_text("\n".join(lines))
        print(f"rewrote {len(stale)} of {len(samples)} samples", file=sys.stderr)
        return 0
    for sample, fresh in stale:
        print(f"--- README (line {sample.start + 1})\n{sample.text}\n+++ fresh\n{fresh}\n")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
