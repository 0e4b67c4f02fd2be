"""Every local core: one worker process per CPU by default, a memory guard, and the same outputs
whatever the worker count."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from pipelines import options as local
from pipelines.extract import main as extract_main
from pipelines.extract import runs_in_raster_order
from pipelines.progress import LocalRunner
from tests.helpers.environment import not_own, run_command, terrabeam
from tests.helpers.records import records_of_split, without_files
from transforms.contracts.manifest import read_manifest
from transforms.geometry.sampling import Point
from transforms.runtime.outcome import is_local_runner

GIB = 1 << 30


# --- the plan -------------------------------------------------------------------------------------


def test_one_worker_per_cpu_when_memory_allows():
    plan = local.plan_local_workers(cpus=8, per_worker_bytes=GIB, max_memory_gib=None, free_bytes=64 * GIB)
    assert (plan.workers, plan.reason) == (8, "cpus")


def test_prediction_gets_a_worker_per_four_cpus():
    """TensorFlow spreads one worker's model over several cores: on 2 CPUs one process is faster."""
    from pipelines.predict import CPUS_PER_PREDICTION_WORKER

    def workers(cpus: int) -> int:
        return local.plan_local_workers(
            cpus, GIB, None, 256 * GIB, cpus_per_worker=CPUS_PER_PREDICTION_WORKER
        ).workers

    assert [workers(c) for c in (1, 2, 4, 8, 16)] == [1, 1, 1, 2, 4]


def test_memory_caps_the_workers():
    # --max-memory wins over the free memory; the free memory counts at MEMORY_HEADROOM.
    plan = local.plan_local_workers(16, 2 * GIB, max_memory_gib=7, free_bytes=64 * GIB)
    assert (plan.workers, plan.reason) == (3, "memory")
    assert local.plan_local_workers(16, 2 * GIB, max_memory_gib=None, free_bytes=10 * GIB).workers == 4
    # Never fewer than one; without any memory figure the CPUs decide.
    assert local.plan_local_workers(4, 8 * GIB, max_memory_gib=1, free_bytes=None).workers == 1
    assert local.plan_local_workers(4, 8 * GIB, max_memory_gib=None, free_bytes=None).workers == 4


def test_small_jobs_get_only_the_workers_their_work_pays_for():
    plan = local.plan_local_workers(8, GIB, None, 64 * GIB, work=2500, min_work_per_worker=1000)
    assert (plan.workers, plan.reason) == (2, "work")
    assert local.plan_local_workers(8, GIB, None, 64 * GIB, work=10, min_work_per_worker=1000).workers == 1
    assert local.plan_local_workers(2, GIB, None, 64 * GIB, work=10**6, min_work_per_worker=1000).workers == 2


def test_planned_work_of_the_jobs(conv_model_dir, tiny_scene, tmp_path):
    from pipelines import extract, predict

    scene = [
        "--inputs",
        tiny_scene.image,
        "--label-raster",
        tiny_scene.labels,
        "--regions",
        tiny_scene.regions,
    ]
    opts = PipelineOptions(
        scene + ["--points-per-class", "7", "--classes", "1,2,3", "--output", str(tmp_path / "x")]
    )
    assert extract.planned_points(extract.validate(opts.view_as(extract.ExtractOptions))) == 7 * 3 * 2
    model = conv_model_dir
    opts = PipelineOptions(
        [
            f"--model={model}",
            "--inputs",
            tiny_scene.image,
            "--tile-size=64",
            "--overlap=8",
            f"--output={tmp_path / 'p'}",
        ]
    )
    job = predict.validate(opts.view_as(predict.PredictOptions))
    assert len(job.plan) == 16  # the work unit of prediction: tiles


def test_a_24_gib_machine_stays_safe_whatever_its_cpu_count(conv_model_dir, tiny_scene, tmp_path):
    """The default prediction's estimated worker memory, on a 24 GiB machine with many cores."""
    from pipelines import predict

    model = conv_model_dir
    opts = PipelineOptions([f"--model={model}", "--inputs", tiny_scene.image, f"--output={tmp_path / 'o'}"])
    job = predict.validate(opts.view_as(predict.PredictOptions))
    per_worker = predict.worker_bytes(job)
    assert per_worker >= GIB  # TensorFlow, the model and a batch of 256-pixel tiles (docs/local-cores.md)
    for cpus in (2, 16, 64, 192):
        plan = local.plan_local_workers(cpus, per_worker, max_memory_gib=None, free_bytes=24 * GIB)
        assert plan.workers * per_worker <= 24 * GIB * local.MEMORY_HEADROOM
        assert plan.workers == min(cpus, plan.workers)


def test_tensorflow_threads_share_the_cpus_between_workers():
    from pipelines.predict import tensorflow_threads

    assert tensorflow_threads(2, 2) == {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    assert tensorflow_threads(4, 16)["TF_NUM_INTRAOP_THREADS"] == "4"
    assert tensorflow_threads(3, 2)["TF_NUM_INTRAOP_THREADS"] == "1"


@pytest.mark.local_cores
@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], (2, "multi_processing")),
        (["--runner", "DirectRunner"], (2, "multi_processing")),
        (["--direct_num_workers", "1"], (1, "in_memory")),  # the user's choice wins
        (["--direct_running_mode=multi_threading"], (1, "multi_threading")),
        (["--runner", "DataflowRunner"], (1, "in_memory")),  # not a local run: left to Beam
    ],
)
def test_local_runs_default_to_every_cpu_unless_the_user_chose(argv, expected, monkeypatch):
    monkeypatch.setattr(local, "available_cpus", lambda: 2)
    monkeypatch.setattr(local, "available_memory_bytes", lambda: 64 * GIB)
    options = PipelineOptions(argv)
    local.use_local_cores(options, argv, per_worker_bytes=GIB, max_memory_gib=None)
    direct = options.view_as(DirectOptions)
    assert (direct.direct_num_workers, direct.direct_running_mode) == expected


def test_worker_processes_of_a_run():
    pool = ["--direct_num_workers=3", "--direct_running_mode=multi_processing"]
    assert local.worker_processes(PipelineOptions(pool)) == 3
    assert local.worker_processes(PipelineOptions(["--direct_num_workers=3"])) == 0  # in_memory: threads
    assert local.worker_processes(PipelineOptions(pool + ["--runner=DataflowRunner"])) == 0


def test_local_runner_is_used_for_the_direct_runner_only():
    assert isinstance(local.local_runner(PipelineOptions([])), LocalRunner)
    assert isinstance(local.local_runner(PipelineOptions(["--runner=DirectRunner"])), LocalRunner)
    assert local.local_runner(PipelineOptions(["--runner=DataflowRunner"])) is None


def test_local_runners_and_worker_pool_runners():
    # Local: the job runs in this process and its results are here when it returns.
    for runner in (None, "DirectRunner", "PrismRunner", "apache_beam.runners.direct.DirectRunner"):
        assert is_local_runner(runner), runner
    assert not is_local_runner("DataflowRunner")
    assert not is_local_runner("apache_beam.runners.dataflow.DataflowRunner")
    # A worker pool: only the runners that honour --direct_num_workers (Prism is local but ignores it).
    assert local.runs_worker_pool(PipelineOptions([]))
    assert local.runs_worker_pool(PipelineOptions(["--runner=FnApiRunner"]))
    assert not local.runs_worker_pool(PipelineOptions(["--runner=PrismRunner"]))
    assert not local.runs_worker_pool(PipelineOptions(["--runner=DataflowRunner"]))


def test_runs_are_even_and_in_raster_order():
    points = [
        Point(f"p{i}", "r", float(i % 13), float(i // 13), "EPSG:32632", 0.0, 0.0, 1, 1) for i in range(130)
    ]
    runs = list(runs_in_raster_order(points, 64))
    assert [len(r) for r in runs] == [44, 44, 42]
    flat = [p for run in runs for p in run]
    assert sorted(p.id for p in flat) == sorted(p.id for p in points)
    assert [(-p.y, p.x) for p in flat] == sorted((-p.y, p.x) for p in points)
    assert [len(r) for r in runs_in_raster_order(points[:5], 64)] == [5]
    assert list(runs_in_raster_order([], 64)) == []


# --- the same outputs whatever the worker count ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.local_cores
def test_extraction_is_the_same_with_one_worker_and_the_default_pool(
    tiny_scene, tmp_path, monkeypatch, caplog
):
    """The default (no --direct_* option) on a 2-CPU machine runs 2 worker processes."""
    monkeypatch.setattr(local, "available_cpus", lambda: 2)
    monkeypatch.setattr("pipelines.extract.MIN_POINTS_PER_WORKER", 1)  # tiny data: still start the pool
    used = []
    real = local.use_local_cores

    def spy(options, *args, **kwargs):
        plan = real(options, *args, **kwargs)
        used.append(options.view_as(DirectOptions))
        return plan

    monkeypatch.setattr("pipelines.extract.use_local_cores", spy)
    scene = ["--inputs", tiny_scene.image, "--labels", tiny_scene.labels, "--regions", tiny_scene.regions]
    common = scene + ["--patch-size", "32", "--points-per-class", "40", "--validation-fraction", "0.3"]
    caplog.set_level(logging.INFO)
    assert extract_main(common + ["--output", str(tmp_path / "one"), "--direct_num_workers", "1"]) == 0
    assert extract_main(common + ["--output", str(tmp_path / "pool")]) == 0
    assert (used[-1].direct_num_workers, used[-1].direct_running_mode) == (2, "multi_processing")
    assert "PrismRunner" not in caplog.text  # straight to the FnApiRunner: offline, and it honours the pool

    one, pool = read_manifest(str(tmp_path / "one")), read_manifest(str(tmp_path / "pool"))
    assert without_files(one) == without_files(pool)
    assert sum(one["splits"][s]["patches"] for s in one["splits"]) > 100
    for split in ("train", "validation"):
        assert records_of_split(one, split) == records_of_split(pool, split)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_prediction_is_byte_identical_with_one_and_two_workers(conv_model_dir, tiny_scene, tmp_path):
    """One worker in this process; a pool of two worker processes started by the `terrabeam` command,
    where TensorFlow loads in every process, silently."""
    from pipelines.predict import run

    model = conv_model_dir
    args = [f"--model={model}", "--inputs", tiny_scene.image, "--tile-size=64", "--overlap=8"]
    args += ["--probabilities=uint8"]
    one = run(args + [f"--output={tmp_path / 'one'}", "--direct_num_workers=1"])
    pool = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    done = run_command([terrabeam(), "predict", *args, *pool, f"--output={tmp_path / 'two'}"])
    assert done.returncode == 0, done.stderr
    assert not_own(done.stderr) == "", f"not a quiet start:\n{done.stderr}"
    assert "Prediction of 16 tiles written" in done.stdout
    two = json.loads((tmp_path / "two" / "prediction.json").read_text())
    assert one["tiles_written"] == two["tiles_written"] == 16
    assert {k: v for k, v in one.items() if k != "output"} == {k: v for k, v in two.items() if k != "output"}
    files_one, files_two = _files(tmp_path / "one"), _files(tmp_path / "two")
    files_one.pop("prediction.json"), files_two.pop("prediction.json")
    assert files_one.keys() == files_two.keys()
    assert any(name.startswith("tiles/classes/") for name in files_one)
    for name in files_one:
        assert files_one[name] == files_two[name], name
