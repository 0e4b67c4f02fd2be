"""The `terrabeam` command: one entry point for every job and tool.

    terrabeam extract --points-per-class 50        # = python -m pipelines.extract --points-per-class 50
    terrabeam train --epochs 5                     # = python -m model.train --epochs 5
    terrabeam predict --help

Each subcommand runs a module's own entry point with the rest of the command line, so `terrabeam X ...`
and `python -m <module> ...` behave the same (Dataflow and the Flex Templates use the `python -m` forms).
A command is one row of COMMANDS; its module is imported only when it runs, after the quiet start, so
`terrabeam --help` is instant and TensorFlow's start-up lines stay hidden.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata

from transforms.runtime.command import fill, quiet_start, set_prog

PROG = "terrabeam"


@dataclasses.dataclass(frozen=True)
class Command:
    module: str  # imported when the command runs
    entry: str  # its function taking argv and returning the exit status
    summary: str  # one line for `terrabeam --help`


COMMANDS: dict[str, Command] = {
    "extract": Command("pipelines.extract", "main", "Extract training patches (TFRecords + manifest.json)."),
    "train": Command("model.train", "run", "Train a model on an extraction and write the model folder."),
    "predict": Command("pipelines.predict", "main", "Predict a land-cover map (COGs) with a trained model."),
    "evaluate": Command("model.evaluate", "run", "Evaluate a model folder on a split of an extraction."),
    "serve": Command(
        "model.serving.serve", "main", "Serve a model over HTTP for Vertex AI and Earth Engine."
    ),
    "launch": Command("pipelines.launch", "main", "Launch a job's Dataflow Flex Template on Google Cloud."),
    "view": Command(
        "pipelines.view", "main", "Open a prediction or a change (two dates) on a local web map."
    ),
    "eeify": Command(
        "model.serving.eeify", "main", "Make any image model Earth-Engine-ready (Base64 tensors in and out)."
    ),
    "deploy": Command(
        "model.serving.deploy", "main", "Host a model on Vertex AI for Earth Engine; list; undeploy."
    ),
    "plan": Command(
        "pipelines.plan",
        "main",
        "What an extract or predict job will do and cost (requests, hours, USD), before it runs.",
    ),
    "change": Command(
        "pipelines.change", "main", "Change between two dates: transitions, changed area (one model)."
    ),
    "assess": Command(
        "pipelines.assess",
        "main",
        "Map accuracy and area with 95 % confidence intervals (Olofsson et al. 2014).",
    ),
}

EPILOG = """\
`terrabeam COMMAND --help` lists a command's options. With no options, extract, train and predict run on
a generated demo scene, on this machine. The Beam jobs also run as `python -m pipelines.extract`,
`python -m pipelines.predict` and `python -m pipelines.train` (training as a Beam job, e.g. on Dataflow
with a GPU); the rest of the command line passes through to Apache Beam."""


def version() -> str:
    """terrabeam's version, with the Beam and TensorFlow it runs on (read without importing them)."""

    def installed(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    own = installed("terrabeam") or "unknown (not installed: run `make install`)"
    parts = [f"{label} {v}" for label, v in (("Apache Beam", installed("apache-beam")),) if v]
    tensorflow = installed("tensorflow-cpu") or installed("tensorflow")
    if tensorflow:
        parts.append(f"TensorFlow {tensorflow}")
    parts.append(f"Python {sys.version.split()[0]}")
    return f"{PROG} {own} ({', '.join(parts)})"


def usage() -> str:
    width = max(len(name) for name in COMMANDS) + 2
    lines = [
        f"usage: {PROG} COMMAND [options]",
        "",
        "Satellite imagery to land-cover maps with deep learning, at any scale.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}{command.summary}" for name, command in COMMANDS.items()]
    lines += [
        "",
        "options:",
        f"  {'-h, --help':<{width + 10}}show this help and exit",
        f"  {'--version':<{width + 10}}show terrabeam's version and exit",
        "",
        fill(EPILOG),
    ]
    return "\n".join(lines)


def unknown_command(name: str) -> str:
    close = difflib.get_close_matches(name, list(COMMANDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"error: unknown command {name!r}{hint}; commands: {', '.join(COMMANDS)}. See `{PROG} --help`."


def main(argv: Sequence[str] | None = None) -> int:
    """Run `terrabeam COMMAND ...`; returns the command's exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    quiet_start(args)  # first: before a command's imports load TensorFlow
    if not args:
        print(usage(), file=sys.stderr)
        print(f"\nerror: name a command ({', '.join(COMMANDS)}).", file=sys.stderr)
        return 2
    name, rest = args[0], args[1:]
    if name in ("-h", "--help"):
        print(usage())
        return 0
    if name == "--version":
        print(version())
        return 0
    if name == "help" and rest:  # `terrabeam help extract` = `terrabeam extract --help`
        name, rest = rest[0], ["--help"]
    command = COMMANDS.get(name)
    if command is None:
        print(unknown_command(name), file=sys.stderr)
        return 2
    set_prog(command.module, f"{PROG} {name}")
    entry = getattr(importlib.import_module(command.module), command.entry)
    try:
        status = entry(rest)
    except SystemExit as e:  # argparse's --help and usage errors
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
