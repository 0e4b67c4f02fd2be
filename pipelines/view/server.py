"""The viewer's web app: the page, its vendored map library, map tiles and a little JSON.

    GET /                                   the page (static/index.html)
    GET /static/...                         its script, style and the vendored Leaflet
    GET /api/info                           bounds, zooms, classes (names, colours, area shares), layers
    GET /api/pixel?lon=..&lat=..            the pixel there: grid position, class, probabilities
    GET /api/regions, /api/points           the extraction's regions and points (GeoJSON), 404 if unknown
    GET /tiles/{layer}/{z}/{x}/{y}.png      layer: classes, imagery, probability-<class index>; of a
                                            change: transitions, change-probability, and each date's
                                            as before-<layer>, after-<layer>

The same routes serve a prediction folder (`PredictionMap`) and a change folder (`ChangeMap`, whose
/api/info says "kind": "change" and whose /api/pixel reports both dates and the transition).

Every URL the page uses is relative, so the app also works behind a proxy path (Colab's port proxy).
Tile and pixel handlers are plain functions: Starlette runs them in its thread pool, off the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipelines.view.change import ChangeMap
from pipelines.view.maps import PredictionMap

log = logging.getLogger("terrabeam.view")

STATIC = resources.files("pipelines.view") / "static"
# The prediction may be rewritten while the viewer runs; a minute of caching keeps panning smooth.
TILE_CACHE = "max-age=60"


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers={"Cache-Control": "no-cache"})


def create_app(prediction: PredictionMap | ChangeMap, basemap: dict[str, str] | None = None) -> Starlette:
    """The Starlette app serving `prediction` (or a change); `basemap` ({"url", "attribution"}) adds an
    online layer."""

    def index(request: Request) -> Response:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-cache"})

    def info(request: Request) -> Response:
        return _json({**prediction.info(), "basemap": basemap})

    def pixel(request: Request) -> Response:
        try:
            lon = float(request.query_params["lon"])
            lat = float(request.query_params["lat"])
        except (KeyError, ValueError):
            return _json({"error": "give lon and lat as numbers"}, 400)
        return _json(prediction.pixel(lon, lat))

    def regions(request: Request) -> Response:
        data = prediction.regions()
        return _json(data) if data is not None else _json({"error": prediction.manifest_note}, 404)

    def points(request: Request) -> Response:
        data = prediction.points()
        return _json(data) if data is not None else _json({"error": prediction.manifest_note}, 404)

    def tile(request: Request) -> Response:
        params = request.path_params
        layer, z, x, y = params["layer"], params["z"], params["x"], params["y"]
        try:
            data = prediction.tile(layer, z, x, y)
        except KeyError as e:
            return Response(str(e.args[0] if e.args else e), 404, media_type="text/plain")
        return Response(data, media_type="image/png", headers={"Cache-Control": TILE_CACHE})

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/pixel", pixel),
        Route("/api/regions", regions),
        Route("/api/points", points),
        Route("/tiles/{layer}/{z:int}/{x:int}/{y:int}.png", tile),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    return Starlette(routes=routes)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); OSError when the port is taken. Port 0 takes a free one."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def server_for(app: Starlette, sock: socket.socket) -> uvicorn.Server:
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning", lifespan="off")
    return uvicorn.Server(config)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"


class Viewer:
    """A viewer served from a background thread (notebooks, tests): `.url`, `.stop()`, shows inline."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind(host, port)
        self.port = self.sock.getsockname()[1]
        self.url = url_of(self.sock)
        self.server = server_for(app, self.sock)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="terrabeam-viewer", daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The map viewer did not start.")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> Viewer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def show(self, height: int = 520):
        """The map inline in a notebook: through Colab's port proxy there, as an IFrame elsewhere."""
        try:
            from google.colab import output  # type: ignore[import-not-found]
        except ImportError:
            from IPython.display import IFrame

            return IFrame(self.url, width="100%", height=height)
        output.serve_kernel_port_as_iframe(self.port, height=str(height))
        return None

    def _repr_html_(self) -> str:
        return (
            f'<iframe src="{self.url}" width="100%" height="520" style="border:0"></iframe>'
            f'<p>Map viewer at <a href="{self.url}" target="_blank">{self.url}</a></p>'
        )


@contextlib.contextmanager
def running(app: Starlette, host: str = "127.0.0.1", port: int = 0) -> Iterator[Viewer]:
    viewer = Viewer(app, host, port)
    try:
        yield viewer
    finally:
        viewer.stop()
