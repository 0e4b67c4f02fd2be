"""The record a job keeps of its local imagery opens the same bands again (what the map viewer does)."""

from __future__ import annotations

from pipelines.checks.sources import local_imagery
from transforms.io.rasters import LocalRasterSource


def test_the_record_of_named_bands_reopens_them(tiny_scene):
    imagery = local_imagery([tiny_scene.image], "r,n,e")
    assert imagery.source.bands == ("r", "n", "e")
    assert imagery.record == {"inputs": [tiny_scene.image], "band_names": ["r", "n", "e"]}
    reopened = LocalRasterSource(imagery.record["inputs"], imagery.record.get("band_names"))
    assert reopened.bands == imagery.source.bands


def test_the_record_of_unnamed_bands_leaves_the_names_to_the_files(tiny_scene):
    imagery = local_imagery([tiny_scene.image], None)
    assert imagery.record == {"inputs": [tiny_scene.image]}
    reopened = LocalRasterSource(imagery.record["inputs"], imagery.record.get("band_names"))
    assert reopened.bands == imagery.source.bands == tiny_scene.bands
