"""The training configuration declared once (model/config.py): the three forms it generates agree, the
committed Flex Template metadata is what the generator writes, and none of it needs TensorFlow."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

import pytest

from model import config
from model.config import TrainConfig
from model.errors import ModelError
from tests.helpers.environment import ROOT, run_python


def _parser(*, job: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    config.add_arguments(parser, job=job)
    return parser


def _actions(*, job: bool = False) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _parser(job=job)._actions}


def test_the_committed_template_metadata_is_what_the_generator_writes():
    committed = (ROOT / "templates" / "train" / "metadata.json").read_text(encoding="utf-8")
    assert committed == config.template_metadata_text(), (
        "templates/train/metadata.json is stale: run `python -m model.config --write-template-metadata`"
    )


def test_the_generator_command_writes_the_file_it_prints(tmp_path, monkeypatch, capsys):
    target = tmp_path / "templates" / "train" / "metadata.json"
    target.parent.mkdir(parents=True)
    monkeypatch.setattr(config, "TEMPLATE_METADATA", target)
    assert config.main([]) == 0
    printed = capsys.readouterr().out
    assert config.main(["--write-template-metadata"]) == 0
    assert "Wrote templates/train/metadata.json" in capsys.readouterr().out
    assert target.read_text(encoding="utf-8") == printed == config.template_metadata_text()


def test_every_field_is_a_flag_of_both_commands_and_a_template_parameter_with_one_default():
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    own, job = _actions(), _actions(job=True)
    parameters = {p["name"]: p for p in config.template_metadata()["parameters"]}
    for setting in config.settings():
        assert own[setting.name].default == fields[setting.name]
        job_default = None if setting.option.job_required else fields[setting.name]
        assert job[setting.job_name].default == job_default, setting.name
        assert own[setting.name].help.startswith(setting.option.help)
        assert job[setting.job_name].help.startswith(setting.option.help)
        assert own[setting.name].choices == job[setting.job_name].choices == setting.option.choices
        parameter = parameters[setting.job_name]
        assert parameter.get("isOptional", False) is not setting.option.job_required
        assert parameter["helpText"].startswith(setting.option.help)
        shown = fields[setting.name]
        if not setting.option.job_required and shown is not None and not isinstance(shown, bool):
            assert f"Default: {shown}." in parameter["helpText"] or "(default" in parameter["helpText"]
    assert set(parameters) == {config.JOB_PARAMETER, *(s.job_name for s in config.settings())}
    assert vars(_parser().parse_args([])) == fields  # model.train's defaults are TrainConfig's


def test_the_job_renames_only_the_options_other_jobs_register_too():
    assert config.job_flag_aliases() == {
        "--output": "--model-dir",
        "--seed": "--training-seed",
        "--batch-size": "--training-batch-size",
    }
    assert config.job_required_options() == ("data", "model_dir")
    job = vars(_parser(job=True).parse_args(["--data", "d", "--model-dir", "m", "--training-seed", "3"]))
    settings = config.config_from_job(job)
    assert (settings["data"], settings["output"], settings["seed"]) == ("d", "m", 3)
    assert TrainConfig(**settings).batch_size == TrainConfig().batch_size


def test_template_regexes_follow_the_declared_values():
    parameters = {p["name"]: p for p in config.template_metadata()["parameters"]}

    def accepts(name: str, value: str) -> bool:
        return all(re.fullmatch(regex, value) for regex in parameters[name]["regexes"])

    assert parameters["mode"]["paramType"] == "ENUM"
    assert [o["value"] for o in parameters["region_loss"]["enumOptions"]] == ["none", "dice", "lovasz"]
    assert [o["value"] for o in parameters["verbose"]["enumOptions"]] == ["0", "1", "2"]  # 0 to 2
    assert parameters["deterministic"]["paramType"] == "BOOLEAN"
    assert accepts("spectral_indices", "ndvi,mndwi") and not accepts("spectral_indices", "evi")
    assert accepts("band_roles", "swir1=B11") and not accepts("band_roles", "blue=B2")
    assert accepts("learning_rate", "3e-4") and not accepts("learning_rate", "-1")
    assert accepts("ema", "0") and accepts("ema", ".99") and not accepts("ema", "1")
    assert accepts("training_seed", "-3") and not accepts("epochs", "0")


def test_shared_names_agree_with_the_modules_that_use_them():
    """Names model/config.py repeats because pipelines sits above model, and the architecture names."""
    from model.architecture import ARCHITECTURES
    from model.vocabulary import ARCHITECTURE_NAMES
    from pipelines import launch

    assert config.JOB_PARAMETER == launch.JOB_PARAMETER
    assert config.GCS_PATH_REGEX == f"^{launch.GCS_PATH.pattern}$"
    assert config.TEMPLATE_METADATA == launch.metadata_path(config.JOB)
    assert tuple(ARCHITECTURES) == ARCHITECTURE_NAMES


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": 0}, "--epochs must be at least 1, got 0."),
        ({"learning_rate": 0.0}, "--learning-rate must be positive, got 0.0."),
        ({"patience": -1}, "--patience must be at least 0, got -1."),
        ({"selection_fraction": 1.0}, "--selection-fraction must be at least 0 and below 1, got 1.0."),
        ({"verbose": 3}, "--verbose must be at least 0 and at most 2, got 3."),
        ({"mode": "segment"}, "--mode must be one of ['segmentation', 'classification'], got 'segment'."),
        ({"architecture": "resnet"}, "--architecture must be one of ['unet', 'minimal', 'classifier']"),
        ({"max_minutes": -5.0}, "--max-minutes must be positive, got -5.0."),
        ({"band_roles": "nir"}, "--band-roles takes role=band pairs"),
        ({"spectral_indices": "ndvi,evi"}, "--spectral-indices takes auto, none or names"),
        ({"dropout": 1.0}, "--dropout must be at least 0 and below 1, got 1.0."),
        ({"architecture": "minimal", "dropout": 0.2}, "--dropout shape unet and classifier; the minimal"),
        ({"architecture": "minimal", "depth": 3, "dropout": 0.0}, "--depth and --dropout shape unet"),
    ],
)
def test_validation_names_the_flag_and_the_accepted_values(settings, message):
    with pytest.raises(ModelError, match=re.escape(message)):
        TrainConfig(**settings).validate()
    TrainConfig(max_minutes=None, depth=None, band_roles="nir=B8").validate()  # None: not given


def test_the_configuration_loads_without_tensorflow():
    code = (
        "import sys; from model import config; config.template_metadata(); config.TrainConfig().validate(); "
        "print(sorted(m for m in ('tensorflow', 'keras', 'apache_beam') if m in sys.modules))"
    )
    done = run_python(code, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.replace("'", '"')) == []
