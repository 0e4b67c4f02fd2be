"""The training configuration, declared once.

`TrainConfig` holds everything a training run depends on. Each field carries in its metadata an `Option`:
help text, option group, accepted values or range, and how the Flex Template offers it (label, example,
format). From these declarations come

- the flags of `python -m model.train` (`add_arguments(parser)`);
- the options of the Beam job `python -m pipelines.train` (`add_arguments(parser, job=True)`): the same
  options, three of them under other names, because Beam merges every job's options into one parser
  where extraction and prediction already register `--output`, `--seed` and `--batch-size`;
- the parameters of the job's Flex Template, templates/train/metadata.json (`template_metadata()`), as
  Google's flex-template samples write them (label, helpText, isOptional, regexes), written by
  `python -m model.config --write-template-metadata` and kept equal to it by a test;
- the checks of a configuration (`TrainConfig.validate`), with errors named after the flags.

Imports neither TensorFlow nor Beam: --help and the job's checks run without them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from model.errors import ModelError
from model.vocabulary import (
    ALL_INDICES,
    ARCHITECTURE_NAMES,
    AUTO_PRECISION,
    LABEL_MAJORITY,
    LABEL_SOURCES,
    LOSSES,
    MINIMAL,
    MODES,
    NO_INDICES,
    PRECISIONS,
    REGION_TERMS,
    SCHEDULES,
    SEGMENTATION,
    SPECTRAL_INDICES,
    SPECTRAL_ROLES,
    XLA_AUTO_STEPS,
    XLA_SETTINGS,
)
from transforms.runtime.command import HelpFormatter, fill, prog

DEFAULT_DATA = "out/demo/data"
DEFAULT_OUTPUT = "out/demo/model"

# Option groups, in the order --help lists them; options without a group are under "general".
DATA_GROUP = "data and model folder"
MODEL_GROUP = "model"
TRAINING_GROUP = "training"

TEMPLATE_METADATA = Path(__file__).resolve().parents[1] / "templates" / "train" / "metadata.json"
# The parameter that names the job a template runs (pipelines.launch.JOB_PARAMETER; pipelines sits
# above model, so the name is repeated here and a test keeps the two equal).
JOB_PARAMETER = "terrabeam_job"
JOB = "train"
# Cloud Storage paths: bucket names are 3-63 lowercase letters, digits, '-', '_' and '.', starting and
# ending with a letter or digit (https://cloud.google.com/storage/docs/buckets#naming); the same rule as
# pipelines.launch.GCS_PATH, which a test keeps equal.
GCS_PATH_REGEX = r"^gs://[a-z0-9][-_.a-z0-9]{1,61}[a-z0-9](/[^\r\n]*)?$"
# Numbers as the template accepts them (`float()` reads every match).
WHOLE_NUMBER_REGEX = r"^-?[0-9]+$"
COUNT_REGEX = r"^[0-9]+$"
POSITIVE_COUNT_REGEX = r"^[1-9][0-9]*$"
NUMBER_REGEX = r"^([0-9]+[.]?[0-9]*|[.][0-9]+)([eE]-?[0-9]+)?$"
FRACTION_REGEX = r"^(0|0?[.][0-9]+)$"  # from 0 to below 1
# A whole-number range this short is offered as a list in the template.
MAX_LISTED_NUMBERS = 10


@dataclasses.dataclass(frozen=True)
class TextFormat:
    """How the Flex Template checks a free-text value: a regex, and the parameter type the console shows."""

    regex: str
    param_type: str = "TEXT"


GCS_READ_FOLDER = TextFormat(GCS_PATH_REGEX, "GCS_READ_FOLDER")
GCS_WRITE_FOLDER = TextFormat(GCS_PATH_REGEX, "GCS_WRITE_FOLDER")


def _names(names: Sequence[str]) -> str:
    return "(" + "|".join(names) + ")"


def _comma_list(item: str) -> str:
    return f"{item}(,{item})*"


# --spectral-indices: auto, none, or index names; --band-roles: role=band pairs.
INDICES_FORMAT = TextFormat(f"^({ALL_INDICES}|{NO_INDICES}|{_comma_list(_names(list(SPECTRAL_INDICES)))})$")
BAND_ROLES_FORMAT = TextFormat(f"^{_comma_list(_names(SPECTRAL_ROLES) + '=[A-Za-z0-9_]+')}$")
# --cache: in memory, none, or a file prefix (an absolute path on a Dataflow worker).
CACHE_FORMAT = TextFormat(r"^(memory|none|/[^\r\n]+)$")


@dataclasses.dataclass(frozen=True)
class Option:
    """What the command lines and the template need to know of one TrainConfig field besides its type
    and default."""

    help: str  # one or more sentences; --help adds the default, the template adds it and the example
    label: str  # the template parameter's label
    example: str  # a value the template's helpText shows (and its regex must accept)
    group: str | None = None  # the --help group; None: "general"
    choices: tuple[Any, ...] | None = None
    # The accepted range of a number (None: unbounded on that side).
    at_least: float | None = None
    above: float | None = None
    below: float | None = None
    at_most: float | None = None
    text_format: TextFormat | None = None  # the template's check of free text
    optional_value: bool = False  # the flag alone means the default (`--verbose`)
    job_name: str | None = None  # the Beam job's name for it, where it differs (see the module docstring)
    job_required: bool = False  # the Beam job has no default for it


_OPTION = "option"


def option(default: Any, help: str, label: str, example: str, **declared: Any) -> Any:
    """A TrainConfig field with its `Option`."""
    return dataclasses.field(default=default, metadata={_OPTION: Option(help, label, example, **declared)})


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on (the flags of `python -m model.train`, one to one)."""

    data: str = option(
        DEFAULT_DATA,
        "Folder with the manifest.json of an extraction (local or gs://).",
        "Training data",
        "gs://my-bucket/landcover-data",
        group=DATA_GROUP,
        text_format=GCS_READ_FOLDER,
        job_required=True,
    )
    output: str = option(
        DEFAULT_OUTPUT,
        "Model folder to write (local or gs://).",
        "Model folder",
        "gs://my-bucket/models/run1",
        group=DATA_GROUP,
        text_format=GCS_WRITE_FOLDER,
        job_name="model_dir",
        job_required=True,
    )
    mode: str = option(
        SEGMENTATION,
        "Per-pixel maps (segmentation) or one label per patch (classification).",
        "Mode",
        SEGMENTATION,
        group=MODEL_GROUP,
        choices=MODES,
    )
    architecture: str | None = option(
        None,
        "unet or minimal (the model of the Earth Engine talk) for maps, classifier for one label per "
        "patch (default: unet, or classifier in classification mode).",
        "Architecture",
        "unet",
        group=MODEL_GROUP,
        choices=ARCHITECTURE_NAMES,
    )
    filters: int = option(32, "Filters of the first level.", "Filters", "32", group=MODEL_GROUP, at_least=1)
    depth: int | None = option(
        None,
        "Poolings of unet and classifier (default: the architecture's).",
        "Depth",
        "4",
        group=MODEL_GROUP,
        at_least=1,
    )
    dropout: float | None = option(
        None,
        "Dropout before the decoder: unet drops whole channels of its bottom block, classifier drops "
        "units before its head (default: the architecture's, 0.1 and 0.2).",
        "Dropout",
        "0.1",
        group=MODEL_GROUP,
        at_least=0,
        below=1,
    )
    epochs: int = option(
        80,
        "Epochs of the cosine schedule; under the plateau schedule the most epochs, as early stopping may "
        "end sooner.",
        "Epochs",
        "80",
        group=TRAINING_GROUP,
        at_least=1,
    )
    batch_size: int = option(
        64,
        "Patches per batch (a change of batch size calls for another --learning-rate: docs/training.md).",
        "Batch size",
        "64",
        group=TRAINING_GROUP,
        at_least=1,
        job_name="training_batch_size",
    )
    learning_rate: float = option(
        2e-3, "Adam learning rate.", "Learning rate", "0.002", group=TRAINING_GROUP, above=0
    )
    patience: int = option(
        6,
        "Plateau schedule: epochs without a better selection loss before training stops (half as many "
        "before the learning rate halves).",
        "Patience",
        "6",
        group=TRAINING_GROUP,
        at_least=0,
    )
    selection_fraction: float = option(
        0.1,
        "Share of the training records (by record hash) held out to select the model (early stopping, "
        "best epoch) when the data has no 'selection' split; 0 selects on the validation split, whose "
        "scores are then optimistic.",
        "Selection fraction",
        "0.1",
        group=TRAINING_GROUP,
        at_least=0,
        below=1,
    )
    schedule: str = option(
        "cosine",
        "Learning rate: warm up, then decay along a cosine over all epochs (cosine), or halve on plateaus "
        "with early stopping (plateau).",
        "Learning-rate schedule",
        "cosine",
        group=TRAINING_GROUP,
        choices=SCHEDULES,
    )
    ema: float = option(
        0.99,
        "Momentum of an exponential moving average of the weights, which is validated, selected and "
        "exported; 0 turns it off.",
        "Weight averaging",
        "0.99",
        group=TRAINING_GROUP,
        at_least=0,
        below=1,
    )
    loss: str = option(
        "crossentropy",
        "Per-pixel loss: cross-entropy or focal (gamma 2).",
        "Loss",
        "crossentropy",
        group=TRAINING_GROUP,
        choices=LOSSES,
    )
    region_loss: str = option(
        "lovasz",
        "Loss over each batch, added to the per-pixel one, that targets overlap directly: soft Dice or "
        "Lovász-softmax.",
        "Overlap loss",
        "lovasz",
        group=TRAINING_GROUP,
        choices=REGION_TERMS,
    )
    label_smoothing: float = option(
        0.1,
        "Target (1 - e) one-hot + e / classes, for labels known to be noisy; 0 turns it off.",
        "Label smoothing",
        "0.1",
        group=TRAINING_GROUP,
        at_least=0,
        below=1,
    )
    bootstrap: float = option(
        0.0,
        "Soft bootstrapping: target (1 - b) label + b prediction, for labels known to be noisy; 0 turns "
        "it off.",
        "Soft bootstrapping",
        "0.2",
        group=TRAINING_GROUP,
        at_least=0,
        below=1,
    )
    weight_decay: float = option(
        0.0,
        "Decoupled weight decay (AdamW) of the convolution kernels, a fraction of each kernel taken off per "
        "step scaled by the learning rate; 0 trains with Adam.",
        "Weight decay",
        "0.05",
        group=TRAINING_GROUP,
        at_least=0,
        below=1,
    )
    radiometric_augmentation: float = option(
        0.0,
        "Radiometric augmentation of the training patches: each patch's bands scaled by 1 + s·N(0, 1) "
        "(one draw per patch and band) plus per-pixel noise of s band standard deviations; 0 turns it off.",
        "Radiometric augmentation",
        "0.05",
        group=TRAINING_GROUP,
        at_least=0,
        below=1,
    )
    spectral_indices: str = option(
        ALL_INDICES,
        f"Indices computed inside the model from raw bands: {ALL_INDICES} (all the bands allow), "
        f"{NO_INDICES}, or comma-separated names from {', '.join(SPECTRAL_INDICES)}.",
        "Spectral indices",
        ALL_INDICES,
        group=TRAINING_GROUP,
        text_format=INDICES_FORMAT,
    )
    band_roles: str | None = option(
        None,
        f"Which bands are {', '.join(SPECTRAL_ROLES)} when their names do not say (Sentinel-2 names and "
        "the role names are known), as role=band pairs.",
        "Band roles",
        "nir=SR_B5,red=SR_B4",
        group=TRAINING_GROUP,
        text_format=BAND_ROLES_FORMAT,
    )
    class_weight_power: float = option(
        0.25,
        "Class weight = (median frequency / frequency) ** power; 0 weighs every class alike, 0.5 lifts rare "
        "classes more.",
        "Class weight power",
        "0.5",
        group=TRAINING_GROUP,
        at_least=0,
    )
    label_source: str = option(
        LABEL_MAJORITY,
        "Classification mode: the majority class of the label patch, or the label as one value per patch "
        "(feature).",
        "Label source",
        LABEL_MAJORITY,
        group=TRAINING_GROUP,
        choices=LABEL_SOURCES,
    )
    max_minutes: float | None = option(
        None, "Stop training within this many minutes.", "Time budget", "90", group=TRAINING_GROUP, above=0
    )
    init_model: str | None = option(
        None,
        "Model folder to continue training from (same bands and classes).",
        "Initial model",
        "gs://my-bucket/models/run0",
        group=DATA_GROUP,
        text_format=GCS_READ_FOLDER,
    )
    seed: int = option(
        0,
        "Seed of weights, shuffling and augmentation.",
        "Seed",
        "0",
        group=TRAINING_GROUP,
        job_name="training_seed",
    )
    deterministic: bool = option(
        False, "Deterministic TensorFlow ops (slower).", "Deterministic", "false", group=TRAINING_GROUP
    )
    xla: str = option(
        "off",
        "Compile the training and selection steps with XLA: on, off, or auto (on for a run of at least "
        f"{XLA_AUTO_STEPS:,} steps). Whether it pays depends on the CPU: 1.09x faster on an AMD EPYC, "
        "1.15-1.5x slower on an Intel Sapphire Rapids (docs/performance.md).",
        "XLA compilation",
        "off",
        group=TRAINING_GROUP,
        choices=XLA_SETTINGS,
    )
    precision: str = option(
        AUTO_PRECISION,
        "auto: mixed_bfloat16 on a CPU with native bfloat16 (Intel AMX or AVX-512 BF16), where it trains "
        "1.35-1.57x faster at the same quality (docs/performance.md), float32 on other CPUs and under "
        "--deterministic; float32; or mixed_bfloat16: layers compute in bfloat16 with float32 weights "
        "(emulated without native bfloat16). The exported model computes in float32 either way.",
        "Precision",
        AUTO_PRECISION,
        group=TRAINING_GROUP,
        choices=PRECISIONS,
    )
    cache: str = option(
        "memory",
        "Where tf.data caches the patches: memory, none, or a file prefix.",
        "Data cache",
        "memory",
        group=TRAINING_GROUP,
        text_format=CACHE_FORMAT,
    )
    verbose: int = option(
        2,
        "Keras fit output: 0 none, 1 a progress bar, 2 a line per epoch. Given at all, it also shows "
        "TensorFlow's start-up lines and library warnings.",
        "Verbosity",
        "2",
        at_least=0,
        at_most=2,
        optional_value=True,
    )

    def validate(self) -> None:
        """Raise ModelError, naming the flag, for the first setting out of its accepted values."""
        for setting in settings():
            problem = setting.problem(getattr(self, setting.name))
            if problem:
                raise ModelError(problem)
        if self.architecture == MINIMAL:
            given = [f"--{name}" for name in ("depth", "dropout") if getattr(self, name) is not None]
            if given:
                raise ModelError(
                    f"{' and '.join(given)} shape unet and classifier; the minimal architecture has no "
                    "poolings or dropout. Leave them out, or choose --architecture unet."
                )
        self.roles()
        self.index_names()

    def roles(self) -> dict[str, str]:
        """--band-roles `role=band,...` as a dict (empty when not given)."""
        roles: dict[str, str] = {}
        for item in (self.band_roles or "").split(","):
            if not item.strip():
                continue
            role, sep, band = item.partition("=")
            if not sep or not role.strip() or not band.strip():
                raise ModelError(
                    f"--band-roles takes role=band pairs such as nir=SR_B5,red=SR_B4; got {item!r}."
                )
            roles[role.strip()] = band.strip()
        return roles

    def index_names(self) -> str | list[str]:
        """--spectral-indices as model.architecture.resolve_spectral_indices takes it."""
        value = self.spectral_indices.strip().lower()
        if value in (ALL_INDICES, NO_INDICES):
            return value
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in SPECTRAL_INDICES]
        if unknown or not names:
            raise ModelError(
                f"--spectral-indices takes {ALL_INDICES}, {NO_INDICES} or names from "
                f"{sorted(SPECTRAL_INDICES)}; got {self.spectral_indices!r}."
            )
        return names


# --- one field: its flags, its checks, its template parameter ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Setting:
    """A TrainConfig field with what it was declared with."""

    name: str
    type: type  # of a value when given: int for `int | None`
    default: Any
    option: Option

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def job_name(self) -> str:
        return self.option.job_name or self.name

    @property
    def job_flag(self) -> str:
        return "--" + self.job_name.replace("_", "-")

    def problem(self, value: Any) -> str | None:
        """Why `value` is not accepted, in words naming the flag; None when it is."""
        spec = self.option
        if value is None:
            return None
        if spec.choices is not None and value not in spec.choices:
            return f"{self.flag} must be one of {list(spec.choices)}, got {value!r}."
        inside = (
            (spec.at_least is None or value >= spec.at_least)
            and (spec.above is None or value > spec.above)
            and (spec.below is None or value < spec.below)
            and (spec.at_most is None or value <= spec.at_most)
        )
        return None if inside else f"{self.flag} must be {self.accepted_range()}, got {value}."

    def accepted_range(self) -> str:
        """The range in words: "at least 0 and below 1", "positive"."""
        spec, parts = self.option, []
        if spec.at_least is not None:
            parts.append(f"at least {spec.at_least:g}")
        if spec.above is not None:
            parts.append("positive" if spec.above == 0 else f"above {spec.above:g}")
        if spec.below is not None:
            parts.append(f"below {spec.below:g}")
        if spec.at_most is not None:
            parts.append(f"at most {spec.at_most:g}")
        return " and ".join(parts)

    def listed_numbers(self) -> tuple[int, ...] | None:
        """The values of a short whole-number range (0, 1, 2), which the template offers as a list."""
        low, high = self.option.at_least, self.option.at_most
        if self.type is not int or low is None or high is None or high - low >= MAX_LISTED_NUMBERS:
            return None
        return tuple(range(int(low), int(high) + 1))

    def add_to(self, target: Any, *, job: bool) -> None:
        """Add the flag to an argparse parser or group: model.train's spelling, or the Beam job's."""
        spec = self.option
        kwargs: dict[str, Any] = {"dest": self.job_name if job else self.name, "help": self.help(job=job)}
        if self.type is bool:
            kwargs.update(action="store_true", default=self.default)
        else:
            kwargs["default"] = None if job and spec.job_required else self.default
            if self.type is not str:
                kwargs["type"] = self.type
            if spec.choices is not None:
                kwargs["choices"] = spec.choices
            if spec.optional_value:
                kwargs.update(nargs="?", const=self.default)
        target.add_argument(self.job_flag if job else self.flag, **kwargs)

    def help(self, *, job: bool = False) -> str:
        text = self.option.help
        if job and self.option.job_required:
            text += " Required."
        if job and self.job_flag != self.flag:
            text += f" `{self.flag}` is accepted too."
        return text

    def template_parameter(self) -> dict[str, Any]:
        """The Flex Template parameter (TemplateMetadata.parameters[]) of the Beam job's option."""
        spec = self.option
        help_text = spec.help
        default = None if spec.job_required else self.default  # the job's default
        shown = default is not None and not isinstance(default, bool)
        if shown and "default" not in help_text.lower():
            help_text += f" Default: {default}."
        parameter: dict[str, Any] = {
            "name": self.job_name,
            "label": spec.label,
            "helpText": f"{help_text} Example: {spec.example}",
        }
        if not spec.job_required:
            parameter["isOptional"] = True
        listed = spec.choices if spec.choices is not None else self.listed_numbers()
        if listed is not None:
            parameter["regexes"] = [f"^{_names([str(v) for v in listed])}$"]
            parameter["paramType"] = "ENUM"
            parameter["enumOptions"] = [{"value": str(v)} for v in listed]
        elif self.type is bool:
            parameter.update(regexes=["^(true|false)$"], paramType="BOOLEAN")
        elif spec.text_format is not None:
            parameter.update(regexes=[spec.text_format.regex], paramType=spec.text_format.param_type)
        elif self.type in (int, float):
            parameter.update(regexes=[self._number_regex()], paramType="NUMBER")
        else:
            raise ValueError(
                f"TrainConfig.{self.name} declares no format for the template; give a text_format."
            )
        return parameter

    def _number_regex(self) -> str:
        spec = self.option
        if self.type is int:
            if spec.at_least is not None and spec.at_least >= 1:
                return POSITIVE_COUNT_REGEX
            return COUNT_REGEX if spec.at_least == 0 else WHOLE_NUMBER_REGEX
        if spec.at_least == 0 and spec.below == 1:
            return FRACTION_REGEX
        if (spec.at_least is not None and spec.at_least >= 0) or (spec.above is not None and spec.above >= 0):
            return NUMBER_REGEX
        raise ValueError(f"TrainConfig.{self.name}: the template only takes non-negative numbers.")


@functools.cache
def settings() -> tuple[Setting, ...]:
    """TrainConfig's fields, in order, with their types and options."""
    hints = typing.get_type_hints(TrainConfig)
    found = []
    for field in dataclasses.fields(TrainConfig):
        given = [t for t in typing.get_args(hints[field.name]) if t is not type(None)]
        found.append(
            Setting(
                field.name, given[0] if given else hints[field.name], field.default, field.metadata[_OPTION]
            )
        )
    return tuple(found)


# --- the three forms ---------------------------------------------------------------------------------------


def add_arguments(parser: Any, *, job: bool = False) -> None:
    """Add TrainConfig's options to an argparse parser, in their groups: as `python -m model.train` spells
    them, or (`job`) as the Beam job `python -m pipelines.train` registers them."""
    groups: dict[str, Any] = {}
    for setting in settings():
        title = setting.option.group
        if title is None:
            target = parser
        else:
            if title not in groups:
                groups[title] = parser.add_argument_group(title)
            target = groups[title]
        setting.add_to(target, job=job)


def job_flag_aliases() -> dict[str, str]:
    """model.train's spelling -> the Beam job's, for the options the job names otherwise."""
    return {s.flag: s.job_flag for s in settings() if s.job_flag != s.flag}


def job_required_options() -> tuple[str, ...]:
    """The Beam job's options without a default, by their names there."""
    return tuple(s.job_name for s in settings() if s.option.job_required)


def config_from_job(values: Mapping[str, Any]) -> dict[str, Any]:
    """TrainConfig's keyword arguments from the Beam job's option values (by their names there)."""
    return {s.name: values[s.job_name] for s in settings()}


def template_metadata() -> dict[str, Any]:
    """The Flex Template metadata of the training job (templates/train/metadata.json)."""
    return {
        "name": "terrabeam training",
        "description": "One training run on one worker (GPU-capable) from an extraction's manifest.json, "
        "then the model folder: SavedModel, Earth-Engine-ready SavedModel, earthengine.json, model.json "
        "and metrics.json.",
        "parameters": [
            {
                "name": JOB_PARAMETER,
                "label": "Job",
                "helpText": f"Which terrabeam job this template runs: {JOB}. `python -m pipelines.launch` "
                f"sets it. Example: {JOB}",
                "regexes": [f"^{JOB}$"],
                "defaultValue": JOB,
            },
            *(setting.template_parameter() for setting in settings()),
        ],
    }


def template_metadata_text() -> str:
    """template_metadata() as the file holds it."""
    return json.dumps(template_metadata(), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m model.config`: print the training template's metadata, or write it."""
    relative = TEMPLATE_METADATA.relative_to(TEMPLATE_METADATA.parents[2])
    parser = argparse.ArgumentParser(
        prog=prog("model.config"),
        usage="%(prog)s [options]",
        description=fill(
            "The training configuration, declared once in model/config.py: prints the Flex Template "
            f"parameters of the training job generated from it, or writes them to {relative}."
        ),
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    parser._optionals.title = "general"
    parser.add_argument(
        "--write-template-metadata",
        action="store_true",
        help=f"Write {relative} (after changing an option of TrainConfig).",
    )
    args = parser.parse_args(argv)
    if not args.write_template_metadata:
        print(template_metadata_text(), end="")
        return 0
    TEMPLATE_METADATA.write_text(template_metadata_text(), encoding="utf-8")
    print(f"Wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
