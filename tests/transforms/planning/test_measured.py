"""The plan's measured figures are the benchmark results' (benchmarks/results/*.json): a new run that
moves a figure fails here until transforms/planning/measured.py follows it."""

from __future__ import annotations

import json

import pytest

from tests.helpers.environment import ROOT
from transforms.planning import measured


def results(name: str) -> dict:
    return json.loads((ROOT / "benchmarks" / "results" / name).read_text(encoding="utf-8"))


def test_extraction_figures_are_extract_throughput_json():
    derived = measured.derive_extraction(results("extract_throughput.json"))
    assert measured.EXTRACT_GZIP.cpu_s_per_unit == pytest.approx(derived["gzip_cpu_s_per_patch"], rel=1e-4)
    assert measured.EXTRACT_GZIP.fixed_cpu_s == pytest.approx(derived["fixed_cpu_s"], rel=1e-4)
    assert measured.EXTRACT_NONE.fixed_cpu_s == measured.EXTRACT_GZIP.fixed_cpu_s
    assert measured.EXTRACT_NONE.cpu_s_per_unit == pytest.approx(derived["none_cpu_s_per_patch"], rel=1e-4)
    assert measured.RECORD_OVERHEAD_BYTES == round(derived["record_overhead_bytes"])
    assert measured.GZIP_RATIO == pytest.approx(derived["gzip_ratio"], rel=1e-4)
    assert measured.EXTRACT_MEASURED == derived["measured"]


def test_prediction_figures_are_predict_throughput_json():
    derived = measured.derive_prediction(results("predict_throughput.json"))
    assert measured.PREDICT.cpu_s_per_unit == pytest.approx(derived["cpu_s_per_input_pixel"], rel=1e-4)
    assert measured.PREDICT.fixed_cpu_s == pytest.approx(derived["fixed_cpu_s"], rel=1e-4)
    assert measured.PREDICT_MEASURED == derived["measured"]


def test_utilizations_are_local_cores_json():
    derived = measured.derive_utilization(results("local_cores.json"))
    assert measured.EXTRACT_UTILIZATION == pytest.approx(derived["extract"], rel=1e-3)
    assert measured.PREDICT_UTILIZATION == pytest.approx(derived["predict"], rel=1e-3)
    assert measured.LOCAL_CORES_MEASURED == derived["measured"]


def test_class_map_sizes_are_cog_size_json():
    derived = measured.derive_cog(results("cog_size.json"))
    assert measured.COG_PER_TILE_BYTES_PER_PIXEL == pytest.approx(derived["per_tile"], rel=1e-3)
    assert measured.COG_MOSAIC_BYTES_PER_PIXEL == pytest.approx(derived["mosaic"], rel=1e-3)
    assert measured.COG_MEASURED == derived["measured"]


def test_a_line_through_measured_runs():
    # y = 2 + 3x through (1, 5), (2, 8), (4, 14); least squares finds it exactly.
    assert measured.fit_line([(1, 5), (2, 8), (4, 14)]) == pytest.approx((3.0, 2.0))
    with pytest.raises(ValueError):
        measured.fit_line([(1, 5), (1, 6)])
