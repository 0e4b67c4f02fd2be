"""--help of every job lists the job's own options (from its PipelineOptions classes), grouped, with
help, defaults and accepted values, then the runner options that pass through to Beam; a misspelt
option's suggestion is one that --help lists. Also the --help of the other commands."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re

import pytest
from apache_beam.options.pipeline_options import _BeamArgumentParser

from pipelines import launch
from pipelines.options import RUNNER_FLAGS
from tests.helpers.environment import run_python

JOBS = sorted(launch.JOBS)  # extract, predict, train: every job with a PipelineOptions class


def job_module(job: str):
    return importlib.import_module(launch.JOBS[job].module)


def job_actions(job: str) -> list[argparse.Action]:
    """The options the job's PipelineOptions class registers, as Beam would parse them."""
    parser = _BeamArgumentParser(add_help=False, allow_abbrev=False)
    launch.options_class(job)._add_argparse_args(parser)
    return [a for a in parser._actions if a.option_strings]


def job_groups(job: str) -> dict[str, list[str]]:
    parser = _BeamArgumentParser(add_help=False, allow_abbrev=False)
    launch.options_class(job)._add_argparse_args(parser)
    return {
        g.title: [a.option_strings[0] for a in g._group_actions]
        for g in parser._action_groups
        if g._group_actions and g.title not in ("positional arguments", "options", "optional arguments")
    }


def squeeze(text: str) -> str:
    """Text without whitespace: help is wrapped (and hyphenated words split) at the terminal width."""
    return re.sub(r"\s+", "", text)


def help_of(job: str, capsys) -> str:
    assert job_module(job).main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out, f"{job} --help printed nothing"
    return out


@pytest.fixture(scope="module")
def columns():
    mp = pytest.MonkeyPatch()
    mp.setenv("COLUMNS", "100")
    yield
    mp.undo()


@pytest.mark.parametrize("job", JOBS)
def test_help_lists_every_option_of_the_job_with_help_default_and_choices(job, capsys, columns):
    out = help_of(job, capsys)
    flat = squeeze(out)
    actions = job_actions(job)
    assert len(actions) > 10
    for action in actions:
        for flag in action.option_strings:
            assert re.search(rf"(^|\s|,){re.escape(flag)}(\s|,|$)", out, re.M), f"{flag} missing from --help"
        assert action.help, f"{action.option_strings[0]} has no help text"
        assert squeeze(action.help.replace("%%", "%")) in flat, f"help of {action.option_strings[0]}"
        if action.choices:
            assert "{" + ",".join(map(str, action.choices)) + "}" in out, action.option_strings[0]
        default = action.default
        if default is not None and not isinstance(default, bool) and default != "":
            mentioned = "default:" in action.help.lower() or "(default" in action.help.lower()
            assert mentioned or squeeze(f"(default: {default})") in flat, (
                f"{action.option_strings[0]}: default {default!r} not shown"
            )


@pytest.mark.parametrize("job", JOBS)
def test_help_groups_options_as_the_options_class_does(job, capsys, columns):
    out = help_of(job, capsys)
    groups = job_groups(job)
    assert len(groups) >= 3, groups
    positions = []
    for title, flags in groups.items():
        heading = out.index(f"\n{title}:\n")
        section = out[heading : out.find("\n\n", heading + 1)]
        for flag in flags:
            assert re.search(rf"^\s+{re.escape(flag)}\b", section, re.M), f"{flag} not under {title!r}"
        positions.append(heading)
    assert positions == sorted(positions), "groups out of order"


@pytest.mark.parametrize("job", JOBS)
def test_help_ends_with_the_runner_options_that_pass_through_to_beam(job, capsys, columns):
    out = help_of(job, capsys)
    runner = out[out.index("runner options (passed through to Apache Beam") :]
    for flag in ("--runner", "--project", "--region", "--temp_location", "--max_num_workers", "--setup_file"):
        assert flag in runner
    assert out.startswith(f"usage: python -m {launch.JOBS[job].module} [options] [runner options]")


def _misspelt(flag: str) -> str:
    """The flag with its last two letters swapped (--patch-size -> --patch-siez)."""
    return flag[:-2] + flag[-1] + flag[-2]


@pytest.mark.parametrize("job", JOBS)
def test_a_misspelt_options_suggestion_is_listed_in_help(job, capsys, columns, tmp_path, monkeypatch):
    from pipelines.options import known_flags

    monkeypatch.chdir(tmp_path)  # a misspelling taken for a real option would run the job: not in the repo

    out = help_of(job, capsys)
    known = set(known_flags())
    flags = [a.option_strings[0] for a in job_actions(job)] + [f for f in RUNNER_FLAGS if f in out]
    checked = 0
    for flag in flags:
        wrong = _misspelt(flag)
        if wrong in known or wrong == flag:
            continue
        assert job_module(job).main([wrong, "1"]) == 2
        err = capsys.readouterr().err
        suggestion = re.search(r"did you mean (--[\w-]+)\?", err)
        assert suggestion, f"no suggestion for {wrong}: {err}"
        assert re.search(rf"{re.escape(suggestion.group(1))}\b", out), f"{suggestion.group(1)} not in --help"
        checked += 1
    assert checked > 15


def test_suggestions_keep_the_spelling_of_each_kind_of_flag(capsys, tmp_path, monkeypatch):
    from pipelines.extract import main

    monkeypatch.chdir(tmp_path)

    assert main(["--patch_size", "3"]) == 2  # typed with Beam's style: quoted as typed
    assert "--patch_size (did you mean --patch-size?)" in capsys.readouterr().err
    assert main(["--temp-location", "gs://b/t"]) == 2  # Beam's own options take underscores
    assert "--temp-location (did you mean --temp_location?)" in capsys.readouterr().err


@pytest.mark.parametrize("job", ["extract", "predict"])
def test_a_badly_typed_value_names_the_option_with_the_jobs_usage(job, capsys):
    assert job_module(job).main(["--max-attempts", "many"]) == 2
    err = capsys.readouterr().err
    assert f"usage: python -m pipelines.{job}" in err
    assert "argument --max-attempts: invalid int value: 'many'" in err


@pytest.mark.parametrize(
    "module, entry, expected",
    [
        ("model.train", "run", ["--data", "--epochs", "--batch-size", "(default: 80)", "--verbose [N]"]),
        ("model.evaluate", "run", ["--model", "--data", "--split", "(default: validation)", "--verbose"]),
        ("model.serving.serve", "main", ["--model", "--port", "--max-request-bytes", "--verbose"]),
        ("pipelines.launch", "main", ["--project", "--template-path", "--param NAME=VALUE", "--verbose"]),
    ],
)
def test_the_other_commands_help_is_laid_out_the_same_way(module, entry, expected, capsys, columns):
    func = getattr(importlib.import_module(module), entry)
    try:
        status = func(["--help"])
    except SystemExit as e:
        status = e.code
    assert status == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m {module}")
    for text in expected:
        assert text in out, (module, text)


# --- the commands with a parser of their own: one look, --verbose, did-you-mean, quick --help ---------


@dataclasses.dataclass(frozen=True)
class Tool:
    module: str  # what `python -m` runs
    entry: str  # its function taking argv
    command: str  # the module that parses the command line
    option: str  # one of its options
    misspelt: str  # and a misspelling of it


TOOLS = {
    "serve": Tool("model.serving.serve", "main", "model.serving.serve", "--port", "--prot"),
    "evaluate": Tool("model.evaluate", "run", "model.evaluate", "--split", "--splt"),
    "view": Tool("pipelines.view", "main", "pipelines.view.cli", "--port", "--prot"),
    "eeify": Tool("model.serving.eeify", "main", "model.serving.eeify", "--tile-size", "--tile-szie"),
    "deploy": Tool("model.serving.deploy", "main", "model.serving.deploy.command", "--project", "--prjoect"),
    "launch": Tool("pipelines.launch", "main", "pipelines.launch", "--project", "--projcet"),
}


def status_of(tool: Tool, argv: list[str]) -> int:
    try:
        return getattr(importlib.import_module(tool.module), tool.entry)(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("name", TOOLS)
def test_each_commands_help_is_grouped_as_the_jobs_help_is(name, capsys, columns):
    tool = TOOLS[name]
    assert status_of(tool, ["--help"]) == 0
    out = capsys.readouterr().out
    usage = out.split("\n\n", 1)[0]
    assert usage.startswith(f"usage: python -m {tool.module} ") and "[options]" in usage
    titles = re.findall(r"^(\S[^\n]*):\n", out.split("\n\n", 2)[2], re.M)
    assert titles[0] == "general" and len(titles) >= 3, titles
    assert not {"options", "optional arguments", "positional arguments"} & set(titles)
    general = out[out.index("\ngeneral:\n") : out.index(f"\n{titles[1]}:\n")]
    assert "-h, --help" in general and "--verbose" in general
    assert re.search(rf"^\s+{re.escape(tool.option)}\b", out, re.M)


@pytest.mark.parametrize("name", TOOLS)
def test_each_command_accepts_verbose(name, capsys):
    assert status_of(TOOLS[name], ["--verbose", "--help"]) == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("name", TOOLS)
def test_each_command_suggests_the_option_a_misspelling_meant(name, capsys):
    tool = TOOLS[name]
    assert status_of(tool, [tool.misspelt, "1"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: Unknown option(s): {tool.misspelt} (did you mean {tool.option}?). "
        "Run with --help to list the options.\n"
    )


@pytest.mark.parametrize("name", TOOLS)
def test_each_command_starts_quietly_before_anything_else(name, monkeypatch):
    """main() calls the quiet start first, with the command line (it decides on --verbose)."""
    tool = TOOLS[name]

    class Started(Exception):
        pass

    def quiet_start(argv):
        raise Started(list(argv))

    monkeypatch.setattr(importlib.import_module(tool.command), "quiet_start", quiet_start)
    with pytest.raises(Started) as started:
        status_of(tool, ["--verbose", "--help"])
    assert started.value.args[0] == ["--verbose", "--help"]


@pytest.mark.parametrize("name", TOOLS)
def test_help_loads_no_tensorflow(name):
    """--help answers at once: TensorFlow (seconds to import) loads only when the command runs."""
    code = (
        "import sys; from pipelines.cli import main; status = main([sys.argv[1], '--help']); "
        "print(status, 'tensorflow' in sys.modules)"
    )
    result = run_python(code, name, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: terrabeam {name} ")
    assert result.stdout.splitlines()[-1] == "0 False", result.stdout[-300:]


# Prints which heavy packages a command's --help imported (on stderr, after the help on stdout).
HEAVY_IMPORTS = """
import sys
from {module} import main
status = main({argv!r})
heavy = sorted({{name.split(".")[0] for name in sys.modules}} & {{"tensorflow", "keras", "apache_beam"}})
print(f"heavy imports: {{heavy}}", file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.parametrize(
    "module, argv",
    [
        ("pipelines.extract", ["--help"]),
        ("pipelines.predict", ["--help"]),
        ("pipelines.cli", ["extract", "--help"]),
        ("pipelines.cli", ["predict", "--help"]),
    ],
)
def test_help_imports_neither_tensorflow_nor_beam(module, argv):
    """--help answers from the jobs' option declarations: TensorFlow and Beam (seconds to import) load
    only when a job runs."""
    code = HEAVY_IMPORTS.format(module=module, argv=argv)
    done = run_python(code, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[runner options]" in done.stdout
    assert done.stderr.splitlines()[-1] == "heavy imports: []", done.stderr
