"""One way to join a local or gs:// path and to read and write a JSON file there."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.environment import ROOT, env
from transforms.io.files import join, read_json, write_json


@pytest.mark.parametrize(
    "base, parts, expected",
    [
        ("gs://bucket/run", ("model.json",), "gs://bucket/run/model.json"),
        ("gs://bucket/run/", ("eeified", "saved_model.pb"), "gs://bucket/run/eeified/saved_model.pb"),
        ("gs://bucket", ("model.json",), "gs://bucket/model.json"),
        ("s3://bucket/maps//", ("prediction.json",), "s3://bucket/maps/prediction.json"),
        ("out/model", ("keras", "model.keras"), "out/model/keras/model.keras"),
        ("out/model/", ("model.json",), "out/model/model.json"),
        ("/", ("model.json",), "/model.json"),
        ("/tmp/run", (), "/tmp/run"),
    ],
)
def test_join_local_and_cloud_paths(base, parts, expected):
    assert join(base, *parts) == expected


def test_json_round_trip_and_a_missing_file(tmp_path):
    path = str(tmp_path / "model.json")
    assert read_json(path) is None
    write_json(path, {"b": [1, 2.5], "a": "x"})
    text = (tmp_path / "model.json").read_text()
    assert text == json.dumps({"a": "x", "b": [1, 2.5]}, indent=2) + "\n"  # keys sorted, final newline
    assert read_json(path) == {"a": "x", "b": [1, 2.5]}


def test_joining_paths_loads_neither_tensorflow_nor_beam():
    code = (
        "import sys; from transforms.io.files import join; join('gs://b', 'x'); "
        "print(sorted(m for m in ('tensorflow', 'apache_beam') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env(), capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
