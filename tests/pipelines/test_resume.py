"""`pipelines.predict --resume`: a prediction killed halfway finishes where it stopped, byte for byte.

The stopped run is a real one: `python -m pipelines.predict` in a child process, killed with SIGKILL
once part of its tiles are written (its source reads are slowed down so that there is a "halfway").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from pipelines.predict import main, run
from tests.helpers.damage import cut
from tests.helpers.environment import ROOT
from tests.helpers.models import conv_model, export, image_of

TILES = 81  # 200 pixels in steps of 32 - 8 = 24: 9 × 9 tiles
# The command, with every tile read slowed down by 0.1 s: ~8 s of fetching to stop in the middle of.
SLOW_PREDICT = """
import sys, time
from transforms.io.rasters import LocalRasterSource
read = LocalRasterSource.read
def slow(self, *args, **kwargs):
    time.sleep(0.1)
    return read(self, *args, **kwargs)
LocalRasterSource.read = slow
from pipelines.predict import main
sys.exit(main(sys.argv[1:]))
"""


def args(model_dir: str, image: str, output: Path, *extra: str) -> list[str]:
    return [
        f"--model={model_dir}",
        "--inputs",
        image,
        "--tile-size=32",
        "--overlap=8",
        f"--output={output}",
        *extra,
    ]


def tiles(output: Path) -> dict[str, bytes]:
    folder = output / "tiles" / "classes"
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tif"))} if folder.exists() else {}


def kill_halfway(command: list[str], output: Path, timeout: float = 240) -> int:
    """Start the prediction in a child process, SIGKILL it (and any worker process it started) once a
    third of the tiles exist. One worker process: the slowed reads are patched in this one."""
    child = subprocess.Popen(
        [sys.executable, "-c", SLOW_PREDICT, *command, "--direct_num_workers=1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    try:
        while len(tiles(output)) < TILES // 3:
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the prediction wrote no tiles in time"
            time.sleep(0.05)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()
    return len(tiles(output))


@pytest.mark.timeout(600)
def test_resume_after_a_kill_gives_the_same_class_map_bytes(tiny_scene, conv_model_dir, tmp_path, capsys):
    whole = tmp_path / "whole"
    assert run(args(conv_model_dir, tiny_scene.image, whole))["tiles_written"] == TILES

    part = tmp_path / "part"
    written = kill_halfway(args(conv_model_dir, tiny_scene.image, part), part)
    assert TILES // 3 <= written < TILES and not (part / "prediction.json").exists()
    assert json.loads((part / "prediction-plan.json").read_text())["tiling"]["tiles"] == TILES

    # A stopped prediction is not taken for a finished one, nor silently replaced.
    assert main(args(conv_model_dir, tiny_scene.image, part)) == 2
    assert "--resume to finish a stopped one" in capsys.readouterr().err

    # A tile cut short (as by a kill on a store without atomic writes) is predicted again.
    damaged = sorted((part / "tiles" / "classes").glob("*.tif"))[0]
    cut(damaged, 0.5, damaged)
    partial = part / "tiles" / "classes" / f"{damaged.name}.partial-1-2"  # a write the kill cut off
    partial.write_bytes(b"half a tile")

    start = time.monotonic()
    assert main(args(conv_model_dir, tiny_scene.image, part, "--resume")) == 0
    out = capsys.readouterr().out
    assert f"Prediction of {TILES} tiles written" in out
    assert f"{written - 1} of them were kept from the earlier run (--resume)" in out
    summary = json.loads((part / "prediction.json").read_text())
    assert (summary["tiles_written"], summary["tiles_reused"], summary["tiles_failed"]) == (
        TILES,
        written - 1,
        0,
    )
    assert time.monotonic() - start < 120

    assert tiles(part) == tiles(whole)  # every tile COG, byte for byte
    assert not partial.exists()
    assert (part / "classes.vrt").read_bytes() == (whole / "classes.vrt").read_bytes()
    with rasterio.open(part / "classes.vrt") as resumed, rasterio.open(whole / "classes.vrt") as reference:
        assert np.array_equal(resumed.read(1), reference.read(1))
    assert summary["class_counts"] == json.loads((whole / "prediction.json").read_text())["class_counts"]

    # Resuming a finished prediction keeps every tile.
    assert run(args(conv_model_dir, tiny_scene.image, part, "--resume"))["tiles_reused"] == TILES
    assert tiles(part) == tiles(whole)


@pytest.mark.timeout(300)
def test_resume_refuses_another_plan_model_or_an_empty_folder(tiny_scene, conv_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(args(conv_model_dir, tiny_scene.image, out, "--tile-size=64")) == 0
    capsys.readouterr()

    def refused(*extra: str, model: str = conv_model_dir, output: Path = out) -> str:
        assert main(args(model, tiny_scene.image, output, *extra)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --resume")
        return err

    assert "tiling (" in refused("--resume", "--tile-size=48")
    assert "probabilities (" in refused("--resume", "--tile-size=64", "--probabilities=uint8")
    other = export(conv_model(image_of(tiny_scene), seed=1), tmp_path / "other")
    assert "the model (" in refused("--resume", "--tile-size=64", model=other)
    assert "holds no prediction to finish" in refused("--resume", output=tmp_path / "empty")
    assert main(args(conv_model_dir, tiny_scene.image, out, "--resume", "--overwrite")) == 2
    assert "pick one" in capsys.readouterr().err
