"""Fixtures of the viewer's tests (the API and the browser ones)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def assessed_prediction(viewer_prediction, tmp_path_factory):
    """The viewer scene's prediction with an assessment beside it, made by the real `terrabeam assess`."""
    from pipelines import assess

    scene, predictions = viewer_prediction
    folder = tmp_path_factory.mktemp("assessed") / "predictions"
    shutil.copytree(predictions, folder)
    assert assess.main(["design", str(folder), "--min-per-class", "30", "--sample-size", "160"]) == 0
    assert assess.main(["estimate", str(folder / "assessment"), "--reference-raster", scene.labels]) == 0
    return folder
