"""The arithmetic of a plan: the work a job does, the Earth Engine requests it sends and the time the
quota allows them, the workers and hours it takes, what it costs and what it leaves in Cloud Storage.

Every function here is pure: figures in, figures out. `pipelines/plan.py` counts the work from a job's
options and prints the result.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from transforms.planning import measured
from transforms.planning.errors import PlanError
from transforms.planning.prices import (
    DATAFLOW_MAX_WORKERS,
    DEFAULT_DISK_GB,
    EE_QUOTA_SOURCE,
    PRICES,
    WORKER_STARTUP_S,
    Machine,
    PriceTable,
)

GB = 1e9  # Google bills storage and shuffle per GB; the plan prints decimal units too
HOURS_PER_MONTH = 730  # Cloud Storage's monthly rates assume 730 hours


# --- what the job does -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Work:
    """What a job reads, computes and writes."""

    job: str  # "extraction" or "prediction"
    unit: str  # "patch" or "tile": what one fetch reads
    units: int  # patches or tiles fetched
    pixels_per_unit: int  # pixels of one patch or tile (side²)
    bands: int
    bytes_read: int  # the pixels fetched: float32 bands (and uint8 labels for extraction)
    bytes_written: int  # the outputs in storage
    objects_written: int  # files written (Cloud Storage writes)
    shuffle_bytes: int  # data through Dataflow Shuffle (written and read)
    work_items: int  # independent pieces the job spreads over workers
    cpu_units: float  # in the throughput's units (reference patches or input pixels)
    throughput: measured.Throughput
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def pixels(self) -> int:
        return self.units * self.pixels_per_unit

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "unit": self.unit,
            "units": self.units,
            "pixels_per_unit": self.pixels_per_unit,
            "pixels": self.pixels,
            "bands": self.bands,
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "objects_written": self.objects_written,
            "shuffle_bytes": self.shuffle_bytes,
            "work_items": self.work_items,
            **dict(self.details),
        }


def record_bytes(patch_size: int, bands: int) -> int:
    """An uncompressed TFRecord of one patch: float32 bands and label, plus the measured overhead."""
    return patch_size**2 * (bands + 1) * measured.FLOAT_BYTES + measured.RECORD_OVERHEAD_BYTES


def reference_patches(patches: int, patch_size: int, bands: int) -> float:
    """`patches` in units of the measured 128×128×14 patch: a patch's cost scales with its pixels × bands."""
    return patches * patch_size**2 * bands / (measured.REFERENCE_PATCH_PIXELS * measured.REFERENCE_BANDS)


def extraction_work(
    *,
    points: int,
    patches: int,
    patch_size: int,
    bands: int,
    compression: str,
    run_points: int,
    point_bytes: int,
    details: Mapping[str, Any] | None = None,
) -> Work:
    """The work of an extraction that fetches `patches` patches of `points` sampled points.

    Records are written gzip-compressed at the measured ratio (compression "gzip") or as they are. Each
    point passes Dataflow Shuffle twice (grouped by place, then spread over workers as runs of
    `run_points`), as `point_bytes` written and read.
    """
    if points < 0 or patches < 0 or patches > points:
        raise PlanError(f"an extraction fetches at most one patch per point, got {patches} of {points}")
    raw = patches * record_bytes(patch_size, bands)
    written = round(raw / measured.GZIP_RATIO) if compression == "gzip" else raw
    throughput = measured.EXTRACT_GZIP if compression == "gzip" else measured.EXTRACT_NONE
    return Work(
        job="extraction",
        unit="patch",
        units=patches,
        pixels_per_unit=patch_size**2,
        bands=bands,
        bytes_read=patches * patch_size**2 * (bands * measured.FLOAT_BYTES + 1),
        bytes_written=written,
        objects_written=2 + 2,  # a shard per split, the manifest, the (empty) dead letters
        shuffle_bytes=points * 2 * 2 * point_bytes,
        work_items=max(1, math.ceil(points / run_points)),
        cpu_units=reference_patches(patches, patch_size, bands),
        throughput=throughput,
        details={"points": points, "compression": compression, **dict(details or {})},
    )


def prediction_work(
    *,
    tiles: int,
    tile_size: int,
    bands: int,
    output_pixels: int,
    classes: int,
    probabilities: str,
    per_tile_files: bool,
    tta: bool,
    tile_bytes: int,
    class_map_bytes_per_pixel: float,
    details: Mapping[str, Any] | None = None,
) -> Work:
    """The work of a prediction of `tiles` tiles covering `output_pixels` map pixels.

    The class map takes the measured bytes per pixel; probabilities (one band per class) are counted
    uncompressed (uint8: 1 byte, float32: 4), with a third more for overviews: an upper bound. With
    `tta`, the model runs on 8 flips and rotations of each tile.
    """
    if tiles < 0 or output_pixels < 0:
        raise PlanError(f"a prediction needs a number of tiles and pixels, got {tiles} and {output_pixels}")
    probability_bytes = {"none": 0, "uint8": 1, "float32": 4}[probabilities] * classes
    written = round(output_pixels * (class_map_bytes_per_pixel + probability_bytes * 4 / 3))
    kinds = 1 + (probabilities != "none")
    input_pixels = tiles * tile_size**2
    return Work(
        job="prediction",
        unit="tile",
        units=tiles,
        pixels_per_unit=tile_size**2,
        bands=bands,
        bytes_read=input_pixels * bands * measured.FLOAT_BYTES,
        bytes_written=written,
        objects_written=(tiles * kinds if per_tile_files else kinds) + kinds + 2,  # + VRTs, PNG, summary
        shuffle_bytes=tiles * 2 * 2 * tile_bytes,  # spread over workers, then gathered for the mosaic
        work_items=max(1, tiles),
        cpu_units=input_pixels * (8 if tta else 1),
        throughput=measured.PREDICT,
        details={
            "output_pixels": output_pixels,
            "tta": tta,
            "probabilities": probabilities,
            **dict(details or {}),
        },
    )


# --- Earth Engine ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Requests:
    """Earth Engine requests and the time the project's quota allows for them on `workers` workers."""

    by_kind: Mapping[str, int]  # e.g. {"computePixels": 2000, "stratifiedSample": 4}
    per_worker: int  # requests a worker process keeps in flight (its share of --max-requests)
    ceiling: int  # requests in flight the project answers at once (more wait on 429 answers)
    per_minute: int  # the project's request rate quota
    seconds_per_request: float  # assumed time of one request
    workers: int = 1
    source: str = EE_QUOTA_SOURCE

    @property
    def count(self) -> int:
        return sum(self.by_kind.values())

    @property
    def concurrency(self) -> int:
        """Requests in flight across the job: each worker's share, at most the ceiling."""
        return min(self.per_worker * self.workers, self.ceiling)

    @property
    def rate_per_s(self) -> float:
        """Requests a second: the concurrency over a request's time, at most the quota's rate."""
        return ee_rate(self.concurrency, self.per_minute, self.seconds_per_request)

    @property
    def seconds(self) -> float:
        return quota_seconds(self.count, self.rate_per_s)

    def on(self, workers: int) -> Requests:
        """The same requests sent by `workers` worker processes."""
        return dataclasses.replace(self, workers=workers)

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "by_kind": dict(self.by_kind),
            "per_worker": self.per_worker,
            "workers": self.workers,
            "concurrency": self.concurrency,
            "per_minute": self.per_minute,
            "seconds_per_request": self.seconds_per_request,
            "rate_per_s": self.rate_per_s,
            "seconds": self.seconds,
            "quota_source": self.source,
        }


def ee_rate(concurrency: int, per_minute: int, seconds_per_request: float) -> float:
    """Requests a second that `concurrency` requests in flight sustain, each taking
    `seconds_per_request`, capped by the quota of `per_minute` requests a minute."""
    if concurrency < 1 or per_minute < 1 or not seconds_per_request > 0:
        raise PlanError(
            "Earth Engine's concurrency and requests per minute must be at least 1 and a request's time "
            f"positive, got {concurrency}, {per_minute} and {seconds_per_request}"
        )
    return min(concurrency / seconds_per_request, per_minute / 60)


def quota_seconds(requests: int, rate_per_s: float) -> float:
    """Seconds that `requests` take at `rate_per_s` (0 for none)."""
    return requests / rate_per_s if requests else 0.0


def share_of(max_requests: int, processes: int) -> int:
    """A worker process's share of a job's `max_requests` shared by `processes` processes: at least one
    (transforms/io/earthengine/client.py requests_per_process)."""
    return max(1, max_requests // max(1, processes))


# --- workers and time ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Compute:
    """Workers, time and worker-hours of a Dataflow run."""

    cpu_s: float  # CPU time of the work (the measured throughput)
    machine: Machine
    disk_gb: int
    utilization: float  # share of a worker's cores the work keeps busy (measured)
    max_workers: int
    workers: int
    startup_s: float
    compute_s: float  # wall time of the work on `workers` workers
    quota_s: float  # time Earth Engine's quota allows the requests
    limited_by: str  # what sets `workers`: "max_num_workers", "work" or "start-up"

    @property
    def wall_s(self) -> float:
        return self.startup_s + max(self.compute_s, self.quota_s)

    @property
    def bound(self) -> str:
        """Which takes longer: the "compute" or the Earth Engine "quota"."""
        return "quota" if self.quota_s > self.compute_s else "compute"

    @property
    def worker_hours(self) -> float:
        return self.workers * self.wall_s / 3600

    @property
    def vcpu_hours(self) -> float:
        return self.worker_hours * self.machine.vcpus

    def to_json(self) -> dict[str, Any]:
        return {
            "cpu_hours": self.cpu_s / 3600,
            "machine_type": self.machine.name,
            "vcpus_per_worker": self.machine.vcpus,
            "memory_gb_per_worker": self.machine.memory_gb,
            "disk_gb_per_worker": self.disk_gb,
            "utilization": self.utilization,
            "max_workers": self.max_workers,
            "workers": self.workers,
            "workers_limited_by": self.limited_by,
            "startup_s": self.startup_s,
            "compute_s": self.compute_s,
            "quota_s": self.quota_s,
            "wall_s": self.wall_s,
            "bound": self.bound,
            "worker_hours": self.worker_hours,
            "vcpu_hours": self.vcpu_hours,
        }


def choose_workers(
    cpu_s: float,
    vcpus: int,
    utilization: float,
    max_workers: int,
    work_items: int,
    startup_s: float = WORKER_STARTUP_S,
    *,
    earthengine: bool = False,
) -> tuple[int, str]:
    """(workers, what limited them): as many as `max_workers` allows, but no more than

    - the work has items for (each worker needs at least one per vCPU),
    - keep busy for at least their own start-up time (a worker that starts costs `startup_s`), unless
      the job reads from Earth Engine: its requests in flight are shared out by --max_num_workers, so it
      reaches its concurrency only with all of them.
    """
    if max_workers < 1 or vcpus < 1 or not 0 < utilization <= 1:
        raise PlanError(
            f"a plan needs at least one worker of one vCPU and a utilization in (0, 1], got {max_workers}, "
            f"{vcpus} and {utilization}"
        )
    limits = {"max_num_workers": max_workers, "work": max(1, math.ceil(work_items / vcpus))}
    if not earthengine and startup_s > 0:
        busy_s = cpu_s / (vcpus * utilization)  # one worker's wall time for the whole work
        limits["start-up"] = max(1, math.floor(busy_s / startup_s))
    reason = min(limits, key=lambda k: limits[k])
    return limits[reason], reason


def plan_compute(
    work: Work,
    machine: Machine,
    *,
    max_workers: int | None,
    disk_gb: int | None,
    requests: Requests | None,
    utilization: float,
    startup_s: float = WORKER_STARTUP_S,
) -> tuple[Compute, Requests | None]:
    """The workers and time of `work` on Dataflow workers of `machine`, and its `requests` as those
    workers send them."""
    cpu_s = work.throughput.cpu_s(work.cpu_units)
    limit = max_workers or DATAFLOW_MAX_WORKERS
    workers, reason = choose_workers(
        cpu_s, machine.vcpus, utilization, limit, work.work_items, startup_s, earthengine=requests is not None
    )
    sent = requests.on(workers) if requests else None
    compute = Compute(
        cpu_s=cpu_s,
        machine=machine,
        disk_gb=disk_gb or DEFAULT_DISK_GB,
        utilization=utilization,
        max_workers=limit,
        workers=workers,
        startup_s=startup_s,
        compute_s=cpu_s / (workers * machine.vcpus * utilization),
        quota_s=sent.seconds if sent else 0.0,
        limited_by=reason,
    )
    return compute, sent


# --- cost ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cost:
    """USD of the run and of keeping its output."""

    vcpu: float
    memory: float
    disk: float
    shuffle: float
    writes: float  # Cloud Storage object writes
    storage_gb: float
    storage_month: float  # Standard storage of the output, per month
    prices: PriceTable = PRICES

    @property
    def dataflow(self) -> float:
        return self.vcpu + self.memory + self.disk + self.shuffle

    @property
    def job(self) -> float:
        """What running the job costs, with its first month of storage: what --budget is held to."""
        return self.dataflow + self.writes + self.storage_month

    def to_json(self) -> dict[str, Any]:
        return {
            "dataflow_usd": self.dataflow,
            "vcpu_usd": self.vcpu,
            "memory_usd": self.memory,
            "disk_usd": self.disk,
            "shuffle_usd": self.shuffle,
            "storage_writes_usd": self.writes,
            "storage_gb": self.storage_gb,
            "storage_usd_per_month": self.storage_month,
            "job_usd": self.job,
            "prices": self.prices.describe(),
        }


def plan_cost(work: Work, compute: Compute, *, ssd: bool = False, prices: PriceTable = PRICES) -> Cost:
    """Dataflow's charges for `compute` and Cloud Storage's for `work`'s output."""
    hours = compute.worker_hours
    disk_rate = prices.ssd_gb_hour if ssd else prices.hdd_gb_hour
    storage_gb = work.bytes_written / GB
    return Cost(
        vcpu=hours * compute.machine.vcpus * prices.vcpu_hour,
        memory=hours * compute.machine.memory_gb * prices.memory_gb_hour,
        disk=hours * compute.disk_gb * disk_rate,
        shuffle=work.shuffle_bytes / GB * prices.shuffle_gb,
        writes=work.objects_written / 1000 * prices.class_a_per_1000,
        storage_gb=storage_gb,
        storage_month=storage_gb * prices.storage_gb_month,
        prices=prices,
    )


# --- the plan ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything the plan says about a job, printable and JSON-serialisable."""

    work: Work
    requests: Requests | None  # None: the job reads no Earth Engine pixels
    compute: Compute
    cost: Cost
    runner: str
    assumptions: Sequence[str] = ()
    local: Mapping[str, Any] | None = None  # a run on this machine: workers, CPUs, seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "terrabeam-plan/1",
            "runner": self.runner,
            "work": self.work.to_json(),
            "throughput": {
                "unit": self.work.throughput.unit,
                "units": self.work.cpu_units,
                "cpu_s_per_unit": self.work.throughput.cpu_s_per_unit,
                "fixed_cpu_s": self.work.throughput.fixed_cpu_s,
                "source": self.work.throughput.source,
                "measured": self.work.throughput.measured,
            },
            "earthengine": self.requests.to_json() if self.requests else None,
            "dataflow": self.compute.to_json(),
            "cost": self.cost.to_json(),
            "local": dict(self.local) if self.local else None,
            "assumptions": list(self.assumptions),
        }


def make_plan(
    work: Work,
    requests: Requests | None,
    machine: Machine,
    *,
    runner: str,
    max_workers: int | None,
    disk_gb: int | None = None,
    ssd: bool = False,
    utilization: float,
    assumptions: Sequence[str] = (),
    local: Mapping[str, Any] | None = None,
    startup_s: float = WORKER_STARTUP_S,
    prices: PriceTable = PRICES,
) -> Plan:
    """The plan of `work` with its Earth Engine `requests`, on Dataflow workers of `machine`."""
    compute, sent = plan_compute(
        work,
        machine,
        max_workers=max_workers,
        disk_gb=disk_gb,
        requests=requests,
        utilization=utilization,
        startup_s=startup_s,
    )
    cost = plan_cost(work, compute, ssd=ssd, prices=prices)
    return Plan(work, sent, compute, cost, runner, tuple(assumptions), local)


def local_seconds(cpu_s: float, cores: int, utilization: float) -> float:
    """Wall time of `cpu_s` of work on `cores` cores of this machine, each busy `utilization` of the time."""
    return cpu_s / (max(1, cores) * utilization)
