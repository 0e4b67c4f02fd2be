"""Dated Earth Engine recipes in the jobs: the label preset hansen-loss names its binary scheme in the
manifest."""

from __future__ import annotations

from pathlib import Path

import ee
import numpy as np
import pytest
import rasterio
from google.auth.credentials import AnonymousCredentials

from pipelines.extract import main
from tests.helpers.fake_earthengine import FakeEarthEngine
from tests.helpers.records import read_all
from tests.helpers.scenes import CRS
from transforms.contracts.label_scheme import PRESETS
from transforms.contracts.manifest import read_manifest
from transforms.geometry.sampling import load_regions
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
