"""Open a prediction, or a change between two dates, on a web map served from this machine.

    python -m pipelines.view                          # the demo's prediction (out/demo/predictions)
    python -m pipelines.view gs://bucket/maps --port 8080 --no-browser
    python -m pipelines.view out/maps --rgb B8,B4,B3 --basemap osm
    python -m pipelines.view out/demo/change          # a change folder (change.json): two dates

Prints the URL and opens it in the browser (unless --no-browser); Ctrl-C stops it. The page shows the
input imagery, the class map over it (opacity slider), each class probability, the legend with area
shares, the training regions and points, and what the model said about a clicked pixel. Everything the
page needs is served from here (no CDN); `--basemap` adds an online basemap. A change folder shows both
dates' maps, compared with a swipe or side by side, the transitions between them with their areas, and
both dates' classes at a clicked pixel.
"""

from __future__ import annotations

import argparse
import sys
import threading
import webbrowser
from collections.abc import Sequence
from typing import Any

from pipelines.view.defaults import DEFAULT_PORT, DEFAULT_PREDICTIONS, MAX_POINTS
from transforms.runtime.command import CommandParser, quiet_start

OSM = {
    "url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
    "attribution": '&copy; <a href="https://www.openstreetmap.org/copyright">OpenStreetMap</a> contributors',
}
MISSING_EXTRA = (
    "the map viewer needs rio-tiler, starlette and uvicorn: pip install 'terrabeam[view]' "
    "(or `make install` in a checkout)."
)


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = CommandParser(
        "pipelines.view",
        "Open a prediction (class map, probabilities, imagery, training data), or a change between two "
        "dates, on a web map.",
        usage="%(prog)s [PREDICTIONS] [options]",
        name=prog,
        allow_abbrev=True,
    )
    what = p.add_argument_group("what to show")
    what.add_argument(
        "predictions",
        metavar="PREDICTIONS",
        nargs="?",
        default=DEFAULT_PREDICTIONS,
        help="Prediction folder (local or gs://) with prediction.json, or a change folder with change.json "
        f"(default: {DEFAULT_PREDICTIONS}).",
    )
    what.add_argument(
        "--manifest",
        default=None,
        help="Training data (folder or manifest.json) whose regions and points to show "
        "(default: the model's, found through prediction.json).",
    )
    what.add_argument(
        "--max-points",
        type=int,
        default=MAX_POINTS,
        help="Training points drawn at most (default: %(default)s).",
    )
    look = p.add_argument_group("map")
    look.add_argument("--rgb", default=None, help="Three bands drawn as red,green,blue (default: B4,B3,B2).")
    look.add_argument(
        "--stretch",
        default="2,98",
        help="Percentiles of the imagery mapped to black and white (default: 2,98).",
    )
    look.add_argument(
        "--basemap",
        default=None,
        help="An online basemap under the layers: 'osm', or a URL template with {z}/{x}/{y} (default: none).",
    )
    server = p.add_argument_group("server")
    server.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"Port to serve on (default: {DEFAULT_PORT}, or a free one when it is taken; 0: any free port).",
    )
    server.add_argument(
        "--host", default="127.0.0.1", help="Address to listen on (0.0.0.0: every interface)."
    )
    server.add_argument("--no-browser", action="store_true", help="Print the URL without opening a browser.")
    return p.parse_args(argv)


def _stretch(value: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise ValueError(f"--stretch takes two percentiles LOW,HIGH, e.g. 2,98; got {value!r}.") from None
    if not 0 <= low < high <= 100:
        raise ValueError(f"--stretch percentiles must satisfy 0 <= LOW < HIGH <= 100; got {value!r}.")
    return low, high


def _basemap(value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    if value.lower() == "osm":
        return OSM
    if not all(part in value for part in ("{z}", "{x}", "{y}")):
        raise ValueError(
            f"--basemap takes 'osm' or a tile URL template with {{z}}, {{x}} and {{y}}; got {value!r}."
        )
    return {"url": value, "attribution": value.split("/")[2] if "://" in value else value}


def load(
    predictions: str,
    *,
    manifest: str | None = None,
    rgb: str | Sequence[str] | None = None,
    stretch: str | tuple[float, float] = "2,98",
    basemap: str | None = None,
    max_points: int | None = None,
):
    """The app for a prediction or a change folder, checked (ViewError, ValueError with the message to
    show)."""
    from pipelines.view.change import open_map
    from pipelines.view.server import create_app

    bands = [b.strip() for b in rgb.split(",") if b.strip()] if isinstance(rgb, str) else rgb
    prediction = open_map(
        predictions,
        manifest=manifest,
        rgb=bands,
        stretch=_stretch(stretch) if isinstance(stretch, str) else stretch,
        max_points=max_points if max_points is not None else MAX_POINTS,
    )
    return create_app(prediction, _basemap(basemap))


def start(predictions: str | None = None, *, port: int = 0, host: str = "127.0.0.1", **options: Any):
    """Serve a viewer from a background thread; returns it (`.url`, `.stop()`, `.show()` in a notebook)."""
    from pipelines.view.server import Viewer

    return Viewer(load(predictions or DEFAULT_PREDICTIONS, **options), host, port)


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """The command line (`prog` names it in --help, e.g. "terrabeam view"); returns the exit status."""
    argv = list(argv if argv is not None else sys.argv[1:])
    quiet_start(argv)
    args = parse_args(argv, prog)
    try:
        from pipelines.view.maps import ViewError
        from pipelines.view.server import bind, server_for, url_of
    except ImportError as e:
        print(f"error: {MISSING_EXTRA} ({e})", file=sys.stderr)
        return 2
    try:
        app = load(
            args.predictions,
            manifest=args.manifest,
            rgb=args.rgb,
            stretch=args.stretch,
            basemap=args.basemap,
            max_points=args.max_points,
        )
    except (ViewError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    port = DEFAULT_PORT if args.port is None else args.port
    try:
        sock = bind(args.host, port)
    except OSError as e:
        if args.port is not None:
            print(
                f"error: cannot listen on {args.host}:{port} ({e.strerror or e}); pass another --port, "
                "or --port 0 for any free one.",
                file=sys.stderr,
            )
            return 2
        sock = bind(args.host, 0)  # the default port is taken (another viewer?): any free one
    url = url_of(sock)
    print(f"Map of {args.predictions}: {url}  (Ctrl-C to stop)", flush=True)
    if not args.no_browser:
        threading.Timer(0.5, webbrowser.open, args=(url,)).start()
    server = server_for(app, sock)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0
