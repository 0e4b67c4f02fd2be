"""The `terrabeam` command (pipelines/cli.py) next to the `python -m` forms, and the quiet start."""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata

import pytest

from pipelines import cli
from tests.helpers.environment import NOISE, ROOT, not_own, run_command, terrabeam
from transforms.runtime import command
from transforms.runtime.quiet_tensorflow import QUIET_ENV


@pytest.fixture(autouse=True)
def own_program_names(monkeypatch):
    """`terrabeam X` renames its module's usage line; keep that from leaking into other tests."""
    monkeypatch.setattr(command, "_PROGS", {})


# --- the dispatcher ----------------------------------------------------------------------------------


def test_help_lists_every_command_with_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: terrabeam COMMAND [options]")
    for name, cmd in cli.COMMANDS.items():
        assert re.search(rf"^  {name}\s+{re.escape(cmd.summary)}$", out, re.M), name
    assert {"extract", "train", "predict", "evaluate", "serve", "launch"} <= set(cli.COMMANDS)


def test_version_is_the_installed_packages(capsys):
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    version = re.search(r'version="([^"]+)"', (ROOT / "setup.py").read_text()).group(1)
    assert out.startswith(f"terrabeam {version} (")
    assert metadata.version("terrabeam") == version
    assert f"Apache Beam {metadata.version('apache-beam')}" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["extrct"], "unknown command 'extrct' (did you mean 'extract'?)"),
        (["frobnicate", "--help"], "unknown command 'frobnicate'; commands: extract, train, predict"),
        ([], "error: name a command (extract, train, predict"),
    ],
)
def test_a_missing_or_unknown_command_is_a_clear_error(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_answers_help_under_its_terrabeam_name(name, capsys):
    assert cli.main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: terrabeam {name}")
    assert cli.main(["help", name]) == 0
    assert capsys.readouterr().out == out


def _echo(argv):
    print("echo:" + " ".join(argv))
    return 7


def test_a_command_is_one_row_of_the_table(monkeypatch, capsys):
    monkeypatch.setitem(
        cli.COMMANDS, "echo", cli.Command("tests.pipelines.test_cli", "_echo", "Say it back.")
    )
    assert cli.main(["echo", "a", "--b"]) == 7
    assert capsys.readouterr().out == "echo:a --b\n"
    assert cli.main(["--help"]) == 0
    assert re.search(r"^  echo\s+Say it back\.$", capsys.readouterr().out, re.M)


# --- the installed script and the python -m forms ----------------------------------------------------


def test_the_installed_script_answers_help_and_version():
    done = run_command([terrabeam(), "--help"])
    assert done.returncode == 0 and "commands:" in done.stdout, done.stderr
    done = run_command([terrabeam(), "--version"])
    assert done.returncode == 0 and done.stdout.startswith("terrabeam "), done.stderr
    done = run_command([terrabeam(), "extrct"])
    assert done.returncode == 2 and "did you mean 'extract'?" in done.stderr


@pytest.mark.parametrize("job", ["extract", "predict", "train"])
def test_both_forms_list_the_same_options(job):
    """And start quietly: training loads TensorFlow, whose start-up lines stay hidden."""
    module = {"train": "model.train"}.get(job, f"pipelines.{job}")
    script = run_command([terrabeam(), job, "--help"], COLUMNS="100")
    python_m = run_command([sys.executable, "-m", module, "--help"], COLUMNS="100")
    assert script.returncode == python_m.returncode == 0, script.stderr + python_m.stderr
    assert script.stdout.replace(f"terrabeam {job}", f"python -m {module}") == python_m.stdout
    assert not NOISE.search(script.stderr + python_m.stderr), script.stderr + python_m.stderr


@pytest.mark.slow
def test_both_forms_extract_the_same_records_and_terrabeam_starts_quietly(tiny_scene, tmp_path):
    """`terrabeam extract` with the default worker pool (one process per CPU: enough points to pay for
    it) and `python -m pipelines.extract --verbose` in one process."""
    from tests.helpers.records import records_of_split, without_files
    from transforms.contracts.manifest import read_manifest

    scene = ["--inputs", tiny_scene.image, "--labels", tiny_scene.labels, "--regions", tiny_scene.regions]
    args = scene + ["--patch-size", "32", "--points-per-class", "60"]
    script = run_command([terrabeam(), "extract", *args, "--output", str(tmp_path / "a")])
    python_m = run_command(
        [sys.executable, "-m", "pipelines.extract", *args, "--output", str(tmp_path / "b")]
        + ["--direct_num_workers", "1", "--verbose"]
    )
    for done in (script, python_m):
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("Extraction written to ")
    assert not_own(script.stderr) == "", f"not a quiet start:\n{script.stderr}"
    assert "\nExtraction: " in "\n" + script.stderr  # its final progress line
    assert "INFO:" in python_m.stderr  # --verbose: the logs are back
    a, b = read_manifest(str(tmp_path / "a")), read_manifest(str(tmp_path / "b"))
    assert without_files(a) == without_files(b)
    for split in ("train", "validation"):
        assert records_of_split(a, split) == records_of_split(b, split)


# --- the quiet start ---------------------------------------------------------------------------------


def test_tensorflows_start_up_lines_are_hidden_unless_asked_for(tmp_path):
    """That --verbose and the user's own level bring them back (which shows this TensorFlow prints them)
    and that commands that load TensorFlow hide them otherwise. Training loads TensorFlow before it reads
    the data (here a manifest that describes nothing), prediction to read a model folder (here one whose
    model.json describes no model): both stop right after. (Both forms of a command share their start:
    test_both_forms_extract_the_same_records_and_terrabeam_starts_quietly; prediction's quiet side, in a
    pool of worker processes: tests/pipelines/test_local_cores.py.)"""
    (tmp_path / "manifest.json").write_text("{}")
    data = ["--data", str(tmp_path), "--output", str(tmp_path / "model")]
    asked = run_command([terrabeam(), "train", *data, "--verbose"])
    assert asked.returncode == 2 and "error: " in asked.stderr, asked.stderr
    if not NOISE.search(asked.stderr):
        pytest.skip("this TensorFlow prints no start-up lines on this machine: nothing to hide")
    quiet = run_command([sys.executable, "-m", "model.train", *data])
    assert quiet.returncode == 2 and "error: " in quiet.stderr, quiet.stderr
    assert not NOISE.search(quiet.stderr), quiet.stderr
    model = tmp_path / "not-a-model"
    model.mkdir()
    (model / "model.json").write_text("{}")
    predict = [sys.executable, "-m", "pipelines.predict", "--model", str(model)]
    own = run_command(predict, TF_CPP_MIN_LOG_LEVEL="0")
    assert own.returncode == 2 and "is not a terrabeam model description" in own.stderr, own.stderr
    assert NOISE.search(own.stderr), own.stderr


def test_quiet_start_keeps_the_users_level_and_steps_aside_for_verbose(monkeypatch):
    """And the oneDNN notice filter follows: on at a level that hides INFO lines, off at 0 or --verbose."""
    monkeypatch.delenv(command.TF_LOG_LEVEL_ENV, raising=False)
    monkeypatch.delenv(QUIET_ENV, raising=False)
    assert command.quiet_start(["--epochs", "3"]) is False
    assert os.environ[command.TF_LOG_LEVEL_ENV] == command.QUIET_TF_LOG_LEVEL
    assert os.environ[QUIET_ENV] == "1"
    monkeypatch.setenv(command.TF_LOG_LEVEL_ENV, "0")
    command.quiet_start([])
    assert os.environ[command.TF_LOG_LEVEL_ENV] == "0" and QUIET_ENV not in os.environ
    monkeypatch.setenv(command.TF_LOG_LEVEL_ENV, "3")
    command.quiet_start([])
    assert os.environ[QUIET_ENV] == "1"
    monkeypatch.delenv(command.TF_LOG_LEVEL_ENV)
    assert command.quiet_start(["--verbose"]) is True and command.quiet_start(["--verbose=1"]) is True
    assert command.TF_LOG_LEVEL_ENV not in os.environ and QUIET_ENV not in os.environ


def test_beams_noise_lines_are_dropped_and_the_rest_kept(caplog):
    import logging

    command.drop_beam_noise()
    beam_log = logging.getLogger("apache_beam.runners.portability.local_job_service")
    with caplog.at_level(logging.WARNING):
        beam_log.warning('Worker: message: "Discarding unparseable args: [--seed=0]"')
        logging.warning(
            "Resource module is not available for current platform, memory usage cannot be fetched."
        )
        beam_log.warning('Worker: message: "Retrying the read of tile r3_c4"')
    assert [r.getMessage() for r in caplog.records] == ['Worker: message: "Retrying the read of tile r3_c4"']
