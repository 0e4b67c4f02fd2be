"""Prediction server latency and throughput against the model's own predict, on the same tiles.

    python -m benchmarks.serve_latency [--tile 256 --bands 13 --classes 9 --requests 96 --concurrency 1,2]

Exports an untrained model of the default architecture (the weights do not change the cost), starts
`python -m model.serving.serve` in its own process on 127.0.0.1, and for each concurrency level measures, in
the same run:

- raw: the exported `saved_model/` serving signature called in this process, one tile per call, from
  `concurrency` threads, each tile lent to TensorFlow without a copy and the answer read in place
  (`transforms.runtime.tensor_memory`, as the server reads its answers);
- served: one Earth Engine request per tile (`{"instances": [{"array": <Base64 TensorProto>}]}`),
  POSTed over HTTP from `concurrency` threads; bodies are encoded before timing, answers are read
  whole (the first one is decoded and checked against the raw prediction). The server's
  `Server-Timing` header splits its side into reading, decoding, model, encoding and hand-offs.
  The client is the standard library's http.client, one kept-alive connection per thread: the
  lightest Python client, so that the figure is the server's and the transfer's, not a client
  library's (a 4.5 MB request and a 3 MB answer with no work behind them took 5.6 ms with it and
  12.0 ms with httpx on the 2-CPU machine of 2026-12-07, the medians of 40).

Raw and served calls run in alternating blocks (ABBA), so that other load on a shared machine hits
both alike. The overhead compares each served block with the raw block beside it: served / raw - 1
of the median latency and of the block's duration (the throughput), the median over the pairs; the
goal is ≤ 10 % with one client thread and ≤ 30 % with more. Pooled figures (all requests of a kind together) are reported as well. Figures go to
benchmarks/results/serve_latency.json.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.machine import machine
from transforms.runtime.tensor_memory import aligned_batch, lend_to_tensorflow, read_in_place

RESULTS = Path(__file__).resolve().parent / "results" / "serve_latency.json"
REPO = Path(__file__).resolve().parents[1]
GOAL_OVERHEAD = {1: 0.10}  # by client threads; GOAL_OVERHEAD_MORE for more threads
GOAL_OVERHEAD_MORE = 0.30


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serve_latency", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tile", type=int, default=256, help="Tile side in pixels (default %(default)s).")
    parser.add_argument("--bands", type=int, default=13, help="Bands (default %(default)s, Sentinel-2).")
    parser.add_argument(
        "--classes", type=int, default=9, help="Classes (default %(default)s, Dynamic World)."
    )
    parser.add_argument("--architecture", default="unet", help="Model architecture (default %(default)s).")
    parser.add_argument(
        "--requests", type=int, default=96, help="Requests per level and mode (default %(default)s)."
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=16,
        help="Rounds of one raw and one served block they are split in (default %(default)s).",
    )
    parser.add_argument(
        "--concurrency", default="1,2", help="Client threads, comma-separated (default %(default)s)."
    )
    parser.add_argument(
        "--server-threads", type=int, default=None, help="The server's --threads (default: its own default)."
    )
    parser.add_argument("--output", default=str(RESULTS), help="Where to write the figures (JSON).")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    if min(args.tile, args.bands, args.requests, args.rounds, *args.concurrency) < 1 or args.classes < 2:
        parser.error("sizes, counts and concurrency must be positive (and at least 2 classes).")
    return args


def export_benchmark_model(folder: str, args: argparse.Namespace) -> None:
    from model.architecture import build_model
    from model.export import export_model

    keras_model = build_model(args.architecture, args.bands, args.classes)
    metadata = {
        "mode": "segmentation",
        "bands": [f"B{i + 1}" for i in range(args.bands)],
        "classes": [f"class{i}" for i in range(args.classes)],
        "patch_size": args.tile,
        "crs": "EPSG:32632",
        "scale": 10.0,
    }
    export_model(keras_model, folder, metadata)


def timed(calls: Callable[[int], None], count: int, concurrency: int) -> tuple[list[float], float]:
    """Latencies (s) of `count` calls from `concurrency` threads, and the wall time of them all."""
    latencies = [0.0] * count

    def one(i: int) -> None:
        start = time.perf_counter()
        calls(i)
        latencies[i] = time.perf_counter() - start

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(one, range(count), timeout=600))
    return latencies, time.perf_counter() - start


def summary(blocks: list[tuple[list[float], float]]) -> dict[str, float]:
    """Latency percentiles over all requests; throughput overall and as the median over blocks.

    The median block is robust to a burst of other work on a shared machine stalling one block.
    """
    ms = np.array([x for latencies, _ in blocks for x in latencies]) * 1000
    return {
        "requests": len(ms),
        "requests_per_s": round(len(ms) / sum(wall for _, wall in blocks), 3),
        "requests_per_s_median_block": round(float(np.median([len(lat) / wall for lat, wall in blocks])), 3),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def parse_server_timing(header: str) -> dict[str, float]:
    """`read;dur=1.2, model;dur=80.1, ...` -> {"read": 1.2, "model": 80.1, ...} (milliseconds)."""
    timings = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            timings[name] = float(duration)
    return timings


def measure_level(
    raw: Callable[[int], object],
    served: Callable[[int], None],
    server_timings: list[dict[str, float]],
    args: argparse.Namespace,
    concurrency: int,
) -> dict:
    """Alternate blocks of raw and served calls (ABBA order) so that drifting load hits both alike."""
    block = max(concurrency, args.requests // args.rounds)
    measured: dict[str, list[tuple[list[float], float]]] = {"raw": [], "served": []}
    server_timings.clear()
    for round_ in range(args.rounds):
        order = ("raw", "served") if round_ % 2 == 0 else ("served", "raw")
        for name in order:
            measured[name].append(timed(raw if name == "raw" else served, block, concurrency))
    level: dict = {"concurrency": concurrency}
    for name, blocks in measured.items():
        level[name] = summary(blocks)
    steps = ("read", "queue", "decode", "model", "encode", "total")
    inside = {key: round(float(np.median([t[key] for t in server_timings])), 2) for key in steps}
    # Thread hand-offs: what `total` holds besides the named steps.
    inside["handoff"] = round(
        float(np.median([t["total"] - sum(t[key] for key in steps[:-1]) for t in server_timings])), 2
    )
    inside["all_but_model"] = round(float(np.median([t["total"] - t["model"] for t in server_timings])), 2)
    level["served"]["server_timing_p50_ms"] = inside
    # Each served block against the raw block next to it (same moment, same machine load), the
    # median over the rounds: robust to the load of a shared machine changing between rounds.
    pairs = list(zip(measured["raw"], measured["served"]))
    level["overhead"] = {
        "p50": round(float(np.median([np.median(s) / np.median(r) for (r, _), (s, _) in pairs])) - 1, 3),
        "throughput": round(float(np.median([ws / wr for (_, wr), (_, ws) in pairs])) - 1, 3),
        "pooled_p50": round(level["served"]["p50_ms"] / level["raw"]["p50_ms"] - 1, 3),
        "pooled_p99": round(level["served"]["p99_ms"] / level["raw"]["p99_ms"] - 1, 3),
        "pooled_throughput": round(level["raw"]["requests_per_s"] / level["served"]["requests_per_s"] - 1, 3),
    }
    goal = GOAL_OVERHEAD.get(concurrency, GOAL_OVERHEAD_MORE)
    level["goal"] = f"overhead <= {goal:.0%}"
    level["within_goal"] = max(level["overhead"]["p50"], level["overhead"]["throughput"]) <= goal
    return level


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from model.serving.serve import DEFAULT_THREADS, decode_tensor, tune_malloc, wait_until_ready

    tune_malloc()  # as the server does, so that both sides allocate alike

    rng = np.random.default_rng(0)
    tiles = rng.normal(1500, 500, (args.requests, args.tile, args.tile, args.bands)).astype(np.float32)
    bodies = [
        json.dumps(
            {
                "instances": [
                    {"array": base64.urlsafe_b64encode(tf.make_tensor_proto(t).SerializeToString()).decode()}
                ]
            }
        ).encode()
        for t in tiles
    ]
    results: dict = {
        "benchmark": "serve_latency",
        "machine": {
            **machine(),
            "tensorflow": tf.__version__,
            "note": "CPU shared with other work; compare raw and served figures of the same run only",
        },
        "settings": {
            "tile": [args.tile, args.tile, args.bands],
            "classes": args.classes,
            "architecture": args.architecture,
            "tiles_per_request": 1,
            "server_threads": args.server_threads or DEFAULT_THREADS,
            "request_bytes": len(bodies[0]),
            "requests_per_level_and_mode": args.requests,
            "rounds": args.rounds,
        },
        "goal": f"serving overhead <= {GOAL_OVERHEAD[1]:.0%} at one client thread, <= "
        f"{GOAL_OVERHEAD_MORE:.0%} at more",
        "levels": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        model_dir = str(Path(folder) / "model")
        export_benchmark_model(model_dir, args)
        signature = tf.saved_model.load(str(Path(model_dir) / "saved_model")).signatures["serving_default"]
        # The model at its fastest: each tile already in memory TensorFlow can use without a copy.
        lendable = [aligned_batch([tile]) for tile in tiles]

        def raw(i: int) -> np.ndarray:
            return read_in_place(signature(image=lend_to_tensorflow(lendable[i]))["probabilities"])

        raw(0)  # first call outside the timing, as the server's warm-up
        port = free_port()
        command = [sys.executable, "-m", "model.serving.serve", "--model", model_dir, "--host", "127.0.0.1"]
        command += ["--port", str(port), "--max-request-bytes", str(2 * len(bodies[0]))]
        if args.server_threads:
            command += ["--threads", str(args.server_threads)]
        server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until_ready(url, timeout=300)
            idle: queue.SimpleQueue[http.client.HTTPConnection] = queue.SimpleQueue()
            connections: list[http.client.HTTPConnection] = []

            def post(body: bytes) -> tuple[int, str, bytes]:
                """(status, Server-Timing header, answer) on a kept-alive connection of its own."""
                try:
                    connection = idle.get_nowait()
                except queue.Empty:  # as many connections as client threads, no more
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                    connections.append(connection)
                try:
                    connection.request(
                        "POST", "/predict", body=body, headers={"content-type": "application/json"}
                    )
                    response = connection.getresponse()
                    return response.status, response.getheader("server-timing", ""), response.read()
                finally:
                    idle.put(connection)

            status, _, answer_bytes = post(bodies[0])
            if status != 200:
                raise RuntimeError(f"the first request: {status} {answer_bytes[:200]!r}")
            answer = json.loads(answer_bytes)["predictions"][0]  # one (H, W) band per class, in order
            served_first = np.stack([decode_tensor(answer[name]) for name in answer], axis=-1)
            np.testing.assert_allclose(served_first, raw(0)[0], rtol=1e-4, atol=1e-5)

            server_timings: list[dict[str, float]] = []

            def served(i: int) -> None:
                status, timing, answer = post(bodies[i])
                if status != 200:
                    raise RuntimeError(f"request {i}: {status} {answer[:200]!r}")
                server_timings.append(parse_server_timing(timing))

            try:
                for concurrency in args.concurrency:
                    level = measure_level(raw, served, server_timings, args, concurrency)
                    results["levels"].append(level)
                    print(json.dumps(level), flush=True)
            finally:
                for connection in connections:
                    connection.close()
        finally:
            server.terminate()
            server.wait(timeout=60)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {output}")
    return results


if __name__ == "__main__":
    run()
