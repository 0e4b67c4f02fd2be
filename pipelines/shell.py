"""The shell every Beam job runs in: its command line, its usage errors, its output folder, its exit status.

A job module (pipelines.extract, pipelines.predict) declares its options, checks its inputs, builds its
pipeline and finishes it; the shell does the rest, the same way for every job:

- `JobShell`: the job's --help, its options as a Beam `PipelineOptions` class, the command line parsed
  and checked (did-you-mean for unknown options), the pipeline run with progress, and main's mapping
  of errors to exit statuses.
- `UsageError`, `notice`, and what the jobs' checks share (`comma_list`, `check_shared_options`).
- `prepare_output`: stop before the job starts when its output is taken or not writable.

The checks themselves are in pipelines.checks; the end of a job's pipeline (dead letters, the finishing
step) is in pipelines.tail.

Nothing here imports Beam or TensorFlow at module level: --help answers without them (Beam alone takes
seconds to import), and TensorFlow loads only when a job runs, after the quiet start.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pipelines.options import help_flags, help_parser, parse_job_flags, runner_help, unknown_flags_message
from transforms.runtime.command import prog, strip_verbose
from transforms.runtime.outcome import JobFailed, Outcome, check_max_error_fraction

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.progress import Progress


class UsageError(ValueError):
    """Bad command-line input; the message says what to change."""


def comma_list(value: str | None) -> list[str] | None:
    """A comma-separated option as its items (None when not given or empty)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def notice(message: str) -> None:
    """A line for the user about a choice the job made for them."""
    print(f"note: {message}", file=sys.stderr)


def check_shared_options(opts: Any) -> None:
    """The numbers of the options every job shares: --max-attempts, --max-error-fraction."""
    if opts.max_attempts < 1:
        raise UsageError(f"--max-attempts must be at least 1, got {opts.max_attempts}.")
    try:
        check_max_error_fraction(opts.max_error_fraction)
    except ValueError as e:
        raise UsageError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class CommandLine:
    """A job's command line, parsed and checked."""

    args: list[str]  # as Beam reads it: accepted spellings rewritten, --verbose taken out
    options: PipelineOptions  # every option, Beam's own included
    job: Any  # the job's own options: `options` viewed as the job's options class


# The options classes made so far, by (module, name): Beam knows a class by its identity.
_OPTIONS_CLASSES: dict[tuple[str, str], type] = {}


@dataclasses.dataclass(frozen=True)
class JobShell:
    """What the shell needs to know of a job."""

    # "pipelines.extract": its `python -m` name and the home of its options class (not `__name__`, which
    # is "__main__" under `python -m`: one options class per job, however often its module loads).
    module: str
    options_name: str  # "ExtractOptions"
    add_options: Callable[[Any], None]  # adds the job's options, grouped, to an argparse parser
    description: str  # the first paragraph of --help
    job: str  # "extraction": in --help's paragraph on the runner options, and in a failure's report
    # The command's name in usage lines, and the paragraph after its options, when another command
    # parses the job's options (`terrabeam plan extract`): default the job's own.
    name: str | None = None
    epilog: str | None = None

    def options_class(self) -> type:
        """The job's options as a Beam `PipelineOptions` subclass, made on first use.

        Beam takes seconds to import and --help needs none of it, so the job module offers this class
        through its module `__getattr__` (`module_attribute`) instead of defining it at import.
        """
        key = (self.module, self.options_name)
        if key not in _OPTIONS_CLASSES:
            from apache_beam.options.pipeline_options import PipelineOptions

            add_options = self.add_options

            def _add_argparse_args(cls, parser) -> None:
                add_options(parser)

            _OPTIONS_CLASSES[key] = type(
                self.options_name,
                (PipelineOptions,),
                {
                    "__module__": self.module,
                    "__qualname__": self.options_name,
                    "__doc__": f"The options of `python -m {self.module}`, as Beam parses them.",
                    "_add_argparse_args": classmethod(_add_argparse_args),
                },
            )
        return _OPTIONS_CLASSES[key]

    def module_attribute(self, name: str) -> type:
        """The job module's `__getattr__` (PEP 562): its options class, by name."""
        if name == self.options_name:
            return self.options_class()
        raise AttributeError(f"module {self.module!r} has no attribute {name!r}")

    def help_parser(self) -> argparse.ArgumentParser:
        """--help: the job's options as it groups them, then Beam's runner options."""
        return help_parser(
            self.name or prog(self.module),
            self.description,
            [self.add_options],
            self.epilog or runner_help(self.job),
        )

    def parse(
        self,
        argv: Sequence[str] | None,
        save_main_session: bool = False,
        aliases: Callable[[Sequence[str]], list[str]] = list,
    ) -> CommandLine:
        """Answer --help, or parse and check the command line (UsageError: unknown options, with the
        closest known one). `aliases` rewrites spellings the job accepts besides its own."""
        args, _ = strip_verbose(aliases(argv or []))
        parser = self.help_parser()
        parse_job_flags(args, parser)  # --help ends here, before Beam is imported
        from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions

        options = PipelineOptions(args)
        options.view_as(SetupOptions).save_main_session = save_main_session
        options_class = self.options_class()  # known to Beam before unknown options are looked for
        problem = unknown_flags_message(options, help_flags(parser))
        if problem:
            raise UsageError(problem)
        job = options.view_as(options_class)
        if job.max_memory is not None and not job.max_memory > 0:
            raise UsageError(f"--max-memory must be a positive number of GiB, got {job.max_memory}.")
        return CommandLine(args, options, job)

    def run_pipeline(
        self,
        options: PipelineOptions,
        build: Callable[[Any, bool], None],
        progress: Progress,
        outcome_path: str,
        where: str,
    ) -> Outcome | None:
        """Run the pipeline that `build(pipeline, remote)` makes to its end, showing `progress`
        (pipelines.progress), on this machine's LocalRunner where it runs here. Returns the outcome
        recorded in `outcome_path` (None where the runner returned before the job ended); JobFailed
        when it is a failure. `where`: what to look at then (the output folder)."""
        from pipelines.options import local_runner
        from pipelines.progress import run_job

        runner = local_runner(options)
        return run_job(
            options, build, progress, outcome_path=outcome_path, job=self.job, where=where, runner=runner
        )

    def exit_status(
        self,
        run: Callable[[list[str]], Any],
        argv: Sequence[str],
        verbose: bool,
        input_errors: Callable[[], tuple[type[Exception], ...]] = tuple,
        report: Callable[[Any], None] | None = None,
    ) -> int:
        """Run the job and say how it ended: 0 done (after `report(result)`), 1 failed (its report on
        stderr), 2 bad input (`error: <what to change>`); argparse's own statuses for --help and
        badly typed values. Any other error is a bug and propagates with its traceback.

        `input_errors` gives the errors besides UsageError that mean bad input (an error may carry
        its own exit `status`); it is called only once an error is raised, so that the modules defining
        them load when the job runs. The job's main() starts quietly before it calls this (TensorFlow
        reads its log level once).
        """
        logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
        try:
            result = run(list(argv))
        except SystemExit as e:  # --help (0), or a badly typed option that argparse reported (2)
            return e.code if isinstance(e.code, int) else 2
        except JobFailed as e:
            print(e.report(), file=sys.stderr)
            return 1
        except Exception as e:
            if not isinstance(e, (UsageError, *input_errors())):
                raise
            print(f"error: {e}", file=sys.stderr)
            return getattr(e, "status", 2)  # e.g. AssetError: 1 when the written map failed to register
        if report is not None:
            report(result)
        return 0


def prepare_output(
    output: str,
    earlier: Sequence[str],
    overwrite: bool,
    holds: str,
    clear: Callable[[Sequence[str]], None],
    or_else: str = "",
) -> None:
    """Stop before the job starts unless `output` is writable, and free of an earlier result unless
    --overwrite: then `clear(earlier)` removes the `earlier` files found there.

    `holds` names the earlier result ("an extraction"); `or_else` follows the --overwrite advice.
    """
    if earlier and not overwrite:
        raise UsageError(
            f"{output!r} already holds {holds} ({earlier[0]}); pass --overwrite to replace it{or_else}."
        )
    from apache_beam.io.filesystems import FileSystems

    base = output.rstrip("/")
    probe = f"{base}/.terrabeam-write-test"
    try:
        if "://" not in base:
            os.makedirs(base, exist_ok=True)
        with FileSystems.create(probe) as f:
            f.write(b"ok")
        FileSystems.delete([probe])
        if earlier:
            clear(earlier)
    except Exception as e:
        raise UsageError(f"Output {output!r} is not writable: {e}") from None
