"""Imagery by date in today's jobs: `--inputs before=... after=...` or a STAC file extracts and predicts
one stack of dates, bands `{band}_{label}` (the direct change method)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipelines import extract, predict
from pipelines.view.maps import find_imagery
from tests.helpers.dated import (
    AFTER_SHIFT,
    CHANGE,
    change_model,
    write_later_date,
    write_on_other_grid,
    write_stac_catalog,
)
from tests.helpers.models import export
from tests.helpers.records import read_records
from transforms.contracts.manifest import read_manifest

BANDS = ("red", "nir", "elevation")
STACK = tuple(f"{band}_{date}" for date in ("before", "after") for band in BANDS)
# Rows and columns of the tiny scene whose red the later date changes.
CHANGED = (slice(120, 150), slice(30, 70))


@pytest.fixture(scope="module")
def after(tiny_scene, tmp_path_factory) -> tuple[str, np.ndarray]:
    return write_later_date(tiny_scene, tmp_path_factory.mktemp("after"), changed=CHANGED)


def dated(scene, after_path: str) -> list[str]:
    return ["--inputs", f"before={scene.image}", f"after={after_path}"]


def test_extraction_records_hold_each_dates_pixels_under_suffixed_bands(tiny_scene, after, tmp_path, capsys):
    output = tmp_path / "data"
    args = [*dated(tiny_scene, after[0]), "--labels", tiny_scene.labels, "--regions", tiny_scene.regions]
    args += ["--output", str(output), "--patch-size", "16", "--points-per-class", "2"]
    assert extract.main([*args, "--split-block-size", "0", "--validation-fraction", "0.5"]) == 0
    assert "note: date" not in capsys.readouterr().err  # both dates on the label raster's grid
    manifest = read_manifest(str(output))
    assert manifest["bands"] == list(STACK)
    source = manifest["source"]
    assert source["dates"] == [
        {"label": "before", "inputs": [tiny_scene.image]},
        {"label": "after", "inputs": [after[0]]},
    ]
    assert source["inputs"] == [tiny_scene.image, after[0]] and source["band_names"] == list(STACK)
    records = [
        r for s in ("train", "validation") for r in read_records(manifest["splits"][s]["files"], manifest)
    ]
    assert len(records) >= 8
    for record in records:
        _, row, col = (int(v) if v.isdigit() else v for v in record["point_id"].decode().split("/"))
        window = (slice(row - 8, row + 8), slice(col - 8, col + 8))
        for i, band in enumerate(BANDS):
            np.testing.assert_array_equal(record[f"{band}_before"], tiny_scene.pixels[(i, *window)])
            np.testing.assert_array_equal(record[f"{band}_after"], after[1][(i, *window)])
        np.testing.assert_allclose(record["nir_after"] - record["nir_before"], AFTER_SHIFT, rtol=1e-6)


def test_a_stac_catalogue_is_the_stack_of_its_dates_and_another_grid_gets_one_note(
    tiny_scene, after, tmp_path, capsys
):
    moved = write_on_other_grid(after[0], tmp_path / "after-utm33.tif")
    dates = {
        "2023-07-01": {"image": (moved, list(BANDS))},
        "2019-07-01": dict(zip(BANDS, tiny_scene.band_files)),
    }
    catalog = write_stac_catalog(dates, tmp_path / "stac")
    command = extract.SHELL.parse(
        ["--inputs", catalog, "--labels", tiny_scene.labels, "--regions", tiny_scene.regions]
        + ["--output", str(tmp_path / "data"), "--patch-size", "16"],
        False,
        extract.label_raster_alias,
    )
    job = extract.validate(command.job)
    assert job.schema.bands == tuple(f"{b}_{d}" for d in ("2019-07-01", "2023-07-01") for b in BANDS)
    assert job.source["stac"] == catalog
    assert [d["label"] for d in job.source["dates"]] == ["2019-07-01", "2023-07-01"]
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: date")]
    assert notes == [
        "note: date 2023-07-01 (EPSG:32633, 20 m) is on another grid than date 2019-07-01 (EPSG:32632, "
        "10 m): reprojected onto the job's grid as it is read."
    ]


def test_prediction_of_the_stack_finds_the_change(tiny_scene, after, tmp_path):
    model = change_model(list(STACK), "red_before", "red_after", AFTER_SHIFT + CHANGE / 2)
    model_dir = export(model, tmp_path / "model", bands=STACK, classes=["same", "changed"])
    out = tmp_path / "map"
    summary = predict.run(
        [f"--model={model_dir}", *dated(tiny_scene, after[0]), "--tile-size=64", "--overlap=8"]
        + [f"--output={out}", "--mosaic"]
    )
    expected = np.zeros(tiny_scene.label_pixels.shape, np.uint8)
    expected[CHANGED] = 1
    with rasterio.open(out / "classes.tif") as result:
        np.testing.assert_array_equal(result.read(1), expected)
    assert [d["label"] for d in summary["source"]["dates"]] == ["before", "after"]
    assert json.loads((out / "prediction.json").read_text())["bands"] == list(STACK)
    # The map viewer opens the recorded stack as one source and draws the model's first three bands.
    imagery, _ = find_imagery(summary, None)
    assert imagery.bands == STACK[:3] and imagery.refs == tuple((tiny_scene.image, i) for i in (1, 2, 3))


@pytest.fixture(scope="module")
def one_date_model(tmp_path_factory) -> str:
    model = change_model(list(BANDS), "nir", "red", 0.0)
    return export(model, tmp_path_factory.mktemp("one-date") / "model", bands=BANDS, classes=["a", "b"])


def test_prediction_refuses_a_model_that_does_not_read_the_stack(
    tiny_scene, after, one_date_model, tmp_path, capsys
):
    base = [*dated(tiny_scene, after[0]), f"--output={tmp_path / 'out'}"]
    assert predict.main([f"--model={one_date_model}", *base]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"error: The model at {one_date_model!r} takes one date's bands (red, nir, elevation)"
    )
    assert "predict each date with its own --inputs" in err
    other_labels = ["--inputs", f"t0={tiny_scene.image}", f"t1={after[0]}"]
    model = change_model(list(STACK), "red_before", "red_after", 1.0)
    stacked_dir = export(model, tmp_path / "stacked", bands=STACK, classes=["a", "b"])
    assert predict.main([f"--model={stacked_dir}", *other_labels, f"--output={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert (
        f"error: The model at {stacked_dir!r} cannot read these --inputs: The model reads a stack of dates"
        in err
    )
    assert f"but {', '.join(STACK)} name none of the dates (t0, t1)" in err
    assert not Path(tmp_path / "out" / "prediction.json").exists()
