"""What every terrabeam command shares: a quiet start, its program name, the help layout, and the
did-you-mean for a misspelt option (`CommandParser` puts the last two together for a command's parser).

A command starts quietly: TensorFlow's C++ start-up lines (CPU features, oneDNN), absl's and other
libraries' log lines and warnings that say nothing about the user's data are hidden, unless the user
asks for them with `--verbose` or sets `TF_CPP_MIN_LOG_LEVEL` themselves. TensorFlow reads
`TF_CPP_MIN_LOG_LEVEL` once, when it loads, so `quiet_start` must run before TensorFlow is imported:
`terrabeam` (pipelines/cli.py) calls it before it imports a command, and every command's entry point calls
it at the top of its main() (commands import TensorFlow only when they run). Beam's local worker processes
inherit the environment, so they start quietly too.
Where TensorFlow 2.21 turns oneDNN's custom operations on, it announces them through absl before absl
is initialized, which no log level reaches: while TensorFlow loads, a quiet start filters that notice
out of stderr (transforms/runtime/quiet_tensorflow.py), in Beam's local worker processes too.

This module imports nothing heavy: it runs before TensorFlow and Beam load.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import shutil
import sys
import textwrap
import warnings
from collections.abc import Sequence
from typing import Any

from transforms.runtime.quiet_tensorflow import QUIET_ENV, hide_notice_while_tensorflow_loads, remove_finder

VERBOSE_FLAG = "--verbose"
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
# 2 hides TensorFlow's C++ INFO and WARNING lines (CPU-feature guard, oneDNN notice, allocator
# warnings); errors still show.
QUIET_TF_LOG_LEVEL = "2"

# Lines that Beam logs, or its local runner forwards from its worker processes, which say nothing about
# the user's job: the workers parse the job's options without the job's option classes, RunInference's
# memory probe does not work on every platform, an empty dead-letter output has no shard to finalize.
BEAM_NOISE = re.compile(
    r"No semi_persistent_directory found"
    r"|Discarding unparseable args"
    r"|Resource module is not available for current platform"
    r"|Missing pipeline option \(runner\)"
    r"|No shards found to finalize"
)
# The loggers those lines come from (a logger's filters see only the records logged on it).
BEAM_NOISE_LOGGERS = (
    "",  # the root logger: Beam logs some lines with logging.warning()
    "apache_beam.runners.portability.local_job_service",
    "apache_beam.io.filebasedsink",
)
NOISY_LOGGERS = {
    # Keras and TensorFlow log through absl/`tensorflow` about their own internals (retracing, saving
    # formats, compiled metrics) at WARNING.
    "absl": logging.ERROR,
    "tensorflow": logging.ERROR,
    "h5py": logging.ERROR,
}
# Python warnings raised inside these libraries about their own use of other libraries.
NOISY_WARNING_MODULES = (
    r"(keras|tensorflow|tf_keras|absl|apache_beam|google|grpc|h5py|ml_dtypes|pyarrow|proto)(\.|$)"
)

_PROGS: dict[str, str] = {}
_state = {"quiet": False}


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not BEAM_NOISE.search(message)


_DROP_NOISE = _DropNoise()


def wants_verbose(argv: Sequence[str]) -> bool:
    """True when the command line asks for every message (`--verbose`, with or without a value)."""
    return any(arg == VERBOSE_FLAG or arg.startswith(VERBOSE_FLAG + "=") for arg in argv)


def strip_verbose(argv: Sequence[str]) -> tuple[list[str], bool]:
    """`argv` without a bare `--verbose` switch, and whether it was there (for Beam jobs, whose
    options parser would report it as unknown)."""
    rest = [arg for arg in argv if arg != VERBOSE_FLAG]
    return rest, len(rest) != len(argv)


def quiet_start(argv: Sequence[str] | None = None) -> bool:
    """Hide start-up noise unless `argv` holds `--verbose`; returns whether it does.

    The user's own `TF_CPP_MIN_LOG_LEVEL` is left as it is. Safe to call more than once.
    """
    if argv is not None and wants_verbose(argv):
        show_onednn_notice()
        return True
    os.environ.setdefault(TF_LOG_LEVEL_ENV, QUIET_TF_LOG_LEVEL)
    if os.environ[TF_LOG_LEVEL_ENV].strip() in ("", "0"):
        show_onednn_notice()  # the user's own level asks for TensorFlow's INFO lines
    else:
        # The oneDNN notice is an INFO line that escapes TensorFlow's level: hide it as the level asks.
        os.environ[QUIET_ENV] = "1"
        hide_notice_while_tensorflow_loads()
    for name, level in NOISY_LOGGERS.items():
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < level:
            logger.setLevel(level)
    try:  # absl's own verbosity (Keras logs through it); absl comes with TensorFlow
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=NOISY_WARNING_MODULES)
    drop_beam_noise()
    _state["quiet"] = True
    return False


def show_onednn_notice() -> None:
    """Let TensorFlow's oneDNN notice through, in this process and the ones it starts."""
    os.environ.pop(QUIET_ENV, None)
    remove_finder()


def drop_beam_noise() -> None:
    """Filter Beam's noise lines (BEAM_NOISE) out of the loggers that log them."""
    for name in BEAM_NOISE_LOGGERS:
        logger = logging.getLogger(name)
        if _DROP_NOISE not in logger.filters:
            logger.addFilter(_DROP_NOISE)


def is_quiet() -> bool:
    return _state["quiet"]


def set_prog(module: str, prog: str) -> None:
    """Name the command that runs `module` in its usage lines (`terrabeam extract` for `pipelines.extract`)."""
    _PROGS[module] = prog


def prog(module: str) -> str:
    """The command's name for usage lines: as `terrabeam` named it, else `python -m <module>`."""
    return _PROGS.get(module, f"python -m {module}")


def add_verbose_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        VERBOSE_FLAG,
        action="store_true",
        help="Show every message: TensorFlow's start-up lines, library warnings, progress logs.",
    )


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; each option's default and value type after its help.

    The default is added when the help text does not state one already, and left out for switches and
    options whose default is "not given" (None).
    """

    def __init__(self, prog: str, **kwargs) -> None:
        kwargs.setdefault("max_help_position", 32)
        kwargs.setdefault("width", max(40, min(shutil.get_terminal_size().columns, 110) - 2))
        super().__init__(prog, **kwargs)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default:" in text.lower()
            or "(default" in text.lower()
            or default is None
            or isinstance(default, bool)
            or default in (argparse.SUPPRESS, "", [], ())
            or not action.option_strings
        ):
            return text
        return f"{text} (default: {_shown(default)})"

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        if action.type is int:
            return "N"
        if action.type is float:
            return "NUMBER"
        return super()._get_default_metavar_for_optional(action)


def fill(text: str, width: int | None = None) -> str:
    """Wrap help paragraphs (separated by blank lines) to the terminal, as argparse wraps option help.

    A paragraph whose first line ends with ":" and whose other lines are indented is a heading and its
    body: the heading stays on its line, the body is wrapped below it, indented.
    """
    if width is None:
        width = max(40, min(shutil.get_terminal_size().columns, 110) - 2)
    out = []
    for paragraph in text.strip("\n").split("\n\n"):
        lines = paragraph.splitlines()
        if len(lines) > 1 and lines[0].endswith(":") and all(line[:1].isspace() for line in lines[1:]):
            body = " ".join(line.strip() for line in lines[1:])
            out.append(
                lines[0] + "\n" + textwrap.fill(body, width, initial_indent="  ", subsequent_indent="  ")
            )
        else:
            out.append(textwrap.fill(" ".join(line.strip() for line in lines), width))
    return "\n\n".join(out)


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value).replace("%", "%%")


# --- one parser for every command: grouped help, --verbose, did-you-mean ------------------------------


def closest_option(typed: str, *candidates: Sequence[str]) -> str | None:
    """The known option a misspelt one most likely meant, or None.

    `candidates` are tried in turn (e.g. the options --help lists, then every option), each with the
    option as typed and with its underscores as hyphens (`--patch_size` finds `--patch-size`).
    """
    for options in candidates:
        options = list(options)
        close = difflib.get_close_matches(typed, options, n=1) or difflib.get_close_matches(
            typed.replace("_", "-"), options, n=1
        )
        if close:
            return close[0]
    return None


def unknown_options_message(unknown: Sequence[str], *candidates: Sequence[str]) -> str:
    """One line naming each unknown option as typed, with the closest known one (`closest_option`)."""
    parts = []
    for typed in unknown:
        close = closest_option(typed, *candidates)
        parts.append(f"{typed} (did you mean {close}?)" if close else typed)
    return f"Unknown option(s): {', '.join(parts)}. Run with --help to list the options."


class CommandParser(argparse.ArgumentParser):
    """The parser of a command, with the look every terrabeam command shares.

    A short usage line (`PROG [options]` unless the command spells out its own), the description
    wrapped to the terminal, the options in titled groups (`add_argument_group`) after "general" (help
    and `--verbose`), each with its default and accepted values (HelpFormatter), and an unknown option
    answered as the Beam jobs answer it: one `error:` line with the closest option, exit status 2.
    """

    def __init__(
        self,
        module: str,
        description: str,
        *,
        usage: str = "%(prog)s [options]",
        epilog: str | None = None,
        name: str | None = None,
        allow_abbrev: bool = False,
        **step: Any,
    ) -> None:
        """`module` names the command in usage lines (`prog`), unless the caller passes its `name`.

        A step's parser (`add_subparsers(parser_class=CommandParser)`, `add_parser(NAME, module=...,
        description=...)`) gets its `prog` from argparse, as "terrabeam assess design"."""
        super().__init__(
            prog=step.pop("prog", None) or name or prog(module),
            usage=usage,
            description=fill(description),
            epilog=fill(epilog) if epilog else None,
            formatter_class=HelpFormatter,
            allow_abbrev=allow_abbrev,
        )
        self._optionals.title = "general"
        add_verbose_flag(self)

    def _actions_for(self, argv: Sequence[str]) -> dict[str, argparse.Action]:
        """The options that apply to `argv`: this parser's, and those of the step it names, if any."""
        known = dict(self._option_string_actions)
        steps = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if steps is not None:
            step = next((a for a in argv if a in steps.choices), None)
            if step is not None:
                known.update(steps.choices[step]._option_string_actions)
        return known

    def long_options(self, argv: Sequence[str] = ()) -> list[str]:
        """The long options --help lists (with those of the step `argv` names)."""
        return sorted(
            flag
            for flag, action in self._actions_for(argv).items()
            if flag.startswith("--") and action.help != argparse.SUPPRESS
        )

    def unknown_options(self, argv: Sequence[str]) -> list[str]:
        """The long options of `argv` this parser (or the step `argv` names) does not know, as typed
        (an abbreviation counts as known where the parser allows them; argparse itself reports an
        ambiguous one)."""
        known = self._actions_for(argv)
        unknown = []
        for arg in argv:
            if arg == "--":  # the end of the options
                break
            option = arg.split("=", 1)[0]
            if not option.startswith("--") or len(option) < 3 or option in known:
                continue
            if self.allow_abbrev and any(flag.startswith(option) for flag in known):
                continue
            unknown.append(option)
        return unknown

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> argparse.Namespace:
        argv = list(sys.argv[1:] if args is None else args)
        # Before argparse's own checks: a misspelt --project would otherwise read "--project is required".
        unknown = self.unknown_options(argv)
        if unknown:
            self.exit(2, f"error: {unknown_options_message(unknown, self.long_options(argv))}\n")
        return super().parse_args(argv, namespace)
