"""Workers built from the staged package, as on Dataflow: terrabeam's sdist (what `--setup_file` stages)
installed into a fresh virtual environment with only its declared requirements, Beam's SDK worker pool
started from it, and the extraction and prediction jobs run through Beam's portable runner on those
workers. Their records and class map must be those of the local runner, byte for byte; a file the
package leaves out or a dependency it does not declare fails here, named (tests/helpers/staged.py)."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import rasterio

from pipelines import extract, predict
from tests.helpers.once import once_per_run
from tests.helpers.staged import (
    NOT_INSTALLED,
    PACKAGES,
    ROOT,
    outside_environment,
    portable_runner_options,
    staged_environment,
    worker_pool,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="session")
def staged_env(tmp_path_factory) -> Path:
    """Built once for all the test workers: the environment's first Python process compiles the
    bytecode of what it imports (~11 CPU-s for TensorFlow and Beam), which later ones reuse."""

    def build(folder: Path) -> dict:
        return {"env": str(staged_environment(folder))}

    return Path(once_per_run(tmp_path_factory, "staged-environment", build)["env"])


def _run_in(env: Path, code: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(env / "bin" / "python"), "-c", code, *args],
        cwd=cwd,
        env=outside_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )


# The check run inside the staged environment, away from the repository: every module of the packages
# imports; every module they import anywhere (imports inside functions included: they run later, on a
# worker) is installed, unless it belongs to an extra; and every file of the packages' folders is there.
CHECK_INSTALLED = """
import ast, importlib, importlib.util, json, pathlib, pkgutil, sys
packages, tracked, optional = json.loads(sys.argv[-1])
failed, unresolved, missing, where = {}, {}, [], set()
for name in packages:
    package = importlib.import_module(name)
    where.add(pathlib.Path(package.__file__).parents[1])
    for info in pkgutil.walk_packages(package.__path__, name + "."):
        try:
            importlib.import_module(info.name)
        except ImportError as e:
            if (e.name or "").split(".")[0] not in optional:
                failed[info.name] = f"{type(e).__name__}: {e}"
(site,) = where
for name in packages:
    for path in sorted((site / name).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top in packages or top in optional or module in optional:
                    continue
                try:
                    found = importlib.util.find_spec(module) is not None
                except ImportError:
                    found = False
                if not found:
                    unresolved.setdefault(module, str(path.relative_to(site)))
for path in tracked:
    if not (site / path).is_file():
        missing.append(path)
print(json.dumps({"failed": failed, "unresolved": unresolved, "missing": missing, "site": str(site)}))
"""

# Modules the packages import only for an extra's command ([view], [serve]) or inside a notebook.
EXTRA_MODULES = {"rio-tiler": "rio_tiler", "scikit-learn": "sklearn", "pyyaml": "yaml"}
NOTEBOOK_MODULES = ["IPython", "google.colab"]


def _tracked_package_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", *PACKAGES], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [p for p in listed if p not in NOT_INSTALLED]


def _optional_modules() -> list[str]:
    """The import names of setup.py's extras' packages, and of the notebook's helpers: commands that
    need an extra say so themselves, and the jobs' workers never import them."""
    import ast

    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    extras = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.keyword) and node.arg == "extras_require"
    )
    dists = {re.split(r"[<>=!\[; ]", req, maxsplit=1)[0].lower() for reqs in extras.values() for req in reqs}
    return sorted({EXTRA_MODULES.get(d, d.replace("-", "_")) for d in dists} | set(NOTEBOOK_MODULES))


def test_the_installed_package_holds_every_file_and_imports_without_the_repository(staged_env, tmp_path):
    tracked = _tracked_package_files()
    assert "pipelines/view/static/viewer.js" in tracked and "transforms/io/dated.py" in tracked
    arguments = json.dumps([list(PACKAGES), tracked, _optional_modules()])
    result = _run_in(staged_env, CHECK_INSTALLED, tmp_path, arguments)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert str(ROOT) not in report["site"], "the staged environment imported the repository, not the package"
    assert not report["missing"], (
        f"files the installed package lacks (package_data in setup.py): {report['missing']}"
    )
    assert not report["failed"], f"modules that do not import from the installed package: {report['failed']}"
    assert not report["unresolved"], (
        f"modules the package imports that its declared requirements do not install (install_requires in "
        f"setup.py), with a file that imports each: {report['unresolved']}"
    )


def _records(folder: Path) -> dict[str, list[bytes]]:
    """Every TFRecord of an extraction, per split, as raw bytes in sorted order (shards may cut the
    records differently on another runner)."""
    import tensorflow as tf

    splits = json.loads((folder / "manifest.json").read_text())["splits"]
    out = {}
    for split, written in splits.items():
        files = [str(folder / name) for name in written["files"]]
        compression = "GZIP" if files and files[0].endswith(".gz") else ""
        out[split] = sorted(r.numpy() for r in tf.data.TFRecordDataset(files, compression_type=compression))
    return out


def _run_job(job: Callable[[list[str]], object], args: list[str], pool: Path) -> None:
    """A job run in this process (the in-memory runner: tests/conftest.py), or with the portable runner's
    options on the pool's workers; a failure shows the pool's log."""
    try:
        job(args)
    except Exception as error:
        log = (pool / "worker_pool.log").read_text() if (pool / "worker_pool.log").exists() else ""
        raise AssertionError(
            f"{job.__module__} {args} failed: {error}\nworker pool log:\n{log[-3000:]}"
        ) from error


def test_extraction_and_prediction_on_workers_from_the_staged_package(
    conv_model_dir, staged_env, tiny_scene, tmp_path
):
    extraction = [
        f"--inputs={tiny_scene.image}",
        f"--labels={tiny_scene.labels}",
        f"--regions={tiny_scene.regions}",
        "--patch-size=16",
        "--points-per-class=6",
    ]
    local, remote = tmp_path / "local", tmp_path / "workers"
    pool = tmp_path / "pool"
    with worker_pool(staged_env, pool) as address:
        runner = portable_runner_options(address)
        _run_job(extract.run, [*extraction, f"--output={local / 'data'}"], pool)
        _run_job(extract.run, [*extraction, f"--output={remote / 'data'}", *runner, "--yes"], pool)
        ours, theirs = _records(local / "data"), _records(remote / "data")
        assert ours["train"] and ours == theirs

        model = conv_model_dir
        prediction = [
            f"--model={model}",
            f"--inputs={tiny_scene.image}",
            "--tile-size=64",
            "--overlap=8",
            "--mosaic",
        ]
        _run_job(predict.run, [*prediction, f"--output={local / 'map'}"], pool)
        _run_job(predict.run, [*prediction, f"--output={remote / 'map'}", *runner, "--yes"], pool)
    ours, theirs = (folder / "map" / "classes.tif" for folder in (local, remote))
    with rasterio.open(ours) as a, rasterio.open(theirs) as b:
        assert a.read().tobytes() == b.read().tobytes()
        assert (a.profile, a.tags(1)) == (b.profile, b.tags(1))
    assert ours.read_bytes() == theirs.read_bytes()
    # Both jobs ran on the pool's workers, not in this process.
    assert (pool / "worker_pool.log").read_text().count("Starting worker with command") >= 2
