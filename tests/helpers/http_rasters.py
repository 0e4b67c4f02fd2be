"""A local HTTP file server for GDAL's /vsicurl/: byte ranges, and injected failures.

`RasterServerProcess` runs it in a child process (`python -m tests.helpers.http_rasters`): GDAL holds the GIL
while it waits for some answers, so a server thread in the reading process could never answer them.

GDAL reads a remote GeoTIFF with a HEAD (size) and GET requests with `Range: bytes=a-b` headers; this
server answers both for the files of one folder. `failures` maps a file name to how its requests fail
(a `Failure` or a list of them):
`Failure(503, 2)` answers 503 to the first two requests of that file and serves the rest,
`Failure(503, 2, data_only=True)` the first two requests for its pixels (ranges past the header),
`Failure(404)` answers 404 to every request.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
LOG_PATH = "_requests"
# GDAL reads the first 16 KiB of a file to open it; ranges starting past this are pixel reads.
HEADER_BYTES = 16384


@dataclasses.dataclass
class Failure:
    """Answer `status` to the first `times` matching requests of a file (every one when None)."""

    status: int
    times: int | None = None
    data_only: bool = False
    done: int = 0


class RasterServer:
    """Serve `folder` on 127.0.0.1 (a free port) in a background thread; use as a context manager."""

    def __init__(self, folder: str, failures: dict[str, Failure | list[Failure]] | None = None) -> None:
        self.folder = folder
        self.failures = {
            name: [rule] if isinstance(rule, Failure) else list(rule)
            for name, rule in (failures or {}).items()
        }
        self.requests: list[tuple[str, str, str | None, int]] = []  # (method, name, range, status)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
                server._answer(self, body=False)

            def do_GET(self) -> None:  # noqa: N802
                server._answer(self, body=True)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def vsicurl(self, name: str) -> str:
        return f"/vsicurl/{self.url}/{name}"

    def __enter__(self) -> RasterServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def count(self, status: int, name: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r[3] == status and (name is None or r[1] == name))

    def _status_for(self, name: str, start: int | None) -> int | None:
        with self._lock:
            for rule in self.failures.get(name, []):
                if rule.data_only and (start is None or start < HEADER_BYTES):
                    continue
                if rule.times is None or rule.done < rule.times:
                    rule.done += 1
                    return rule.status
        return None

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        name = handler.path.lstrip("/").split("?")[0]
        if name == LOG_PATH:  # the request log, for tests in another process
            with self._lock:
                data = json.dumps(self.requests).encode("utf-8")
            handler.send_response(200)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data if body else b"")
            return
        path = os.path.join(self.folder, name)
        ranged = handler.headers.get("Range")
        match = _RANGE.fullmatch(ranged or "")
        status = self._status_for(name, int(match.group(1)) if match else None)
        if status is None and not os.path.isfile(path):
            status = 404
        if status is not None:
            self._log(handler.command, name, ranged, status)
            handler.send_response(status)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            if start >= size:
                self._log(handler.command, name, ranged, 416)
                handler.send_response(416)
                handler.send_header("Content-Range", f"bytes */{size}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
        status = 206 if match else 200
        self._log(handler.command, name, ranged, status)
        handler.send_response(status)
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(end - start + 1))
        if match:
            handler.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        handler.end_headers()
        if body:
            with open(path, "rb") as f:
                f.seek(start)
                handler.wfile.write(f.read(end - start + 1))

    def _log(self, method: str, name: str, ranged: str | None, status: int) -> None:
        with self._lock:
            self.requests.append((method, name, ranged, status))


class RasterServerProcess:
    """`RasterServer` in a child process; `requests` fetches its log. Use as a context manager."""

    def __init__(self, folder: str, failures: dict[str, Failure | list[Failure]] | None = None) -> None:
        rules = {
            name: [dataclasses.asdict(r) for r in ([rule] if isinstance(rule, Failure) else rule)]
            for name, rule in (failures or {}).items()
        }
        self._args = [sys.executable, "-m", "tests.helpers.http_rasters", folder, json.dumps(rules)]
        self._process: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> RasterServerProcess:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self._process = subprocess.Popen(self._args, cwd=root, stdout=subprocess.PIPE, text=True)
        self.url = self._process.stdout.readline().strip()
        if not self.url.startswith("http://"):
            self.__exit__()
            raise RuntimeError("the raster server did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def vsicurl(self, name: str) -> str:
        return f"/vsicurl/{self.url}/{name}"

    @property
    def requests(self) -> list[tuple[str, str, str | None, int]]:
        with urllib.request.urlopen(f"{self.url}/{LOG_PATH}", timeout=10) as response:
            return [tuple(r) for r in json.loads(response.read())]

    def count(self, status: int, name: str | None = None) -> int:
        return sum(1 for r in self.requests if r[3] == status and (name is None or r[1] == name))


def _serve(folder: str, rules: str) -> None:
    failures = {name: [Failure(**rule) for rule in items] for name, items in json.loads(rules).items()}
    with RasterServer(folder, failures) as server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
