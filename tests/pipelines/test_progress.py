"""Progress of long jobs: counters seen across worker processes, the bar and the log lines, Dataflow's
job link, and training's best epoch so far."""

from __future__ import annotations

import io
import json
import os
import re

import keras
import pytest
from apache_beam.metrics.execution import MetricKey, MetricResult
from apache_beam.metrics.metricbase import MetricName
from apache_beam.runners.runner import PipelineRunner, PipelineState

from pipelines import extract, predict
from pipelines import progress as reporting
from pipelines.progress import EXTRACTION, PREDICTION, RateMeter, Reporter, status_line
from transforms.contracts.manifest import read_manifest
from transforms.runtime import progress as counters

LINE = re.compile(r"Extraction: ([\d,]+)/([\d,]+) points")


def test_status_line_for_a_terminal_and_for_a_log():
    counts = {"extract/points_sampled": 400, "extract/patches_encoded": 96, "extract/patches_failed": 4}
    log = status_line(EXTRACTION, counts, elapsed=12.0, rate=10.0)
    assert log == (
        "Extraction: 100/400 points (25%), 10.0 points/s, 0:00:30 left; 400 points sampled, 4 failed"
    )
    tty = status_line(EXTRACTION, counts, elapsed=12.0, rate=10.0, tty=True)
    assert tty.startswith("Extraction [######------------------] 100/400 points (25%)")
    assert status_line(PREDICTION, {}, elapsed=3.0, rate=None) == "Prediction: planning tiles, 0:00:03 so far"
    done = {"predict/tiles_planned": 9, "predict/tiles_written": 9}
    assert status_line(PREDICTION, done, 4.0, 2.0) == "Prediction: 9/9 tiles (100%), writing the outputs"
    final = status_line(
        PREDICTION, {"predict/tiles_planned": 9, "predict/tiles_written": 9}, 4.5, None, final=True
    )
    assert final == "Prediction: 9/9 tiles in 0:00:04 (2.0 tiles/s)"


def test_rate_follows_the_recent_pace():
    meter = RateMeter(window=10)
    assert meter.add(0.0, 0) is None
    assert meter.add(20.0, 0) is None  # start-up: nothing done yet, the clock waits for the work
    assert meter.add(21.0, 10) == pytest.approx(10.0)
    meter = RateMeter(window=10)
    meter.add(0.0, 0)
    assert meter.add(1.0, 10) == pytest.approx(10.0)
    for t in range(2, 30):
        meter.add(float(t), 10 + 2 * (t - 1))  # slows down to 2/s
    assert meter.add(30.0, 68) == pytest.approx(2.0, rel=0.1)


def test_a_terminal_gets_one_line_redrawn_in_place():
    stream = io.StringIO()
    reporter = Reporter(EXTRACTION, lambda: {}, stream, tty=True, interval=60)
    reporter.update({"extract/points_sampled": 10, "extract/patches_encoded": 5})
    reporter.update({"extract/points_sampled": 10, "extract/patches_encoded": 8})
    reporter.finish({"extract/points_sampled": 10, "extract/patches_encoded": 10})
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "[" in text and "8/10 points (80%)" in text and "Extraction: 10/10 points in" in text


def test_counters_write_per_process_totals_that_the_reporter_sums(tmp_path, monkeypatch):
    monkeypatch.setenv(counters.ENV_DIR, str(tmp_path))
    counter = counters.counter("extract", "patches_encoded")
    counter.inc(3)
    counter.inc()
    counters.flush()
    assert (tmp_path / f"{os.getpid()}.json").exists()
    (tmp_path / "12345.json").write_text(json.dumps({"extract/patches_encoded": 6}))  # another process
    totals, processes = counters.read_totals(str(tmp_path))
    assert totals == {"extract/patches_encoded": 10} and processes == 2
    monkeypatch.delenv(counters.ENV_DIR)
    counter.inc(100)  # no job watching: only the Beam counter counts


@pytest.mark.slow
def test_extraction_reports_progress_from_worker_processes(tiny_scene, tmp_path, monkeypatch, capsys):
    """multi_processing: the patches are counted in worker subprocesses, and the lines show them."""
    monkeypatch.setenv(reporting.ENV_INTERVAL, "0.1")
    seen: list[tuple[int, set[str]]] = []
    read_totals = counters.read_totals

    def watching(folder):
        totals, processes = read_totals(folder)
        seen.append((totals.get("extract/patches_encoded", 0), set(os.listdir(folder))))
        return totals, processes

    monkeypatch.setattr(counters, "read_totals", watching)
    output = tmp_path / "data"
    extract.run(
        [
            "--inputs", tiny_scene.image, "--labels", tiny_scene.labels, "--regions", tiny_scene.regions,
            "--patch-size", "32", "--points-per-class", "30", "--output", str(output),
            "--direct_running_mode", "multi_processing", "--direct_num_workers", "2",
        ]
    )  # fmt: skip
    manifest = read_manifest(str(output))
    # Every point ends as a patch, a dead letter or in the split's guard band.
    handled = sum(s["patches"] for s in manifest["splits"].values())
    handled += manifest["errors"]["count"] + manifest["split"]["points_in_guard_band"]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Extraction")]
    final = LINE.search(lines[-1])
    assert final and int(final.group(1).replace(",", "")) == handled, lines  # from Beam's own metrics
    assert lines[-1].startswith(f"Extraction: {handled:,}/{handled:,} points in ")
    # While it ran, the reporter saw patches counted in processes other than this one.
    main = f"{os.getpid()}{counters.SUFFIX}"
    assert any(count > 0 and files - {main} for count, files in seen), seen[-5:]
    during = [int(m.group(1).replace(",", "")) for m in map(LINE.search, lines[:-1]) if m]
    assert during == sorted(during) and any(0 < d for d in during), lines


@pytest.mark.slow
def test_prediction_counts_the_tiles_of_its_region(tiny_scene, tmp_path, capsys):
    from rasterio.warp import transform_geom

    from model.export import export_model
    from tests.helpers.scenes import ORIGIN

    inputs = keras.Input((None, None, 3), name="image")
    outputs = keras.layers.Softmax(name="probabilities")(keras.layers.Conv2D(2, 1)(inputs))
    model_dir = tmp_path / "model"
    metadata = {"mode": "segmentation", "bands": ["red", "nir", "elevation"], "classes": ["a", "b"]}
    export_model(
        keras.Model(inputs, outputs),
        str(model_dir),
        {**metadata, "patch_size": 32, "crs": "EPSG:32632", "scale": 10.0},
    )
    x0, y0 = ORIGIN
    # A triangle over the scene (2 km a side): the tiles beyond its diagonal are wholly outside it.
    triangle = [[x0, y0], [x0 + 2000, y0], [x0, y0 - 2000], [x0, y0]]
    geometry = transform_geom("EPSG:32632", "EPSG:4326", {"type": "Polygon", "coordinates": [triangle]})
    region = tmp_path / "aoi.geojson"
    region.write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": geometry}))
    summary = predict.run(
        [
            "--model", str(model_dir), "--inputs", tiny_scene.image, "--aoi", str(region),
            "--tile-size", "64", "--overlap", "0", "--output", str(tmp_path / "out"),
        ]
    )  # fmt: skip
    err = capsys.readouterr().err
    tiles = summary["tiles_written"]
    assert 0 < tiles < summary["tiling"]["tiles"]
    assert f"Prediction: {tiles}/{tiles} tiles in " in err, err


# --- Dataflow: a runner that answers like Dataflow, without the service ------------------------------

EVENTS: list[str] = []
STREAM = io.StringIO()


class FakeDataflowResult:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.has_job = True

    def job_id(self) -> str:
        return "2026-11-30_01_02_03-123456789"

    @property
    def state(self):
        return PipelineState.FAILED if self.fail else PipelineState.DONE

    def wait_until_finish(self, duration=None):
        EVENTS.append("wait: " + STREAM.getvalue())  # what had been printed when the wait began
        if self.fail:
            raise RuntimeError("Dataflow pipeline failed. State: FAILED")
        return self.state

    def metrics(self):
        key = MetricKey("FetchPatches", MetricName("extract", "patches_encoded"))
        sampled = MetricKey("StratifiedSample", MetricName("extract", "points_sampled"))

        class Metrics:
            def query(self, filter=None):
                return {"counters": [MetricResult(key, 42, 42), MetricResult(sampled, 42, 42)]}

        return Metrics()


class FakeDataflowRunner(PipelineRunner):
    fail = False

    def run_pipeline(self, pipeline, options):
        EVENTS.append("submitted")
        return FakeDataflowResult(self.fail)


def _dataflow_options(*extra: str):
    from apache_beam.options.pipeline_options import PipelineOptions

    runner = f"{__name__}.FakeDataflowRunner"
    return PipelineOptions(
        ["--runner", runner, "--project", "my-project", "--region", "europe-west1", *extra]
    )


def test_dataflow_prints_the_job_id_and_console_url_at_once():
    import apache_beam as beam

    EVENTS.clear()
    STREAM.seek(0)
    STREAM.truncate()
    build = lambda p: p | beam.Create([1])  # noqa: E731
    reporting.run_pipeline(_dataflow_options(), build, EXTRACTION, stream=STREAM)
    job = "2026-11-30_01_02_03-123456789"
    url = f"https://console.cloud.google.com/dataflow/jobs/europe-west1/{job}?project=my-project"
    assert EVENTS[0] == "submitted"
    assert EVENTS[1] == f"wait: Extraction: Dataflow job {job}\n  {url}\n"  # printed before waiting
    assert STREAM.getvalue().splitlines()[-1].startswith("Extraction: 42/42 points in ")

    FakeDataflowRunner.fail = True
    try:
        with pytest.raises(RuntimeError, match="Dataflow pipeline failed"):
            reporting.run_pipeline(_dataflow_options(), build, EXTRACTION, stream=io.StringIO())
    finally:
        FakeDataflowRunner.fail = False


def test_progress_can_be_turned_off(monkeypatch, tmp_path):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    monkeypatch.setenv(reporting.ENV_ENABLED, "0")
    stream = io.StringIO()
    result = reporting.run_pipeline(
        PipelineOptions([]), lambda p: p | beam.Create([1, 2]), EXTRACTION, stream
    )
    assert result.state == PipelineState.DONE and stream.getvalue() == ""


def test_counter_pickles_into_workers():
    import pickle

    counter = pickle.loads(pickle.dumps(counters.counter("predict", "tiles_written")))
    assert (counter.namespace, counter.name, counter.key) == (
        "predict",
        "tiles_written",
        "predict/tiles_written",
    )
