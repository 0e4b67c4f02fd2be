"""The parser every command shares: grouped help, --verbose, and a did-you-mean for a misspelt option."""

from __future__ import annotations

import pytest

from transforms.runtime.command import CommandParser, closest_option, unknown_options_message


def test_the_closest_option_comes_from_the_first_list_that_has_one():
    assert closest_option("--prot", ["--port", "--host"]) == "--port"
    assert closest_option("--patch_size", ["--patch-size"]) == "--patch-size"  # underscores as hyphens
    assert closest_option("--temp-location", ["--port"], ["--temp_location"]) == "--temp_location"
    assert closest_option("--zzz", ["--port"]) is None


def test_the_message_names_each_unknown_option_as_typed():
    message = unknown_options_message(["--prot", "--zzz"], ["--port"])
    assert message == (
        "Unknown option(s): --prot (did you mean --port?), --zzz. Run with --help to list the options."
    )


def parser() -> CommandParser:
    p = CommandParser("tests.example", "An example command.", usage="%(prog)s [FOLDER] [options]")
    group = p.add_argument_group("server")
    group.add_argument("folder", nargs="?", default="out", help="Folder to serve.")
    group.add_argument("--port", type=int, default=8000, help="Port to listen on.")
    group.add_argument("--mode", choices=("fast", "slow"), default="fast", help="How to serve.")
    return p


def test_help_is_grouped_with_defaults_and_accepted_values(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m tests.example [FOLDER] [options]\n\nAn example command.\n")
    general, server = out.index("\ngeneral:\n"), out.index("\nserver:\n")
    assert general < out.index("--verbose") < server < out.index("--port N")
    assert "Port to listen on. (default: 8000)" in out
    assert "--mode {fast,slow}" in out and "How to serve. (default: fast)" in out
    assert "positional arguments" not in out


def test_verbose_is_an_option_of_every_command():
    assert parser().parse_args(["--verbose"]).verbose is True
    assert parser().parse_args([]).verbose is False


def test_an_unknown_option_gets_one_error_line_with_the_closest_option(capsys):
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(["--prot", "8001"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        "error: Unknown option(s): --prot (did you mean --port?). Run with --help to list the options.\n"
    )
    with pytest.raises(SystemExit):
        parser().parse_args(["--mdoe=slow"])
    assert "--mdoe (did you mean --mode?)" in capsys.readouterr().err


def test_options_are_not_abbreviated_unless_the_command_allows_it(capsys):
    with pytest.raises(SystemExit):
        parser().parse_args(["--por", "1"])
    assert "--por (did you mean --port?)" in capsys.readouterr().err
    lenient = CommandParser("tests.example", "Abbreviations accepted.", allow_abbrev=True)
    lenient.add_argument("--port", type=int)
    assert lenient.parse_args(["--por", "1"]).port == 1


def test_a_misspelt_required_option_is_named_before_it_is_missed(capsys):
    strict = CommandParser("tests.example", "A required option.")
    strict.add_argument("--project", required=True)
    with pytest.raises(SystemExit) as stop:
        strict.parse_args(["--prjoect", "p"])
    assert stop.value.code == 2
    assert "--prjoect (did you mean --project?)" in capsys.readouterr().err


def test_a_surplus_argument_is_still_argparses_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        parser().parse_args(["a", "b"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m tests.example") and "unrecognized arguments: b" in err


def test_a_command_can_be_named_as_terrabeam_names_it():
    assert CommandParser("tests.example", "x", name="terrabeam example").prog == "terrabeam example"
