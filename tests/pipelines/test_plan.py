"""`terrabeam plan`: the jobs' own options, help and errors; what it counts on real runs; and the plan a
job on a distributed runner prints, writes and holds to --budget before anything starts (the runner is
never reached: no test here contacts Google)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from pipelines import extract, launch, plan, predict
from pipelines.shell import JobShell
from tests.helpers.environment import run_python
from transforms.contracts.manifest import read_manifest

DATAFLOW = ["--runner", "DataflowRunner", "--project", "p", "--region", "us-central1"]


def tiny_extraction(scene, output: Path, *extra: str) -> list[str]:
    return [
        "--inputs",
        scene.image,
        "--labels",
        scene.labels,
        "--regions",
        scene.regions,
        "--patch-size",
        "16",
        "--points-per-class",
        "5",
        "--output",
        str(output),
        *extra,
    ]


def squeeze(text: str) -> str:
    return " ".join(text.split())


# --- the command: help, options and errors are the jobs' --------------------------------------------


@pytest.mark.parametrize("job, module", [("extract", extract), ("predict", predict)])
def test_help_lists_the_jobs_options_in_the_jobs_groups(job, module, capsys):
    assert plan.main([job, "--help"]) == 0
    planned = capsys.readouterr().out
    assert module.main(["--help"]) == 0
    own = capsys.readouterr().out
    assert planned.startswith(f"usage: python -m pipelines.plan {job} [options] [runner options]")

    def groups(text: str) -> list[str]:
        options = text[text.index("\ngeneral:\n") : text.index("\nrunner options")]
        return re.findall(r"^(\S[^\n]*):\n", options, re.M)

    assert groups(planned) == groups(own)
    assert groups(planned)[-2].startswith("plan and budget (DataflowRunner")  # then "this machine"

    def flags(text: str) -> set[str]:
        options = text[: text.index("\nrunner options")]  # the epilogs differ
        return set(re.findall(r"^\s+(--[a-z][-a-z_]*)", options, re.M))

    assert len(flags(own)) > 20 and flags(own) == flags(planned)
    assert "--machine_type" in planned and "--max_num_workers" in planned


HELP_TIMED = """
import sys, time
start = time.perf_counter()
from pipelines.cli import main
status = main({argv!r})
seconds = time.perf_counter() - start
heavy = sorted({{name.split(".")[0] for name in sys.modules}} & {{"tensorflow", "keras", "apache_beam"}})
print(f"heavy imports: {{heavy}} in {{seconds:.2f}} s", file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.parametrize(
    "argv", [["plan", "--help"], ["plan", "extract", "--help"], ["plan", "predict", "--help"]]
)
def test_help_answers_at_once_without_beam_or_tensorflow(argv):
    done = run_python(HELP_TIMED.format(argv=argv), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: terrabeam plan")
    heavy, seconds = re.fullmatch(r"heavy imports: (.*) in ([\d.]+) s", done.stderr.splitlines()[-1]).groups()
    assert heavy == "[]"
    assert float(seconds) < 1.0


def test_an_unknown_job_or_none_is_a_clear_error(capsys):
    assert plan.main(["extrct"]) == 2
    assert "error: no plan for 'extrct' (did you mean 'extract'?)" in capsys.readouterr().err
    assert plan.main([]) == 2
    assert "error: name the job to plan (extract, predict)." in capsys.readouterr().err


def test_a_misspelt_option_gets_the_jobs_did_you_mean(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert plan.main(["extract", "--points-per-clas", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Unknown option(s): --points-per-clas (did you mean --points-per-class?).")
    assert plan.main(["predict", "--tile-sise", "64"]) == 2
    assert "--tile-sise (did you mean --tile-size?)" in capsys.readouterr().err


def error_of(entry, argv, capsys) -> str:
    assert entry(argv) == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_bad_region_gets_the_extractions_own_error(tiny_scene, tmp_path, capsys):
    far = tmp_path / "far.geojson"
    ring = [[100.0, 10.0], [100.1, 10.0], [100.1, 10.1], [100.0, 10.1], [100.0, 10.0]]
    far.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    argv = tiny_extraction(tiny_scene, tmp_path / "out", "--regions", str(far))
    job_error = error_of(extract.main, argv, capsys)
    assert "lie outside the raster footprint" in job_error
    assert error_of(lambda a: plan.main(["extract", *a]), argv, capsys) == job_error
    assert not (tmp_path / "out").exists()


def test_a_bad_area_and_a_bad_tiling_get_the_predictions_own_errors(
    conv_model_dir, tiny_scene, tmp_path, capsys
):
    model = conv_model_dir
    base = ["--model", model, "--inputs", tiny_scene.image, "--output", str(tmp_path / "p")]
    for extra, expected in (
        (["--aoi", "10,50,5,51"], "a bounding box is W,S,E,N in degrees with W < E"),
        (["--tile-size", "64", "--overlap", "15"], "--overlap must be even"),
    ):
        job_error = error_of(predict.main, [*base, *extra], capsys)
        assert expected in job_error
        assert error_of(lambda a: plan.main(["predict", *a]), [*base, *extra], capsys) == job_error


def test_bad_plan_settings_are_named(tiny_scene, tmp_path, capsys):
    argv = tiny_extraction(tiny_scene, tmp_path / "out")
    assert "--machine_type 'm9-giant-7'" in error_of(
        lambda a: plan.main(["extract", *a]), [*argv, "--machine_type", "m9-giant-7"], capsys
    )
    assert "--ee-request-seconds must be a positive number, got 0.0" in error_of(
        lambda a: plan.main(["extract", *a]), [*argv, "--ee-request-seconds", "0"], capsys
    )


# --- what the plan counts ------------------------------------------------------------------------


def test_an_earth_engine_extraction_is_planned_without_contacting_earth_engine(
    tiny_scene, tmp_path, monkeypatch
):
    from transforms.io.earthengine import client

    def no_session(*_args, **_kwargs):
        raise AssertionError("the plan contacted Earth Engine")

    monkeypatch.setattr(client, "initialize", no_session)
    regions = json.loads(Path(tiny_scene.regions).read_text())["features"]
    argv = [
        "--source",
        "earthengine",
        "--ee-project",
        "p",
        "--regions",
        tiny_scene.regions,
        "--points-per-class",
        "100",
        "--max-requests",
        "20",
        "--max_num_workers",
        "4",
        *DATAFLOW,
    ]
    result = plan.run("extract", [*argv, "--number_of_worker_harness_threads", "8"])
    # Dynamic World's 9 classes, 100 points each, in each region: an upper bound, every point fetched.
    points = 100 * 9 * len(regions)
    assert result.work.details["points"] == points and result.work.units == points
    assert dict(result.requests.by_kind) == {
        "computePixels": 2 * points,  # the bands and the labels of each patch
        "stratifiedSample": len(regions),  # 900 points a region: one request each (5,000 at most)
        "label histogram": len(regions),
    }
    # 20 requests in flight shared by 4 workers: 5 each, all 4 running, with 8 threads each to send them.
    assert (result.requests.per_worker, result.compute.workers, result.requests.concurrency) == (5, 4, 20)
    assert result.compute.quota_s == pytest.approx((2 * points + 2 * len(regions)) / 20)
    assert result.local is None  # a Dataflow run: nothing said of this machine
    # With a thread a vCPU (Dataflow's default for batch), an n1-standard-1 worker reads one at a time.
    one_thread = plan.run("extract", argv)
    assert (one_thread.requests.per_worker, one_thread.requests.concurrency) == (1, 4)
    assert any("--number_of_worker_harness_threads 5" in note for note in one_thread.assumptions)


def test_a_predictions_tiles_and_the_tiles_a_region_touches(conv_model_dir, tiny_scene, tmp_path):
    from transforms.geometry.grid import GridSpec
    from transforms.geometry.tiling import RegionMask, TilingSpec, plan_for_bounds

    model = conv_model_dir
    argv = ["--model", model, "--inputs", tiny_scene.image, "--tile-size", "64", "--overlap", "16"]
    result = plan.run("predict", [*argv, "--output", str(tmp_path / "p")])
    # 200×200 pixels in cores of 64 - 16 = 48: 5 rows × 5 columns.
    assert result.work.units == 25 and result.work.details["output_pixels"] == 200 * 200
    assert result.work.bytes_read == 25 * 64 * 64 * 3 * 4
    assert result.requests is None and result.local["processes"] == 1
    # A polygon inside the cores of tile rows 0-1 and columns 0-2 of a 10×10 plan touches those 6 tiles.
    lattice = GridSpec("EPSG:32632", 10.0, 0.0, 1000.0)
    tiling = plan_for_bounds(lattice, (0.0, 0.0, 1000.0, 1000.0), TilingSpec(20, 10))  # cores of 10 px
    x0, x1, y1, y0 = 0.1 * 100, 2.9 * 100, 1000 - 0.1 * 100, 1000 - 1.9 * 100
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    region = RegionMask({"type": "MultiPolygon", "coordinates": [[ring]]})
    assert plan.tiles_touching(tiling, None) == 100
    assert plan.tiles_touching(tiling, region) == 6


@pytest.mark.slow
def test_the_demo_plan_is_within_a_factor_of_two_of_the_measured_run(demo_extraction, tmp_path):
    """The plan of the demo extraction against the same run measured (tests/helpers/demo_runs.py): its
    patches exactly, its CPU time (worker-hours × cores) within a factor of two. The plan's figures were
    measured on one CPU (transforms/planning/measured.py: an Intel Sapphire Rapids, where the plan comes
    within 5 % of the run); the same run takes 1.6× more CPU on an AMD EPYC with AVX2."""
    result = plan.run("extract", [*demo_extraction.options, "--output", str(tmp_path / "planned")])
    manifest = read_manifest(demo_extraction.output)
    produced = sum(s["patches"] for s in manifest["splits"].values())
    guard = manifest["split"]["points_in_guard_band"]
    assert result.work.units == produced + manifest["errors"]["count"]
    assert result.work.details["guard"] == guard
    assert result.work.details["points"] == produced + guard + manifest["errors"]["count"]
    planned = result.local["seconds"] * result.local["cores"]  # one process on one core
    assert result.local["processes"] == 1
    assert 0.5 <= planned / demo_extraction.cpu_s <= 2.0, (planned, demo_extraction.cpu_s)
    assert 0.5 <= result.compute.cpu_s / demo_extraction.cpu_s <= 2.0


# --- before a job on a distributed runner starts ----------------------------------------------------


@pytest.fixture
def submissions(monkeypatch):
    """The runs that reached the runner (none does: the runner is replaced here)."""
    calls = []

    def run_pipeline(self, options, build, progress, outcome_path, where):
        calls.append(where)
        return None

    monkeypatch.setattr(JobShell, "run_pipeline", run_pipeline)
    return calls


def answer(monkeypatch, reply: str | None):
    """A person at a terminal answering `reply` (None: no terminal)."""
    asked = []

    def ask(question: str) -> str:
        asked.append(question)
        return reply

    monkeypatch.setattr(plan, "terminal_prompt", lambda: None if reply is None else ask)
    return asked


def test_above_budget_without_a_terminal_the_job_stops_before_writing(
    tiny_scene, tmp_path, capsys, monkeypatch, submissions
):
    answer(monkeypatch, None)
    output = tmp_path / "out"
    status = extract.main(tiny_extraction(tiny_scene, output, *DATAFLOW, "--budget", "0"))
    assert status == 2
    out, err = capsys.readouterr()
    assert out.startswith("Plan of this extraction (written to plan.json beside its outputs):")
    assert re.search(r"error: The plan's cost, \$[\d.]+, is above --budget \$0.00: pass --yes", err)
    assert not output.exists() and submissions == []


def test_with_yes_the_plan_is_written_beside_the_outputs_and_the_job_submitted(
    tiny_scene, tmp_path, capsys, monkeypatch, submissions
):
    answer(monkeypatch, None)
    output = tmp_path / "out"
    assert extract.main(tiny_extraction(tiny_scene, output, *DATAFLOW, "--budget", "0", "--yes")) == 0
    assert submissions == [str(output)]
    written = json.loads((output / "plan.json").read_text())
    assert written["format"] == "terrabeam-plan/1" and written["job"] == "extract"
    assert written["runner"] == "DataflowRunner" and written["work"]["job"] == "extraction"
    assert written["cost"]["job_usd"] > 0 and "--yes" in written["argv"]
    assert capsys.readouterr().out.startswith("Plan of this extraction")


def test_on_a_terminal_the_job_asks_and_goes_on_only_on_yes(
    tiny_scene, tmp_path, capsys, monkeypatch, submissions
):
    output = tmp_path / "out"
    asked = answer(monkeypatch, "n")
    assert extract.main(tiny_extraction(tiny_scene, output, *DATAFLOW, "--budget", "0")) == 2
    assert "not confirmed: nothing was started" in capsys.readouterr().err
    assert len(asked) == 1 and asked[0].endswith("Start the job? [y/N] ")
    assert not output.exists() and submissions == []
    answer(monkeypatch, "y")
    assert extract.main(tiny_extraction(tiny_scene, output, *DATAFLOW, "--budget", "0")) == 0
    assert submissions == [str(output)] and (output / "plan.json").exists()


def test_within_budget_the_job_goes_on_without_asking(tiny_scene, tmp_path, capsys, monkeypatch, submissions):
    asked = answer(monkeypatch, "n")
    output = tmp_path / "out"
    assert extract.main(tiny_extraction(tiny_scene, output, *DATAFLOW)) == 0  # the default budget
    assert asked == [] and submissions == [str(output)]


def test_a_prediction_above_budget_stops_before_writing(
    conv_model_dir, tiny_scene, tmp_path, capsys, monkeypatch, submissions
):
    answer(monkeypatch, None)
    output = tmp_path / "maps"
    argv = ["--model", conv_model_dir, "--inputs", tiny_scene.image]
    assert predict.main([*argv, "--output", str(output), *DATAFLOW, "--budget", "0"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("Plan of this prediction") and "pass --yes" in err
    assert not output.exists() and submissions == []


def test_a_local_run_prints_no_plan_and_writes_none(tiny_scene, tmp_path, capsys):
    output = tmp_path / "out"
    assert extract.main(tiny_extraction(tiny_scene, output, "--budget", "0")) == 0
    assert "Plan of" not in capsys.readouterr().out
    assert (output / "manifest.json").exists() and not (output / "plan.json").exists()


def test_a_flex_template_launch_starts_whatever_the_budget(monkeypatch):
    """The launch was the decision to spend, and the template launcher has no terminal."""
    seen = {}
    monkeypatch.setattr(extract, "main", lambda argv: seen.setdefault("argv", list(argv)) and 0)
    assert launch.run_template(["--terrabeam_job=extract", "--points_per_class=3"]) == 0
    assert "--yes" in seen["argv"] and "--points-per-class=3" in seen["argv"]


def test_the_guard_band_and_classes_absent_from_a_region_are_counted_exactly(tiny_scene, tmp_path):
    """On local rasters the plan samples as the job does: its points and patches are the job's."""
    argv = tiny_extraction(
        tiny_scene, tmp_path / "out", "--split-block-size", "640", "--points-per-class", "20"
    )
    result = plan.run("extract", argv)
    assert extract.main(argv) == 0
    manifest = read_manifest(str(tmp_path / "out"))
    produced = sum(s["patches"] for s in manifest["splits"].values())
    guard = manifest["split"]["points_in_guard_band"]
    assert guard > 0
    assert (result.work.units, result.work.details["guard"]) == (
        produced + manifest["errors"]["count"],
        guard,
    )
    assert result.work.units < 20 * 4 * len(json.loads(Path(tiny_scene.regions).read_text())["features"])


def test_the_plan_names_its_sources_and_dates(tiny_scene, tmp_path):
    from transforms.planning import measured, plan_lines

    text = squeeze(
        "\n".join(plan_lines(plan.run("extract", tiny_extraction(tiny_scene, tmp_path / "o")), "P:"))
    )
    for needed in (
        "benchmarks/results/extract_throughput.json",
        f"measured {measured.EXTRACT_MEASURED}",
        "https://cloud.google.com/dataflow/pricing",
        "https://cloud.google.com/storage/pricing",
        "us-central1, 2026-12",
        "n1-standard-1",
    ):
        assert needed in text, needed
    assert math.isfinite(plan.run("extract", tiny_extraction(tiny_scene, tmp_path / "o")).cost.job)
