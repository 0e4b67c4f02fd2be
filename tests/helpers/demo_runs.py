"""The demo scene's extraction, run once per test session in this process with its CPU time measured,
for the tests that check the demo's output and the plan's estimate of the same work."""

from __future__ import annotations

import dataclasses
import resource
from pathlib import Path

# Enough points that the per-patch work, not the job's start, is most of the CPU time (~700 points).
DEMO_POINTS_PER_CLASS = 30


@dataclasses.dataclass(frozen=True)
class DemoExtraction:
    output: str
    options: tuple[str, ...]  # the job's command line without --output
    cpu_s: float  # CPU time of the run (this process and any it started), the demo scene already there


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_demo_extraction(folder: Path) -> DemoExtraction:
    """Generate the demo scene in `folder`, then extract from it in one process (its CPU time is the
    job's; Beam and the job's modules are loaded before the clock starts, as in a long-running worker)."""
    import apache_beam  # noqa: F401

    import transforms.extract  # noqa: F401
    from pipelines.demo.scene import ensure_demo_scene
    from pipelines.extract import main

    cache = folder / "cache"
    ensure_demo_scene(cache)
    options = (
        "--demo-cache",
        str(cache),
        "--points-per-class",
        str(DEMO_POINTS_PER_CLASS),
        "--direct_num_workers",
        "1",
    )
    output = folder / "data"
    start = cpu_seconds()
    status = main([*options, "--output", str(output)])
    cpu_s = cpu_seconds() - start
    if status != 0:
        raise RuntimeError(f"the demo extraction failed with exit status {status}")
    return DemoExtraction(str(output), options, cpu_s)
