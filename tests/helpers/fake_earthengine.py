"""A local fake of the Earth Engine REST API that the real `earthengine-api` client talks to over HTTP.

`FakeEarthEngine` is an `http.server` on 127.0.0.1 (a free port, one thread per request) that serves:

- the REST discovery document and the algorithm list that the `earthengine-api` package ships in
  `ee/tests/`, with the root URL pointed at the fake, so `ee.Initialize(..., url=fake.url)` works;
- `image:computePixels` and `thumbnails` (`create`, then `:getPixels`, which `getDownloadURL` uses):
  NPY pixels cut from local rasters for the requested grid. Expressions are not evaluated; the fake
  reads the bands asked for (`Image.select`), the fill value (`Image.unmask`), the pixel type
  (`Image.toFloat`, ...) and the resampling (`Image.resample`) from the request's expression graph;
  `Image.remap` (label values -> class indices) is applied to the label band as Earth Engine would;
- `value:compute` for `Image.stratifiedSample(...).getInfo()` (points drawn from the local label raster
  by `transforms.geometry.sampling.sample_region` for the region whose polygon the request carries, on the
  remapped labels when the image is remapped), for `Image.reduceRegion` with a frequency histogram
  (label values counted in the region's bounding box), for `Image.bandNames().getInfo()`, and for
  `ImageCollection.size()` (alone or in an `ee.List`): the scenes of the collections it loads, from
  `scene_counts` (collection id -> count, whatever the dates and region; `DEFAULT_SCENE_COUNT` for an
  id not listed), so a test can make a window empty;
- `projects.assets` create (`ee.data.createAsset`), get and delete: created assets are kept in
  `assets` (name -> the request body, as Earth Engine received it); creating an existing asset is
  refused as Earth Engine does.

Faults are injected on demand with `add_fault` (HTTP errors with a Retry-After header, slow responses,
truncated bodies, dropped connections), and the fake records every data request and the largest number
of data requests it had in flight at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ee
import numpy as np
from rasterio.enums import Resampling

from tests.helpers.fake_google import FakeHandler, FakeServer, HttpError, error_body
from transforms.contracts.label_scheme import (
    LABEL_NODATA,
    UNKNOWN_INDEX,
    LabelClass,
    LabelScheme,
    default_color,
    label_histogram,
)
from transforms.geometry.grid import PixelGrid
from transforms.geometry.sampling import Region, region_windows, sample_region
from transforms.io.rasters import LocalRasterSource

EE_TESTS = Path(ee.__file__).resolve().parent / "tests"
DISCOVERY_DOCUMENT = EE_TESTS / "cloud_api_discovery_document.json"
ALGORITHMS = EE_TESTS / "algorithms.json"

# Routes; those that serve data count as requests in flight and take faults by default.
DISCOVERY = "discovery"
ALGORITHMS_LIST = "algorithms"
COMPUTE_PIXELS = "computePixels"
COMPUTE_VALUE = "computeValue"
THUMBNAIL_CREATE = "thumbnailCreate"
THUMBNAIL_PIXELS = "thumbnailPixels"
ASSET_CREATE = "assetCreate"
ASSET_GET = "assetGet"
ASSET_DELETE = "assetDelete"
ASSET_ROUTES = (ASSET_CREATE, ASSET_GET, ASSET_DELETE)
DATA_ROUTES = (COMPUTE_PIXELS, COMPUTE_VALUE, THUMBNAIL_CREATE, THUMBNAIL_PIXELS)

_CASTS = {
    "Image.toFloat": "float32",
    "Image.toDouble": "float64",
    "Image.toUint8": "uint8",
    "Image.toInt8": "int8",
    "Image.toUint16": "uint16",
    "Image.toInt16": "int16",
    "Image.toUint32": "uint32",
    "Image.toInt32": "int32",
    "Image.toInt64": "int64",
}
_RESAMPLING = {"bilinear": Resampling.bilinear, "bicubic": Resampling.cubic}
# Scenes the fake counts in a collection that `scene_counts` does not list.
DEFAULT_SCENE_COUNT = 12


@dataclasses.dataclass
class Fault:
    """What to do instead of (or before) answering the next `times` matching requests.

    `status`: answer with this HTTP status and a Google-style error body carrying `message`
    (`retry_after` sets the Retry-After header). `delay`: wait this many seconds first. `truncate`:
    send the full Content-Length but only half the body, then close. `drop`: close the connection
    without answering.
    """

    status: int | None = None
    message: str = "injected fault"
    retry_after: str | None = None
    delay: float = 0.0
    truncate: bool = False
    drop: bool = False
    routes: tuple[str, ...] = DATA_ROUTES
    times: int = 1


@dataclasses.dataclass(frozen=True)
class RequestLog:
    route: str
    path: str
    body: Any


class FakeEarthEngine(FakeServer):
    """The fake server. Use as a context manager; `url` and `project` are what the client needs."""

    thread_name = "fake-ee"

    def __init__(
        self,
        rasters: Sequence[str],
        labels: str,
        regions: Sequence[Region] = (),
        project: str = "fake-project",
    ) -> None:
        super().__init__(_Handler)
        self.project = project
        self.labels_path = str(labels)
        self.regions = tuple(regions)
        self._sources = [LocalRasterSource([str(p)]) for p in rasters] + [LocalRasterSource([labels])]
        self._band_source = {band: s for s in self._sources for band in s.bands}
        self._faults: list[Fault] = []
        self._thumbnails: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()  # rasterio handles are not shared between threads
        self.requests: list[RequestLog] = []
        self.assets: dict[str, dict] = {}
        self.scene_counts: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0

    def stop(self) -> None:
        super().stop()
        for source in self._sources:
            source.close()

    # --- test controls --------------------------------------------------------------------------
    def add_fault(self, fault: Fault | None = None, **kwargs) -> None:
        """Queue a fault (a `Fault` or its fields as keywords); queued faults apply in order."""
        with self._lock:
            self._faults.append(fault or Fault(**kwargs))

    def clear(self) -> None:
        """Forget faults, logged requests, errors, scene counts and the in-flight maximum (between tests).

        Waits (up to 5 s) for answers still being sent, e.g. a slow response whose client gave up,
        so they do not count towards the next test's in-flight figures."""
        deadline = time.monotonic() + 5.0
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            self._faults.clear()
            self._thumbnails.clear()
            self.scene_counts.clear()
            self.requests.clear()
            self.errors.clear()
            self.max_in_flight = self.in_flight

    def count(self, route: str) -> int:
        return sum(1 for r in self.requests if r.route == route)

    def _next_fault(self, route: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if route in fault.routes:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @contextlib.contextmanager
    def _counted(self) -> Iterator[Callable[[], None]]:
        """Count a request in flight until it is answered; yields `leave`, called before the answer is
        written (a client may send its next request the moment it has read a response, before this
        handler thread gets to run its cleanup)."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        left = False

        def leave() -> None:
            nonlocal left
            with self._lock:
                if not left:
                    self.in_flight -= 1
                    left = True

        try:
            yield leave
        finally:
            leave()

    # --- answers --------------------------------------------------------------------------------
    def discovery_document(self) -> bytes:
        doc = json.loads(DISCOVERY_DOCUMENT.read_text())
        doc["rootUrl"] = doc["baseUrl"] = self.url + "/"
        return json.dumps(doc).encode()

    def compute_pixels(self, body: dict) -> bytes:
        grid = grid_from_rest(body["grid"])
        return self._pixels(resolve_expression(body["expression"]), grid, body.get("bandIds"))

    def create_thumbnail(self, body: dict) -> dict:
        name = f"projects/{self.project}/thumbnails/{uuid.uuid4().hex}"
        with self._lock:
            self._thumbnails[name] = body
        return {"name": name}

    def thumbnail_pixels(self, name: str) -> bytes:
        with self._lock:
            body = self._thumbnails.get(name)
        if body is None:
            raise HttpError(404, f"Thumbnail {name} not found.")
        if body.get("fileFormat") != "NPY":
            raise HttpError(400, f"The fake serves NPY downloads only, not {body.get('fileFormat')}.")
        tree = resolve_expression(body["expression"])
        return self._pixels(tree, grid_from_download(tree), body.get("bandIds"))

    def _pixels(self, tree: Any, grid: PixelGrid, band_ids: Sequence[str] | None) -> bytes:
        selections = list(invocations(tree, "Image.select"))  # outermost first: what the request asks for
        bands = list(band_ids or []) or (selections[0]["bandSelectors"] if selections else [])
        if not bands:
            raise HttpError(400, "The fake needs the band names (Image.select or bandIds).")
        unknown = [b for b in bands if b not in self._band_source]
        if unknown:
            raise HttpError(400, f"Image.select: Pattern '{unknown[0]}' did not match any bands.")
        unmasks = list(invocations(tree, "Image.unmask"))  # the outermost fill wins
        fill = _number(unmasks[0].get("value")) if unmasks else 0.0
        casts = list(invocations(tree, *_CASTS))  # the outermost cast gives the pixel type
        dtype = _CASTS[casts[0]["functionName"]] if casts else "float64"
        resamples = list(invocations(tree, "Image.resample"))
        resampling = _RESAMPLING[resamples[0].get("mode") or "bilinear"] if resamples else Resampling.nearest
        remaps = list(invocations(tree, "Image.remap"))
        fields = []
        with self._read_lock:
            for band in bands:
                source = self._band_source[band]
                if remaps and band == (remaps[0].get("bandName") or band):
                    raw = source.read(
                        grid, [band], fill=np.nan, dtype="float64", resampling=Resampling.nearest
                    )
                    classes = remap_values(raw.pixels[..., 0], remaps[0])
                    fields.append((band, np.where(np.isnan(classes), fill, classes).astype(dtype)))
                    continue
                result = source.read(grid, [band], fill=fill, dtype=dtype, resampling=resampling)
                fields.append((band, result.pixels[..., 0]))
        array = np.zeros((grid.height, grid.width), dtype=[(b, p.dtype) for b, p in fields])
        for band, plane in fields:
            array[band] = plane
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()

    def create_asset(self, parent: str, asset_id: str, body: dict) -> dict:
        name = f"{parent}/assets/{asset_id}"
        with self._lock:
            if name in self.assets:
                raise HttpError(409, f"Cannot overwrite asset '{name}'.")
            self.assets[name] = body
        return {**body, "name": name, "id": name.split("/assets/", 1)[1]}

    def get_asset(self, name: str) -> dict:
        with self._lock:
            body = self.assets.get(name)
        if body is None:
            raise HttpError(404, f"Asset '{name}' does not exist or doesn't allow this operation.")
        return {**body, "name": name}

    def delete_asset(self, name: str) -> dict:
        with self._lock:
            if self.assets.pop(name, None) is None:
                raise HttpError(404, f"Asset '{name}' does not exist or doesn't allow this operation.")
        return {}

    def compute_value(self, body: dict) -> Any:
        tree = resolve_expression(body["expression"])
        if isinstance(tree, list):  # an ee.List of values, e.g. scene counts
            return [self._value(item) for item in tree]
        return self._value(tree)

    def _value(self, tree: Any) -> Any:
        name = tree.get("functionName") if isinstance(tree, dict) else None
        if name == "Image.bandNames":
            return list(self._band_source)
        if name == "Collection.size":
            ids = [load["id"] for load in invocations(tree, "ImageCollection.load")]
            if not ids:
                raise HttpError(400, "The fake counts image collections loaded by id only.")
            with self._lock:
                return sum(self.scene_counts.get(i, DEFAULT_SCENE_COUNT) for i in ids)
        samples = list(invocations(tree, "Image.stratifiedSample"))
        if samples:
            remaps = list(invocations(tree, "Image.remap"))
            return self._stratified_sample(samples[0], scheme_of_remap(remaps[0]) if remaps else None)
        reductions = list(invocations(tree, "Image.reduceRegion"))
        if reductions:
            return self._frequency_histogram(reductions[0], list(invocations(tree, "Image.select")))
        raise HttpError(400, f"The fake cannot evaluate {name or 'this expression'}.")

    def _frequency_histogram(self, args: dict, selections: list[dict]) -> dict:
        reducer = args.get("reducer") or {}
        if reducer.get("functionName") != "Reducer.frequencyHistogram":
            raise HttpError(400, "The fake reduces regions with Reducer.frequencyHistogram only.")
        band = selections[0]["bandSelectors"][0] if selections else "landcover"
        region = self._region_of(args.get("geometry"))
        with self._read_lock:
            counts = label_histogram(self.labels_path, 1, region_windows(self.labels_path, [region]))
        return {band: {f"{v:g}": n for v, n in counts.items()}}

    def _stratified_sample(self, args: dict, scheme: LabelScheme | None = None) -> dict:
        region = self._region_of(args.get("region"))
        num_points = int(args.get("numPoints") or 0)
        seed = int(args.get("seed") or 0)
        class_values = args.get("classValues")
        class_points = args.get("classPoints") or []
        if class_values:
            num_points = max([num_points, *class_points])
        with self._read_lock:
            points = sample_region(
                region, self.labels_path, num_points, seed, classes=class_values, scheme=scheme
            )
        band = args.get("classBand")
        features = [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [p.lon, p.lat]},
                "id": str(i),
                "properties": {band: p.label},
            }
            for i, p in enumerate(points)
        ]
        return {"type": "FeatureCollection", "columns": {band: "Integer"}, "features": features}

    def _region_of(self, geometry: Any) -> Region:
        coordinates = np.asarray(_first_coordinates(geometry), dtype=float).ravel()
        for region in self.regions:
            mine = np.asarray(region.geometry["coordinates"], dtype=float).ravel()
            if mine.shape == coordinates.shape and np.allclose(mine, coordinates, atol=1e-9):
                return region
        raise HttpError(400, "The fake knows no region with these coordinates.")


class _Handler(FakeHandler):
    fake: FakeEarthEngine

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = split.path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        route, answer = self._route(method, path, body, parse_qs(split.query))
        if route is None:
            self._send_error(404, f"The fake does not serve {method} {path}.")
            return
        fake = self.fake
        counted = fake._counted() if route in DATA_ROUTES else contextlib.nullcontext(lambda: None)
        with counted as self._leave_flight:
            if route in DATA_ROUTES or route in ASSET_ROUTES:
                with fake._lock:
                    fake.requests.append(RequestLog(route, path, body))
            self._answer(route, answer, fake._next_fault(route))

    def _answer(self, route: str, answer, fault: Fault | None) -> None:
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.drop:
            self.close_connection = True
            return
        if fault and fault.status:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._send(fault.status, error_body(fault.status, fault.message), headers)
            return
        answered, payload = self._answer_with(answer)
        if answered:
            self._send(200, payload, truncate=bool(fault and fault.truncate))

    def _route(self, method: str, path: str, body: Any, query: dict | None = None):
        fake = self.fake
        asset = re.fullmatch(r"/v1(?:alpha|beta)?/(projects/[^/]+)/assets(?:/(.+))?", path)
        if asset and method == "POST" and asset.group(2) is None:
            asset_id = ((query or {}).get("assetId") or [""])[0]
            return ASSET_CREATE, lambda: _json(fake.create_asset(asset.group(1), asset_id, body or {}))
        if asset and asset.group(2) and method in ("GET", "DELETE"):
            name = f"{asset.group(1)}/assets/{asset.group(2)}"
            if method == "GET":
                return ASSET_GET, lambda: _json(fake.get_asset(name))
            return ASSET_DELETE, lambda: _json(fake.delete_asset(name))
        if method == "GET" and path == "/$discovery/rest":
            return DISCOVERY, fake.discovery_document
        if method == "GET" and path.endswith("/algorithms"):
            return ALGORITHMS_LIST, ALGORITHMS.read_bytes
        if method == "POST" and path.endswith("/image:computePixels"):
            return COMPUTE_PIXELS, lambda: fake.compute_pixels(body)
        if method == "POST" and path.endswith("/value:compute"):
            return COMPUTE_VALUE, lambda: _json({"result": fake.compute_value(body)})
        if method == "POST" and path.endswith("/thumbnails"):
            return THUMBNAIL_CREATE, lambda: _json(fake.create_thumbnail(body))
        if method == "GET" and path.endswith(":getPixels"):
            name = path.split("/", 2)[2].removesuffix(":getPixels")
            return THUMBNAIL_PIXELS, lambda: fake.thumbnail_pixels(name)
        return None, None

    def _send(self, status: int, payload: bytes, headers: dict | None = None, truncate: bool = False) -> None:
        is_json = payload[:1] in (b"{", b"[")
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if is_json else "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        getattr(self, "_leave_flight", lambda: None)()
        self.end_headers()
        self.wfile.write(payload[: len(payload) // 2] if truncate else payload)
        if truncate:
            self.wfile.flush()
            self.close_connection = True


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


# --- reading the expression graph ---------------------------------------------------------------
def resolve_expression(expression: dict) -> Any:
    """The expression as one tree: value references, and the bodies of mapped functions (which name
    their value by key), replaced by the values they name."""
    values = expression["values"]

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"valueReference"}:
                return inline(values[node["valueReference"]])
            if "functionDefinitionValue" in node:
                function = node["functionDefinitionValue"]
                return {"functionDefinitionValue": {**function, "body": inline(values[function["body"]])}}
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return _unwrap(inline(values[expression["result"]]))


def _unwrap(node: Any) -> Any:
    """`functionInvocationValue` nodes as {"functionName", "arguments"} dicts, constants as values."""
    if isinstance(node, dict):
        if "functionInvocationValue" in node:
            call = node["functionInvocationValue"]
            args = {k: _unwrap(v) for k, v in call.get("arguments", {}).items()}
            return {"functionName": call.get("functionName"), "arguments": args}
        if "constantValue" in node:
            return node["constantValue"]
        if "arrayValue" in node:
            return [_unwrap(v) for v in node["arrayValue"].get("values", [])]
        if "dictionaryValue" in node:
            return {k: _unwrap(v) for k, v in node["dictionaryValue"].get("values", {}).items()}
        if "nullValue" in node:
            return None
        return {k: _unwrap(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unwrap(v) for v in node]
    return node


def invocations(tree: Any, *names: str) -> Iterator[dict]:
    """Arguments (plus "functionName") of every invocation of one of `names`, outermost first."""
    if isinstance(tree, dict):
        if tree.get("functionName") in names:
            yield {**tree["arguments"], "functionName": tree["functionName"]}
        for value in tree.values():
            yield from invocations(value, *names)
    elif isinstance(tree, list):
        for value in tree:
            yield from invocations(value, *names)


def remap_values(values: np.ndarray, remap: dict) -> np.ndarray:
    """`Image.remap` on float values (NaN = masked): listed values -> targets, others -> the default
    value, or masked (NaN) without one."""
    keys = np.asarray(remap["from"], np.float64)
    targets = np.asarray(remap["to"], np.float64)[np.argsort(keys)]
    keys = np.sort(keys)
    default = remap.get("defaultValue")
    out = np.full(values.shape, np.nan if default is None else float(_number(default)))
    pos = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    hit = keys[pos] == values  # NaN (masked) never matches
    out[hit] = targets[pos[hit]]
    out[np.isnan(values)] = np.nan
    return out


def scheme_of_remap(remap: dict) -> LabelScheme:
    """The label scheme an `Image.remap` to class indices stands for (class names are placeholders)."""
    targets = [int(t) for t in remap["to"]]
    default = remap.get("defaultValue")
    rest = None if default is None else int(_number(default))
    indices = sorted(
        {t for t in targets if t < UNKNOWN_INDEX}
        | ({rest} if rest is not None and rest < UNKNOWN_INDEX else set())
    )
    classes = tuple(
        LabelClass(
            f"c{i}",
            tuple(int(v) for v, t in zip(remap["from"], targets) if t == i),
            default_color(i),
            rest=i == rest,
        )
        for i in range(max(indices) + 1)
    )
    ignore = tuple(int(v) for v, t in zip(remap["from"], targets) if t == LABEL_NODATA)
    return LabelScheme("remap", classes, ignore)


def _number(node: Any) -> float:
    """A number given as a constant or as `Image.constant(number)`."""
    if isinstance(node, dict) and node.get("functionName") == "Image.constant":
        return _number(node["arguments"]["value"])
    return float(node or 0)


def _first_coordinates(tree: Any) -> Any:
    if isinstance(tree, dict):
        if "coordinates" in tree:
            return tree["coordinates"]
        for value in tree.values():
            found = _first_coordinates(value)
            if found is not None:
                return found
    elif isinstance(tree, list):
        for value in tree:
            found = _first_coordinates(value)
            if found is not None:
                return found
    return None


def grid_from_rest(grid: dict) -> PixelGrid:
    """A REST `PixelGrid` (dimensions, affineTransform, crsCode) as a `PixelGrid`."""
    t = grid["affineTransform"]
    transform = tuple(
        float(t.get(k, 0.0)) for k in ("scaleX", "shearX", "translateX", "shearY", "scaleY", "translateY")
    )
    dims = grid["dimensions"]
    return PixelGrid(grid["crsCode"], transform, int(dims["width"]), int(dims["height"]))


def grid_from_download(tree: Any) -> PixelGrid:
    """The grid of a getDownloadURL request made with crs, crs_transform and dimensions."""
    reprojections = list(invocations(tree, "Image.reproject"))
    clips = list(invocations(tree, "Image.clipToBoundsAndScale"))
    if not reprojections or not clips:
        raise HttpError(
            400, "The fake serves downloads on an explicit grid (crs, crs_transform, dimensions)."
        )
    crs = reprojections[0]["crs"]
    projection = crs["arguments"] if isinstance(crs, dict) and "arguments" in crs else {"crs": crs}
    transform = projection.get("transform") or reprojections[0].get("crsTransform")
    corners = np.asarray(_first_coordinates(clips[0]["geometry"]), dtype=float).reshape(-1, 2)
    width, height = (corners.max(axis=0) - corners.min(axis=0)).round().astype(int)
    return PixelGrid(projection["crs"], tuple(float(v) for v in transform), int(width), int(height))
