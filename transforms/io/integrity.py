"""Broken inputs, told from flaky ones: a cheap whole-file check before a job, and read-error triage.

- `check_raster(path)` runs before any worker starts: the file exists (an HTTP HEAD for remote files,
  retried while the server answers 5xx/429/408), GDAL opens it (header), it has bands, and for a TIFF
  every tile or strip of every band and overview lies inside the file (offsets and byte counts from
  GDAL's `TIFF` metadata domain against the file's size, without reading pixels). A file cut short
  (an interrupted copy, the most common broken file there is) stops the job with a `SourceError`
  naming it and what is wrong.
- `classify_read_error` sorts a failed read: on a local file every error is permanent (a disk does not
  get better by waiting); on a remote one, HTTP 408/429/5xx, timeouts and dropped connections are
  transient, other HTTP answers permanent, and an error with neither is transient once: the same error
  again on the same file is permanent (`FileHealth` remembers).
- `FileHealth` also counts permanent failures per file: after `BROKEN_AFTER` in a row (no good read in
  between) the file is marked broken for the rest of the worker's life and its reads fail at once with
  the same reason, with one log line instead of one per read.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError

# Failures of a read in a row, with no good read in between, after which a file counts as broken.
BROKEN_AFTER = 3
# HTTP answers that may go away by themselves: timeout, throttling, server errors.
TRANSIENT_HTTP = frozenset({408, 429, 500, 502, 503, 504})
# Tries (with exponential backoff from CHECK_DELAY seconds) of the pre-job check on a remote file.
CHECK_TRIES = 4
CHECK_DELAY = 0.5
HTTP_TIMEOUT = 30.0
# GDAL sees the HTTP status of each range request, this code only a failed read: GDAL retries HTTP
# 429/5xx itself, with exponential backoff, unless the user's environment says otherwise.
REMOTE_RETRY = {"GDAL_HTTP_MAX_RETRY": "4", "GDAL_HTTP_RETRY_DELAY": "0.5"}

_REMOTE_PREFIXES = ("gs://", "s3://", "http://", "https://", "/vsi")
_HTTP_STATUS = re.compile(r"HTTP (?:response |error )?code\s*:?\s*(\d{3})", re.IGNORECASE)
_NETWORK = re.compile(
    r"timed? ?out|timeout|connection (?:reset|refused|closed|aborted)|could not resolve|couldn't "
    r"(?:connect|resolve)|\bssl\b|recv failure|send failure|empty reply|transfer closed",
    re.IGNORECASE,
)
_SHORT_READ = re.compile(
    r"got (\d+) bytes, expected (\d+)|read error|short read|unexpected end|failed to read directory",
    re.IGNORECASE,
)
_DECODE = re.compile(r"decod|inflate|deflate|lzw|jpeg|zstd|lerc|webp|corrupt|invalid", re.IGNORECASE)
_BLOCK = re.compile(r"X offset (\d+), Y offset (\d+)")

log = logging.getLogger(__name__)


class SourceError(Exception):
    """A permanent problem with a source (bad path, unknown band): retrying will not help."""


class TransientSourceError(Exception):
    """A failure worth retrying (a dropped connection, a throttled or unavailable remote store).

    `give_up`, when set, turns the error into the permanent one to report once the retries are spent
    (and counts it against the file, see `FileHealth`).
    """

    def __init__(self, *args, give_up: Callable[[TransientSourceError], SourceError] | None = None) -> None:
        super().__init__(*args)
        self.give_up = give_up


class ReadError(SourceError):
    """A permanent read failure on one file. `reason` names the file and the problem only, so that
    every read it stops gives the same one (dead letters are summarised by reason)."""

    def __init__(self, path: str, problem: str, detail: str = "", message: str | None = None) -> None:
        self.path, self.problem, self.detail = path, problem, detail
        super().__init__(message or self.reason + (f": {detail}" if detail else ""))

    @property
    def reason(self) -> str:
        return f"read failed on {self.path} ({self.problem})"


def is_remote(path: str) -> bool:
    return path.startswith(_REMOTE_PREFIXES)


def gdal_name(path: str) -> str:
    """The name GDAL knows a path by (what its /vsicurl/ cache is keyed on)."""
    for scheme, vsi in (("gs://", "/vsigs/"), ("s3://", "/vsis3/")):
        if path.startswith(scheme):
            return vsi + path[len(scheme) :]
    if path.startswith(("http://", "https://")):
        return "/vsicurl/" + path
    return path


def remote_env(path: str, **options: str) -> contextlib.AbstractContextManager:
    """GDAL settings for reading `path`: HTTP retries for a remote file (see REMOTE_RETRY)."""
    if not is_remote(path):
        return contextlib.nullcontext()
    retry = {key: value for key, value in REMOTE_RETRY.items() if key not in os.environ}
    return rasterio.Env(**retry, **options)


def open_raster(path: str) -> rasterio.DatasetReader:
    """`rasterio.open`, but a remote file is asked for again after a failure.

    GDAL's /vsicurl/ (and /vsigs/, /vsis3/) remember a failed open and answer the next one from that
    memory; a retry after an HTTP 503 would never reach the server.
    """
    with remote_env(path, CPL_VSIL_CURL_NON_CACHED=gdal_name(path)):
        return rasterio.open(path)


# --- classifying read errors ----------------------------------------------------------------------


def error_messages(error: BaseException) -> list[str]:
    """The messages of an error and of the errors it was raised from (GDAL's error stack, innermost last)."""
    messages: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current.args[-1] if isinstance(current.args, tuple) and current.args else current)
        if text and "See previous exception" not in text and text not in messages:
            messages.append(text)
        current = current.__cause__ or current.__context__
    return messages


def classify_read_error(path: str, error: BaseException) -> tuple[bool | None, str, str]:
    """(transient, problem, detail) for a failed open or read of `path`.

    `transient` is True or False where the error says, None where a remote error does not (the caller
    decides by whether it saw the same error on the file before). `problem` is short and the same for
    every read that fails the same way; `detail` keeps GDAL's messages.
    """
    messages = error_messages(error)
    detail = " / ".join(messages)
    text = " ".join(messages)
    if not is_remote(path):
        return False, _local_problem(path, text), detail
    status = _HTTP_STATUS.search(text)
    if status:
        code = int(status.group(1))
        return code in TRANSIENT_HTTP, http_problem(code), detail
    if _NETWORK.search(text):
        return True, "network error", detail
    if "does not exist" in text or "No such file" in text:
        return False, "not found", detail
    if _DECODE.search(text) and not _SHORT_READ.search(text):
        return False, "corrupt data", detail
    return None, "incomplete read" if _SHORT_READ.search(text) else "unreadable data", detail


def http_problem(code: int) -> str:
    names = {
        401: "unauthorized",
        403: "access denied",
        404: "not found",
        410: "gone",
        416: "file is truncated",
    }
    return f"HTTP {code}" + (f" {names[code]}" if code in names else "")


def _local_problem(path: str, text: str) -> str:
    if not os.path.exists(path):
        return "no such file"
    if _SHORT_READ.search(text):
        return "file is truncated"
    if _DECODE.search(text):
        return "corrupt data"
    return "unreadable data"


# --- remembering failures per file ----------------------------------------------------------------


class FileHealth:
    """What one source has seen of its files: repeated errors, failures in a row, broken files.

    Held by a source for as long as it lives on a worker (it is not pickled), shared by the worker's
    threads, so a broken file costs `broken_after` failed reads per worker, not one per element.
    """

    def __init__(self, broken_after: int = BROKEN_AFTER) -> None:
        self.broken_after = broken_after
        self._lock = threading.Lock()
        self._in_a_row: dict[str, int] = {}
        self._seen: dict[str, set[str]] = {}
        self._broken: dict[str, str] = {}

    def check(self, path: str) -> None:
        """Raise the file's ReadError at once when it is marked broken."""
        problem = self._broken.get(path)
        if problem is not None:
            raise ReadError(path, problem, f"not read: marked broken after {self.broken_after} failed reads")

    def is_broken(self, path: str) -> bool:
        return path in self._broken

    def succeeded(self, path: str) -> None:
        if self._in_a_row.get(path):
            with self._lock:
                self._in_a_row[path] = 0

    def failed(self, path: str, error: BaseException, hint: str = "") -> Exception:
        """The exception to raise for a failed open or read: transient (retry) or a ReadError."""
        transient, problem, detail = classify_read_error(path, error)
        if hint:
            detail = f"{detail}. {hint}" if detail else hint
        with self._lock:
            if transient is None:  # a remote error that does not say: transient until seen twice
                seen = self._seen.setdefault(path, set())
                transient = detail not in seen
                seen.add(detail)
            if not transient:
                return self._strike(path, problem, detail)
        message = f"read failed on {path} ({problem}): {detail}"
        return TransientSourceError(message, give_up=lambda _: self.gave_up(path, problem, detail))

    def gave_up(self, path: str, problem: str, detail: str) -> ReadError:
        """A transient failure that outlasted its retries: permanent for this read, one strike on the file."""
        with self._lock:
            return self._strike(path, problem, f"{detail} (retries spent)")

    def _strike(self, path: str, problem: str, detail: str) -> ReadError:
        in_a_row = self._in_a_row[path] = self._in_a_row.get(path, 0) + 1
        if in_a_row >= self.broken_after and path not in self._broken:
            self._broken[path] = problem
            log.warning(
                "%s is marked broken after %d failed reads in a row (%s); its remaining reads go to the "
                "dead letters without being tried.",
                path,
                in_a_row,
                problem,
            )
        return ReadError(path, problem, detail)


# --- the check before a job -----------------------------------------------------------------------


def check_rasters(paths: Iterable[str]) -> None:
    """`check_raster` on each distinct path."""
    for path in dict.fromkeys(paths):
        check_raster(path)


def check_raster(path: str, tries: int = CHECK_TRIES, delay: float = CHECK_DELAY) -> None:
    """Open `path` and check, without reading pixels, that it is a whole raster; SourceError if not."""
    size = file_size(path, tries, delay)
    dataset = _open_with_retries(path, tries, delay)
    with dataset:
        if dataset.count < 1 or dataset.width < 1 or dataset.height < 1:
            raise SourceError(
                f"{path} holds no pixels ({dataset.count} bands, {dataset.width}×{dataset.height}); "
                "check that it is the raster you meant."
            )
        if size is None or dataset.driver != "GTiff":
            return
        problem = tiff_problem(dataset, size)
    if problem:
        raise SourceError(
            f"{path} is broken: {problem}. The copy is probably incomplete: copy or download it again."
        )


def tiff_problem(dataset: rasterio.DatasetReader, size: int) -> str | None:
    """Why a TIFF of `size` bytes is not whole (a tile or strip past its end), or None when it is.

    Reads the offsets and byte counts of every tile or strip (GDAL's BLOCK_OFFSET_x_y / BLOCK_SIZE_x_y
    items of the `TIFF` metadata domain) of the full resolution and of each overview: for a 20,000²
    raster in 256-pixel tiles that is ~6,000 numbers per band, no pixels.
    """
    problem = _level_problem(dataset, size, "")
    if problem:
        return problem
    for level in range(len(dataset.overviews(1))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            overview = rasterio.open(dataset.name, overview_level=level)
        with overview:
            problem = _level_problem(overview, size, f" of overview {level + 1}")
        if problem:
            return problem
    return None


def _level_problem(dataset: rasterio.DatasetReader, size: int, where: str) -> str | None:
    kind = "tile" if dataset.block_shapes[0][1] < dataset.width else "strip"
    # Pixel-interleaved bands share their blocks; band-interleaved ones have blocks of their own.
    bands = range(1, dataset.count + 1) if dataset.interleaving.name == "band" else [1]
    for band in bands:
        height, width = dataset.block_shapes[band - 1]
        for y in range(math.ceil(dataset.height / height)):
            for x in range(math.ceil(dataset.width / width)):
                offset = dataset.get_tag_item(f"BLOCK_OFFSET_{x}_{y}", "TIFF", bidx=band)
                if not offset or offset == "0":  # a sparse block: never written, reads as nodata
                    continue
                count = dataset.get_tag_item(f"BLOCK_SIZE_{x}_{y}", "TIFF", bidx=band)
                end = int(offset) + int(count or 0)
                if end > size:
                    return (
                        f"the file is truncated: it has {size:,} bytes but its {kind} ({x}, {y}) of band "
                        f"{band}{where} ends at byte {end:,}"
                    )
    return None


def _open_with_retries(path: str, tries: int, delay: float) -> rasterio.DatasetReader:
    for attempt in range(tries):
        try:
            return open_raster(path)
        except RasterioError as e:
            transient, problem, detail = classify_read_error(path, e)
            if attempt + 1 < tries and is_remote(path) and transient is not False:
                time.sleep(delay * 2**attempt)
                continue
            if problem == "no such file":
                raise SourceError(f"Cannot open raster {path!r} (no such file): check the path.") from None
            if problem == "file is truncated":  # e.g. its TIFF directory lies past the end
                raise SourceError(
                    f"{path} is broken: the file is truncated ({detail}). The copy is probably "
                    "incomplete: copy or download it again."
                ) from None
            raise SourceError(
                f"Cannot open raster {path!r} ({problem}): {detail}. Check that it is a GeoTIFF/COG or another "
                "format GDAL reads, and that it is whole."
            ) from None
    raise AssertionError("unreachable")


def file_size(path: str, tries: int = CHECK_TRIES, delay: float = CHECK_DELAY) -> int | None:
    """The size of a local or remote file in bytes; None where it cannot be known cheaply."""
    if not is_remote(path):
        if not os.path.isfile(path):
            raise SourceError(f"Cannot open raster {path!r} (no such file): check the path.")
        return os.path.getsize(path)
    url = path[len("/vsicurl/") :] if path.startswith("/vsicurl/") else path
    if url.startswith(("http://", "https://")):
        return _http_size(path, url, tries, delay)
    if path.startswith(("/vsigs/", "/vsis3/")):
        url = ("gs://" if path.startswith("/vsigs/") else "s3://") + path[len("/vsigs/") :]
    if url.startswith(("gs://", "s3://")):
        try:
            from apache_beam.io.filesystems import FileSystems

            found = FileSystems.match([url])[0].metadata_list
        except Exception:  # no client library or no credentials here: GDAL's own open will say
            return None
        if not found:
            raise SourceError(f"Cannot open raster {path!r} (no such file): check the path.")
        return found[0].size_in_bytes
    return None


def _http_size(path: str, url: str, tries: int, delay: float) -> int | None:
    """Content-Length of a HEAD (or of a one-byte ranged GET where HEAD is refused), with retries."""
    problem = "no answer"
    for attempt in range(tries):
        if attempt:
            time.sleep(delay * 2 ** (attempt - 1))
        try:
            request = urllib.request.Request(url, method="HEAD")
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
                length = response.headers.get("Content-Length")
                return int(length) if length is not None else None
        except urllib.error.HTTPError as e:
            if e.code in (405, 501):  # HEAD not allowed: the total from a ranged GET's Content-Range
                return _ranged_size(url)
            problem = http_problem(e.code)
            if e.code not in TRANSIENT_HTTP:
                raise SourceError(
                    f"{path} cannot be read: {problem}. Check the URL and its access rights."
                ) from None
        except (urllib.error.URLError, OSError) as e:
            problem = f"network error: {getattr(e, 'reason', e)}"
    raise SourceError(
        f"{path} cannot be read: {problem} after {tries} tries. The server may be down; try again later."
    )


def _ranged_size(url: str) -> int | None:
    request = urllib.request.Request(url, headers={"Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            return int(total) if total.isdigit() else None
    except (urllib.error.URLError, OSError):
        return None
