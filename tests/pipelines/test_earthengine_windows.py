"""Dated Earth Engine recipes in the jobs: a window without scenes stops extraction and prediction before
any pixel is fetched, and the label preset hansen-loss names its binary scheme in the manifest."""

from __future__ import annotations

from pathlib import Path

import ee
import numpy as np
import pytest
import rasterio
from apache_beam.options.pipeline_options import PipelineOptions
from google.auth.credentials import AnonymousCredentials

from pipelines.checks.sources import prediction_source
from pipelines.extract import main
from pipelines.predict import PredictOptions
from pipelines.shell import UsageError
from tests.helpers.fake_earthengine import COMPUTE_PIXELS, COMPUTE_VALUE, FakeEarthEngine
from tests.helpers.records import read_all
from tests.helpers.scenes import CRS
from transforms.contracts.label_scheme import PRESETS
from transforms.contracts.manifest import read_manifest
from transforms.geometry.sampling import load_regions
from transforms.geometry.tiling import TilingSpec
from transforms.io.earthengine import client as earthengine


@pytest.fixture(scope="module")
def forest_loss_labels(tiny_scene, tmp_path_factory) -> str:
    """The tiny scene's labels as 0/1 forest loss (its class 1, trees, lost), band `landcover`."""
    with rasterio.open(tiny_scene.labels) as src:
        profile = src.profile
        lost = (src.read(1) == 1).astype(np.uint8)
    profile.update(nodata=None)
    path = tmp_path_factory.mktemp("loss") / "loss.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(lost, 1)
        dst.set_band_description(1, "landcover")
    return str(path)


@pytest.fixture
def fake(tiny_scene, forest_loss_labels, monkeypatch):
    monkeypatch.setattr(ee.data, "get_persistent_credentials", lambda: AnonymousCredentials())
    earthengine._gates.clear()
    with FakeEarthEngine([tiny_scene.image], forest_loss_labels, load_regions(tiny_scene.regions)) as server:
        yield server
        assert not server.errors, server.errors


def extract_args(fake, tiny_scene, output: Path, image: str, labels: str) -> list[str]:
    return [
        "--source=earthengine",
        f"--ee-project={fake.project}",
        f"--ee-endpoint={fake.url}",
        f"--ee-image={image}",
        f"--ee-labels={labels}",
        f"--regions={tiny_scene.regions}",
        f"--crs={CRS}",
        "--scale=10",
        "--patch-size=16",
        "--points-per-class=4",
        f"--output={output}",
    ]


def test_an_empty_window_stops_extraction_before_any_pixel(fake, tiny_scene, tmp_path, capsys):
    fake.scene_counts["COPERNICUS/S2_SR_HARMONIZED"] = 0
    output = tmp_path / "out"
    image = "s2-sr:2019-summer@before+s2-sr:2023-summer@after"
    assert main(extract_args(fake, tiny_scene, output, image, "hansen-loss:2001..2020")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No scenes in the date window: --ee-image part 's2-sr:2019-summer@before' ")
    assert "(COPERNICUS/S2_SR_HARMONIZED, 2019-06-01 to 2019-08-31) over region 'north'" in err
    assert "part 's2-sr:2023-summer@after'" in err
    assert "Widen the window" in err and "another sensor" in err
    # One scene count, nothing else: no pixels, no label histogram, no sampling.
    assert fake.count(COMPUTE_VALUE) == 1 and fake.count(COMPUTE_PIXELS) == 0
    assert not output.exists()


def test_an_empty_label_window_is_named_by_its_option(fake, tiny_scene, tmp_path, capsys):
    fake.scene_counts["GOOGLE/DYNAMICWORLD/V1"] = 0
    args = extract_args(
        fake, tiny_scene, tmp_path / "out", "fake/image:red", "dynamicworld-label:2024-winter"
    )
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--ee-labels part 'dynamicworld-label:2024-winter' (GOOGLE/DYNAMICWORLD/V1, 2024-12-01 to " in err
    assert fake.count(COMPUTE_PIXELS) == 0


def test_an_empty_window_stops_prediction_before_any_pixel(fake):
    def source_for(image: str):
        flags = ["--source=earthengine", f"--ee-project={fake.project}", f"--ee-endpoint={fake.url}"]
        flags += [f"--ee-image={image}", "--aoi=10.30,46.20,10.31,46.21", "--model=m", "--output=o"]
        opts = PipelineOptions(flags).view_as(PredictOptions)
        return prediction_source(opts, TilingSpec(64, 8), "m", ["VV_t1"])

    source, info = source_for("s1-grd:2023@t1")
    assert source.bands == ("VV_t1", "VH_t1") and info["image"] == "s1-grd:2023@t1"
    assert fake.count(COMPUTE_VALUE) == 1
    fake.scene_counts["COPERNICUS/S1_GRD"] = 0
    with pytest.raises(
        UsageError, match=r"--ee-image part 's1-grd:2023@t1' \(COPERNICUS/S1_GRD, 2023-01-01 to"
    ):
        source_for("s1-grd:2023@t1")
    assert fake.count(COMPUTE_PIXELS) == 0


def test_hansen_loss_labels_record_the_forest_loss_scheme(fake, tiny_scene, tmp_path):
    output = tmp_path / "out"
    args = extract_args(fake, tiny_scene, output, "fake/image:red,nir,elevation", "hansen-loss:2001..2020")
    assert main(args) == 0
    manifest = read_manifest(str(output))
    assert manifest["label_scheme"] == PRESETS["forest-loss"].to_json()
    assert manifest["classes"] == ["no_forest_loss", "forest_loss"]
    assert manifest["source"]["labels"] == "hansen-loss:2001..2020"
    labels = {int(v) for record in read_all(output).values() for v in np.unique(record["landcover"])}
    assert labels <= {0, 1, 255} and {0, 1} <= labels
