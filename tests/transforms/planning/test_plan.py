"""The plan's arithmetic against cases worked out by hand (the figures are written out here, from the
documented constants, not taken from the code's output)."""

from __future__ import annotations

import json

import pytest

from transforms.planning import (
    PRICES,
    PlanError,
    Requests,
    choose_workers,
    ee_rate,
    extraction_work,
    machine,
    make_plan,
    plan_lines,
    prediction_work,
    quota_seconds,
    share_of,
)
from transforms.planning.measured import EXTRACT_MEASURED
from transforms.planning.plan import record_bytes, reference_patches


def test_earth_engine_rate_is_the_concurrency_over_a_requests_time_capped_by_the_quota():
    assert ee_rate(20, 6000, 1.0) == 20.0  # 20 in flight, 1 s each: 20 a second, under 100 a second
    assert ee_rate(40, 6000, 0.25) == 100.0  # 160 a second would exceed 6000 a minute
    assert ee_rate(10, 300, 2.0) == 5.0  # 300 a minute: 5 a second; 10 / 2 s is 5 too
    assert quota_seconds(7200, 20.0) == 360.0
    assert quota_seconds(0, 20.0) == 0.0
    with pytest.raises(PlanError, match="at least 1"):
        ee_rate(0, 6000, 1.0)


def test_each_worker_keeps_its_share_of_max_requests_and_the_project_caps_the_total():
    assert share_of(20, 10) == 2
    assert share_of(20, 100) == 1  # at least one each
    requests = Requests(
        {"computePixels": 1000}, per_worker=2, ceiling=40, per_minute=6000, seconds_per_request=1.0
    )
    assert requests.on(10).concurrency == 20
    assert requests.on(30).concurrency == 40  # 60 asked, 40 answered at once
    assert requests.on(10).seconds == 1000 / 20


def test_an_uncompressed_record_is_its_float32_bands_and_label_plus_the_measured_overhead():
    # 128 × 128 pixels × (14 bands + 1 label) × 4 bytes + 445 bytes: the 983,485 bytes measured.
    assert record_bytes(128, 14) == 983_485
    assert record_bytes(64, 3) == 64 * 64 * 4 * 4 + 445
    # A 256×256×7 patch has 65,536 × 7 = 2 × (16,384 × 14) pixel-bands: two reference patches.
    assert reference_patches(100, 256, 7) == 200


def test_extraction_work_counts_bytes_requests_and_items_by_hand():
    work = extraction_work(
        points=1000, patches=900, patch_size=128, bands=14, compression="gzip", run_points=64, point_bytes=300
    )
    assert work.pixels == 900 * 128 * 128
    assert work.bytes_read == 900 * 128 * 128 * (14 * 4 + 1)  # float32 bands and a uint8 label
    assert work.bytes_written == round(900 * 983_485 / 2.1431)  # gzip at the measured ratio
    assert work.work_items == 16  # 1000 points in runs of 64: 15.6, rounded up
    assert work.shuffle_bytes == 1000 * 300 * 2 * 2  # two shuffles, each written and read
    assert work.cpu_units == 900
    raw = extraction_work(
        points=10, patches=10, patch_size=128, bands=14, compression="none", run_points=64, point_bytes=0
    )
    assert raw.bytes_written == 10 * 983_485
    with pytest.raises(PlanError, match="at most one patch per point"):
        extraction_work(
            points=5, patches=6, patch_size=8, bands=1, compression="none", run_points=1, point_bytes=0
        )


def test_prediction_work_counts_input_pixels_and_the_written_map():
    work = prediction_work(
        tiles=100,
        tile_size=256,
        bands=13,
        output_pixels=100 * 192 * 192,
        classes=9,
        probabilities="uint8",
        per_tile_files=True,
        tta=True,
        tile_bytes=500,
        class_map_bytes_per_pixel=0.25,
    )
    assert work.pixels == 100 * 65_536
    assert work.bytes_read == 100 * 65_536 * 13 * 4
    # 0.25 B/px of class map, and 9 uint8 probability bands with a third more for overviews: 12 B/px.
    assert work.bytes_written == round(3_686_400 * (0.25 + 12))
    assert work.objects_written == 100 * 2 + 2 + 2  # a COG per tile and kind, the VRTs, PNG and summary
    assert work.cpu_units == 100 * 65_536 * 8  # test-time augmentation: 8 model runs a tile


def test_workers_are_capped_by_max_num_workers_the_work_and_their_start_up():
    # 3600 CPU-s on one-vCPU workers, fully busy: one worker takes an hour, worth 15 start-ups of 240 s.
    assert choose_workers(3600, 1, 1.0, 10, 100, 240) == (10, "max_num_workers")
    assert choose_workers(3600, 1, 1.0, 100, 100, 240) == (15, "start-up")
    assert choose_workers(3600, 1, 1.0, 100, 6, 240) == (6, "work")
    assert choose_workers(3600, 4, 1.0, 100, 6, 240) == (2, "work")  # 6 items on 4 vCPUs a worker
    assert choose_workers(100, 1, 1.0, 100, 100, 240) == (1, "start-up")
    # Reading Earth Engine, the job shares its requests out by --max_num_workers: all of them run.
    assert choose_workers(100, 1, 1.0, 10, 100, 240, earthengine=True) == (10, "max_num_workers")


def test_machine_types_by_family_and_custom():
    assert machine("n1-standard-1") == machine("N1-standard-1")
    assert (machine("n1-standard-4").vcpus, machine("n1-standard-4").memory_gb) == (4, 15.0)
    assert machine("n2-highmem-8").memory_gb == 64.0
    assert machine("n1-highcpu-16").memory_gb == pytest.approx(14.4)
    assert (machine("custom-6-20480").vcpus, machine("custom-6-20480").memory_gb) == (6, 20.0)
    assert machine("zones/us-central1-a/machineTypes/e2-standard-2").vcpus == 2
    with pytest.raises(PlanError, match="--machine_type 'm1-ultramem-40'"):
        machine("m1-ultramem-40")


def test_a_whole_earth_engine_extraction_plan_by_hand():
    """10,000 patches of 128×128×14 from Earth Engine on at most 10 n1-standard-1 workers."""
    work = extraction_work(
        points=10_000,
        patches=10_000,
        patch_size=128,
        bands=14,
        compression="gzip",
        run_points=64,
        point_bytes=250,
    )
    requests = Requests(
        {"computePixels": 20_000}, per_worker=2, ceiling=40, per_minute=6000, seconds_per_request=1.0
    )
    plan = make_plan(
        work, requests, machine("n1-standard-1"), runner="DataflowRunner", max_workers=10, utilization=0.5
    )
    c = plan.compute
    # CPU: 0.12529 s + 10,000 × 0.0041988 s = 42.11329 s.
    assert c.cpu_s == pytest.approx(42.11329)
    assert c.workers == 10 and c.limited_by == "max_num_workers"
    assert c.compute_s == pytest.approx(42.11329 / (10 * 1 * 0.5))  # 8.4 s
    # 20,000 requests, 2 in flight on each of 10 workers, 1 s each: 20 a second, 1000 s.
    assert plan.requests.concurrency == 20 and c.quota_s == pytest.approx(1000.0)
    assert c.bound == "quota"
    assert c.wall_s == pytest.approx(240 + 1000)
    assert c.worker_hours == pytest.approx(10 * 1240 / 3600)  # 3.444
    cost = plan.cost
    hours = 10 * 1240 / 3600
    assert cost.vcpu == pytest.approx(hours * 1 * 0.056)
    assert cost.memory == pytest.approx(hours * 3.75 * 0.003557)
    assert cost.disk == pytest.approx(hours * 25 * 0.000054)  # Dataflow Shuffle's default 25 GB boot disk
    assert cost.shuffle == pytest.approx(10_000 * 250 * 4 / 1e9 * 0.011)
    gb = round(10_000 * 983_485 / 2.1431) / 1e9
    assert cost.storage_month == pytest.approx(gb * 0.020)
    assert cost.writes == pytest.approx(4 / 1000 * 0.005)
    assert cost.job == pytest.approx(cost.dataflow + cost.writes + cost.storage_month)
    assert cost.dataflow == pytest.approx(hours * (0.056 + 3.75 * 0.003557 + 25 * 0.000054) + 0.00011)


def test_a_compute_bound_plan_on_bigger_machines_by_hand():
    def plan_of(tiles: int):
        work = prediction_work(
            tiles=tiles,
            tile_size=256,
            bands=14,
            output_pixels=tiles * 192 * 192,
            classes=9,
            probabilities="none",
            per_tile_files=True,
            tta=False,
            tile_bytes=0,
            class_map_bytes_per_pixel=0.5,
        )
        return make_plan(
            work,
            None,
            machine("n1-standard-4"),
            runner="DataflowRunner",
            max_workers=5,
            disk_gb=50,
            utilization=1.0,
        )

    # 100,000 tiles: 8.0046 + 100,000 × 65,536 × 4.9113e-06 = 32,194.7 CPU-s; on one 4-vCPU worker
    # 8,049 s, 33 start-ups' worth: the 5 workers allowed all pay.
    c = plan_of(100_000).compute
    cpu_s = 8.0046 + 100_000 * 65_536 * 4.9113e-06
    assert c.cpu_s == pytest.approx(cpu_s)
    assert (c.workers, c.limited_by) == (5, "max_num_workers")
    assert c.compute_s == pytest.approx(cpu_s / 20)  # 1,609.7 s on 5 × 4 vCPUs
    assert c.quota_s == 0 and c.bound == "compute"
    assert c.worker_hours == pytest.approx(5 * (240 + cpu_s / 20) / 3600)
    plan = plan_of(100_000)
    assert plan.cost.disk == pytest.approx(c.worker_hours * 50 * 0.000054)
    assert plan.cost.memory == pytest.approx(c.worker_hours * 15 * 0.003557)
    # 2,000 tiles: 651.7 CPU-s, 163 s on one worker, less than its start-up: one worker.
    small = plan_of(2_000).compute
    assert (small.workers, small.limited_by) == (1, "start-up")
    assert small.wall_s == pytest.approx(240 + (8.0046 + 2_000 * 65_536 * 4.9113e-06) / 4)


def test_the_plan_is_json_and_prints_its_sources_and_dates():
    work = extraction_work(
        points=100,
        patches=90,
        patch_size=128,
        bands=14,
        compression="gzip",
        run_points=64,
        point_bytes=100,
        details={"points_exact": True, "points_how": "seed 0", "guard": 10},
    )
    plan = make_plan(
        work, None, machine("n1-standard-1"), runner="DataflowRunner", max_workers=2, utilization=1.0
    )
    doc = json.loads(json.dumps(plan.to_json()))
    assert doc["work"]["units"] == 90 and doc["earthengine"] is None
    assert doc["dataflow"]["machine_type"] == "n1-standard-1"
    lines = plan_lines(plan, "Plan:")
    assert all(len(line) <= 108 for line in lines)
    text = " ".join(" ".join(lines).split())  # as read, without the wrapping
    assert "benchmarks/results/extract_throughput.json" in text
    assert f"measured {EXTRACT_MEASURED}" in text
    assert "https://cloud.google.com/dataflow/pricing" in text and "us-central1, 2026-12" in text
    assert "10 in the split's guard band" in text
    assert PRICES.vcpu_hour == 0.056
