"""The local Earth Engine fake (tests/helpers/fake_earthengine.py) with table exports:
`projects.table.export` (what `ee.batch.Export.table.toAsset(...).start()` sends) answers with a started
operation, keeps the request in `table_exports`, and registers the asset as the finished export would
(a TABLE in `assets`), so a second export to the same id meets an existing asset."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.helpers.fake_earthengine import FakeEarthEngine, RequestLog, _Handler, _json

TABLE_EXPORT = "tableExport"


class FakeEarthEngineTables(FakeEarthEngine):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handler = _TableHandler
        self.table_exports: list[dict] = []

    def export_table(self, project: str, body: dict) -> dict:
        destination = body["assetExportOptions"]["earthEngineDestination"]["name"]
        with self._lock:
            self.table_exports.append(body)
            self.assets[destination] = {"type": "TABLE", "name": destination}
        operation = f"{project}/operations/{body.get('requestId') or uuid.uuid4().hex}"
        return {"name": operation, "metadata": {"state": "PENDING", "description": body.get("description")}}


class _TableHandler(_Handler):
    fake: FakeEarthEngineTables

    def _route(self, method: str, path: str, body: Any, query: dict | None = None):
        export = re.fullmatch(r"/v1(?:alpha|beta)?/(projects/[^/]+)/table:export", path)
        if export and method == "POST":
            with self.fake._lock:
                self.fake.requests.append(RequestLog(TABLE_EXPORT, path, body))
            return TABLE_EXPORT, lambda: _json(self.fake.export_table(export.group(1), body or {}))
        return super()._route(method, path, body, query)
