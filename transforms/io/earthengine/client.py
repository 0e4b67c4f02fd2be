"""Earth Engine as a pixel source: patches by `computePixels` (or `getDownloadURL`), points by
server-side `stratifiedSample`, as in Google's talk "Deep Learning with TensorFlow and Earth Engine".

`EarthEngineSource` has the interface of `transforms.io.rasters.LocalRasterSource` (`read(grid, bands, ...)
-> ReadResult`, `bands`, `check_bands`, `close`), so the extraction DoFn reads Earth Engine and local
rasters alike. Images come from the recipes of `transforms.io.earthengine.recipes`, shared with prediction.

Session. Earth Engine is initialised lazily, once per process and guarded by a lock, on the first
request a worker makes (or in a DoFn's `setup` through `EarthEngineSource.setup`); never at import or in
a constructor, so sources pickle to workers freely.
Credentials come from a service-account key file (`key_file`, a local or `gs://` path), else from
`earthengine authenticate` or Application Default Credentials (on Dataflow: the worker service
account). A Cloud project registered for Earth Engine is required. Requests go to the high-volume
endpoint by default, which is meant for many small automated requests like these patch reads.

Errors. HTTP 408, 429 and 5xx answers, dropped connections, timeouts and truncated bodies raise
`TransientSourceError` (`EarthEngineBusy` for HTTP answers), which the caller retries with exponential
backoff and jitter (`transforms.extract.RetryConfig`). A Retry-After header holds back every request of
the process at least that long, so a retry never comes earlier than the server asked. Every other
error raises `SourceError` carrying the server's message, which ends in the dead letters. The client's
own retries are switched off (`ee.data.setMaxRetries(0)`) so that each retry is the project's, counted
once.

Quota. Earth Engine allows 40 concurrent requests per project by default. Each process holds one
semaphore of `EarthEngineConfig.max_in_flight` slots, shared by all its threads and sources, and one
Beam `AdaptiveThrottler`, which rejects requests client-side (waiting `throttle_delay_s` before trying
again) with a probability that grows with the share of 429/503 answers over the last
`throttle_window_s`. A job-wide `--max-requests` is divided between worker processes by
`requests_per_process`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import http.client
import io
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import ee
import numpy as np
import requests
from apache_beam.io.components.adaptive_throttler import AdaptiveThrottler, ThrottlingSignaler
from apache_beam.metrics import Metrics
from google.auth.exceptions import GoogleAuthError, TransportError
from googleapiclient.errors import HttpError
from rasterio.enums import Resampling
from rasterio.warp import transform as transform_coords

from transforms.contracts.label_scheme import UNKNOWN_ERROR, LabelScheme
from transforms.geometry.grid import GridSpec, PixelGrid
from transforms.geometry.sampling import Point, Region
from transforms.io.earthengine import recipes as ee_recipes
from transforms.io.rasters import ReadResult, SourceError, TransientSourceError
from transforms.runtime import progress

T = TypeVar("T")

HIGH_VOLUME_URL = "https://earthengine-highvolume.googleapis.com"
STANDARD_URL = "https://earthengine.googleapis.com"
SCOPES = (
    "https://www.googleapis.com/auth/earthengine",
    "https://www.googleapis.com/auth/cloud-platform",
)

# Request limits, https://developers.google.com/earth-engine/reference/rest/v1/projects.image/computePixels:
# 48 MB of uncompressed pixels (width x height x bands x bytes per pixel), 32K pixels per side, 1024 bands.
COMPUTE_PIXELS_BYTE_LIMIT = 48 * 2**20
COMPUTE_PIXELS_MAX_DIMENSION = 32768
MAX_BANDS_PER_REQUEST = 1024
# ee.Image.getDownloadURL (its docstring): 32 MB per request, 10000 pixels per side.
DOWNLOAD_BYTE_LIMIT = 32 * 2**20
DOWNLOAD_MAX_DIMENSION = 10000
# A collection's getInfo() returns at most 5000 elements.
MAX_POINTS_PER_REQUEST = 5000

# Pixel size of the patch grid when --scale is not given: Sentinel-2's finest bands, in metres.
DEFAULT_SCALE = 10.0
# Earth Engine's default limit of concurrent requests per project; the job stays at half by default.
PROJECT_CONCURRENT_REQUESTS = 40
DEFAULT_MAX_REQUESTS = 20
DEFAULT_TIMEOUT_S = 180.0
# AdaptiveThrottler settings as Beam's own Datastore and Firestore connectors use them.
THROTTLE_WINDOW_S = 120.0
THROTTLE_OVERLOAD_RATIO = 1.25
THROTTLE_DELAY_S = 5.0
# Never wait longer than this for one Retry-After header.
MAX_RETRY_AFTER_S = 300.0

COMPUTE_PIXELS = "computePixels"
GET_DOWNLOAD_URL = "getDownloadURL"
FETCH_METHODS = (COMPUTE_PIXELS, GET_DOWNLOAD_URL)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# Answers that mean "too much load": they count against the adaptive throttler.
OVERLOAD_STATUS = frozenset({429, 503})
CONNECTION_ERRORS = (
    ConnectionError,
    TimeoutError,
    http.client.HTTPException,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
METRICS_NAMESPACE = "earthengine"

_CASTS = {
    "float32": "toFloat",
    "float64": "toDouble",
    "uint8": "toUint8",
    "int8": "toInt8",
    "uint16": "toUint16",
    "int16": "toInt16",
    "uint32": "toUint32",
    "int32": "toInt32",
    "int64": "toInt64",
}
_RESAMPLING = {Resampling.nearest: None, Resampling.bilinear: "bilinear", Resampling.cubic: "bicubic"}


class EarthEngineInitError(SourceError):
    """Earth Engine cannot be used as configured (no project, bad credentials, refused session)."""


class EarthEngineUnavailable(TransientSourceError):
    """Earth Engine could not be reached; trying again later may work."""


class EarthEngineBusy(TransientSourceError):
    """A retryable HTTP answer (429, 5xx); `retry_after` is the server's Retry-After in seconds."""

    def __init__(self, message: str, status: int, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True)
class EarthEngineConfig:
    """How a process talks to Earth Engine; `max_in_flight` is this process's share of the quota."""

    project: str | None
    endpoint: str = HIGH_VOLUME_URL
    key_file: str | None = None
    max_in_flight: int = DEFAULT_MAX_REQUESTS
    timeout_s: float = DEFAULT_TIMEOUT_S
    throttle_window_s: float = THROTTLE_WINDOW_S
    throttle_delay_s: float = THROTTLE_DELAY_S

    def __post_init__(self) -> None:
        if not self.project:
            raise EarthEngineInitError(
                "Earth Engine needs a Google Cloud project registered for Earth Engine: pass --ee-project "
                "PROJECT_ID (see https://developers.google.com/earth-engine/guides/access)."
            )
        if not self.endpoint.startswith(("http://", "https://")):
            raise EarthEngineInitError(
                f"--ee-endpoint must be an http(s) URL such as {HIGH_VOLUME_URL}, got {self.endpoint!r}."
            )
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {self.max_in_flight}.")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {self.timeout_s}.")


# --- session: once per process ----------------------------------------------------------------------
_init_lock = threading.Lock()
_session: tuple | None = None


def default_credentials():
    """Credentials of `earthengine authenticate`, else Application Default Credentials."""
    try:
        return ee.data.get_persistent_credentials()
    except ee.EEException as e:
        raise EarthEngineInitError(
            "No Google credentials for Earth Engine were found: run `earthengine authenticate` (or "
            "`gcloud auth application-default login`), or pass --ee-key-file with a service-account key."
        ) from e


def load_credentials(key_file: str | None):
    """Service-account credentials from a JSON key file (local or gs://), else the default ones."""
    if not key_file:
        return default_credentials()
    from apache_beam.io.filesystems import FileSystems
    from google.oauth2 import service_account

    try:
        with FileSystems.open(key_file) as f:
            info = json.loads(f.read())
        return service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, GoogleAuthError) as e:
        raise EarthEngineInitError(
            f"Cannot use the service-account key file {key_file!r}: {e}. Pass the JSON key of a service "
            "account registered for Earth Engine (Cloud console: IAM > Service accounts > Keys > Add key)."
        ) from None


def initialize(config: EarthEngineConfig) -> None:
    """Start the Earth Engine session of this process, unless it already runs with this config."""
    global _session
    key = (config.project, config.endpoint, config.key_file, config.timeout_s)
    if _session == key:
        return
    with _init_lock:
        if _session == key:
            return
        credentials = load_credentials(config.key_file)
        if _session is not None:
            ee.Reset()  # another session ran in this process: start afresh (algorithms are per session)
            _session = None
        ee.data.setMaxRetries(0)  # retries are the caller's, with backoff and jitter
        where = f"Earth Engine at {config.endpoint}"
        try:
            # The endpoint is the second parameter (`opt_url` in older clients, `url` now).
            ee.Initialize(credentials, config.endpoint, project=config.project)
            ee.data.setDeadline(int(config.timeout_s * 1000))
        except CONNECTION_ERRORS as e:
            raise EarthEngineUnavailable(
                f"Cannot reach {where}: {e}. Check --ee-endpoint and the network."
            ) from e
        except (ee.EEException, HttpError, ValueError) as e:
            status, _, message = _http_details(e)
            if status in RETRYABLE_STATUS:
                raise EarthEngineUnavailable(f"{where} answered HTTP {status}: {message}") from e
            raise EarthEngineInitError(
                f"{where} refused a session for project {config.project!r}: {message or e}. Check that "
                "the project is registered for Earth Engine, that its Earth Engine API is enabled and "
                "that the credentials may use it."
            ) from e
        ee.data.setUserAgent("terrabeam")
        _session = key


# --- quota: one gate per process -----------------------------------------------------------------
class _Gate:
    """A semaphore of in-flight requests, an adaptive throttler and the Retry-After hold-back."""

    def __init__(self, config: EarthEngineConfig) -> None:
        self.slots = threading.BoundedSemaphore(config.max_in_flight)
        self._lock = threading.Lock()
        window_ms = int(config.throttle_window_s * 1000)
        self._throttler = AdaptiveThrottler(
            window_ms=window_ms,
            bucket_ms=max(1, min(1000, window_ms // 10)),
            overload_ratio=THROTTLE_OVERLOAD_RATIO,
        )
        self._signaler = ThrottlingSignaler(namespace=METRICS_NAMESPACE)
        self._delay = config.throttle_delay_s
        self._throttled_s = 0.0
        self._not_before = 0.0

    def _wait_for_turn(self) -> None:
        while True:
            with self._lock:
                throttled = self._throttler.throttle_request(time.time() * 1000)
            if not throttled:
                break
            _throttled.inc()
            time.sleep(self._delay)
            self._signal_throttled(self._delay)
        while True:
            with self._lock:
                wait = self._not_before - time.monotonic()
            if wait <= 0:
                return
            time.sleep(wait)

    def _signal_throttled(self, seconds: float) -> None:
        # Tells the runner (Dataflow's autoscaler) that time went to throttling; whole seconds only.
        with self._lock:
            self._throttled_s += seconds
            whole = int(self._throttled_s)
            self._throttled_s -= whole
        if whole:
            self._signaler.signal_throttled(whole)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        self._wait_for_turn()
        with self.slots:
            yield

    def accepted(self) -> None:
        with self._lock:
            self._throttler.successful_request(time.time() * 1000)

    def hold_back(self, seconds: float) -> None:
        with self._lock:
            until = time.monotonic() + min(seconds, MAX_RETRY_AFTER_S)
            self._not_before = max(self._not_before, until)


_requests = Metrics.counter(METRICS_NAMESPACE, "requests")
_failed = Metrics.counter(METRICS_NAMESPACE, "requests_failed")
_throttled = Metrics.counter(METRICS_NAMESPACE, "requests_throttled_client_side")
_gates_lock = threading.Lock()
_gates: dict[tuple, _Gate] = {}


def gate_for(config: EarthEngineConfig) -> _Gate:
    """The process-wide gate for this project and quota share."""
    key = (
        config.project,
        config.endpoint,
        config.max_in_flight,
        config.throttle_window_s,
        config.throttle_delay_s,
    )
    with _gates_lock:
        gate = _gates.get(key)
        if gate is None:
            gate = _gates[key] = _Gate(config)
        return gate


def call(config: EarthEngineConfig, what: str, fn: Callable[[], T], *, decodes_pixels: bool = False) -> T:
    """Run one Earth Engine request through the session, the gate and the error mapping."""
    initialize(config)
    gate = gate_for(config)
    _requests.inc()
    with gate.slot():
        try:
            result = fn()
            error = None
        except Exception as e:  # classified just below; unknown errors propagate unchanged
            result, error = None, e
    if error is None:
        gate.accepted()
        return result
    mapped = classify(error, what, decodes_pixels=decodes_pixels)
    if mapped is None:
        raise error
    busy = isinstance(mapped, EarthEngineBusy)
    if not isinstance(mapped, TransientSourceError) or (busy and mapped.status not in OVERLOAD_STATUS):
        gate.accepted()  # the server answered; only overload and lost connections count against it
    if busy and mapped.retry_after:
        gate.hold_back(mapped.retry_after)
    _failed.inc()
    raise mapped from error


# --- errors --------------------------------------------------------------------------------------
class _DownloadHttpError(Exception):
    """A non-200 answer to the GET of a download URL."""

    def __init__(self, status: int, retry_after: str | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.message = message


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date); None if absent/bad."""
    if value is None:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _http_details(error: BaseException) -> tuple[int | None, float | None, str]:
    """(HTTP status, Retry-After seconds, server message) from an error or the errors it came from."""
    message = str(error)
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, HttpError):
            reason = message if isinstance(error, ee.EEException) else (current.reason or str(current))
            return current.resp.status, parse_retry_after(current.resp.get("retry-after")), reason
        if isinstance(current, _DownloadHttpError):
            return current.status, parse_retry_after(current.retry_after), current.message
        current = current.__cause__ or current.__context__
    return None, None, message


def classify(error: BaseException, what: str, *, decodes_pixels: bool = False) -> Exception | None:
    """The project's error for a failed request: transient (retry) or permanent (dead letter)."""
    status, retry_after, message = _http_details(error)
    if status is not None:
        text = f"Earth Engine {what} failed with HTTP {status}: {message}"
        if status in RETRYABLE_STATUS:
            return EarthEngineBusy(text, status, retry_after)
        return SourceError(text)
    if isinstance(error, CONNECTION_ERRORS):
        return TransientSourceError(f"Earth Engine {what}: connection lost ({type(error).__name__}: {error})")
    if isinstance(error, GoogleAuthError):
        text = f"Earth Engine {what}: the credentials failed ({type(error).__name__}: {error})"
        retryable = isinstance(error, TransportError) or getattr(error, "retryable", False)
        return TransientSourceError(text) if retryable else SourceError(text)
    if decodes_pixels and isinstance(error, ValueError | EOFError):
        return TransientSourceError(
            f"Earth Engine {what}: unreadable NPY pixels (a truncated transfer?): {error}"
        )
    if isinstance(error, ee.EEException):
        return SourceError(f"Earth Engine {what} failed: {message}")
    return None


# --- the source ----------------------------------------------------------------------------------
class EarthEngineSource:
    """Named bands of an Earth Engine image recipe on any `PixelGrid`. Picklable; no session needed
    until the first request.

    With a `label_scheme`, the source is a label image: its `label_band` is remapped on the server
    (`ee.Image.remap`) to class indices, values the scheme ignores to 255 and values it does not list
    to 254 (or 255 with `unknown_labels="ignore"`), and only that band is left.
    """

    def __init__(
        self,
        recipe: str | ee_recipes.Recipe,
        config: EarthEngineConfig,
        fetch: str = COMPUTE_PIXELS,
        *,
        label_scheme: LabelScheme | None = None,
        label_band: str | None = None,
        unknown_labels: str = UNKNOWN_ERROR,
    ) -> None:
        if fetch not in FETCH_METHODS:
            raise ValueError(f"fetch must be one of {', '.join(FETCH_METHODS)}, got {fetch!r}.")
        self.recipe = ee_recipes.parse_recipe(recipe) if isinstance(recipe, str) else recipe
        self.config = config
        self.fetch = fetch
        self.label_scheme = label_scheme
        self.label_band = label_band
        self.unknown_labels = unknown_labels
        if label_scheme is not None and not label_band:
            raise ValueError("A label source needs the name of its label band.")
        self._bands = (label_band,) if label_scheme is not None else self.recipe.bands
        self._image = None

    def __getstate__(self) -> dict:
        return {
            "recipe": self.recipe.spec,
            "config": self.config,
            "fetch": self.fetch,
            "bands": self._bands,
            "label_scheme": self.label_scheme,
            "label_band": self.label_band,
            "unknown_labels": self.unknown_labels,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(
            state["recipe"],
            state["config"],
            state["fetch"],
            label_scheme=state["label_scheme"],
            label_band=state["label_band"],
            unknown_labels=state["unknown_labels"],
        )
        self._bands = state["bands"]

    def __repr__(self) -> str:
        return (
            f"EarthEngineSource({self.recipe.spec!r}, project={self.config.project!r}, fetch={self.fetch!r})"
        )

    def setup(self) -> None:
        """Start this process's session now (for a DoFn's `setup`); the first read would anyway."""
        initialize(self.config)

    def connect(self) -> None:
        """Start the session and learn the bands before a job starts; every failure is an init error."""
        try:
            initialize(self.config)
            _ = self.bands
        except TransientSourceError as e:
            raise EarthEngineInitError(str(e)) from e

    def image(self):
        """The recipe's `ee.Image` (built once per instance, after the session has started)."""
        if self._image is None:
            initialize(self.config)
            image = ee_recipes.build_image(self.recipe)
            if self.label_scheme is not None:
                values, classes, default = self.label_scheme.ee_remap(self.unknown_labels)
                image = image.remap(values, classes, default, self.label_band).rename(self.label_band)
            self._image = image
        return self._image

    def _call(self, what: str, fn: Callable[[], T], **kwargs) -> T:
        return call(self.config, what, fn, **kwargs)

    @property
    def bands(self) -> tuple[str, ...]:
        if self._bands is None:
            names = self._call("bandNames", lambda: self.image().bandNames().getInfo())
            self._bands = tuple(names)
        return self._bands

    def check_bands(self, bands: Sequence[str]) -> None:
        missing = [b for b in bands if b not in self.bands]
        if missing:
            raise SourceError(
                f"Band(s) {', '.join(missing)} not in Earth Engine image {self.recipe.spec!r}; "
                f"available: {', '.join(self.bands)}."
            )

    def check_request(self, width: int, height: int, num_bands: int, dtype: str = "float32") -> None:
        """Raise SourceError, before anything is sent, for a request over Earth Engine's limits."""
        if self.fetch == COMPUTE_PIXELS:
            byte_limit, max_side = COMPUTE_PIXELS_BYTE_LIMIT, COMPUTE_PIXELS_MAX_DIMENSION
        else:
            byte_limit, max_side = DOWNLOAD_BYTE_LIMIT, DOWNLOAD_MAX_DIMENSION
        size = width * height * num_bands * np.dtype(dtype).itemsize
        problems = []
        if size > byte_limit:
            problems.append(
                f"{width}x{height} pixels x {num_bands} bands x {np.dtype(dtype).itemsize} bytes = "
                f"{size / 2**20:.1f} MiB, over the {byte_limit // 2**20} MiB per request"
            )
        if max(width, height) > max_side:
            problems.append(f"{max(width, height)} pixels per side, over the {max_side} allowed")
        if num_bands > MAX_BANDS_PER_REQUEST:
            problems.append(f"{num_bands} bands, over the {MAX_BANDS_PER_REQUEST} allowed")
        if problems:
            raise SourceError(
                f"An Earth Engine {self.fetch} request of {'; '.join(problems)} would be refused. Use a "
                "smaller --patch-size or fewer --bands."
            )

    def expression(self, bands: Sequence[str], fill: float, dtype: str, resampling: Resampling):
        """The image a read asks for: the bands in order, masked pixels filled, cast to `dtype`."""
        if dtype not in _CASTS:
            raise SourceError(
                f"Earth Engine reads cannot produce dtype {dtype!r}; use one of {sorted(_CASTS)}."
            )
        if resampling not in _RESAMPLING:
            raise SourceError(
                f"Earth Engine resamples with nearest, bilinear or cubic, not {resampling.name}."
            )
        image = self.image().select(list(bands))
        if _RESAMPLING[resampling]:
            image = image.resample(_RESAMPLING[resampling])
        # sameFootprint=False fills outside the image's footprint too, like padding in local reads.
        image = image.unmask(fill, False)
        return getattr(image, _CASTS[dtype])()

    def read(
        self,
        grid: PixelGrid,
        bands: Sequence[str],
        *,
        fill: float = 0.0,
        dtype: str = "float32",
        resampling: Resampling = Resampling.bilinear,
    ) -> ReadResult:
        """The bands on `grid` as (H, W, bands); masked pixels become `fill`.

        An Earth Engine image has no edge to run off: pixels outside its footprint are masked and come
        back as `fill`, so `padded` is always False.
        """
        bands = list(bands)
        self.check_bands(bands)
        self.check_request(grid.width, grid.height, len(bands), dtype)
        image = self.expression(bands, fill, dtype, resampling)
        if self.fetch == COMPUTE_PIXELS:
            params = {"expression": image, "fileFormat": "NUMPY_NDARRAY", "grid": grid.to_earth_engine()}
            array = self._call(COMPUTE_PIXELS, lambda: ee.data.computePixels(params), decodes_pixels=True)
        else:
            array = self._download(image, grid, bands)
        return ReadResult(structured_to_pixels(array, bands, grid, dtype), padded=False)

    def _download(self, image, grid: PixelGrid, bands: Sequence[str]) -> np.ndarray:
        params = {
            "bands": list(bands),
            "crs": grid.crs,
            "crs_transform": list(grid.transform),
            "dimensions": [grid.width, grid.height],
            "format": "NPY",
        }
        url = self._call(GET_DOWNLOAD_URL, lambda: image.getDownloadURL(params))
        content = self._call(f"{GET_DOWNLOAD_URL} pixels", lambda: _get(url, self.config.timeout_s))
        try:
            return np.load(io.BytesIO(content), allow_pickle=False)
        except (ValueError, EOFError) as e:
            raise TransientSourceError(f"Earth Engine download: unreadable NPY pixels: {e}") from e

    def stratified_sample(
        self,
        region: Region,
        class_band: str,
        grid: GridSpec,
        num_points: int,
        seed: int,
        classes: Sequence[int] | None = None,
    ) -> list[dict]:
        """GeoJSON point features of `Image.stratifiedSample` on the grid's lattice, inside `region`."""
        self.check_bands([class_band])
        image = self.image().select([class_band])
        if self.label_scheme is not None:  # sample classes only, never "no label" or unknown values
            image = image.updateMask(image.lt(self.label_scheme.num_classes))
        projection = ee.Projection(grid.crs, [grid.scale, 0, grid.origin_x, 0, -grid.scale, grid.origin_y])
        kwargs: dict[str, Any] = {
            "numPoints": num_points,
            "classBand": class_band,
            "region": ee.Geometry(region.geometry),
            "scale": grid.scale,
            "projection": projection,
            "seed": seed,
            "dropNulls": True,
            "geometries": True,
        }
        if classes:
            kwargs.update(numPoints=0, classValues=list(classes), classPoints=[num_points] * len(classes))
        collection = image.stratifiedSample(**kwargs)
        info = self._call("stratifiedSample", collection.getInfo)
        return list((info or {}).get("features") or [])

    def close(self) -> None:
        """Nothing to release: the session belongs to the process."""


_http = threading.local()


def _get(url: str, timeout_s: float) -> bytes:
    """GET a download URL (a requests.Session per thread); non-200 answers raise _DownloadHttpError."""
    session = getattr(_http, "session", None)
    if session is None:
        session = _http.session = requests.Session()
    response = session.get(url, timeout=timeout_s)
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:500] or response.reason
        raise _DownloadHttpError(response.status_code, response.headers.get("Retry-After"), message)
    return response.content


def structured_to_pixels(array: np.ndarray, bands: Sequence[str], grid: PixelGrid, dtype: str) -> np.ndarray:
    """A structured (H, W) array with one field per band as an (H, W, bands) array in `bands` order."""
    names = array.dtype.names
    if names is None:
        raise SourceError(f"Earth Engine returned a plain {array.dtype} array; expected one field per band.")
    missing = [b for b in bands if b not in names]
    if missing:
        raise SourceError(f"Earth Engine returned bands {list(names)}, without {', '.join(missing)}.")
    if array.shape != (grid.height, grid.width):
        raise SourceError(
            f"Earth Engine returned {array.shape[0]}x{array.shape[1]} pixels for a "
            f"{grid.height}x{grid.width} grid."
        )
    return np.stack([array[b] for b in bands], axis=-1).astype(dtype, copy=False)


# --- server-side sampling ------------------------------------------------------------------------
def sample_region_ee(
    region: Region,
    labels: EarthEngineSource,
    label_band: str,
    grid: GridSpec,
    num_points: int,
    seed: int,
    *,
    classes: Sequence[int] | None = None,
    retry=None,
    max_points_per_request: int = MAX_POINTS_PER_REQUEST,
) -> list[Point]:
    """Up to `num_points` points per class inside `region`, sampled by Earth Engine.

    A request whose answer could exceed `max_points_per_request` features is split into several with
    seeds `seed`, `seed + 1`, ...; points drawn twice are kept once, so a class may come out a little
    short of `num_points`. Point ids are "region/row/col" on the grid's lattice.
    """
    from transforms.io.retry import RetryConfig

    retry = retry or RetryConfig()
    strata = len(classes) if classes else (labels.label_scheme.num_classes if labels.label_scheme else 255)
    requests_needed = max(1, math.ceil(num_points * strata / max_points_per_request))
    per_request = math.ceil(num_points / requests_needed)
    points: dict[str, Point] = {}
    per_class: Counter[int] = Counter()
    for i in range(requests_needed):
        features = retry.call(
            labels.stratified_sample, region, label_band, grid, per_request, seed + i, classes
        )
        for feature in features:
            point = point_of_feature(feature, region, label_band, grid)
            if point is None or point.id in points or per_class[point.label] >= num_points:
                continue
            points[point.id] = point
            per_class[point.label] += 1
    return list(points.values())


def point_of_feature(feature: dict, region: Region, label_band: str, grid: GridSpec) -> Point | None:
    """A sampled GeoJSON point feature as a `Point` at the centre of its pixel on the grid."""
    geometry = feature.get("geometry") or {}
    label = (feature.get("properties") or {}).get(label_band)
    if geometry.get("type") != "Point" or label is None:
        return None
    u, v = geometry["coordinates"][:2]
    crs = ((geometry.get("crs") or {}).get("properties") or {}).get("name") or "EPSG:4326"
    if crs == "EPSG:4326":
        lon, lat = float(u), float(v)
    else:
        (lon,), (lat,) = transform_coords(crs, "EPSG:4326", [u], [v])
    (x,), (y,) = transform_coords("EPSG:4326", grid.crs, [lon], [lat])
    col, row = grid.pixel_of(x, y)
    x, y = grid.pixel_centre(col, row)
    return Point(
        id=f"{region.name}/{row}/{col}",
        region=region.name,
        x=x,
        y=y,
        crs=grid.crs,
        lon=lon,
        lat=lat,
        label=int(label),
        stratum=int(label),
    )


def stratified_sample(
    region: Region,
    labels: EarthEngineSource,
    label_band: str,
    grid: GridSpec,
    num_points: int,
    seed: int,
    classes: Sequence[int] | None = None,
    retry=None,
) -> list[Point]:
    """Beam-friendly wrapper of `sample_region_ee` (for `beam.FlatMap`) that counts the points."""
    points = sample_region_ee(
        region, labels, label_band, grid, num_points, seed, classes=classes, retry=retry
    )
    progress.counter("extract", "points_sampled").inc(len(points))
    return points


def label_histogram(
    labels: EarthEngineSource, band: str, regions: Sequence[Region], grid: GridSpec
) -> dict[float, int]:
    """{label value: pixel count} of `band` inside the regions, counted by Earth Engine
    (`Reducer.frequencyHistogram`; `bestEffort` coarsens the scale of very large regions)."""
    counts: Counter[float] = Counter()
    image = labels.image().select([band])
    for region in regions:
        reduced = image.reduceRegion(
            reducer=ee.Reducer.frequencyHistogram(),
            geometry=ee.Geometry(region.geometry),
            scale=grid.scale,
            crs=grid.crs,
            maxPixels=1e9,
            bestEffort=True,
        )
        info = labels._call("frequencyHistogram", reduced.getInfo) or {}
        for value, count in (info.get(band) or {}).items():
            if value not in ("null", "None"):
                counts[float(value)] += int(round(float(count)))
    return dict(counts)


@dataclasses.dataclass(frozen=True)
class SceneCount:
    """How many scenes a dated part of a recipe finds in its window over one region."""

    recipe: str
    part: ee_recipes.Part
    region: str
    scenes: int


def scene_counts(sources: Sequence[EarthEngineSource], regions: Sequence[Region]) -> list[SceneCount]:
    """The scenes each dated part of the sources' recipes finds in its window over each region, before
    per-pixel cloud masks (`filterDate(...).filterBounds(region).size()`), all counted in one request.
    Zero scenes means an image masked everywhere; parts without a window are not counted."""
    if not sources:
        return []
    initialize(sources[0].config)
    asked, sizes = [], []
    for source in sources:
        for part in source.recipe.parts:
            collection = ee_recipes.scene_collection(part)
            if collection is None:
                continue
            for region in regions:
                asked.append((source.recipe.spec, part, region.name))
                sizes.append(collection.filterBounds(ee.Geometry(region.geometry)).size())
    if not sizes:
        return []
    counts = sources[0]._call("scene count", ee.List(sizes).getInfo) or []
    if len(counts) != len(asked):
        raise SourceError(f"Earth Engine answered {len(counts)} scene counts for the {len(asked)} asked.")
    return [SceneCount(*key, int(n)) for key, n in zip(asked, counts)]


# --- job-level helpers ---------------------------------------------------------------------------
def requests_per_process(max_requests: int, options) -> tuple[int, int]:
    """(in-flight requests per worker process, worker processes) for a job-wide `max_requests`.

    DirectRunner: one process unless `--direct_running_mode multi_processing` (then
    `--direct_num_workers`). Other runners: `--max_num_workers` (else `--num_workers`) processes, one
    per worker VM; on Dataflow machines with several vCPUs add
    `--experiments=no_use_multiple_sdk_containers` so that each VM runs one SDK process.
    """
    import os

    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions, WorkerOptions

    runner = str(options.view_as(StandardOptions).runner or "DirectRunner")
    if "direct" in runner.lower():
        direct = options.view_as(DirectOptions)
        processes = 1
        if direct.direct_running_mode == "multi_processing":
            processes = direct.direct_num_workers or os.cpu_count() or 1
    else:
        workers = options.view_as(WorkerOptions)
        processes = workers.max_num_workers or workers.num_workers or 0
    if processes <= 0:
        return 0, 0
    return max(1, max_requests // processes), processes


def utm_crs_of(regions: Sequence[Region]) -> str:
    """The UTM zone (WGS 84) holding the centre of the regions' bounding box, as "EPSG:326xx/327xx"."""
    from rasterio import features

    boxes = [features.bounds(r.geometry) for r in regions]
    lon = (min(b[0] for b in boxes) + max(b[2] for b in boxes)) / 2
    lat = (min(b[1] for b in boxes) + max(b[3] for b in boxes)) / 2
    zone = min(60, int((lon + 180) // 6) + 1)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"
