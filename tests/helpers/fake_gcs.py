"""A read-only Cloud Storage fake on 127.0.0.1, serving a local folder as buckets.

It answers the two clients that read `gs://` paths in terrabeam, with their own code unchanged:

- the google-cloud-storage library (Beam's `FileSystems`) through its JSON API, pointed here by
  `STORAGE_EMULATOR_HOST` (anonymous: no credentials on a test machine):
  `GET /storage/v1/b/<bucket>/o/<object>` (metadata), `GET /storage/v1/b/<bucket>/o?prefix=` (list),
  `GET /download/storage/v1/b/<bucket>/o/<object>?alt=media` (content, with `Range`);
- GDAL's `/vsigs/` (rasterio, rio-tiler) through the XML API, pointed here by `CPL_GS_ENDPOINT` with
  `GS_NO_SIGN_REQUEST=YES`: `GET`/`HEAD /<bucket>/<object>` with `Range`, and `GET /<bucket>?prefix=`.

`<root>/<bucket>/<object>` is the object `gs://<bucket>/<object>`. Requests are recorded (path, range).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape


class FakeGCS:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                fake._serve(self, head=True)

            def do_GET(self) -> None:
                fake._serve(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeGCS:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- helpers -------------------------------------------------------------------------------------

    def _file(self, bucket: str, name: str) -> Path | None:
        path = (self.root / bucket / name).resolve()
        if self.root.resolve() not in path.parents or not path.is_file():
            return None
        return path

    def _metadata(self, bucket: str, name: str, path: Path) -> dict:
        stat = path.stat()
        data = path.read_bytes()
        return {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/1",
            "name": name,
            "bucket": bucket,
            "generation": "1",
            "metageneration": "1",
            "size": str(stat.st_size),
            "contentType": "application/octet-stream",
            "updated": "2026-01-01T00:00:00.000Z",
            "timeCreated": "2026-01-01T00:00:00.000Z",
            "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(),
        }

    def _list(self, bucket: str, prefix: str) -> list[tuple[str, Path]]:
        base = self.root / bucket
        if not base.is_dir():
            return []
        found = []
        for path in sorted(base.rglob("*")):
            name = path.relative_to(base).as_posix()
            if path.is_file() and name.startswith(prefix):
                found.append((name, path))
        return found

    def _send(self, handler, status: int, body: bytes, content_type: str, head: bool, extra=None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        if not head:
            handler.wfile.write(body)

    def _content(self, handler, path: Path, head: bool) -> None:
        data = path.read_bytes()
        headers = {
            "Accept-Ranges": "bytes",
            "Last-Modified": email.utils.formatdate(path.stat().st_mtime, usegmt=True),
            "x-goog-generation": "1",
            "x-goog-stored-content-length": str(len(data)),
            "x-goog-hash": "md5=" + base64.b64encode(hashlib.md5(data).digest()).decode(),
        }
        requested = handler.headers.get("Range")
        if requested and requested.startswith("bytes="):
            start_text, _, end_text = requested[len("bytes=") :].partition("-")
            start = int(start_text)
            end = min(int(end_text), len(data) - 1) if end_text else len(data) - 1
            if start >= len(data):
                self._send(handler, 416, b"", "text/plain", head, {"Content-Range": f"bytes */{len(data)}"})
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self._send(handler, 206, data[start : end + 1], "application/octet-stream", head, headers)
            return
        self._send(handler, 200, data, "application/octet-stream", head, headers)

    # --- requests --------------------------------------------------------------------------------------

    def _serve(self, handler, head: bool) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(url.query)
        parts = [urllib.parse.unquote(p) for p in url.path.split("/")[1:]]
        self.requests.append(f"{handler.command} {handler.path} {handler.headers.get('Range', '')}".strip())
        not_found = json.dumps({"error": {"code": 404, "message": "No such object"}}).encode()
        if parts[:4] == ["download", "storage", "v1", "b"] and len(parts) >= 7 and parts[5] == "o":
            path = self._file(parts[4], "/".join(parts[6:]))
            if path is None:
                return self._send(handler, 404, not_found, "application/json", head)
            return self._content(handler, path, head)
        if parts[:3] == ["storage", "v1", "b"] and len(parts) >= 5 and parts[4] == "o":
            bucket, name = parts[3], "/".join(parts[5:])
            if not name:
                prefix = query.get("prefix", [""])[0]
                items = [self._metadata(bucket, n, p) for n, p in self._list(bucket, prefix)]
                body = json.dumps({"kind": "storage#objects", "items": items}).encode()
                return self._send(handler, 200, body, "application/json", head)
            path = self._file(bucket, name)
            if path is None:
                return self._send(handler, 404, not_found, "application/json", head)
            if query.get("alt") == ["media"]:
                return self._content(handler, path, head)
            body = json.dumps(self._metadata(bucket, name, path)).encode()
            return self._send(handler, 200, body, "application/json", head)
        # XML API (GDAL): /<bucket>/<object>, or /<bucket>?prefix= to list
        bucket, name = parts[0], "/".join(parts[1:])
        if not name:
            prefix = query.get("prefix", [""])[0]
            keys = "".join(
                f"<Contents><Key>{escape(n)}</Key><Size>{p.stat().st_size}</Size>"
                "<LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>"
                for n, p in self._list(bucket, prefix)
            )
            body = (
                '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>'
                f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>{keys}</ListBucketResult>"
            ).encode()
            return self._send(handler, 200, body, "application/xml", head)
        path = self._file(bucket, name)
        if path is None:
            return self._send(handler, 404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml", head)
        return self._content(handler, path, head)
