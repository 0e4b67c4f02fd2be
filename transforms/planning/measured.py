"""The figures the plan scales from, measured on this code by `benchmarks/` (results in
benchmarks/results/*.json), each with the file and the date it was measured.

The figures are constants, so that an installed terrabeam plans without the repository's benchmark
files; `derive_*` compute them from those files, and a test holds the two equal, so a new benchmark run
that moves a figure fails until the constant follows it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

# The patch the extraction figures were measured on: 128×128 pixels, 14 float32 bands (the demo scene).
REFERENCE_PATCH_PIXELS = 128 * 128
REFERENCE_BANDS = 14
FLOAT_BYTES = 4


@dataclasses.dataclass(frozen=True)
class Throughput:
    """CPU time of a job as `fixed_cpu_s + units × cpu_s_per_unit` (a line through measured runs)."""

    unit: str  # what the units are, plural: "patches (128×128×14)", "input pixels"
    cpu_s_per_unit: float
    fixed_cpu_s: float  # the job's own start (pipeline construction, first reads), per run
    source: str  # benchmarks/results/<file> (the results it was fitted on)
    measured: str  # the date of that run

    @property
    def units_per_cpu_s(self) -> float:
        return 1.0 / self.cpu_s_per_unit

    def cpu_s(self, units: float) -> float:
        return self.fixed_cpu_s + units * self.cpu_s_per_unit

    def describe(self) -> str:
        return (
            f"{self.units_per_cpu_s:,.0f} {self.unit} per CPU-second plus {self.fixed_cpu_s:.1f} CPU-s a run "
            f"({self.source}, measured {self.measured})"
        )


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through (x, y) points (at least two x values)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        raise ValueError("a line needs at least two different x values")
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx
    return slope, mean_y - slope * mean_x


# --- extraction: benchmarks/results/extract_throughput.json -----------------------------------------
EXTRACT_SOURCE = "benchmarks/results/extract_throughput.json"
EXTRACT_MEASURED = "2026-12-07"
# `python -m pipelines.extract` end to end in one process (--direct_num_workers 1) on the demo scene,
# gzip level 1: 1,558 patches in 6.67 CPU-s and 15,326 in 64.48 CPU-s, on an Intel Sapphire Rapids
# (AVX-512; the AMD EPYC with AVX2 of 2026-12-06 took 10.75 and 84.29 CPU-s).
EXTRACT_GZIP = Throughput(
    "patches (128×128×14)",
    0.0041988,
    0.12529,
    f"{EXTRACT_SOURCE}: pipeline_gzip, memory_10x_points",
    EXTRACT_MEASURED,
)
# Uncompressed TFRecords: 1,558 patches in 3.11 CPU-s, with the gzip run's fixed part.
EXTRACT_NONE = Throughput(
    "patches (128×128×14)", 0.0019126, 0.12529, f"{EXTRACT_SOURCE}: pipeline_none", EXTRACT_MEASURED
)
# An uncompressed record: the float32 bands and label of the patch, plus this many bytes (metadata,
# feature names, TFRecord framing): 983,485 bytes per 128×128×14 record.
RECORD_OVERHEAD_BYTES = 445
# gzip level 1 (ISA-L) on the demo scene's records: 1,532,270,113 bytes uncompressed, 714,987,832 gzip.
GZIP_RATIO = 2.1431


def derive_extraction(doc: Mapping[str, Any]) -> dict[str, float]:
    """The extraction figures above, from extract_throughput.json."""
    results = doc["results"]
    gzip, larger, none = results["pipeline_gzip"], results["memory_10x_points"], results["pipeline_none"]
    slope, fixed = fit_line([(gzip["patches"], gzip["cpu_s"]), (larger["patches"], larger["cpu_s"])])
    record_bytes = none["output_bytes"] / none["patches"]
    return {
        "gzip_cpu_s_per_patch": slope,
        "fixed_cpu_s": fixed,
        "none_cpu_s_per_patch": (none["cpu_s"] - fixed) / none["patches"],
        "record_overhead_bytes": record_bytes - REFERENCE_PATCH_PIXELS * (REFERENCE_BANDS + 1) * FLOAT_BYTES,
        "gzip_ratio": none["output_bytes"] / gzip["output_bytes"],
        "measured": doc["when"][:10],
    }


# --- prediction: benchmarks/results/predict_throughput.json -----------------------------------------
PREDICT_SOURCE = "benchmarks/results/predict_throughput.json"
PREDICT_MEASURED = "2026-12-06"
# `python -m pipelines.predict` end to end with the default U-Net (depth 2, 32 filters, 14 bands, 9
# classes), 256-pixel tiles: 121, 484 and 1,849 tiles in 45.53, 165.58 and 602.76 CPU-s. A unit is an
# input pixel (tiles × 256²), so other tile sizes and overlaps scale by the pixels the model sees. The
# CPU decides this figure: it was measured on a 2-core AMD EPYC with AVX2 but no AVX-512, nearer the
# Intel Xeons of Dataflow's N1 workers than the Intel Sapphire Rapids (AVX-512, AMX) that ran the same
# tiles in 2.9× fewer CPU-seconds on 2026-12-07 (benchmarks/results/predict_throughput_sapphire_rapids.json).
PREDICT = Throughput(
    "input pixels", 4.9113e-06, 8.0046, f"{PREDICT_SOURCE}: job_2048, job, job_8192", PREDICT_MEASURED
)
PREDICT_TILE_SIZE = 256


def derive_prediction(doc: Mapping[str, Any]) -> dict[str, float]:
    """The prediction figures above, from predict_throughput.json."""
    results = doc["results"]
    tile_pixels = doc["tiling"]["tile_size"] ** 2
    runs = [results[k] for k in ("job_2048", "job", "job_8192")]
    slope, fixed = fit_line([(r["tiles"] * tile_pixels, r["cpu_s"]) for r in runs])
    return {"cpu_s_per_input_pixel": slope, "fixed_cpu_s": fixed, "measured": doc["when"][:10]}


# --- how busy a worker's cores are: benchmarks/results/local_cores.json -----------------------------
LOCAL_CORES_SOURCE = "benchmarks/results/local_cores.json"
LOCAL_CORES_MEASURED = "2026-12-06"
# CPU time over (wall time × CPUs) of the default local runs on 2 CPUs: extraction with one worker
# process per CPU (40.11 CPU-s in 22.82 s), prediction with one TensorFlow process (45.65 CPU-s in
# 29.25 s). A worker's cores are this busy; the rest is waiting (reads, hand-overs between steps).
EXTRACT_UTILIZATION = 0.8788
PREDICT_UTILIZATION = 0.7803


def derive_utilization(doc: Mapping[str, Any]) -> dict[str, float]:
    """The utilizations above, from local_cores.json."""
    results, cpus = doc["results"], doc["machine"]["cpus_available"]

    def busy(job: str) -> float:
        run = results[job]["default"]
        return run["cpu_s"] / (run["wall_s"] * cpus)

    return {"extract": busy("extract"), "predict": busy("predict"), "measured": doc["when"][:10]}


# --- the written map: benchmarks/results/cog_size.json ----------------------------------------------
COG_SOURCE = "benchmarks/results/cog_size.json"
COG_MEASURED = "2026-12-06"
# Bytes per pixel of a uint8 class map as transforms/cog.py writes it (DEFLATE, overviews, colour table),
# on a real 7-class land-class raster (shared/data nc-landsat7 strata.tif, 443×489 pixels): 49,350 bytes
# as one COG per 192×192 tile core (the default; each file has its own header and colour table), 23,529
# as one mosaic COG (--mosaic). The generated demo map compresses to less than half of these.
COG_PER_TILE_BYTES_PER_PIXEL = 0.2278
COG_MOSAIC_BYTES_PER_PIXEL = 0.1086


def class_map_bytes_per_pixel(per_tile_files: bool) -> tuple[float, str]:
    """Bytes per pixel of the class map as the job writes it, and where the figure comes from."""
    figure = COG_PER_TILE_BYTES_PER_PIXEL if per_tile_files else COG_MOSAIC_BYTES_PER_PIXEL
    layout = "one COG per tile" if per_tile_files else "one mosaic COG"
    return figure, (
        f"class map {figure:.3f} B/px as {layout}, measured on a real 7-class land-class map ({COG_SOURCE}, "
        f"{COG_MEASURED})"
    )


def derive_cog(doc: Mapping[str, Any]) -> dict[str, float | str]:
    """The class map figures above, from cog_size.json (the real map's row)."""
    real = next(r for r in doc["results"] if "real" in r["map"])
    return {
        "per_tile": real["per_tile_bytes_per_pixel"],
        "mosaic": real["mosaic_bytes_per_pixel"],
        "measured": doc["when"][:10],
    }
