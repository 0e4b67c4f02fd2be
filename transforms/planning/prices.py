"""What a Dataflow batch job and its output cost: the dated price table, the machine types, and the
Earth Engine quotas the plan assumes.

Prices change: every figure names its source and the date it was taken, and the plan prints them.
"""

from __future__ import annotations

import dataclasses
import re

from transforms.planning.errors import PlanError

# Dataflow (not Dataflow Prime) batch workers, region us-central1 (Iowa), USD. Source:
# https://cloud.google.com/dataflow/pricing ("Dataflow compute resources": worker CPU and memory for
# batch jobs, Dataflow Shuffle data processed; Persistent Disk), as quoted for us-central1 in December
# 2026. Dataflow bills workers per second at one rate per vCPU and per GB of memory, whatever the
# machine family; Persistent Disk per GB-hour; Dataflow Shuffle (the default for batch jobs, behind
# GroupByKey, Combine and Reshuffle) per GB read and written. Other regions cost up to about a third
# more.
DATAFLOW_PRICE_SOURCE = "https://cloud.google.com/dataflow/pricing"
# Cloud Storage Standard storage in a us-central1 bucket, and Class A operations (object writes).
# Source: https://cloud.google.com/storage/pricing (data storage table; operations as in its
# pricing examples: $0.005 per 1,000 Class A operations), as published in December 2026.
STORAGE_PRICE_SOURCE = "https://cloud.google.com/storage/pricing"
PRICES_AS_OF = "2026-12"
PRICE_REGION = "us-central1"


@dataclasses.dataclass(frozen=True)
class PriceTable:
    """USD prices of what a batch job uses."""

    vcpu_hour: float = 0.056
    memory_gb_hour: float = 0.003557
    hdd_gb_hour: float = 0.000054  # Persistent Disk, standard (the default worker disk)
    ssd_gb_hour: float = 0.000298  # --worker_disk_type .../pd-ssd
    shuffle_gb: float = 0.011  # Dataflow Shuffle data processed, batch
    storage_gb_month: float = 0.020  # Cloud Storage Standard, regional bucket
    class_a_per_1000: float = 0.005  # Cloud Storage object writes

    def describe(self) -> str:
        return (
            f"prices of {PRICES_AS_OF}, {PRICE_REGION}: Dataflow batch ${self.vcpu_hour}/vCPU-hour, "
            f"${self.memory_gb_hour}/GB-hour memory, ${self.hdd_gb_hour}/GB-hour standard disk "
            f"(${self.ssd_gb_hour} SSD), Shuffle ${self.shuffle_gb}/GB ({DATAFLOW_PRICE_SOURCE}); Cloud "
            f"Storage ${self.storage_gb_month}/GB-month Standard, ${self.class_a_per_1000} per 1,000 "
            f"writes ({STORAGE_PRICE_SOURCE})"
        )


PRICES = PriceTable()

# Dataflow's defaults for a batch job: the machine type when --machine_type is not given and the boot
# disk of a worker when the job uses Dataflow Shuffle (https://cloud.google.com/dataflow/docs/
# request-quotas, "For batch jobs, the default machine type is n1-standard-1";
# https://cloud.google.com/dataflow/docs/shuffle-for-batch: "the default boot disk size ... is 25 GB").
DEFAULT_MACHINE_TYPE = "n1-standard-1"
DEFAULT_DISK_GB = 25
# Workers a batch job may scale to when --max_num_workers is not given (Dataflow's per-job limit of
# Compute Engine instances, https://cloud.google.com/dataflow/docs/request-quotas).
DATAFLOW_MAX_WORKERS = 1000
# Seconds from a worker's start to its first element: VM boot, container and package install. Billed
# like the rest. An assumption of the plan (Dataflow does not publish a figure; not measured here).
WORKER_STARTUP_S = 240.0

# Earth Engine's default quotas per Cloud project (https://developers.google.com/earth-engine/guides/usage,
# "Adjustable quota limits", as published in December 2026): 40 concurrent requests on the standard
# and on the high-volume endpoint, 100 requests a second (6000 a minute).
EE_QUOTA_SOURCE = "https://developers.google.com/earth-engine/guides/usage"
EE_CONCURRENT_REQUESTS = 40
EE_REQUESTS_PER_MINUTE = 6000
# Seconds one computePixels request of a patch or tile takes, end to end. An assumption (not measured
# here: the tests run against a local fake); --ee-request-seconds replaces it.
EE_REQUEST_SECONDS = 1.0

# Memory per vCPU of the predefined machine types by family and kind (GB), for the families Dataflow
# runs on (https://cloud.google.com/compute/docs/general-purpose-machines).
_GB_PER_VCPU = {
    ("n1", "standard"): 3.75,
    ("n1", "highmem"): 6.5,
    ("n1", "highcpu"): 0.9,
    ("n2", "standard"): 4.0,
    ("n2", "highmem"): 8.0,
    ("n2", "highcpu"): 1.0,
    ("n2d", "standard"): 4.0,
    ("n2d", "highmem"): 8.0,
    ("n2d", "highcpu"): 1.0,
    ("e2", "standard"): 4.0,
    ("e2", "highmem"): 8.0,
    ("e2", "highcpu"): 1.0,
    ("c2", "standard"): 4.0,
}
_PREDEFINED = re.compile(r"^(?P<family>[a-z0-9]+)-(?P<kind>standard|highmem|highcpu)-(?P<vcpus>\d+)$")
# custom-VCPUS-MEMORY_MB, with an optional family prefix (n2-custom-4-16384) and -ext suffix.
_CUSTOM = re.compile(r"^(?:[a-z0-9]+-)?custom-(?P<vcpus>\d+)-(?P<mb>\d+)(?:-ext)?$")


@dataclasses.dataclass(frozen=True)
class Machine:
    """A worker machine type: its vCPUs and memory."""

    name: str
    vcpus: int
    memory_gb: float


def machine(name: str) -> Machine:
    """The vCPUs and memory of a Compute Engine machine type name; PlanError for one the table lacks."""
    text = name.strip().lower().rsplit("/", 1)[-1]  # a full URL ends in the type's name
    match = _PREDEFINED.match(text)
    if match and (match["family"], match["kind"]) in _GB_PER_VCPU:
        vcpus = int(match["vcpus"])
        return Machine(text, vcpus, vcpus * _GB_PER_VCPU[(match["family"], match["kind"])])
    match = _CUSTOM.match(text)
    if match:
        return Machine(text, int(match["vcpus"]), int(match["mb"]) / 1024)
    families = sorted({f"{family}-{kind}-N" for family, kind in _GB_PER_VCPU})
    raise PlanError(
        f"--machine_type {name!r}: the plan knows the machine types {', '.join(families)} and "
        "custom-VCPUS-MEMORY_MB (e.g. custom-4-16384); name one of those."
    )
