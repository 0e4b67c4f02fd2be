"""Extraction and prediction on broken and flaky inputs: fail fast, fail loud, never call failure success.

Each test injects one fault (a file cut short, a damaged tile in the middle, a file removed while the
job runs, a server answering 503 twice, one answering 404) and is bounded in time. Every point or tile
must end as exactly one record/tile or one dead letter; the exit status and the summary by reason say
how the job went.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
import rasterio
import rasterio.shutil
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import extract as extract_pipeline
from pipelines import predict as predict_pipeline
from tests.helpers.damage import cut, damage_block
from tests.helpers.http_rasters import Failure, RasterServerProcess
from tests.helpers.records import read_records
from transforms.contracts.manifest import read_manifest


def from_error(err: str) -> str:
    """stderr from its first `error:` line on (before it: notes and progress lines)."""
    lines = err.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines) if line.startswith("error:")), 0)
    return "".join(lines[first:])


def extract(scene, output: Path, *extra: str, inputs=None, labels=None) -> int:
    args = ["--inputs", *(inputs or [scene.image]), "--labels", labels or scene.labels]
    args += ["--regions", scene.regions, "--output", str(output), "--patch-size", "32"]
    # The per-point split: every point is then fetched (none is left out in a guard band), so every
    # point must end as a record or a dead letter.
    return extract_pipeline.main([*args, "--points-per-class", "6", "--split-block-size", "0", *extra])


def records_and_letters(output: Path) -> tuple[list[str], list[dict]]:
    manifest = read_manifest(str(output))
    ids = [
        r["point_id"].decode()
        for split in manifest["splits"].values()
        for r in read_records(split["files"], manifest)
    ]
    letters = [json.loads(line) for f in manifest["errors"]["files"] for line in open(f)]
    return ids, letters


@pytest.fixture(scope="module")
def compressed_image(tiny_scene, tmp_path_factory) -> Path:
    """The tiny scene's image, DEFLATE-compressed in 32-pixel tiles: a damaged tile fails to decode."""
    whole = tmp_path_factory.mktemp("compressed") / "whole.tif"
    with rasterio.open(tiny_scene.image) as src:
        profile = {**src.profile, "compress": "deflate", "blockxsize": 32, "blockysize": 32}
        with rasterio.open(whole, "w", **profile) as dst:
            dst.write(src.read())
            dst.descriptions = src.descriptions
    return whole


# --- extraction -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_extraction_stops_before_it_starts_on_a_file_cut_short(tiny_scene, tmp_path, capsys):
    for which in ("inputs", "labels"):
        source = tiny_scene.image if which == "inputs" else tiny_scene.labels
        truncated = cut(Path(source), 0.64, tmp_path / f"cut-{which}.tif")
        start = time.monotonic()
        kwargs = {which: [str(truncated)] if which == "inputs" else str(truncated)}
        assert extract(tiny_scene, tmp_path / which, **kwargs) == 2
        assert time.monotonic() - start < 20
        err = capsys.readouterr().err
        assert from_error(err).startswith(f"error: {truncated} is broken: the file is truncated")
        assert not (tmp_path / which / "manifest.json").exists()


@pytest.mark.timeout(300)
def test_a_damaged_tile_dead_letters_its_points_and_every_point_is_accounted_for(
    tiny_scene, compressed_image, tmp_path, capsys
):
    damaged = damage_block(compressed_image, tmp_path / "damaged.tif", 3, 3)  # pixels 96-128, the middle
    assert extract(tiny_scene, tmp_path / "whole", inputs=[str(compressed_image)]) == 0
    all_ids, none = records_and_letters(tmp_path / "whole")
    assert not none and len(all_ids) == 30
    capsys.readouterr()

    start = time.monotonic()
    assert extract(tiny_scene, tmp_path / "off", "--max-error-fraction", "1", inputs=[str(damaged)]) == 0
    assert time.monotonic() - start < 90  # DEFLATE errors are permanent: no retries with backoff
    ids, letters = records_and_letters(tmp_path / "off")
    letter_ids = [letter["point"]["id"] for letter in letters]
    assert letters and ids
    assert sorted(ids + letter_ids) == sorted(all_ids)  # each point once: a record or a dead letter
    # Point ids are region/row/col: the points whose patch touches the damaged tile are dead letters.
    touching = {
        p
        for p in all_ids
        for _, row, col in [p.split("/")]
        if 96 - 16 <= int(row) < 128 + 16 and 96 - 16 <= int(col) < 128 + 16
    }
    assert touching and touching <= set(letter_ids)
    reason = f"read failed on {damaged} (corrupt data)"
    assert {letter["reason"] for letter in letters} == {reason}
    assert not any(letter["skipped"] for letter in letters)
    err = capsys.readouterr().err
    assert (
        f"warning: {len(letters)} points went to the dead letters:\n  {len(letters)} points: {reason}\n"
        in err
    )

    # The same with every failure counting: exit status 1, the manifest and dead letters still written.
    assert extract(tiny_scene, tmp_path / "strict", "--max-error-fraction", "0", inputs=[str(damaged)]) == 1
    err = capsys.readouterr().err
    assert from_error(err).startswith(
        f"error: extraction failed: {len(letters)} of 30 points failed ({100 * len(letters) / 30:.1f} %), "
        "more than --max-error-fraction 0."
    )
    assert f"\n  {len(letters)} points: {reason}\n" in err and err.count(reason) == 1
    outcome = json.loads((tmp_path / "strict" / "manifest.json").read_text())["outcome"]
    assert outcome["ok"] is False and outcome["failed"] == len(letters) and outcome["produced"] == len(ids)


@pytest.mark.timeout(300)
def test_an_input_removed_while_the_job_runs_fails_it_within_seconds(
    tiny_scene, tmp_path, capsys, caplog, monkeypatch
):
    bands = [shutil.copy(p, tmp_path / Path(p).name) for p in tiny_scene.band_files]
    nir = str(tmp_path / "nir.tif")
    real_build = extract_pipeline.build_pipeline

    def remove_then_build(pipeline, job, *args):
        os.remove(nir)  # checked and sampled, then gone before any worker reads it
        return real_build(pipeline, job, *args)

    monkeypatch.setattr(extract_pipeline, "build_pipeline", remove_then_build)
    start = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert extract(tiny_scene, tmp_path / "out", inputs=[str(b) for b in bands]) == 1
    assert time.monotonic() - start < 90
    err = capsys.readouterr().err
    reason = f"read failed on {nir} (no such file)"
    assert from_error(err).startswith(
        "error: extraction failed: nothing was produced, no points written: all 30 went"
    )
    assert f"\n  30 points: {reason}\n" in err
    assert [r.getMessage() for r in caplog.records if "marked broken" in r.getMessage()] == [
        f"{nir} is marked broken after 3 failed reads in a row (no such file); its remaining reads go to "
        "the dead letters without being tried."
    ]
    ids, letters = records_and_letters(tmp_path / "out")
    assert not ids and len(letters) == 30 and {letter["reason"] for letter in letters} == {reason}


@pytest.mark.timeout(300)
def test_extraction_over_http_flaky_server_gives_every_record_a_404_stops_it(
    tiny_scene, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.05")  # GDAL's own retries of HTTP 5xx, made quick
    served = tmp_path / "served"
    served.mkdir()
    # Served rasters are COGs, as usual on the web: the header (directory) first, then the pixels.
    for source, name in (
        (tiny_scene.image, "image.tif"),
        (tiny_scene.image, "gone.tif"),
        (tiny_scene.labels, "labels.tif"),
    ):
        rasterio.shutil.copy(source, served / name, driver="COG", blocksize=64)
    failures = {
        # Twice on the check before the job; then pixel reads, more than GDAL's own retries absorb.
        "image.tif": [Failure(503, 2), Failure(503, 15, data_only=True)],
        "labels.tif": Failure(503, 2),
        "gone.tif": Failure(404),
    }
    assert extract(tiny_scene, tmp_path / "local") == 0
    with RasterServerProcess(str(served), failures) as server:
        start = time.monotonic()
        assert extract(tiny_scene, tmp_path / "gone", inputs=[server.vsicurl("gone.tif")]) == 2
        assert time.monotonic() - start < 20
        assert "gone.tif cannot be read: HTTP 404 not found" in capsys.readouterr().err

        inputs, labels = [server.vsicurl("image.tif")], server.vsicurl("labels.tif")
        assert extract(tiny_scene, tmp_path / "remote", inputs=inputs, labels=labels) == 0
        assert server.count(503) == 2 + 15 + 2
    local, remote = read_manifest(str(tmp_path / "local")), read_manifest(str(tmp_path / "remote"))
    for split in ("train", "validation"):
        ours = {r["point_id"]: r for r in read_records(local["splits"][split]["files"], local)}
        theirs = {r["point_id"]: r for r in read_records(remote["splits"][split]["files"], remote)}
        assert sorted(ours) == sorted(theirs)
        for key, record in ours.items():
            for band in ("red", "nir", "elevation", "landcover"):
                np.testing.assert_array_equal(record[band], theirs[key][band])
    assert remote["errors"]["count"] == local["errors"]["count"] == 0


# --- prediction -----------------------------------------------------------------------------------


def predict_args(model_dir: str, image: str, output: Path, *extra: str) -> list[str]:
    return [
        f"--model={model_dir}",
        "--inputs",
        image,
        "--tile-size=64",
        "--overlap=8",
        f"--output={output}",
    ] + [*extra]


@pytest.mark.timeout(120)
def test_prediction_stops_before_it_starts_on_a_file_cut_short(tiny_scene, conv_model_dir, tmp_path, capsys):
    truncated = cut(Path(tiny_scene.image), 0.64, tmp_path / "image.tif")
    start = time.monotonic()
    assert predict_pipeline.main(predict_args(conv_model_dir, str(truncated), tmp_path / "out")) == 2
    assert time.monotonic() - start < 30
    assert from_error(capsys.readouterr().err).startswith(
        f"error: {truncated} is broken: the file is truncated"
    )
    assert not (tmp_path / "out" / "tiles").exists()


@pytest.mark.timeout(300)
def test_prediction_with_a_damaged_tile_exits_1_with_the_summary(
    tiny_scene, conv_model_dir, compressed_image, tmp_path, capsys
):
    # Pixels 32-64 of the first rows: the input windows of tiles (0, 0) and (0, 1) only.
    damaged = damage_block(compressed_image, tmp_path / "damaged.tif", 1, 0)
    out = tmp_path / "out"
    assert (
        predict_pipeline.main(predict_args(conv_model_dir, str(damaged), out, "--max-error-fraction=0.01"))
        == 1
    )
    err = capsys.readouterr().err
    summary = json.loads((out / "prediction.json").read_text())
    failed = summary["tiles_failed"]
    assert failed == 2 and summary["tiles_written"] + failed == summary["tiling"]["tiles"] == 16
    reason = f"read failed on {damaged} (corrupt data)"
    assert from_error(err).startswith(f"error: prediction failed: {failed} of 16 tiles failed")
    assert f"\n  {failed} tiles: {reason}\n" in err and err.count(reason) == 1
    assert summary["outcome"]["dead_letters_by_reason"] == [
        {"reason": reason, "skipped": False, "count": failed}
    ]
    letters = (out / "errors" / summary["errors"][0]).read_text().splitlines()
    assert len(letters) == failed

    assert (
        predict_pipeline.main(
            predict_args(conv_model_dir, str(damaged), out, "--overwrite", "--max-error-fraction=1")
        )
        == 0
    )
    assert f"{failed} tiles: {reason}" in capsys.readouterr().err


class _Unreadable:
    """A source whose every read fails for good."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def read(self, grid, bands, **kwargs):
        from transforms.io.integrity import ReadError

        raise ReadError("scene.tif", "no such file")


@pytest.mark.timeout(300)
def test_on_a_remote_runner_the_last_step_fails_the_job(tiny_scene, conv_model_dir, tmp_path):
    """On Dataflow the job itself must fail: its last step raises once prediction.json is written."""
    out = tmp_path / "out"
    options = PipelineOptions(predict_args(conv_model_dir, tiny_scene.image, out))
    job = predict_pipeline.validate(options.view_as(predict_pipeline.PredictOptions))
    job = dataclasses.replace(job, source=_Unreadable(job.source))
    with pytest.raises(Exception, match=r"prediction failed: nothing was produced, no tiles written: all 16"):
        with beam.Pipeline(options=options) as pipeline:
            predict_pipeline.build_pipeline(pipeline, job, fail_in_pipeline=True)
    summary = json.loads((out / "prediction.json").read_text())
    assert summary["outcome"]["ok"] is False and summary["tiles_failed"] == 16
