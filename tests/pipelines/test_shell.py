"""The job shell on its own: the options class made on first use, the command line checked, the output
probed, and the errors of a run turned into exit statuses."""

from __future__ import annotations

import types

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import SharedArgumentGroup
from pipelines.shell import JobShell, UsageError, check_shared_options, prepare_output
from transforms.runtime.outcome import JobFailed, Outcome


def _add_options(parser) -> None:
    group = SharedArgumentGroup(parser, "answers")  # --max-memory is the jobs' too
    group.add_argument(
        "--shell-test-answer", dest="shell_test_answer", type=int, default=42, help="An answer."
    )
    group.add_argument("--max-memory", dest="max_memory", type=float, default=None, help="GiB.")


SHELL = JobShell("tests.pipelines.shell_job", "ShellTestOptions", _add_options, "A test job.", "test job")


def test_the_options_class_is_made_once_per_job_and_parses_the_declared_options():
    options_class = SHELL.options_class()
    assert issubclass(options_class, PipelineOptions)
    assert (options_class.__module__, options_class.__name__) == (
        "tests.pipelines.shell_job",
        "ShellTestOptions",
    )
    again = JobShell("tests.pipelines.shell_job", "ShellTestOptions", _add_options, "", "")
    assert again.options_class() is options_class is SHELL.module_attribute("ShellTestOptions")
    assert PipelineOptions(["--shell-test-answer", "7"]).view_as(options_class).shell_test_answer == 7
    with pytest.raises(AttributeError, match="has no attribute 'Other'"):
        SHELL.module_attribute("Other")


def test_the_command_line_is_checked_and_rewritten_by_the_aliases():
    command = SHELL.parse(["--answer", "7"], aliases=lambda argv: ["--shell-test-answer", *argv[1:]])
    assert command.job.shell_test_answer == 7 and command.args == ["--shell-test-answer", "7"]
    with pytest.raises(UsageError, match=r"--shell-test-answr \(did you mean --shell-test-answer\?\)"):
        SHELL.parse(["--shell-test-answr", "7"])
    with pytest.raises(UsageError, match="--max-memory must be a positive number of GiB, got 0.0"):
        SHELL.parse(["--max-memory", "0"])


def test_help_exits_with_the_jobs_options(capsys):
    with pytest.raises(SystemExit) as exit:
        SHELL.parse(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m tests.pipelines.shell_job [options] [runner options]")
    assert "--shell-test-answer N" in out and "runner options (passed through to Apache Beam" in out


class _TiedUp(ValueError):
    status = 1  # bad input found after something was written: the run failed


def _exit_status(error: BaseException | None, capsys) -> tuple[int, str, list]:
    reported = []

    def run(argv):
        if error is not None:
            raise error
        return "result"

    status = SHELL.exit_status(run, [], False, lambda: (KeyError, _TiedUp), reported.append)
    return status, capsys.readouterr().err, reported


def test_each_end_of_a_run_has_its_exit_status(capsys):
    assert _exit_status(None, capsys) == (0, "", ["result"])
    assert _exit_status(UsageError("pass --x."), capsys) == (2, "error: pass --x.\n", [])
    assert _exit_status(KeyError("band"), capsys) == (2, "error: 'band'\n", [])
    assert _exit_status(_TiedUp("could not register"), capsys) == (1, "error: could not register\n", [])
    assert _exit_status(SystemExit(0), capsys)[0] == 0  # --help
    assert _exit_status(SystemExit(2), capsys)[0] == 2  # a badly typed value
    failed = JobFailed(Outcome.of("points", 0, [(("read failed", False), 3)]), "test job", "out/")
    status, err, _ = _exit_status(failed, capsys)
    assert status == 1 and err.startswith("error: test job failed: nothing was produced")
    with pytest.raises(RuntimeError, match="a bug"):  # not an input error: its traceback shows
        _exit_status(RuntimeError("a bug"), capsys)


def test_an_output_is_refused_when_taken_or_not_writable_and_cleared_with_overwrite(tmp_path):
    cleared = []
    with pytest.raises(UsageError) as taken:
        prepare_output(str(tmp_path), ["old.json"], False, "a result", cleared.extend, ", or --resume")
    assert str(taken.value) == (
        f"{str(tmp_path)!r} already holds a result (old.json); pass --overwrite to replace it, or --resume."
    )
    prepare_output(str(tmp_path / "new"), ["old.json"], True, "a result", cleared.extend)
    assert cleared == ["old.json"] and (tmp_path / "new").is_dir()
    assert list((tmp_path / "new").iterdir()) == []  # the probe is gone
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match="is not writable"):
        prepare_output(str(blocker / "out"), [], False, "a result", cleared.extend)


def test_the_shared_numbers_are_checked():
    check_shared_options(types.SimpleNamespace(max_attempts=1, max_error_fraction=0.0))
    with pytest.raises(UsageError, match="--max-attempts must be at least 1, got 0"):
        check_shared_options(types.SimpleNamespace(max_attempts=0, max_error_fraction=0.1))
    with pytest.raises(UsageError, match="--max-error-fraction must be between 0 and 1"):
        check_shared_options(types.SimpleNamespace(max_attempts=5, max_error_fraction=1.5))
