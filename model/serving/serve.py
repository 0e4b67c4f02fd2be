"""An HTTP prediction server for a model folder, speaking Vertex AI's and Earth Engine's wire formats.

    python -m model.serving.serve --model <model_dir or gs://...> [--port 8080]

It follows Vertex AI's custom-container contract, so the same image runs on Vertex AI (where
`ee.Model.fromVertexAi(...).predictImage(...)` calls it) and on Cloud Run:

- it listens on 0.0.0.0:`AIP_HTTP_PORT` (Cloud Run's `PORT`, else 8080);
- `GET AIP_HEALTH_ROUTE` (default `/health`) answers 200 only once the model is loaded, 503 before;
- `POST AIP_PREDICT_ROUTE` (default `/predict`) takes `{"instances": [...]}` and answers
  `{"predictions": [...]}`, one prediction per instance, in the same form as the instance:

  =========================  =======================================  ===================================
  form                       instance                                 prediction
  =========================  =======================================  ===================================
  SERIALIZED_TF_TENSORS      `{"array": "<web-safe Base64 of a        `{"water": "<same encoding, (H, W)>",
  (Earth Engine's default)   serialized TensorProto (H, W, bands)>"}` "trees": "...", ...}` (per class)
  NAMED_ARRAYS               `{"array": [[[b1, b2, ...], ...], ...]}` `{"water": [[...]], "trees": ...}`
  ND_ARRAYS                  `[[[b1, b2, ...], ...], ...]`            `[[[p1, p2, ...], ...], ...]`
  =========================  =======================================  ===================================

  The input name (`array`, the one band of `image.toArray()`) and the output names (the
  `outputBands` of `earthengine.json`: one band per class, named after it) are those of the model
  folder's `eeified/` SavedModel, so the server is a drop-in replacement for hosting that SavedModel. TensorProtos of any pixel type Earth
  Engine sends are accepted (cast to float32, as the EE-ified model does); outputs are float32 and
  Base64 without padding, byte for byte what the EE-ified model returns.

All instances of a request that share a tile shape go to the model in one call (`saved_model/`,
decoding and encoding in numpy instead of the EE-ified graph's per-tile ops), off the event loop. A
body over `--max-request-bytes` gets 413, a malformed one 400 with `{"error": "<what is wrong>"}`;
either way the server keeps serving. Each answer carries a `Server-Timing` header (read, queue,
decode, model, encode, total; milliseconds) that shows where a request's time went.

This module is the command line; the server is `model.serving.server`, which needs the `[serve]`
extra and is imported only to serve, so `--help` works without it and a missing package is one
`error:` line that says what to install.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from model.errors import ModelError
from model.serving.contract import (
    DEFAULT_HEALTH_ROUTE,
    DEFAULT_MAX_CONCURRENT_REQUESTS,
    DEFAULT_PORT,
    DEFAULT_PREDICT_ROUTE,
    DEFAULT_THREADS,
    ENVELOPE_BYTES,
)
from transforms.runtime.command import CommandParser, quiet_start

# The packages of the `[serve]` extra (setup.py), which model.serving.server imports.
SERVE_EXTRA = ("starlette", "uvicorn", "pybase64", "orjson")
MISSING_EXTRA = (
    "the prediction server needs starlette, uvicorn, pybase64 and orjson: pip install 'terrabeam[serve]' "
    "(or `make install` in a checkout)."
)

__all__ = [
    "DEFAULT_HEALTH_ROUTE",
    "DEFAULT_MAX_CONCURRENT_REQUESTS",
    "DEFAULT_PORT",
    "DEFAULT_PREDICT_ROUTE",
    "DEFAULT_THREADS",
    "ENVELOPE_BYTES",
    "main",
    "parse_args",
]


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    env = os.environ if environ is None else environ
    parser = CommandParser(
        "model.serving.serve",
        "Serve a model folder over HTTP for Vertex AI, Cloud Run and ee.Model.fromVertexAi (Vertex AI's "
        "custom-container contract: health and prediction routes, AIP_* variables). Examples: docs/serving.md.",
        usage="%(prog)s --model MODEL_DIR [options]",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        metavar="MODEL_DIR",
        default=env.get("AIP_STORAGE_URI"),
        help="Model folder written by model.train (local or gs://). Default: $AIP_STORAGE_URI, where Vertex "
        "AI copies the model artifacts.",
    )
    http = parser.add_argument_group("HTTP (Vertex AI sets the AIP_* variables, Cloud Run sets PORT)")
    http.add_argument("--host", default="0.0.0.0", help="Address to listen on.")
    http.add_argument(
        "--port",
        type=int,
        default=int(env.get("AIP_HTTP_PORT") or env.get("PORT") or DEFAULT_PORT),
        help=f"Port (default: $AIP_HTTP_PORT, else $PORT, else {DEFAULT_PORT}).",
    )
    http.add_argument(
        "--health-route",
        metavar="ROUTE",
        default=env.get("AIP_HEALTH_ROUTE") or DEFAULT_HEALTH_ROUTE,
        help=f"Health route (default: $AIP_HEALTH_ROUTE, else {DEFAULT_HEALTH_ROUTE}).",
    )
    http.add_argument(
        "--predict-route",
        metavar="ROUTE",
        default=env.get("AIP_PREDICT_ROUTE") or DEFAULT_PREDICT_ROUTE,
        help=f"Prediction route (default: $AIP_PREDICT_ROUTE, else {DEFAULT_PREDICT_ROUTE}).",
    )
    http.add_argument("--access-log", action="store_true", help="Log every request.")
    limits = parser.add_argument_group("capacity")
    limits.add_argument(
        "--max-request-bytes",
        type=int,
        default=None,
        help="Largest request body; larger ones get 413 (default: the model's Earth Engine maxPayloadBytes, "
        f"at least Vertex AI's 1.5 MB, plus {ENVELOPE_BYTES} bytes of JSON).",
    )
    limits.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=DEFAULT_MAX_CONCURRENT_REQUESTS,
        help="Requests in progress beyond which the server answers 503.",
    )
    limits.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="Prediction threads.")
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("--model is required (or set AIP_STORAGE_URI).")
    for route in (args.health_route, args.predict_route):
        if not route.startswith("/"):
            parser.error(f"Routes must start with '/', got {route!r}.")
    if args.health_route == args.predict_route:
        parser.error("The health and prediction routes must differ.")
    if args.max_request_bytes is not None and args.max_request_bytes < 1:
        parser.error("--max-request-bytes must be positive.")
    if args.threads < 1 or args.max_concurrent_requests < 1:
        parser.error("--threads and --max-concurrent-requests must be positive.")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    quiet_start(argv)
    args = parse_args(argv)
    try:
        from model.serving import server
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in SERVE_EXTRA:
            raise
        print(f"error: {MISSING_EXTRA} ({e})", file=sys.stderr)
        return 2
    from model.export import load_model_metadata  # TensorFlow: only to serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server.tune_malloc()
    try:
        load_model_metadata(args.model)  # fail fast on a wrong path, before binding the port
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    error = server.serve_until_stopped(
        args.model,
        host=args.host,
        port=args.port,
        health_route=args.health_route,
        predict_route=args.predict_route,
        max_request_bytes=args.max_request_bytes,
        threads=args.threads,
        max_concurrent_requests=args.max_concurrent_requests,
        access_log=args.access_log,
    )
    if error is not None:
        print(f"error: the model could not be loaded: {error}", file=sys.stderr)
        return 1
    return 0


def __getattr__(name: str) -> Any:
    """The server's own names (`serve.Predictor`, `serve.create_app`, ...), which this module held before
    the command line and the server were split, loaded on first use (they need the [serve] extra)."""
    from model.serving import server

    try:
        return getattr(server, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


if __name__ == "__main__":
    sys.exit(main())
