"""Fixtures every test module can use; the functions behind them live in tests/helpers."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from tests.helpers import beam_construction
from tests.helpers.once import once_per_run
from tests.helpers.scenes import (
    TinyScene,
    write_tiny_scene,
)

beam_construction.install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test worker starts with the slow modules of its share.

    pytest-xdist's work-stealing scheduler hands each of its N workers one contiguous Nth of this list,
    and idle workers later take the second half of what another has left. A minute-long test near the
    end of a share (the staged workers, in tests/templates) ran alone for the last ~45 s of the suite;
    with each share's slow modules first, the end of the run is short tests that the workers share.
    The order within each module is kept.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 2:
        return
    slow = {getattr(item, "module", None) for item in items if item.get_closest_marker("slow")}
    start, left = 0, len(items)
    for share in range(workers, 0, -1):  # the shares' sizes as the scheduler cuts them
        size = left // share
        items[start : start + size] = sorted(
            items[start : start + size], key=lambda item: getattr(item, "module", None) not in slow
        )
        start, left = start + size, left - size


@pytest.fixture(autouse=True)
def one_local_worker(request, monkeypatch):
    """Pipelines run in one process here (Beam's in-memory runner), as if on a one-CPU machine.

    By default a local run starts one worker process per CPU, and worker processes take seconds to
    start: on tiny test data that is most of a pipeline's time. Tests marked `local_cores` keep the real
    default; tests that pass --direct_* options choose for themselves; command-line tests run in their
    own processes, unaffected by this fixture.
    """
    if request.node.get_closest_marker("local_cores"):
        return
    from pipelines import options

    monkeypatch.setattr(options, "available_cpus", lambda: 1)


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> TinyScene:
    return write_tiny_scene(tmp_path_factory.mktemp("tiny-scene"))


@pytest.fixture(scope="session")
def conv_model_dir(tiny_scene, tmp_path_factory) -> str:
    """The tiny scene's convolutional model folder (tests/helpers/models.py), exported once for all the
    test workers (an export is seconds of tracing); tests read it and never write into it."""
    from tests.helpers.models import conv_model, export, image_of

    def build(folder: Path) -> dict:
        return {"path": export(conv_model(image_of(tiny_scene)), folder / "model")}

    return once_per_run(tmp_path_factory, "conv-model", build)["path"]


@pytest.fixture(scope="session")
def viewer_prediction(tmp_path_factory):
    """(scene, prediction folder): a small scene with a known class map, predicted as a VRT of 9 tiles."""
    from tests.helpers.viewer_scene import predict_viewer_scene

    return predict_viewer_scene(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="session")
def demo_extraction(tmp_path_factory):
    """The demo scene's extraction with its CPU time (tests/helpers/demo_runs.py), run once for all the
    test workers."""
    from tests.helpers.demo_runs import DemoExtraction, run_demo_extraction

    def build(folder: Path) -> dict:
        return dataclasses.asdict(run_demo_extraction(folder))

    fields = once_per_run(tmp_path_factory, "demo-extraction", build)
    return DemoExtraction(**{**fields, "options": tuple(fields["options"])})
