"""A local fake of the Vertex AI REST API (v1) and of the Cloud Storage JSON API, for the real clients.

`FakeVertexAI` is an `http.server` on 127.0.0.1 (a free port, one thread per request). The pinned
`google-cloud-aiplatform` GAPIC clients talk to it with `transport="rest"` and
`client_options={"api_endpoint": fake.url}`; `google-cloud-storage` talks to it with
`client_options={"api_endpoint": fake.url}` (the JSON API's upload, download, get and list calls).

Vertex AI resources follow the REST reference (https://cloud.google.com/vertex-ai/docs/reference/rest):

- `POST .../models:upload` {"model": Model} -> Operation (response UploadModelResponse); the artifact
  folder must exist in the fake's storage (with `saved_model.pb` for Google's TensorFlow containers);
- `GET .../models/M`;
- `GET .../endpoints` (`filter=display_name="..."`), `POST .../endpoints` {Endpoint} -> Operation,
  `GET .../endpoints/E`, `DELETE .../endpoints/E` -> Operation (refused while models are deployed);
- `POST .../endpoints/E:deployModel` {"deployedModel", "trafficSplit"} -> Operation (response
  DeployModelResponse; the id "0" in trafficSplit stands for the model being deployed, percentages must
  sum to 100); `POST .../endpoints/E:undeployModel` {"deployedModelId", "trafficSplit"} -> Operation
  (a model that still has traffic while others stay deployed is refused, as Vertex AI does);
- `GET /v1/<operation name>` (or `/ui/<operation name>`, where the client polls some): an operation answers `"done": false` for `polls` polls, then is done and
  its effect applies (a model registered, an endpoint created, a model deployed ...), or it fails with
  the error queued by `fail_next_operation`.

`add_fault(route, status, message)` answers the next request of a route with a Google-style error (e.g.
403 PERMISSION_DENIED). Every request is recorded in `requests`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.helpers.fake_google import FakeHandler, FakeServer, HttpError

_TYPE = "type.googleapis.com/google.cloud.aiplatform.v1."

# Routes (what add_fault and the request log name).
UPLOAD_MODEL = "models.upload"
GET_MODEL = "models.get"
LIST_ENDPOINTS = "endpoints.list"
CREATE_ENDPOINT = "endpoints.create"
GET_ENDPOINT = "endpoints.get"
DELETE_ENDPOINT = "endpoints.delete"
DEPLOY_MODEL = "endpoints.deployModel"
UNDEPLOY_MODEL = "endpoints.undeployModel"
GET_OPERATION = "operations.get"
GCS_UPLOAD = "storage.upload"
GCS_GET = "storage.get"
GCS_LIST = "storage.list"
GCS_BUCKET = "storage.buckets.get"


@dataclasses.dataclass(frozen=True)
class RequestLog:
    route: str
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclasses.dataclass
class _Operation:
    name: str
    metadata_type: str
    response: dict[str, Any]
    apply: Callable[[], None]
    polls_left: int
    error: dict[str, Any] | None = None
    done: bool = False
    created: str = ""


class FakeVertexAI(FakeServer):
    """The fake server; use as a context manager. `url` is the api_endpoint for both clients."""

    thread_name = "fake-vertex"

    def __init__(self, project: str = "fake-project", location: str = "us-central1", polls: int = 2) -> None:
        super().__init__(_Handler)
        self.project = project
        self.location = location
        self.polls = polls
        self.models: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, dict[str, Any]] = {}
        self.objects: dict[tuple[str, str], bytes] = {}
        self.operations: dict[str, _Operation] = {}
        self.requests: list[RequestLog] = []
        self._faults: list[tuple[str, int, str]] = []
        self._operation_failures: list[tuple[str, int, str]] = []
        self._ids = itertools.count(1000)
        self._lock = threading.RLock()

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"

    # --- test controls --------------------------------------------------------------------------
    def add_fault(self, route: str, status: int, message: str = "injected fault") -> None:
        """Answer the next request of `route` with HTTP `status` and a Google-style error body."""
        with self._lock:
            self._faults.append((route, status, message))

    def fail_next_operation(self, kind: str, code: int, message: str) -> None:
        """The next operation of `kind` (a route, e.g. DEPLOY_MODEL) ends with google.rpc.Status `code`."""
        with self._lock:
            self._operation_failures.append((kind, code, message))

    def routes(self) -> list[str]:
        return [r.route for r in self.requests]

    def bodies(self, route: str) -> list[Any]:
        return [r.body for r in self.requests if r.route == route]

    def put_object(self, uri: str, data: bytes) -> None:
        bucket, name = uri.removeprefix("gs://").split("/", 1)
        with self._lock:
            self.objects[(bucket, name)] = data

    def object_names(self, prefix: str) -> list[str]:
        bucket, name = prefix.removeprefix("gs://").split("/", 1)
        return sorted(f"gs://{b}/{n}" for b, n in self.objects if b == bucket and n.startswith(name))

    # --- Vertex AI ------------------------------------------------------------------------------
    def _operation(self, kind: str, resource: str, metadata_type: str, response: dict, apply) -> dict:
        with self._lock:
            name = f"{resource}/operations/{next(self._ids)}"
            error = None
            for i, (failing, code, message) in enumerate(self._operation_failures):
                if failing == kind:
                    error = {"code": code, "message": message}
                    del self._operation_failures[i]
                    break
            op = _Operation(name, metadata_type, response, apply, self.polls, error, created=_now())
            self.operations[name] = op
            if op.polls_left <= 0:
                self._finish(op)
            return self._operation_json(op)

    def _finish(self, op: _Operation) -> None:
        if not op.done:
            op.done = True
            if op.error is None:
                op.apply()

    def _operation_json(self, op: _Operation) -> dict:
        answer: dict[str, Any] = {
            "name": op.name,
            "metadata": {
                "@type": _TYPE + op.metadata_type,
                "genericMetadata": {"createTime": op.created, "updateTime": _now()},
            },
            "done": op.done,
        }
        if op.done:
            if op.error is not None:
                answer["error"] = op.error
            else:
                answer["response"] = op.response
        return answer

    def get_operation(self, name: str) -> dict:
        with self._lock:
            op = self.operations.get(name)
            if op is None:
                raise HttpError(404, f"Operation {name} not found.")
            if not op.done:
                op.polls_left -= 1
                if op.polls_left <= 0:
                    self._finish(op)
            return self._operation_json(op)

    def upload_model(self, parent: str, body: dict) -> dict:
        model = dict(body.get("model") or {})
        if not model.get("displayName"):
            raise HttpError(400, "model.display_name is required.")
        image = (model.get("containerSpec") or {}).get("imageUri")
        if not image:
            raise HttpError(400, "model.container_spec.image_uri is required.")
        artifact = model.get("artifactUri", "")
        if not artifact.startswith("gs://"):
            raise HttpError(400, f"artifact_uri must be a Cloud Storage folder, got {artifact!r}.")
        prefix = artifact.rstrip("/") + "/"
        stored = self.object_names(prefix)
        if "/vertex-ai/prediction/tf" in image and prefix + "saved_model.pb" not in stored:
            raise HttpError(400, f"There is no saved_model.pb under {artifact} for a TensorFlow container.")
        if not stored:
            raise HttpError(400, f"The artifact folder {artifact} is empty.")
        name = f"{parent}/models/{next(self._ids)}"
        model.update(name=name, versionId="1", createTime=_now())

        def apply() -> None:
            self.models[name] = model

        response = {"@type": _TYPE + "UploadModelResponse", "model": name, "modelVersionId": "1"}
        return self._operation(UPLOAD_MODEL, name, "UploadModelOperationMetadata", response, apply)

    def get_model(self, name: str) -> dict:
        if name not in self.models:
            raise HttpError(404, f"Model {name} not found.")
        return self.models[name]

    def list_endpoints(self, parent: str, query: dict[str, list[str]]) -> dict:
        wanted = None
        text = (query.get("filter") or [""])[0]
        if text:
            match = re.fullmatch(r'display_name\s*=\s*"([^"]*)"', text.strip())
            if not match:
                raise HttpError(400, f'The fake understands display_name="..." filters only, not {text!r}.')
            wanted = match.group(1)
        found = [
            e
            for name, e in sorted(self.endpoints.items())
            if name.startswith(parent + "/") and (wanted is None or e.get("displayName") == wanted)
        ]
        return {"endpoints": found} if found else {}

    def create_endpoint(self, parent: str, body: dict) -> dict:
        if not body.get("displayName"):
            raise HttpError(400, "endpoint.display_name is required.")
        name = f"{parent}/endpoints/{next(self._ids)}"
        endpoint = {**body, "name": name, "createTime": _now(), "deployedModels": [], "trafficSplit": {}}

        def apply() -> None:
            self.endpoints[name] = endpoint

        response = {"@type": _TYPE + "Endpoint", **endpoint}
        return self._operation(CREATE_ENDPOINT, name, "CreateEndpointOperationMetadata", response, apply)

    def get_endpoint(self, name: str) -> dict:
        if name not in self.endpoints:
            raise HttpError(404, f"Endpoint {name} not found.")
        return self.endpoints[name]

    def delete_endpoint(self, name: str) -> dict:
        endpoint = self.get_endpoint(name)
        if endpoint.get("deployedModels"):
            raise HttpError(400, f"Endpoint {name} has deployed models; undeploy them first.")

        def apply() -> None:
            self.endpoints.pop(name, None)

        response = {"@type": "type.googleapis.com/google.protobuf.Empty"}
        return self._operation(DELETE_ENDPOINT, name, "DeleteOperationMetadata", response, apply)

    def deploy_model(self, name: str, body: dict) -> dict:
        endpoint = self.get_endpoint(name)
        deployed = dict(body.get("deployedModel") or {})
        if deployed.get("model") not in self.models:
            raise HttpError(400, f"Model {deployed.get('model')!r} does not exist.")
        resources = deployed.get("dedicatedResources") or {}
        machine = (resources.get("machineSpec") or {}).get("machineType")
        low, high = int(resources.get("minReplicaCount") or 0), int(resources.get("maxReplicaCount") or 0)
        if not machine or low < 1 or (high and high < low):
            raise HttpError(400, f"Bad dedicated resources {resources}.")
        split = {k: int(v) for k, v in (body.get("trafficSplit") or {}).items()}
        if split and sum(split.values()) != 100:
            raise HttpError(400, f"Traffic split {split} must sum to 100.")
        deployed_id = str(next(self._ids))
        deployed.update(id=deployed_id, createTime=_now())

        def apply() -> None:
            endpoint["deployedModels"] = [*endpoint.get("deployedModels", []), deployed]
            if split:
                endpoint["trafficSplit"] = {
                    (deployed_id if k == "0" else k): v for k, v in split.items() if v
                }

        response = {"@type": _TYPE + "DeployModelResponse", "deployedModel": deployed}
        return self._operation(DEPLOY_MODEL, name, "DeployModelOperationMetadata", response, apply)

    def undeploy_model(self, name: str, body: dict) -> dict:
        endpoint = self.get_endpoint(name)
        deployed_id = str(body.get("deployedModelId") or "")
        ids = [d["id"] for d in endpoint.get("deployedModels", [])]
        if deployed_id not in ids:
            raise HttpError(400, f"Endpoint {name} has no deployed model {deployed_id!r} (it has {ids}).")
        split = {k: int(v) for k, v in (body.get("trafficSplit") or {}).items()}
        current = endpoint.get("trafficSplit") or {}
        others = [i for i in ids if i != deployed_id]
        if others and not split and current.get(deployed_id):
            raise HttpError(
                400,
                f"Deployed model {deployed_id} has {current[deployed_id]}% of the traffic; give a traffic split "
                "that moves it to the remaining models.",
            )
        if split and (sum(split.values()) != 100 or split.get(deployed_id)):
            raise HttpError(400, f"Traffic split {split} must sum to 100 without {deployed_id}.")

        def apply() -> None:
            endpoint["deployedModels"] = [d for d in endpoint["deployedModels"] if d["id"] != deployed_id]
            if not endpoint["deployedModels"]:
                endpoint["trafficSplit"] = {}
            elif split:
                endpoint["trafficSplit"] = {k: v for k, v in split.items() if v}

        response = {"@type": _TYPE + "UndeployModelResponse"}
        return self._operation(UNDEPLOY_MODEL, name, "UndeployModelOperationMetadata", response, apply)

    # --- Cloud Storage --------------------------------------------------------------------------
    def gcs_upload(self, bucket: str, query: dict[str, list[str]], raw: bytes, content_type: str) -> dict:
        kind = (query.get("uploadType") or [""])[0]
        if kind != "multipart":
            raise HttpError(400, f"The fake takes multipart uploads only, not {kind!r}.")
        metadata, data = _split_multipart(raw, content_type)
        name = metadata.get("name") or (query.get("name") or [""])[0]
        with self._lock:
            self.objects[(bucket, name)] = data
        return _object_resource(bucket, name, data)

    def gcs_get(self, bucket: str, name: str, media: bool) -> Any:
        with self._lock:
            data = self.objects.get((bucket, name))
        if data is None:
            raise HttpError(404, f"No such object: {bucket}/{name}")
        return data if media else _object_resource(bucket, name, data)

    def gcs_list(self, bucket: str, query: dict[str, list[str]]) -> dict:
        prefix = (query.get("prefix") or [""])[0]
        with self._lock:
            items = [_object_resource(b, n, d) for (b, n), d in sorted(self.objects.items()) if b == bucket]
        items = [i for i in items if i["name"].startswith(prefix)]
        return {"kind": "storage#objects", "items": items}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _object_resource(bucket: str, name: str, data: bytes) -> dict:
    return {
        "kind": "storage#object",
        "bucket": bucket,
        "name": name,
        "size": str(len(data)),
        "generation": "1",
    }


def _split_multipart(raw: bytes, content_type: str) -> tuple[dict, bytes]:
    """The JSON metadata part and the data part of a multipart/related upload."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if not boundary:
        raise HttpError(400, "A multipart upload needs a boundary.")
    parts = raw.split(b"--" + boundary.group(1).encode())
    bodies = []
    for part in parts[1:]:
        if part.startswith(b"--"):
            break
        _, _, body = part.partition(b"\r\n\r\n")
        bodies.append(body[:-2] if body.endswith(b"\r\n") else body)
    if len(bodies) != 2:
        raise HttpError(400, f"A multipart upload has a metadata and a data part, got {len(bodies)} parts.")
    return json.loads(bodies[0]), bodies[1]


_RESOURCE = r"projects/[^/]+/locations/[^/]+"


class _Handler(FakeHandler):
    fake: FakeVertexAI

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path, query = unquote(split.path), parse_qs(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        content_type = self.headers.get("Content-Type", "")
        route, answer = self._route(method, path, query, raw, content_type)
        fake = self.fake
        body: Any = None
        if raw and "json" in content_type:
            body = json.loads(raw)
        with fake._lock:
            fake.requests.append(RequestLog(route or "unknown", method, path, query, body))
            fault = next((f for f in fake._faults if f[0] == route), None)
            if fault is not None:
                fake._faults.remove(fault)
        if route is None:
            self._send_error(404, f"The fake does not serve {method} {path}.")
            return
        if fault is not None:
            self._send_error(fault[1], fault[2])
            return

        def locked() -> Any:
            with fake._lock:
                return answer()

        answered, payload = self._answer_with(locked)
        if not answered:
            return
        if isinstance(payload, bytes):
            self._send(200, payload, "application/octet-stream")
        else:
            self._send(200, json.dumps(payload).encode())

    def _route(self, method: str, path: str, query: dict, raw: bytes, content_type: str):
        fake = self.fake

        def body() -> dict:
            return json.loads(raw) if raw else {}

        if match := re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", path):
            if method == "POST":
                return GCS_UPLOAD, lambda: fake.gcs_upload(match.group(1), query, raw, content_type)
        if method == "GET" and (match := re.fullmatch(r"/storage/v1/b/([^/]+)", path)):
            return GCS_BUCKET, lambda: {"kind": "storage#bucket", "name": match.group(1)}
        if match := re.fullmatch(r"/storage/v1/b/([^/]+)/o", path):
            if method == "GET":
                return GCS_LIST, lambda: fake.gcs_list(match.group(1), query)
        if match := re.fullmatch(r"/(?:download/)?storage/v1/b/([^/]+)/o/(.+)", path):
            if method == "GET":
                media = (query.get("alt") or [""])[0] == "media"
                return GCS_GET, lambda: fake.gcs_get(match.group(1), match.group(2), media)
        # The REST operations client of the pinned library polls some operations under /ui/ (the
        # first URI pattern of its http rules), others under /v1/; Vertex AI serves both.
        if (
            path.startswith("/ui/")
            and method == "GET"
            and re.fullmatch(_RESOURCE + r"/.+/operations/[^/]+", path[4:])
        ):
            return GET_OPERATION, lambda: fake.get_operation(path[4:])
        if not path.startswith("/v1/"):
            return None, None
        name = path[len("/v1/") :]
        if method == "GET" and re.fullmatch(_RESOURCE + r"/.+/operations/[^/]+", name):
            return GET_OPERATION, lambda: fake.get_operation(name)
        if method == "POST" and (match := re.fullmatch(f"({_RESOURCE})/models:upload", name)):
            return UPLOAD_MODEL, lambda: fake.upload_model(match.group(1), body())
        if method == "GET" and re.fullmatch(_RESOURCE + r"/models/[^/:]+", name):
            return GET_MODEL, lambda: fake.get_model(name)
        if match := re.fullmatch(f"({_RESOURCE})/endpoints", name):
            if method == "GET":
                return LIST_ENDPOINTS, lambda: fake.list_endpoints(match.group(1), query)
            if method == "POST":
                return CREATE_ENDPOINT, lambda: fake.create_endpoint(match.group(1), body())
        if match := re.fullmatch(f"({_RESOURCE}/endpoints/[^/:]+)(:deployModel|:undeployModel)?", name):
            endpoint, verb = match.group(1), match.group(2)
            if method == "GET" and not verb:
                return GET_ENDPOINT, lambda: fake.get_endpoint(endpoint)
            if method == "DELETE" and not verb:
                return DELETE_ENDPOINT, lambda: fake.delete_endpoint(endpoint)
            if method == "POST" and verb == ":deployModel":
                return DEPLOY_MODEL, lambda: fake.deploy_model(endpoint, body())
            if method == "POST" and verb == ":undeployModel":
                return UNDEPLOY_MODEL, lambda: fake.undeploy_model(endpoint, body())
        return None, None

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
