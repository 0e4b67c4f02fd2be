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


@pytest.fixture(scope="session")
def viewer_change(viewer_prediction, tmp_path_factory):
    """A change folder: the viewer scene's prediction as 2019, a 2023 in which two half-quadrants changed
    (tests/helpers/viewer_scene.py: CHANGES), compared by the real transforms.change."""
    from tests.helpers.viewer_scene import write_viewer_change

    scene, predictions = viewer_prediction
    return write_viewer_change(tmp_path_factory.mktemp("viewer-change") / "change", scene, predictions)


@pytest.fixture(scope="session")
def assessed_change(viewer_change, tmp_path_factory):
    """The change folder with an assessment of its transitions map beside it (`terrabeam assess design
    <change folder>`, then estimated against the true transitions)."""
    from pipelines import assess
    from tests.helpers.viewer_scene import write_true_transitions

    root = tmp_path_factory.mktemp("assessed-change")
    folder = root / "change"
    shutil.copytree(viewer_change, folder)
    truth = write_true_transitions(folder, root / "true-transitions.tif")
    assert assess.main(["design", str(folder), "--min-per-class", "20", "--sample-size", "100"]) == 0
    assert assess.main(["estimate", str(folder / "assessment"), "--reference-raster", truth]) == 0
    return folder
