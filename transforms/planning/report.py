"""A plan as the lines a person reads: the work, Earth Engine, the workers and time, the cost, this
machine, the assumptions."""

from __future__ import annotations

import textwrap

from transforms.planning.plan import Plan
from transforms.planning.prices import DATAFLOW_PRICE_SOURCE, PRICE_REGION, PRICES_AS_OF, STORAGE_PRICE_SOURCE

# Plans print at this width whatever the terminal: they are pasted into docs and logs.
WIDTH = 108
# Joins a number to its unit so that wrapping never parts them (printed as a space).
NBSP = "\u00a0"


def size(n: float) -> str:
    """Bytes in decimal units (as Google bills them): 950 B, 12.3 MB, 4.1 TB."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f}{NBSP}{unit}"
    return f"{n:,.0f}{NBSP}B"


def duration(seconds: float) -> str:
    """7 s, 3 min 20 s, 2 h 05 min, 3.2 days."""
    if seconds < 60:
        text = f"{seconds:.0f} s"
    elif seconds < 3600:
        text = f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    elif seconds < 48 * 3600:
        text = f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    else:
        text = f"{seconds / 86400:.1f} days"
    return text.replace(" ", NBSP)


def usd(amount: float) -> str:
    """$0.004 for amounts under a cent, else $12.34."""
    if 0 < amount < 0.01:
        return f"${amount:.3f}"
    return f"${amount:,.2f}"


def pixels(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:,.2f}{NBSP}Gpx"
    return f"{n / 1e6:,.1f}{NBSP}Mpx"


def rate(value: float) -> str:
    """A price without float noise: 0.000054, 0.056, 0.02."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


def wrapped(head: str, text: str, width: int = WIDTH) -> list[str]:
    """`text` after `head`, wrapped to `width` with continuation lines indented under the text."""
    lines = textwrap.wrap(
        text, width, initial_indent=head, subsequent_indent=" " * len(head), break_on_hyphens=False
    )
    return [line.replace(NBSP, " ") for line in lines]


def plan_lines(plan: Plan, title: str, width: int = WIDTH) -> list[str]:
    """The plan under `title`: one topic per paragraph (work, Earth Engine, compute, Dataflow, cost,
    prices, this machine, assumptions), wrapped to `width`."""
    work, compute, cost = plan.work, plan.compute, plan.cost
    d = work.details
    side = round(work.pixels_per_unit**0.5)
    topics: list[tuple[str, str]] = []
    if work.job == "extraction":
        if d.get("points_exact"):
            points = f"{d['points']:,} points, sampled as the job samples them ({d['points_how']})"
        else:
            points = f"up to {d['points']:,} points ({d['points_how']})"
        guard = d.get("guard")
        fetched = f"{guard:,} in the split's guard band are not fetched, " if guard else ""
        written = (
            "gzip TFRecords (measured ratio)" if d["compression"] == "gzip" else "uncompressed TFRecords"
        )
        topics.append(
            (
                "work",
                f"{points}; {fetched}{work.units:,} patches of {side}×{side} px × {work.bands} bands "
                f"({pixels(work.pixels)}). Reads {size(work.bytes_read)} of pixels, writes "
                f"{size(work.bytes_written)} of {written}.",
            )
        )
    else:
        tta = ", each predicted 8 times (--tta)" if d["tta"] else ""
        topics.append(
            (
                "work",
                f"{work.units:,} tiles of {side}×{side} px × {work.bands} bands ({pixels(work.pixels)}){tta} "
                f"for a map of {pixels(d['output_pixels'])}. Reads {size(work.bytes_read)} of pixels, writes "
                f"{size(work.bytes_written)} ({d['size_how']}).",
            )
        )
    if plan.requests:
        r = plan.requests
        kinds = ", ".join(f"{n:,} {kind}" for kind, n in r.by_kind.items() if n)
        how = f" ({d['requests_how']})" if d.get("requests_how") else ""
        topics.append(
            (
                "Earth Engine",
                f"{r.count:,} requests: {kinds}{how}. {r.concurrency} in flight ({r.per_worker} per worker) at "
                f"{r.seconds_per_request:g}{NBSP}s each, at most {r.per_minute:,} a minute (the project's quota): "
                f"{r.rate_per_s:,.1f} a second, {duration(r.seconds)}.",
            )
        )
    else:
        topics.append(("Earth Engine", "no requests (local rasters)."))
    t = work.throughput
    cpu = (
        f"{compute.cpu_s:,.0f} CPU-seconds"
        if compute.cpu_s < 3600
        else f"{compute.cpu_s / 3600:,.1f} CPU-hours"
    )
    topics.append(("compute", f"{cpu} at {t.describe()}."))
    m = compute.machine
    pace = "the Earth Engine quota sets the pace" if compute.bound == "quota" else "compute sets the pace"
    topics.append(
        (
            "Dataflow",
            f"{compute.workers:,} {m.name} worker{'s' if compute.workers != 1 else ''} ({m.vcpus} vCPU, "
            f"{m.memory_gb:g} GB, {compute.disk_gb} GB disk; at most {compute.max_workers:,}, here set by "
            f"{compute.limited_by}): {duration(compute.startup_s)} start-up + "
            f"{duration(max(compute.compute_s, compute.quota_s))} ({pace}) = {duration(compute.wall_s)}, "
            f"{compute.worker_hours:,.2f} worker-hours.",
        )
    )
    topics.append(
        (
            "cost",
            f"{usd(cost.job)}: Dataflow {usd(cost.dataflow)} (vCPU {usd(cost.vcpu)}, memory {usd(cost.memory)}, "
            f"disk {usd(cost.disk)}, Shuffle {usd(cost.shuffle)}), Cloud Storage writes {usd(cost.writes)}, "
            f"and a month of storing the output's {size(cost.storage_gb * 1e9)}: {usd(cost.storage_month)} "
            "(each month after too).",
        )
    )
    p = cost.prices
    topics.append(
        (
            "prices",
            f"{PRICE_REGION}, {PRICES_AS_OF}: ${rate(p.vcpu_hour)}/vCPU-hour, ${rate(p.memory_gb_hour)}/GB-hour "
            f"memory, ${rate(p.hdd_gb_hour)}/GB-hour disk (${rate(p.ssd_gb_hour)} SSD), Shuffle "
            f"${rate(p.shuffle_gb)}/GB ({DATAFLOW_PRICE_SOURCE}); storage ${rate(p.storage_gb_month)}/GB-month, "
            f"${rate(p.class_a_per_1000)} per 1,000 writes ({STORAGE_PRICE_SOURCE}).",
        )
    )
    if plan.local:
        local = plan.local
        topics.append(
            (
                "this machine",
                f"{local['processes']} worker process{'es' if local['processes'] != 1 else ''} on "
                f"{local['cpus']} CPU{'s' if local['cpus'] != 1 else ''}: about {duration(local['seconds'])}.",
            )
        )
    head = max(len(name) for name, _ in topics) + 4
    lines = [title]
    for name, text in topics:
        lines += wrapped(f"  {name}:".ljust(head), text, width)
    if plan.assumptions:
        lines.append("  assumptions:")
        for assumption in plan.assumptions:
            lines += wrapped("    - ", assumption, width)
    return lines
