"""Every local core: the default command-line run (a worker pool) against one worker.

    python -m benchmarks.local_cores [--rounds 2] [--points-per-class 300] [--jobs extract,predict]
                                     [--output benchmarks/results/local_cores.json]

The measurements run the same work through the real command line in a fresh process each
(`python -m pipelines.extract ...` / `python -m pipelines.predict ...`, wall time from start to exit,
start-up included): the default run with no --direct_* option, the baseline with
`--direct_num_workers 1` and, for prediction, also one worker process per CPU; alternating over
--rounds rounds, each keeps its best round, so all are taken under the same (shared) load. Jobs:

- extraction of the demo scene with --points-per-class 300 (about 7,000 patches) and with the default
  100 (about 2,400);
- prediction of the 2048² demo scene with the default U-Net (untrained weights: speed does not depend on
  them), 256-pixel tiles, overlap 64.

While a job runs, the resident memory of its process and of every worker process it starts is sampled
from /proc, so the report gives the peak memory per worker process (what the --max-memory guard
estimates). The goal is a speed-up of at least 1.6x on 2 CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.machine import machine

RESULTS = Path(__file__).resolve().parent / "results"
GOAL = 1.6


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc/<pid>/task/*/children)."""
    found, pending = [], [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            found += kids
            pending += kids
    return found


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _kind(cmdline: str) -> str:
    if cmdline.startswith(("/bin/sh", "sh ")):
        return "shell"  # Beam starts each worker through `sh -c`
    return "worker" if "sdk_worker_main" in cmdline else "job"


def timed(cmd: list[str]) -> dict:
    """Run `cmd`; wall time, CPU time of it and its children, and peak RSS of each of its processes."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
    }
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, float] = {}
    kinds: dict[int, str] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for pid in [proc.pid, *_children(proc.pid)]:
                rss = _rss_mb(pid)
                if rss is not None:
                    peaks[pid] = max(peaks.get(pid, 0.0), rss)
                    kinds.setdefault(pid, _kind(_cmdline(pid)))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    after = os.times()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    workers = [round(peaks[p]) for p in peaks if kinds.get(p) == "worker"]
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(
            (after.children_user - before.children_user) + (after.children_system - before.children_system), 2
        ),
        "job_process_peak_rss_mb": round(peaks.get(proc.pid, 0.0)),
        "worker_processes": len(workers),
        "worker_peak_rss_mb": sorted(workers),
        "stdout_tail": out.strip().splitlines()[-1:] if out.strip() else [],
    }


def compare(name: str, base_cmd: list[str], rounds: int, work: str, variants: dict[str, list[str]]) -> dict:
    """The default run against other worker settings on the same command, alternating; best round of
    each. The speed-up is one worker's time over the default's."""
    runs: dict[str, list[dict]] = {"default": [], **{kind: [] for kind in variants}}
    extra = {"default": [], **variants}
    for i in range(rounds):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        for kind in order:
            runs[kind].append(timed(base_cmd + extra[kind]))
            print(f"{name} {kind} round {i + 1}: {runs[kind][-1]['wall_s']} s", file=sys.stderr, flush=True)
    best = {kind: min(r, key=lambda f: f["wall_s"]) for kind, r in runs.items()}
    speedup = best["one_worker"]["wall_s"] / best["default"]["wall_s"]
    return {
        "work": work,
        "command": " ".join(base_cmd[1:]),
        **{kind: {**best[kind], "options": " ".join(extra[kind]) or "(none)"} for kind in runs},
        "speedup": round(speedup, 3),
        f"goal_{GOAL}x": speedup >= GOAL,
        "speedups_vs_one_worker": {
            kind: round(best["one_worker"]["wall_s"] / best[kind]["wall_s"], 3) for kind in runs
        },
        "rounds": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="Rounds of each measurement (best kept).")
    parser.add_argument("--points-per-class", type=int, default=300, help="The larger extraction's points.")
    parser.add_argument("--jobs", default="extract,extract_default,predict", help="Which jobs to measure.")
    parser.add_argument("--output", type=Path, default=RESULTS / "local_cores.json")
    args = parser.parse_args(argv)
    from transforms.runtime.command import quiet_start

    quiet_start([])  # exporting the benchmark's model loads TensorFlow here too
    from benchmarks.predict_throughput import export_unet
    from pipelines.demo.scene import ensure_demo_scene
    from pipelines.options import available_cpus

    demo = ensure_demo_scene()
    cpus = available_cpus()
    one = {"one_worker": ["--direct_num_workers", "1"]}
    load_before = os.getloadavg()
    results = {}
    jobs = args.jobs.split(",")
    with tempfile.TemporaryDirectory(prefix="terrabeam-bench-") as tmp:
        tmp = Path(tmp)
        py = [sys.executable, "-m"]
        if "extract" in jobs:
            cmd = py + ["pipelines.extract", "--output", str(tmp / "x"), "--overwrite"]
            cmd += ["--points-per-class", str(args.points_per_class)]
            results["extract"] = compare(
                "extract", cmd, args.rounds, f"demo scene, --points-per-class {args.points_per_class}", one
            )
        if "extract_default" in jobs:
            cmd = py + ["pipelines.extract", "--output", str(tmp / "xd"), "--overwrite"]
            results["extract_default"] = compare(
                "extract_default",
                cmd,
                args.rounds,
                "demo scene, default options (--points-per-class 100)",
                one,
            )
        if "predict" in jobs:
            model = export_unet(demo.image, tmp / "model")
            cmd = py + ["pipelines.predict", "--model", model, "--output", str(tmp / "p"), "--overwrite"]
            pool = ["--direct_num_workers", str(cpus), "--direct_running_mode", "multi_processing"]
            results["predict"] = compare(
                "predict",
                cmd,
                args.rounds,
                "2048x2048 demo scene, default U-Net, 256-px tiles, overlap 64",
                {**one, "worker_per_cpu": pool},
            )
    report = {
        "benchmark": "local_cores",
        "machine": {
            **machine(),
            "cpus_available": available_cpus(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "summary": {
            name: {
                "default_s": r["default"]["wall_s"],
                "one_worker_s": r["one_worker"]["wall_s"],
                "speedup": r["speedup"],
                "default_workers": r["default"]["worker_processes"] or 1,
                "worker_peak_rss_mb": max(
                    [m for kind in r["speedups_vs_one_worker"] for m in r[kind]["worker_peak_rss_mb"]] or [0]
                ),
                "speedups_vs_one_worker": r["speedups_vs_one_worker"],
                f"goal_{GOAL}x": r[f"goal_{GOAL}x"],
            }
            for name, r in results.items()
        },
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
