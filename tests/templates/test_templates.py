"""The Flex Templates (templates/): metadata against the jobs' real options, the image, the package.

There is no Docker engine or Google Cloud here, so these tests check what the cloud would rely on:
metadata.json parses as the Dataflow API's TemplateMetadata; every parameter is an option of the job
(introspected through argparse) and every required option is a parameter; the documented example values
pass the regexes, go through the template entry point and land on the right option; bad values fail the
regexes; the Dockerfile's Beam version, entry point and FLEX_TEMPLATE_PYTHON_PY_FILE are consistent with
the repository; and the sdist that setup.py builds holds every module the jobs import.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import launch
from tests.helpers.environment import ROOT

TEMPLATES = ROOT / "templates"
DOCKERFILE = TEMPLATES / "Dockerfile"
JOBS = tuple(launch.JOBS)
PACKAGES = ("pipelines", "transforms", "model")
# Job options a template deliberately leaves out: a local cache folder and the local runner's memory
# budget mean nothing on Dataflow.
LOCAL_ONLY = {"demo_cache", "max_memory"}
# Job options a template launch decides: launching was the decision to spend, so the entry point passes
# --yes and --budget has nothing to hold back.
DECIDED_AT_LAUNCH = {"budget", "yes"}

# Values each regex-validated parameter must reject (every such parameter needs an entry).
GCS_BAD = [
    "/local/folder",
    "gs:/bucket/x",
    "gs://",
    "gs://UPPER/x",
    "gs://b/x",
    "s3://bucket/x",
    "gs://bucket/x\n",
]
GCS_FILE_BAD = [*GCS_BAD, "gs://my-bucket", "gs://my-bucket/folder/"]
INT_BAD = ["0", "-1", "1.5", "ten", "", "12 "]
NUM_BAD = ["-1", "ten", "1,5", "", "1e"]
BOOL_BAD = ["True", "yes", "1", ""]
NAMES_BAD = ["B2 B3", "B2,,B3", ",B2", "B2,", ""]
BAD = {
    "terrabeam_job": ["extracts", "train", "", "predict;rm"],
    "inputs": [
        *GCS_FILE_BAD,
        "gs://my-bucket/a.tif gs://my-bucket/b.tif",
        "gs://my-bucket/a.tif,",
        "before=/local/a.tif",
        "=gs://my-bucket/a.tif",
        "1x=gs://my-bucket/a.tif",  # a label is a name, a year or an ISO date
        "before =gs://my-bucket/a.tif",
        "before=gs://my-bucket/a.tif,after=",
    ],
    "label_raster": GCS_FILE_BAD,
    "regions": GCS_FILE_BAD,
    "output": GCS_BAD,
    "band_names": NAMES_BAD,
    "label_band": ["land cover", "a,b", ""],
    "bands": NAMES_BAD,
    "patch_size": INT_BAD,
    "points_per_class": INT_BAD,
    "classes": ["trees, built", "trees,", "-1", ""],
    "label_scheme": ["my-scheme", "binary:trees", "binary:trees=x", "classes.json", "gs://b/x", ""],
    "unknown_labels": ["skip", "Ignore", ""],
    "strata_band": ["elev ation", ""],
    "strata_edges": ["500;1000", "500,,1000", "x", ""],
    "seed": ["1.5", "seed", ""],
    "crs": ["32632", "EPSG 32632", "+proj=utm", ""],
    "scale": NUM_BAD,
    "validation_fraction": ["1", "1.5", "-0.1", "ten", ""],
    "split_block_size": NUM_BAD,
    "split_fold": ["-1", "1.5", "two", ""],
    "pad_edges": BOOL_BAD,
    "compression": ["GZIP", "zip", ""],
    "max_attempts": INT_BAD,
    "overwrite": BOOL_BAD,
    "source": ["ee", "Local", ""],
    "compression_level": ["10", "-1", ""],
    "ee_project": ["My Project", "p", "12345678", ""],
    "ee_asset": [
        "users/me/landcover",
        "projects/my-ee-project/assets/",
        "landcover",
        "projects/p/assets/x",
        "",
    ],
    "ee_key_file": GCS_FILE_BAD,
    "ee_endpoint": ["http://earthengine.googleapis.com", "earthengine-highvolume.googleapis.com", ""],
    "ee_image": ["s2 median", "s2-l1c-median+", "+elevation", ""],
    "ee_labels": ["world cover", ""],
    "ee_fetch": ["computepixels", "download", ""],
    "max_requests": INT_BAD,
    "ee_requests_per_minute": INT_BAD,
    "ee_request_seconds": NUM_BAD,
    "data": GCS_BAD,
    "model_dir": GCS_BAD,
    "mode": ["segment", "Segmentation", ""],
    "architecture": ["resnet", "UNET", ""],
    "filters": INT_BAD,
    "depth": INT_BAD,
    "epochs": INT_BAD,
    "training_batch_size": INT_BAD,
    "learning_rate": ["-0.1", "fast", "", "1e"],
    "patience": ["-1", "1.5", ""],
    "selection_fraction": ["1", "1.5", "-0.1", "ten", ""],
    "schedule": ["linear", "Cosine", ""],
    "ema": ["1", "0.99x", "-0.5", ""],
    "loss": ["dice", "CE", ""],
    "region_loss": ["jaccard", "Dice", ""],
    "label_smoothing": ["1", "-0.1", "x", ""],
    "dropout": ["1", "-0.1", "x", ""],
    "weight_decay": ["1", "-0.05", "x", ""],
    "bootstrap": ["1.5", "-0.2", ""],
    "radiometric_augmentation": ["1", "-0.05", "5%", ""],
    "spectral_indices": ["evi", "ndvi,", "NDVI", "ndvi ndwi", ""],
    "band_roles": ["nir", "blue=B2", "nir=B8,", "nir = B8", ""],
    "class_weight_power": NUM_BAD,
    "label_source": ["majority ", "label", ""],
    "max_minutes": NUM_BAD,
    "init_model": GCS_BAD,
    "training_seed": ["1.5", ""],
    "deterministic": BOOL_BAD,
    "xla": ["yes", "On", ""],
    "precision": ["bfloat16", "Float32", ""],
    "cache": ["disk", "relative/prefix", ""],
    "verbose": ["3", "-1", ""],
    "model": GCS_BAD,
    "aoi": ["/local/region.geojson", "10,46,11", "W,S,E,N", "gs://bucket", ""],
    "tile_size": INT_BAD,
    "overlap": ["63", "-2", "6.0", ""],
    "batch_size": INT_BAD,
    "probabilities": ["float16", "UINT8", ""],
    "mosaic": BOOL_BAD,
    "max_error_fraction": ["1.5", "2", "-0.1", "ten", ""],
    "resume": BOOL_BAD,
    "tta": BOOL_BAD,
}


def metadata(job: str) -> dict:
    path = launch.metadata_path(job)
    if not path.exists():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: every job needs a Flex Template metadata file.")
    return json.loads(path.read_text(encoding="utf-8"))


def job_options(job: str):
    """The job's options class, skipping jobs whose module does not exist yet."""
    spec = launch.JOBS[job]
    if importlib.util.find_spec(spec.module) is None:
        pytest.skip(f"{spec.module} does not exist yet, so its template cannot be checked")
    return launch.options_class(job)


def example(param: dict) -> str:
    found = re.search(r"Example: (\S+)$", param["helpText"])
    assert found, f"{param['name']}: helpText should end with 'Example: <value>'"
    return found.group(1)


def parameters(job: str) -> dict[str, dict]:
    return {p["name"]: p for p in metadata(job)["parameters"]}


# --- metadata.json ------------------------------------------------------------------------------------


@pytest.mark.parametrize("job", JOBS)
def test_metadata_is_a_dataflow_template_metadata(job):
    from google.cloud.dataflow_v1beta3.types import TemplateMetadata

    metadata(job)
    text = launch.metadata_path(job).read_text(encoding="utf-8")
    # The API's own message type: unknown fields or wrong types fail here, as they would in gcloud.
    parsed = TemplateMetadata.from_json(text)
    assert parsed.name and parsed.description
    names = [p.name for p in parsed.parameters]
    assert len(names) == len(set(names)), "duplicate parameter names"
    for p in parsed.parameters:
        assert p.label and p.help_text, f"{p.name}: label and helpText are required"
    job_param = parameters(job)[launch.JOB_PARAMETER]
    assert job_param["regexes"] == [f"^{job}$"] and not job_param.get("isOptional", False)


@pytest.mark.parametrize("job", JOBS)
def test_every_parameter_is_a_job_option_and_every_required_option_a_parameter(job):
    options_cls = job_options(job)
    actions = launch.option_actions(options_cls)
    params = parameters(job)
    for name, param in params.items():
        if name == launch.JOB_PARAMETER:
            continue
        assert name in actions, f"{job}: parameter {name!r} is not an option of {options_cls.__name__}"
        action = actions[name]
        if action.choices:
            assert {o["value"] for o in param.get("enumOptions", [])} == {str(c) for c in action.choices}
        if action.nargs == 0:
            assert param.get("paramType") == "BOOLEAN" and param["regexes"] == ["^(true|false)$"]
    required = {n for n, p in params.items() if not p.get("isOptional", False)}
    assert launch.required_options(options_cls) <= required
    missing = set(actions) - set(params) - LOCAL_ONLY - DECIDED_AT_LAUNCH
    assert not missing, f"{job}: options without a template parameter: {sorted(missing)}"


@pytest.mark.parametrize("job", JOBS)
def test_regexes_accept_the_examples_and_reject_bad_values(job):
    params = parameters(job)
    for name, param in params.items():
        assert "regexes" in param, f"{name}: every terrabeam parameter has a format"
        value = example(param)
        for regex in param["regexes"]:
            assert re.fullmatch(regex, value), f"{name}: the documented example {value!r} fails {regex}"
        assert name in BAD, f"add bad values for {name!r} to this test"
        for bad in BAD[name]:
            if bad == job and name == launch.JOB_PARAMETER:
                continue
            assert not all(re.fullmatch(r, bad) for r in param["regexes"]), f"{name}: {bad!r} was accepted"


@pytest.mark.parametrize("job", JOBS)
def test_examples_reach_the_job_options_through_the_template_entry_point(job):
    """Dataflow passes `--name=value`; the entry point must turn each into the job's own option value."""
    options_cls = job_options(job)
    actions = launch.option_actions(options_cls)
    params = parameters(job)
    argv = [f"--{name}={example(p)}" for name, p in params.items()]
    chosen, job_argv = launch.template_argv(argv)
    assert chosen == job
    opts = PipelineOptions(job_argv).view_as(options_cls)
    for name, param in params.items():
        if name == launch.JOB_PARAMETER:
            continue
        action, value = actions[name], example(param)
        if action.nargs == 0:
            expected = value == "true"
        elif action.nargs in ("+", "*"):
            expected = value.split(",")
        else:
            expected = (action.type or str)(value)
        assert getattr(opts, name) == expected, name


def test_train_template_offers_the_real_architectures():
    from model.architecture import ARCHITECTURES

    options = parameters("train")["architecture"]["enumOptions"]
    assert {o["value"] for o in options} == set(ARCHITECTURES)


# --- the template entry point ---------------------------------------------------------------------------


def test_entry_point_maps_parameters_onto_the_job_flags(monkeypatch):
    monkeypatch.setenv(launch.IMAGE_ENV, "us-docker.pkg.dev/p/r/terrabeam:1")
    job, argv = launch.template_argv(
        [
            "--terrabeam_job=extract",
            "--inputs=gs://b1/a.tif,gs://b1/b.tif",
            "--patch_size=64",
            "--pad_edges=true",
            "--overwrite=false",
            "--runner=DataflowRunner",
            "--temp_location=gs://b1/tmp",
        ]
    )
    assert job == "extract"
    assert argv == [
        "--inputs",
        "gs://b1/a.tif",
        "gs://b1/b.tif",
        "--patch-size=64",
        "--pad-edges",
        "--runner=DataflowRunner",
        "--temp_location=gs://b1/tmp",
        "--sdk_container_image=us-docker.pkg.dev/p/r/terrabeam:1",
    ]
    _, argv = launch.template_argv(["--terrabeam_job", "train", "--sdk_container_image=other:2"])
    assert argv == ["--sdk_container_image=other:2"]


@pytest.mark.parametrize("job", ["extract", "predict"])
@pytest.mark.parametrize(
    "value, dates",
    [
        (
            "before=gs://my-bucket/s2-2019.tif,before=gs://my-bucket/dem.tif,after=gs://my-bucket/s2-2023.tif",
            {
                "before": ("gs://my-bucket/s2-2019.tif", "gs://my-bucket/dem.tif"),
                "after": ("gs://my-bucket/s2-2023.tif",),
            },
        ),
        (
            "2019-07-01=gs://my-bucket/year=2019/a.tif,2023=gs://my-bucket/b.tif",
            {"2019-07-01": ("gs://my-bucket/year=2019/a.tif",), "2023": ("gs://my-bucket/b.tif",)},
        ),
    ],
)
def test_dated_inputs_pass_the_template_and_reach_the_job_as_dates(job, value, dates):
    from transforms.io.dated import parse_inputs

    assert all(re.fullmatch(r, value) for r in parameters(job)["inputs"]["regexes"])
    _, argv = launch.template_argv([f"--terrabeam_job={job}", f"--inputs={value}"])
    assert argv[0] == "--inputs"
    assert dict(parse_inputs(argv[1:])) == dates


@pytest.mark.parametrize("job", ["extract", "predict"])
def test_a_stac_file_in_cloud_storage_passes_the_template(job):
    assert all(
        re.fullmatch(r, "gs://my-bucket/stac/catalog.json") for r in parameters(job)["inputs"]["regexes"]
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--patch_size=64"], "--terrabeam_job is missing"),
        (["--terrabeam_job=segment"], "Unknown job 'segment'"),
        (["--terrabeam_job=extract", "--pad_edges=maybe"], "is a switch"),
    ],
)
def test_entry_point_rejects_bad_parameters(argv, message, capsys):
    assert launch.run_template(argv) == 2
    assert message in capsys.readouterr().err


def test_the_image_entry_file_runs_the_job(tmp_path):
    """The FLEX_TEMPLATE_PYTHON_PY_FILE script, run as the launcher runs it, reaches the job's validation."""
    entry = _flex_py_file()
    result = subprocess.run(
        [
            sys.executable,
            str(entry),
            "--terrabeam_job=extract",
            f"--inputs={tmp_path}/a.tif",
            f"--label_raster={tmp_path}/labels.tif",
            f"--regions={tmp_path}/regions.geojson",
            "--patch_size=0",
            f"--output={tmp_path}/out",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "error: --patch-size must be a positive number of pixels, got 0" in result.stderr


# --- the container image --------------------------------------------------------------------------------


def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def _args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S*)$", dockerfile(), re.M))


def _flex_py_file() -> Path:
    value = re.search(r'^ENV FLEX_TEMPLATE_PYTHON_PY_FILE="?([^"\n]+)"?$', dockerfile(), re.M).group(1)
    workdir = _args()["WORKDIR"]
    path = value.replace("${WORKDIR}", workdir)
    assert path.startswith(workdir + "/"), "the entry file must lie in the image's WORKDIR"
    return ROOT / path[len(workdir) + 1 :]


def _pinned(requirement: str) -> str:
    found = re.search(rf"^{re.escape(requirement)}==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert found, f"requirements.txt must pin {requirement}"
    return found.group(1)


def test_one_beam_version_matching_setup_py():
    from packaging.specifiers import SpecifierSet

    beam = _args()["BEAM_VERSION"]
    assert beam == _pinned("apache-beam")
    setup_beam = next(r for r in _install_requires() if r.startswith("apache-beam"))
    assert beam in SpecifierSet(re.sub(r"^apache-beam(\[\w+\])?", "", setup_beam))
    bases = re.findall(r"^FROM (\S+)", dockerfile(), re.M)
    assert "apache/beam_python3.11_sdk:${BEAM_VERSION}" in bases
    versions = [line for line in dockerfile().splitlines() if re.search(r"\d+\.\d+\.\d+", line.split("#")[0])]
    assert versions == [f"ARG BEAM_VERSION={beam}"], "the image must state the Beam version once"


def test_image_is_worker_and_launcher_for_the_same_python():
    bases = re.findall(r"^FROM (\S+)", dockerfile(), re.M)
    sdk = next(re.search(r"beam_python(\d)\.(\d+)_sdk", b) for b in bases if "beam_python" in b)
    launcher = next(re.search(r"python(\d)(\d+)-template-launcher-base", b) for b in bases if "launcher" in b)
    assert sdk.groups() == launcher.groups()
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == ".".join(sdk.groups()), (
        "requirements.txt is pinned for this Python; the image must use the same one"
    )
    text = dockerfile()
    assert "/opt/google/dataflow/python_template_launcher" in text
    assert re.search(r'^ENTRYPOINT \["/opt/apache/beam/boot"\]$', text, re.M)
    assert re.search(r"^RUN (.*\\\n)*.*pip check", text, re.M)


def test_image_installs_the_built_package_with_the_pins_ci_tests():
    """As --setup_file installs it on Dataflow's workers: the sdist, with setup.py's requirements at
    requirements.txt's versions; no version stated anywhere else, no development packages."""
    text = dockerfile()
    runs = " ".join(re.findall(r"^RUN (.+(?:\\\n.+)*)", text, re.M))
    assert re.search(r"python setup.py sdist --dist-dir /dist", runs)
    installs = re.findall(r"pip install ([^&;]+)", runs)
    assert any("/dist/terrabeam-*.tar.gz" in i and "--constraint requirements.txt" in i for i in installs)
    for command in installs:
        if "tensorflow[and-cuda]" in command:  # the GPU build, at requirements.txt's TensorFlow version
            assert "${tf_version}" in command
            continue
        assert "--constraint requirements.txt" in command, f"pip install {command.strip()} ignores the pins"
        assert "-r requirements.txt" not in command, "the image installs the whole development set"
        assert "==" not in command, f"a version stated outside requirements.txt: {command.strip()}"
    # The package stage leaves no package folder where the workers start (it would shadow the install).
    final = text.split("\nFROM apache/beam_python")[-1]
    assert not re.search(r"^COPY (pipelines|transforms|model) ", final, re.M)


def test_every_file_the_image_copies_exists():
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile(), re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"templates/Dockerfile copies {source}, which does not exist"


def test_image_copies_the_packages_and_names_an_existing_entry_file():
    copied = {
        src for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile(), re.M) for src in line.split()[:-1]
    }
    assert {"requirements.txt", "setup.py", *PACKAGES, "templates"} <= copied
    entry = _flex_py_file()
    assert entry.is_file(), f"FLEX_TEMPLATE_PYTHON_PY_FILE names {entry}, which does not exist"
    source = entry.read_text(encoding="utf-8")
    assert "run_template" in source and "pipelines.launch" in source
    assert callable(launch.run_template)


# --- the source distribution ----------------------------------------------------------------------------


def _install_requires() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", "") == "INSTALL_REQUIRES" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no INSTALL_REQUIRES")


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_project_modules(start: list[Path]) -> set[Path]:
    """Every project file the start files import, transitively (imports anywhere in a file count)."""
    seen: set[Path] = set()
    pending = list(start)
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.split(".")[0] not in PACKAGES:
                    continue
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # the packages on the way count too
                    found = _module_file(".".join(parts[:i]))
                    if found:
                        pending.append(found)
    return seen


def test_sdist_contains_every_module_the_jobs_import(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "out",
            ".cache",
            "*.egg-info",
            "__pycache__",
            ".pytest_cache",
            ".ruff_cache",
            "build",
            "dist",
        ),
    )
    result = subprocess.run(
        [sys.executable, "-c", "from setuptools import build_meta; print(build_meta.build_sdist('dist'))"],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    sdist = src / "dist" / result.stdout.strip().splitlines()[-1]
    with tarfile.open(sdist) as tar:
        prefix = tar.getnames()[0].split("/")[0]
        names = {n[len(prefix) + 1 :] for n in tar.getnames()}
    start = [ROOT / "templates" / "main.py", ROOT / "pipelines" / "launch.py"]
    start += [f for job in JOBS if (f := _module_file(launch.JOBS[job].module))]
    needed = {
        p.relative_to(ROOT).as_posix()
        for p in imported_project_modules(start)
        if ROOT / "templates" not in p.parents
    }
    assert {"pipelines/extract.py", "pipelines/train.py", "transforms/contracts/schema.py"} <= needed
    missing = sorted(needed - names)
    assert not missing, f"the sdist lacks modules the jobs import: {missing}"
