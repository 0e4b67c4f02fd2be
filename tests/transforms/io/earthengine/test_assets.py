"""Predicted maps into Earth Engine: COG-backed image assets through the real `earthengine-api` client
and the local fake of its REST API (which records the createAsset body), and `pipelines.predict
--ee-asset` end to end."""

from __future__ import annotations

import json

import ee
import numpy as np
import pytest
from google.auth.credentials import AnonymousCredentials

from pipelines import predict
from tests.helpers.fake_earthengine import ASSET_CREATE, ASSET_DELETE, FakeEarthEngine
from tests.helpers.models import conv_model, export, image_of
from transforms.contracts.label_scheme import dynamic_world, scheme_from_metadata
from transforms.io.earthengine import assets as ee_assets
from transforms.io.earthengine import client as earthengine

ASSET = "projects/fake-project/assets/maps/landcover"
COG = "gs://my-bucket/maps/classes.tif"


@pytest.fixture(autouse=True)
def anonymous_credentials(monkeypatch):
    """The fake checks no credentials; stand in for `earthengine authenticate` / ADC."""
    monkeypatch.setattr(ee.data, "get_persistent_credentials", lambda: AnonymousCredentials())


@pytest.fixture
def fake(tiny_scene):
    with FakeEarthEngine([tiny_scene.image], tiny_scene.labels) as server:
        yield server
        assert not server.errors, server.errors
    earthengine._session = None  # the next test's fake listens elsewhere
    ee.Reset()


def request_for(fake: FakeEarthEngine, overwrite: bool = False) -> ee_assets.AssetRequest:
    return ee_assets.check_asset_request(
        ASSET, "gs://my-bucket/maps", project=fake.project, endpoint=fake.url, overwrite=overwrite
    )


def test_a_cog_becomes_an_asset_with_the_classes_as_properties(fake):
    scheme = dynamic_world()
    answer = ee_assets.register_cog_asset(
        request_for(fake), COG, scheme, extra={"model": "gs://my-bucket/model"}
    )
    assert answer["name"] == ASSET
    (created,) = [r for r in fake.requests if r.route == ASSET_CREATE]
    assert created.path == "/v1alpha/projects/fake-project/assets"
    body = fake.assets[ASSET]
    # Earth Engine's COG-backed image: an IMAGE whose pixels stay in the bucket (the client sends
    # createAsset's gcs_location as the resource's cloud_storage_location).
    assert body["type"] == "IMAGE"
    assert body["cloud_storage_location"] == {"uris": [COG]}
    properties = body["properties"]
    assert properties["classes_class_names"].split(",") == list(scheme.names)
    assert properties["classes_class_values"] == ",".join(str(i) for i in range(9))
    assert properties["classes_class_palette"].split(",") == [c.lstrip("#") for c in scheme.colors]
    assert properties["classes_class_palette"].startswith("419bdf,397d49")  # water, trees
    assert properties["classes_nodata"] == 255 and properties["model"] == "gs://my-bucket/model"
    assert all(isinstance(v, (str, int, float)) for v in properties.values())


def test_an_existing_asset_is_replaced_only_when_asked(fake):
    scheme = scheme_from_metadata({"classes": ["water", "land"]})
    ee_assets.register_cog_asset(request_for(fake), COG, scheme)
    with pytest.raises(ee_assets.AssetError, match="Pass --overwrite to replace it") as failure:
        ee_assets.register_cog_asset(request_for(fake), "gs://my-bucket/maps2/classes.tif", scheme)
    assert failure.value.status == 1 and "The COG stays in Cloud Storage" in str(failure.value)
    ee_assets.register_cog_asset(
        request_for(fake, overwrite=True), "gs://my-bucket/maps2/classes.tif", scheme
    )
    assert [r.route for r in fake.requests if r.route in (ASSET_CREATE, ASSET_DELETE)] == [
        ASSET_CREATE,
        ASSET_CREATE,
        ASSET_DELETE,
        ASSET_CREATE,
    ]
    assert fake.assets[ASSET]["cloud_storage_location"]["uris"] == ["gs://my-bucket/maps2/classes.tif"]


@pytest.mark.parametrize(
    "asset, output, message",
    [
        ("users/me/landcover", "gs://b/maps", "not an Earth Engine asset id"),
        ("projects/my-project/assets/", "gs://b/maps", "not an Earth Engine asset id"),
        ("projects/my-project/assets/land cover", "gs://b/maps", "not an Earth Engine asset id"),
        ("projects/my-project/assets/landcover", "out/maps", "give a gs:// --output"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(asset, output, message):
    with pytest.raises(ee_assets.AssetError, match=message) as failure:
        ee_assets.check_asset_request(asset, output)
    assert failure.value.status == 2


def test_the_code_editor_snippet_shows_the_classes_in_their_colours():
    scheme = scheme_from_metadata({"classes": ["water", "trees", "built"]})
    snippet = ee_assets.code_editor_snippet(ASSET, scheme)
    assert f"ee.Image('{ASSET}').select(0)" in snippet
    assert 'var classes = ["water", "trees", "built"];' in snippet
    assert 'var palette = ["419bdf", "397d49", "c4281b"];' in snippet
    assert "landcover.lt(classes.length)" in snippet  # 255 (no prediction) is masked
    assert "palette: palette" in snippet and "Map.add(legend)" in snippet


def test_predict_with_ee_asset_refuses_a_local_output(tiny_scene, conv_model_dir, tmp_path, capsys):
    model = conv_model_dir
    argv = ["--model", model, "--inputs", tiny_scene.image, "--output", str(tmp_path / "maps")]
    assert predict.main([*argv, "--ee-asset", "projects/my-project/assets/landcover"]) == 2
    assert "give a gs:// --output" in capsys.readouterr().err
    assert not (tmp_path / "maps").exists()  # stopped before the job


def test_predict_registers_the_mosaic_and_prints_the_snippet(tiny_scene, fake, tmp_path, monkeypatch, capsys):
    """The whole job with --ee-asset. Tests cannot write to Cloud Storage, so a local output stands in for
    the bucket here (the gs:// requirement is tested above); everything else is the real path."""
    monkeypatch.setattr(ee_assets, "EE_READABLE", ("gs://", str(tmp_path)))
    classes = ["water", "trees", "grass", "crops"]
    model = export(conv_model(image_of(tiny_scene)), tmp_path / "model", classes=classes)
    output = tmp_path / "maps"
    argv = ["--model", model, "--inputs", tiny_scene.image, "--output", str(output), "--tile-size", "64"]
    argv += ["--overlap", "8", "--ee-asset", ASSET, "--ee-project", fake.project, "--ee-endpoint", fake.url]
    assert predict.main(argv) == 0  # no --mosaic: --ee-asset makes one
    out = capsys.readouterr().out
    cog = f"{output}/classes.tif"
    assert (output / "classes.tif").is_file() and not (output / "classes.vrt").exists()
    body = fake.assets[ASSET]
    assert body["cloud_storage_location"] == {"uris": [cog]}
    assert body["properties"]["classes_class_names"] == ",".join(classes)
    assert body["properties"]["prediction"] == f"{output}/prediction.json"
    summary = json.loads((output / "prediction.json").read_text())
    assert summary["earthengine_asset"] == {"asset": ASSET, "cog": cog}
    assert f"Earth Engine asset {ASSET}, backed by {cog}" in out
    assert ee_assets.code_editor_snippet(ASSET, scheme_from_metadata({"classes": classes})) in out
    assert np.isfinite(summary["class_counts"]["water"])
