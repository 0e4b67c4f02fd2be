"""The training job on the DirectRunner: a tiny extraction in, a complete model folder out."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from model.synthetic import write_synthetic_extraction
from pipelines import train as train_job
from tests.helpers.environment import run_python

SIZE = 16
BANDS = ("red", "nir")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-extraction")
    return Path(
        write_synthetic_extraction(
            folder, bands=BANDS, patch_size=SIZE, train_patches=24, validation_patches=6
        )
    )


def test_training_job_writes_a_complete_model_folder(tiny_data, tmp_path, capsys):
    model_dir = tmp_path / "model"
    code = train_job.main(
        [
            "--data",
            str(tiny_data),
            "--output",
            str(model_dir),
            "--architecture",
            "minimal",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--verbose",
            "0",
            "--runner",
            "DirectRunner",
        ]
    )
    assert code == 0
    for name in ("saved_model", "eeified"):
        assert (model_dir / name / "saved_model.pb").is_file(), name
    for name in ("earthengine.json", "model.json", "metrics.json"):
        assert (model_dir / name).is_file(), name
    info = json.loads((model_dir / "model.json").read_text())
    assert info["bands"] == list(BANDS) and info["patch_size"] == SIZE
    assert info["training"]["epochs_run"] == 1
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["overall_accuracy"] <= 1.0
    assert f"Model written to {model_dir}" in capsys.readouterr().out


def test_train_and_export_is_the_model_train_function(tiny_data, tmp_path, monkeypatch):
    """The pipeline's one step calls model.train.train in-process with the job's settings."""
    import model.train

    calls = []

    def fake_train(config):
        calls.append(config)
        return {"metrics": {"mean_iou": 0.5}}

    monkeypatch.setattr(model.train, "train", fake_train)
    opts = PipelineOptions(
        train_job.training_aliases(
            ["--data", str(tiny_data), "--output", str(tmp_path / "m"), "--seed", "7", "--epochs", "3"]
        )
    ).view_as(train_job.TrainOptions)
    summary = train_job.train_and_export(train_job.validate(opts))
    (config,) = calls
    assert (config.data, config.output, config.seed, config.epochs) == (
        str(tiny_data),
        str(tmp_path / "m"),
        7,
        3,
    )
    assert summary["model_dir"] == str(tmp_path / "m") and summary["metrics"] == {"mean_iou": 0.5}


def test_options_mirror_model_train():
    """Every TrainConfig field is a job option with the same default (and vice versa)."""
    from model.config import TrainConfig, settings
    from model.vocabulary import LABEL_SOURCES, MODES

    opts = PipelineOptions([]).view_as(train_job.TrainOptions)
    job_settings = train_job.settings_of(opts)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert set(job_settings) == set(defaults)
    required = {s.name for s in settings() if s.job_name in train_job.TrainOptions.REQUIRED_OPTIONS}
    assert required == {"data", "output"}
    assert {k: v for k, v in job_settings.items() if k not in required} == {
        k: v for k, v in defaults.items() if k not in required
    }
    actions = {a.dest: a for a in _actions(train_job.TrainOptions)}
    assert set(actions["mode"].choices) == set(MODES)
    assert set(actions["label_source"].choices) == set(LABEL_SOURCES)


def _actions(options_cls):
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(add_help=False)
    options_cls._add_argparse_args(parser)
    return [a for a in parser._actions if a.option_strings]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--output", "/tmp/m"], "--data is required"),
        (["--data", "DATA"], "--output is required"),
        (["--data", "DATA", "--output", "/tmp/m", "--epochs", "0"], "--epochs must be at least 1"),
        (["--data", "/nonexistent/data", "--output", "/tmp/m"], "No readable manifest"),
    ],
)
def test_bad_input_stops_before_the_pipeline(tiny_data, argv, message, capsys):
    argv = [str(tiny_data) if a == "DATA" else a for a in argv]
    assert train_job.main(argv) == 2
    assert message in capsys.readouterr().err


def test_train_options_share_no_flag_with_the_other_jobs():
    """Beam parses every options class together when it runs a pipeline: a flag registered twice breaks it."""
    import importlib.util

    from pipelines import launch

    train_flags = {s for a in _actions(train_job.TrainOptions) for s in a.option_strings}
    for job in ("extract", "predict"):
        if importlib.util.find_spec(launch.JOBS[job].module) is None:
            continue
        other = {s for a in _actions(launch.options_class(job)) for s in a.option_strings}
        assert not train_flags & other, (
            f"TrainOptions and {job}'s options both register {train_flags & other}"
        )


def test_model_train_flag_spellings_are_accepted():
    argv = ["--data", "d", "--output=m", "--seed", "3", "--batch-size=4", "--epochs", "2"]
    opts = PipelineOptions(train_job.training_aliases(argv)).view_as(train_job.TrainOptions)
    assert (opts.model_dir, opts.training_seed, opts.training_batch_size, opts.epochs) == ("m", 3, 4, 2)


def test_help_loads_neither_tensorflow_nor_the_training_code(tmp_path):
    """--help answers from the options' declarations: TensorFlow loads only when training runs."""
    code = (
        "import sys\n"
        "from pipelines import train\n"
        "assert train.main(['--help']) == 0\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'model.training') if m in sys.modules))\n"
    )
    done = run_python(code, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_the_options_class_is_made_once_and_named_after_the_job():
    from pipelines import launch

    assert launch.options_class("train") is train_job.TrainOptions is train_job.options_class()
    assert train_job.TrainOptions.__module__ == "pipelines.train"
    assert train_job.TrainOptions.REQUIRED_OPTIONS == ("data", "model_dir")
    with pytest.raises(AttributeError, match="no attribute 'TrainOptionz'"):
        train_job.TrainOptionz  # noqa: B018
