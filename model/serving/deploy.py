"""Host a model folder on Vertex AI for Earth Engine, say what it costs, and take it down again.

    python -m model.serving.deploy MODEL_DIR --project P --region us-central1 [--staging gs://BUCKET/staging] \\
        [--machine-type n1-standard-4] [--min-replicas 1] [--max-replicas 1] [--serving-image IMAGE] [--yes]
    python -m model.serving.deploy --undeploy MODEL_DIR|ENDPOINT_ID --project P --region R [--delete-endpoint]
    python -m model.serving.deploy --list --project P --region R

Deploying uploads the folder's EE-ified SavedModel (`eeified/`, written by `model.train` or
`model.serving.eeify`) to the Vertex AI Model Registry with Google's prebuilt TensorFlow prediction container
(or, with `--serving-image`, the folder's `saved_model/` behind the project's own server image built
from `model/serving/Dockerfile.serve`), creates or reuses an endpoint by display name, deploys the model to
it with 100 % of the traffic (and undeploys the models it replaces), and writes into the model folder:

    deployment.json            model, endpoint, deployed-model ids, machine type, time, cost estimate
    earthengine_snippet.py     the `ee.Model.fromVertexAi(...)` call for this endpoint (Python) ...
    earthengine_snippet.js     ... and for the Code Editor, both built from earthengine.json

A local MODEL_DIR is copied to `--staging gs://...` first (Vertex AI reads models from Cloud Storage).
Before anything is spent, the cost estimate (the machine type's hourly rate x 24 x 30, from the dated
table below) is shown and confirmed (`--yes` skips the question in scripts). `--undeploy` undeploys
every model of the endpoint (billing stops) and, with `--delete-endpoint`, deletes it; `--list` shows
what is deployed in a region and its estimated monthly cost.

The Vertex AI calls go through the pinned `google-cloud-aiplatform` GAPIC clients over REST, with the
caller's application default credentials (`gcloud auth application-default login`) or `--key-file`.
Long-running operations are polled with progress. Permission, quota, unknown-region and missing-model
problems end in one `error:` line that says what to change.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import json
import posixpath
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from model.errors import ModelError
from transforms.io.files import join
from transforms.runtime.command import HelpFormatter, prog

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEPLOYMENT_JSON = "deployment.json"
DEPLOYMENT_FORMAT = "terrabeam-deployment/1"
SNIPPET_PY = "earthengine_snippet.py"
SNIPPET_JS = "earthengine_snippet.js"
EARTHENGINE_JSON = "earthengine.json"
MODEL_JSON = "model.json"
EEIFIED_DIR = "eeified"
SAVED_MODEL_DIR = "saved_model"
LABELS = {"managed-by": "terrabeam"}

DEFAULT_MACHINE_TYPE = "n1-standard-4"
# What the project's own server image (model/serving/Dockerfile.serve, model.serving.serve) listens on and answers.
SERVE_PORT = 8080
SERVE_HEALTH_ROUTE = "/health"
SERVE_PREDICT_ROUTE = "/predict"

# Vertex AI Inference prices of custom-trained models on CPU machines, USD per node hour, region
# us-central1 (Iowa); other regions cost up to about a quarter more. Source:
# https://cloud.google.com/vertex-ai/pricing ("Prediction and explanation", custom-trained models),
# as published in June 2026. A deployed model is billed for each node hour whether or not it serves
# requests; prices change, so the estimate names this date. --hourly-price overrides the table.
PRICE_SOURCE = "https://cloud.google.com/vertex-ai/pricing"
PRICES_AS_OF = "2026-06"
PRICE_REGION = "us-central1"
HOURLY_USD: dict[str, float] = {
    "n1-standard-2": 0.1095,
    "n1-standard-4": 0.2190,
    "n1-standard-8": 0.4380,
    "n1-standard-16": 0.8760,
    "n1-standard-32": 1.7520,
    "n1-highmem-2": 0.1370,
    "n1-highmem-4": 0.2740,
    "n1-highmem-8": 0.5480,
    "n1-highmem-16": 1.0960,
}
HOURS_PER_MONTH = 24 * 30

PROJECT_ID = re.compile(r"([a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")
GCS_FOLDER = re.compile(r"gs://[a-z0-9][-_.a-z0-9]{1,61}[a-z0-9](/[^\r\n]*)?")
ENDPOINT_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/endpoints/[^/]+")


class DeployError(ModelError):
    """Bad input or an API refusal; the message says what to change (printed as `error: ...`)."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# --- cost ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CostEstimate:
    """What keeping a deployment running costs: hourly rate x 24 x 30 per node, min to max nodes."""

    machine_type: str
    hourly_usd: float | None
    min_replicas: int
    max_replicas: int
    source: str = f"{PRICE_SOURCE} ({PRICE_REGION}, as of {PRICES_AS_OF})"

    @property
    def monthly_usd(self) -> float | None:
        return (
            None
            if self.hourly_usd is None
            else round(self.hourly_usd * HOURS_PER_MONTH * self.min_replicas, 2)
        )

    @property
    def monthly_max_usd(self) -> float | None:
        return (
            None
            if self.hourly_usd is None
            else round(self.hourly_usd * HOURS_PER_MONTH * self.max_replicas, 2)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "machine_type": self.machine_type,
            "hourly_usd_per_node": self.hourly_usd,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "hours_per_month": HOURS_PER_MONTH,
            "monthly_usd": self.monthly_usd,
            "monthly_usd_at_max_replicas": self.monthly_max_usd,
            "prices": self.source,
        }

    def describe(self) -> str:
        nodes = (
            f"{self.min_replicas}"
            if self.min_replicas == self.max_replicas
            else f"{self.min_replicas} to {self.max_replicas}"
        )
        if self.hourly_usd is None:
            return (
                f"{nodes} {self.machine_type} node(s) running around the clock; the price table has no rate for "
                f"{self.machine_type} (see {PRICE_SOURCE}, or pass --hourly-price USD)."
            )
        cost = f"about ${self.monthly_usd:,.2f} a month"
        if self.max_replicas != self.min_replicas:
            cost += f" (up to ${self.monthly_max_usd:,.2f} when scaled out)"
        return (
            f"{nodes} {self.machine_type} node(s) running around the clock: {cost} "
            f"(${self.hourly_usd:.4f} per node hour x 24 x 30; {self.source})."
        )


def estimate_cost(
    machine_type: str, min_replicas: int = 1, max_replicas: int = 1, hourly_usd: float | None = None
) -> CostEstimate:
    rate = hourly_usd if hourly_usd is not None else HOURLY_USD.get(machine_type)
    source = "--hourly-price" if hourly_usd is not None else CostEstimate.source
    return CostEstimate(machine_type, rate, min_replicas, max(min_replicas, max_replicas), source)


# --- where things are: regions, images ---------------------------------------------------------------


def vertex_regions() -> frozenset[str]:
    """The regions the pinned client library knows Vertex AI in."""
    from google.cloud.aiplatform.constants import base

    return frozenset(base.SUPPORTED_REGIONS)


def check_region(region: str) -> str:
    regions = vertex_regions()
    if region not in regions:
        raise DeployError(
            f"--region {region!r} is not a Vertex AI region; use one of {', '.join(sorted(regions))} (Earth "
            "Engine reads models most cheaply from us-central1)."
        )
    return region


def prebuilt_tensorflow_image(region: str) -> str:
    """Google's newest prebuilt TensorFlow CPU prediction container (as the pinned library lists them),
    from the Artifact Registry nearest the region (us, europe or asia)."""
    from google.cloud.aiplatform.constants import prediction

    registry = "europe" if region.startswith("europe") else "asia" if region.startswith("asia") else "us"
    versions = {}
    for uri in prediction.TF_CONTAINER_URIS:
        match = prediction.CONTAINER_URI_PATTERN.fullmatch(uri)
        if match and (match["region"], match["framework"], match["accelerator"]) == (registry, "tf2", "cpu"):
            versions[tuple(int(p) for p in match["version"].split("-"))] = uri
    return versions[max(versions)]


# --- files: local or gs:// ---------------------------------------------------------------------------


def _split_gcs(uri: str) -> tuple[str, str]:
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    return bucket, name


class Storage:
    """Read, write and copy files of local folders and gs:// folders (google-cloud-storage client)."""

    def __init__(self, project: str, credentials: Any) -> None:
        self._project = project
        self._credentials = credentials
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from google.cloud import storage

            self._client = storage.Client(project=self._project, credentials=self._credentials)
        return self._client

    def read(self, path: str) -> bytes | None:
        if not path.startswith("gs://"):
            return Path(path).read_bytes() if Path(path).is_file() else None
        from google.api_core.exceptions import NotFound

        bucket, name = _split_gcs(path)
        with self._errors(f"reading {path}"):
            try:
                return self.client.bucket(bucket).blob(name).download_as_bytes()
            except NotFound:
                return None

    def write(self, path: str, data: bytes, content_type: str = "application/json") -> None:
        if not path.startswith("gs://"):
            Path(path).write_bytes(data)
            return
        bucket, name = _split_gcs(path)
        with self._errors(f"writing {path}"):
            self.client.bucket(bucket).blob(name).upload_from_string(data, content_type=content_type)

    def exists(self, path: str) -> bool:
        if not path.startswith("gs://"):
            return Path(path).exists()
        bucket, name = _split_gcs(path)
        with self._errors(f"reading {path}"):
            return any(True for _ in self.client.list_blobs(bucket, prefix=name, max_results=1))

    def upload(self, local: str, destination: str, report: Callable[[str], None]) -> int:
        """Copy a local file or folder to a gs:// path; returns the number of files."""
        source = Path(local)
        bucket_name, prefix = _split_gcs(destination)
        if source.is_file():
            pairs = [(source, prefix)]
        else:
            files = sorted(p for p in source.rglob("*") if p.is_file())
            pairs = [(p, posixpath.join(prefix, p.relative_to(source).as_posix())) for p in files]
        with self._errors(f"copying {local} to {destination}"):
            bucket = self.client.bucket(bucket_name)
            for path, name in pairs:
                bucket.blob(name).upload_from_filename(str(path))
        report(f"Copied {len(pairs)} file(s) of {local} to {destination}")
        return len(pairs)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        from google.api_core import exceptions as api

        try:
            yield
        except (api.Forbidden, api.Unauthorized, api.NotFound) as e:
            raise DeployError(
                f"Cloud Storage refused {doing}: {getattr(e, 'message', e)}. The bucket must exist and the "
                "credentials need access to it (e.g. Storage Object Admin, roles/storage.objectAdmin).",
                1,
            ) from None
        except (api.GoogleAPIError, OSError) as e:  # incl. RetryError once the client's retries ran out
            raise DeployError(
                f"Cloud Storage failed {doing}: {getattr(e, 'message', None) or e}", 1
            ) from None


# --- the snippets ------------------------------------------------------------------------------------


def _py(value: Any) -> str:
    return json.dumps(value).replace("true", "True").replace("false", "False")


def snippet_arguments(config: Mapping[str, Any], endpoint: str) -> list[tuple[str, str, str]]:
    """(name, Python source, JavaScript source) of each fromVertexAi argument, from earthengine.json."""
    args = dict(config["fromVertexAi"])
    classes = list(config["classes"])
    out: list[tuple[str, str, str]] = [("endpoint", _py(endpoint), json.dumps(endpoint))]
    for key in ("inputTileSize", "inputOverlapSize"):
        out.append((key, _py(args[key]), json.dumps(args[key])))
    if args.get("proj"):
        crs, scale = args["proj"]["crs"], float(args["proj"]["scale"])
        projection = f"ee.Projection({json.dumps(crs)}).atScale({scale:g})"
        out.append(("proj", projection, projection))
        fixed = bool(args.get("fixInputProj"))
        out.append(("fixInputProj", _py(fixed), json.dumps(fixed)))
    if args.get("outputTileSize"):
        out.append(("outputTileSize", _py(args["outputTileSize"]), json.dumps(args["outputTileSize"])))
    # One band per class, in class order (earthengine.json keeps its keys sorted).
    bands = args["outputBands"]
    names = [c for c in classes if c in bands] + [b for b in bands if b not in classes]

    def band(name: str, js: bool) -> str:
        kind = bands[name].get("type", "float")
        dims = int(bands[name].get("dimensions") or 0)
        parts = [f"{'type' if js else chr(34) + 'type' + chr(34)}: ee.PixelType.{kind}()"]
        if dims:
            parts.append(f"{'dimensions' if js else chr(34) + 'dimensions' + chr(34)}: {dims}")
        return "{" + ", ".join(parts) + "}"

    py_bands = "{\n" + "".join(f"        {json.dumps(n)}: {band(n, False)},\n" for n in names) + "    }"
    js_bands = "{\n" + "".join(f"    {json.dumps(n)}: {band(n, True)},\n" for n in names) + "  }"
    out.append(("outputBands", py_bands, js_bands))
    for key in ("maxPayloadBytes", "payloadFormat"):
        if key in args:
            out.append((key, _py(args[key]), json.dumps(args[key])))
    return out


def python_snippet(config: Mapping[str, Any], endpoint: str, project: str, palette: Sequence[str]) -> str:
    """A ready-to-run Python script that connects Earth Engine to the deployed model."""
    arguments = "".join(f"    {name}={py},\n" for name, py, _ in snippet_arguments(config, endpoint))
    bands = list(config["inputBands"])
    classes = list(config["classes"])
    return (
        "# Earth Engine -> the model on Vertex AI (written by python -m model.serving.deploy from earthengine.json).\n"
        "import ee\n\n"
        f"ee.Initialize(project={json.dumps(project)})  # a Cloud project registered for Earth Engine\n\n"
        f"model = ee.Model.fromVertexAi(\n{arguments})\n\n"
        f"BANDS = {_py(bands)}\n"
        f"CLASSES = {_py(classes)}\n"
        f"PALETTE = {_py([c.lstrip('#') for c in palette])}\n\n"
        "# An image with the bands above, as the model saw them in training (same sensor, processing, units):\n"
        'image = ee.Image("projects/YOUR_PROJECT/assets/YOUR_IMAGE")\n'
        "probabilities = model.predictImage(image.select(BANDS).float().toArray())  # one band per class\n"
        'landcover = probabilities.toArray().arrayArgmax().arrayGet(0).rename("landcover")  # index into CLASSES\n'
        'vis = {"min": 0, "max": len(CLASSES) - 1, "palette": PALETTE}\n'
        'print(landcover.getMapId(vis)["tile_fetcher"].url_format)  # or geemap: Map.addLayer(landcover, vis)\n'
    )


def javascript_snippet(config: Mapping[str, Any], endpoint: str, palette: Sequence[str]) -> str:
    """The same for the Earth Engine Code Editor."""
    arguments = ",\n".join(f"  {name}: {js}" for name, _, js in snippet_arguments(config, endpoint))
    bands = list(config["inputBands"])
    classes = list(config["classes"])
    return (
        "// Earth Engine -> the model on Vertex AI (written by python -m model.serving.deploy from earthengine.json).\n"
        f"var model = ee.Model.fromVertexAi({{\n{arguments}\n}});\n\n"
        f"var bands = {json.dumps(bands)};\n"
        f"var classes = {json.dumps(classes)};\n"
        f"var palette = {json.dumps([c.lstrip('#') for c in palette])};\n\n"
        "// An image with the bands above, as the model saw them in training (same sensor, processing, units):\n"
        "var image = ee.Image('projects/YOUR_PROJECT/assets/YOUR_IMAGE');\n"
        "var probabilities = model.predictImage(image.select(bands).float().toArray());  // one band per class\n"
        "var landcover = probabilities.toArray().arrayArgmax().arrayGet(0).rename('landcover');\n"
        "Map.addLayer(landcover, {min: 0, max: classes.length - 1, palette: palette}, 'landcover');\n"
    )


# --- Vertex AI -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Vertex:
    """The GAPIC clients of one project and region, over REST."""

    project: str
    region: str
    models: Any
    endpoints: Any
    api_endpoint: str

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    def endpoint_name(self, endpoint_id: str) -> str:
        return (
            endpoint_id if ENDPOINT_NAME.fullmatch(endpoint_id) else f"{self.parent}/endpoints/{endpoint_id}"
        )


def connect(project: str, region: str, credentials: Any, api_endpoint: str | None = None) -> Vertex:
    from google.api_core.client_options import ClientOptions
    from google.cloud import aiplatform_v1

    endpoint = api_endpoint or f"{region}-aiplatform.googleapis.com"
    options = ClientOptions(api_endpoint=endpoint)
    return Vertex(
        project,
        region,
        aiplatform_v1.ModelServiceClient(credentials=credentials, transport="rest", client_options=options),
        aiplatform_v1.EndpointServiceClient(
            credentials=credentials, transport="rest", client_options=options
        ),
        endpoint,
    )


def load_credentials(key_file: str | None) -> Any:
    """A service-account key file's credentials, else application default credentials."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError

    if key_file:
        from google.oauth2 import service_account

        try:
            return service_account.Credentials.from_service_account_file(
                key_file, scopes=[CLOUD_PLATFORM_SCOPE]
            )
        except (OSError, ValueError, KeyError, GoogleAuthError) as e:
            raise DeployError(
                f"Cannot use the key file {key_file!r} ({e}); pass the JSON key of a service account with the "
                "Vertex AI User role (roles/aiplatform.user)."
            ) from None
    try:
        credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    except DefaultCredentialsError:
        raise DeployError(
            "No Google Cloud credentials: run `gcloud auth application-default login`, or pass --key-file with "
            "a service account's JSON key."
        ) from None
    return credentials


def explain(error: Exception, doing: str, vertex: Vertex | None = None) -> DeployError:
    """One `error:` line for an API error: what went wrong while `doing`, and what to change."""
    from google.api_core import exceptions as api

    message = getattr(error, "message", None) or str(error)
    where = f" in project {vertex.project!r}, region {vertex.region!r}" if vertex else ""
    if isinstance(error, api.Forbidden):  # 403, and PERMISSION_DENIED from an operation
        return DeployError(
            f"Permission denied while {doing}{where}: {message}. The credentials need the Vertex AI User role "
            "(roles/aiplatform.user) and read access to the model's Cloud Storage folder, and the project needs "
            "the Vertex AI API (`gcloud services enable aiplatform.googleapis.com`); pass --key-file to use "
            "another service account.",
            1,
        )
    if isinstance(error, api.TooManyRequests):  # 429, and RESOURCE_EXHAUSTED from an operation
        return DeployError(
            f"Quota exceeded while {doing}{where}: {message}. Ask for more (Cloud console > IAM & Admin > "
            "Quotas, e.g. 'Custom model serving CPUs' for the region), use a smaller --machine-type or fewer "
            "--max-replicas, or deploy in another --region.",
            1,
        )
    if isinstance(error, api.Unauthorized):
        return DeployError(
            f"The credentials were refused while {doing}: {message}. Run `gcloud auth application-default "
            "login` again, or pass --key-file.",
            1,
        )
    if isinstance(error, api.NotFound):
        return DeployError(
            f"Not found while {doing}{where}: {message}. Check --project, --region and the endpoint id.", 1
        )
    if isinstance(error, api.GoogleAPICallError):
        code = getattr(error, "code", None)
        return DeployError(f"Vertex AI refused {doing}{where} ({code}): {message}", 1)
    return DeployError(
        f"Cannot reach Vertex AI at {vertex.api_endpoint if vertex else 'its endpoint'} while {doing} ({error}). "
        "Check the network and --region.",
        1,
    )


@dataclasses.dataclass
class Waiting:
    """How operations are waited for: poll interval, time limit, and where progress goes."""

    poll_interval: float = 10.0
    timeout: float = 3600.0
    report_every: float = 30.0
    report: Callable[[str], None] = print
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


def wait_for(operation: Any, doing: str, waiting: Waiting, vertex: Vertex, note: str = "") -> Any:
    """Poll a long-running operation until it is done, reporting progress; its result, or DeployError."""
    from google.api_core import exceptions as api

    name = operation.operation.name
    start = last = waiting.clock()
    waiting.report(f"{doing[0].upper()}{doing[1:]}{note} ... (operation {name})")
    try:
        while not operation.done():
            now = waiting.clock()
            if now - start > waiting.timeout:
                raise DeployError(
                    f"{doing[0].upper()}{doing[1:]} is still running after {waiting.timeout:.0f} s; Vertex AI goes on "
                    f"with it (operation {name}). Check the console, then run this again.",
                    1,
                )
            if now - last >= waiting.report_every:
                waiting.report(f"  still {doing}: {now - start:.0f} s")
                last = now
            waiting.sleep(waiting.poll_interval)
        result = operation.result()
    except (api.GoogleAPIError, OSError) as e:
        raise explain(e, doing, vertex) from None
    waiting.report(f"  done in {waiting.clock() - start:.0f} s")
    return result


def _call(doing: str, vertex: Vertex, fn: Callable[[], Any]) -> Any:
    from google.api_core import exceptions as api
    from google.auth.exceptions import TransportError

    try:
        return fn()
    # requests' connection errors (e.g. no DNS name for the endpoint) are OSErrors.
    except (api.GoogleAPIError, TransportError, OSError) as e:
        raise explain(e, doing, vertex) from None


def find_endpoints(vertex: Vertex, display_name: str) -> list[Any]:
    request = {"parent": vertex.parent, "filter": f'display_name="{display_name}"'}
    return _call("listing endpoints", vertex, lambda: list(vertex.endpoints.list_endpoints(request=request)))


def undeploy_all(vertex: Vertex, endpoint_name: str, waiting: Waiting, keep: Sequence[str] = ()) -> list[str]:
    """Undeploy every deployed model of an endpoint but `keep`; returns the ids undeployed.

    A deployed model that still has traffic can only go when a traffic split moves its share to the
    models that stay, so models without traffic go first and each one's share moves on to the busiest
    model left.
    """
    endpoint = _call(
        "reading the endpoint", vertex, lambda: vertex.endpoints.get_endpoint(name=endpoint_name)
    )
    traffic = {k: int(v) for k, v in endpoint.traffic_split.items()}
    leaving = sorted(
        (d.id for d in endpoint.deployed_models if d.id not in keep), key=lambda i: traffic.get(i, 0)
    )
    staying = [d.id for d in endpoint.deployed_models if d.id in keep] + list(leaving)
    undeployed = []
    for deployed_id in leaving:
        staying.remove(deployed_id)
        split: dict[str, int] = {}
        if staying and traffic.get(deployed_id):
            split = {i: traffic.get(i, 0) for i in staying}
            busiest = max(staying, key=lambda i: split[i])
            split[busiest] += traffic[deployed_id]
            traffic = split
        operation = _call(
            "undeploying",
            vertex,
            functools.partial(
                vertex.endpoints.undeploy_model,
                endpoint=endpoint_name,
                deployed_model_id=deployed_id,
                traffic_split=split,
            ),
        )
        wait_for(operation, f"undeploying deployed model {deployed_id} from {endpoint_name}", waiting, vertex)
        undeployed.append(deployed_id)
    return undeployed


# --- deploy ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DeploySettings:
    model_dir: str
    display_name: str
    machine_type: str = DEFAULT_MACHINE_TYPE
    min_replicas: int = 1
    max_replicas: int = 1
    staging: str | None = None
    serving_image: str | None = None  # None: Google's prebuilt TensorFlow container
    keep_previous: bool = False


def read_model_folder(settings: DeploySettings, storage: Storage) -> dict[str, Any]:
    """earthengine.json (and model.json when present); checks the folder has what the image serves."""
    folder = settings.model_dir
    raw = storage.read(join(folder, EARTHENGINE_JSON))
    if raw is None:
        raise DeployError(
            f"{folder!r} has no {EARTHENGINE_JSON}: pass a folder written by `python -m model.train` or "
            "`python -m model.serving.eeify`."
        )
    config = json.loads(raw)
    if settings.serving_image is None:
        if not storage.exists(join(folder, EEIFIED_DIR, "saved_model.pb")):
            raise DeployError(
                f"{folder!r} has no {EEIFIED_DIR}/ SavedModel, which Google's TensorFlow container serves to "
                f"Earth Engine: make one with `python -m model.serving.eeify {folder} {folder}` (or retrain)."
            )
    else:
        missing = [
            name
            for name in (MODEL_JSON, join(SAVED_MODEL_DIR, "saved_model.pb"))
            if not storage.exists(join(folder, name))
        ]
        if missing:
            raise DeployError(
                f"--serving-image runs model.serving.serve, which needs a terrabeam model folder; {folder!r} lacks "
                f"{', '.join(missing)}. Deploy without --serving-image to serve {EEIFIED_DIR}/ instead."
            )
    info = json.loads(storage.read(join(folder, MODEL_JSON)) or b"{}")
    return {"earthengine": config, "model": info}


def artifact_location(settings: DeploySettings, storage: Storage, report: Callable[[str], None]) -> str:
    """The gs:// folder Vertex AI reads the model from (copying a local folder to --staging first)."""
    folder = settings.model_dir
    if folder.startswith("gs://"):
        base = folder.rstrip("/")
    else:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        base = f"{settings.staging.rstrip('/')}/{settings.display_name}-{stamp}"
        names = [EEIFIED_DIR] if settings.serving_image is None else [SAVED_MODEL_DIR, MODEL_JSON]
        for name in [*names, EARTHENGINE_JSON]:
            storage.upload(join(folder, name), f"{base}/{name}", report)
    return f"{base}/{EEIFIED_DIR}" if settings.serving_image is None else base


def deploy(
    settings: DeploySettings,
    vertex: Vertex,
    storage: Storage,
    cost: CostEstimate,
    waiting: Waiting,
) -> dict[str, Any]:
    """Upload, create or reuse the endpoint, deploy with all the traffic; returns deployment.json."""
    from google.cloud import aiplatform_v1 as v1

    report = waiting.report
    artifact = artifact_location(settings, storage, report)
    if settings.serving_image is None:
        image = prebuilt_tensorflow_image(vertex.region)
        container = v1.ModelContainerSpec(image_uri=image)
    else:
        image = settings.serving_image
        container = v1.ModelContainerSpec(
            image_uri=image,
            ports=[v1.Port(container_port=SERVE_PORT)],
            health_route=SERVE_HEALTH_ROUTE,
            predict_route=SERVE_PREDICT_ROUTE,
        )
    model = v1.Model(
        display_name=settings.display_name, artifact_uri=artifact, container_spec=container, labels=LABELS
    )
    upload = _call(
        "uploading the model", vertex, lambda: vertex.models.upload_model(parent=vertex.parent, model=model)
    )
    uploaded = wait_for(upload, f"uploading {artifact} to the Model Registry", waiting, vertex)
    model_name = uploaded.model
    report(f"Model {model_name} ({image})")

    existing = find_endpoints(vertex, settings.display_name)
    if existing:
        endpoint_name = existing[0].name
        report(f"Reusing endpoint {endpoint_name} ({settings.display_name!r})")
    else:
        endpoint = v1.Endpoint(display_name=settings.display_name, labels=LABELS)
        create = _call(
            "creating the endpoint",
            vertex,
            lambda: vertex.endpoints.create_endpoint(parent=vertex.parent, endpoint=endpoint),
        )
        endpoint_name = wait_for(create, f"creating endpoint {settings.display_name!r}", waiting, vertex).name
        report(f"Created endpoint {endpoint_name}")

    deployed = v1.DeployedModel(
        model=model_name,
        display_name=settings.display_name,
        dedicated_resources=v1.DedicatedResources(
            machine_spec=v1.MachineSpec(machine_type=settings.machine_type),
            min_replica_count=settings.min_replicas,
            max_replica_count=settings.max_replicas,
        ),
    )
    # "0" stands for the model being deployed: it gets all of the endpoint's traffic.
    operation = _call(
        "deploying the model",
        vertex,
        lambda: vertex.endpoints.deploy_model(
            endpoint=endpoint_name, deployed_model=deployed, traffic_split={"0": 100}
        ),
    )
    result = wait_for(
        operation,
        f"deploying to {settings.machine_type} x{settings.min_replicas}",
        waiting,
        vertex,
        note=" (this takes several minutes)",
    )
    deployed_id = result.deployed_model.id
    replaced: list[str] = []
    if not settings.keep_previous:
        replaced = undeploy_all(vertex, endpoint_name, waiting, keep=[deployed_id])
        if replaced:
            report(f"Undeployed the model(s) this one replaces: {', '.join(replaced)}")
    return {
        "format": DEPLOYMENT_FORMAT,
        "project": vertex.project,
        "region": vertex.region,
        "model": model_name,
        "artifact_uri": artifact,
        "serving_image": image,
        "endpoint": endpoint_name,
        "endpoint_display_name": settings.display_name,
        "deployed_model_id": deployed_id,
        "replaced_deployed_model_ids": replaced,
        "machine_type": settings.machine_type,
        "min_replicas": settings.min_replicas,
        "max_replicas": settings.max_replicas,
        "deployed_at": _utc_now(),
        "cost_estimate": cost.to_json(),
        "snippets": {"python": SNIPPET_PY, "javascript": SNIPPET_JS},
    }


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_outputs(
    folder: str,
    storage: Storage,
    record: Mapping[str, Any],
    config: Mapping[str, Any],
    palette: Sequence[str],
) -> tuple[str, str]:
    """deployment.json and the two snippets into the model folder; returns the snippets."""
    python = python_snippet(config, record["endpoint"], record["project"], palette)
    javascript = javascript_snippet(config, record["endpoint"], palette)
    storage.write(join(folder, SNIPPET_PY), python.encode(), "text/x-python")
    storage.write(join(folder, SNIPPET_JS), javascript.encode(), "text/javascript")
    storage.write(join(folder, DEPLOYMENT_JSON), (json.dumps(record, indent=2) + "\n").encode())
    return python, javascript


# --- undeploy and list -------------------------------------------------------------------------------


def resolve_endpoint(target: str, vertex: Vertex, storage: Storage) -> tuple[str, str | None]:
    """(endpoint resource name, model folder or None) for a model folder, an endpoint id or name."""
    if re.fullmatch(r"\d+", target) or ENDPOINT_NAME.fullmatch(target):
        return vertex.endpoint_name(target), None
    raw = storage.read(join(target, DEPLOYMENT_JSON))
    if raw is None:
        raise DeployError(
            f"--undeploy {target!r} is neither an endpoint id (digits), an endpoint resource name nor a model "
            f"folder with {DEPLOYMENT_JSON}; `--list` shows the endpoints."
        )
    record = json.loads(raw)
    if (record.get("project"), record.get("region")) != (vertex.project, vertex.region):
        raise DeployError(
            f"{target}/{DEPLOYMENT_JSON} describes a deployment in project {record.get('project')!r}, region "
            f"{record.get('region')!r}; pass those as --project and --region."
        )
    return record["endpoint"], target


def undeploy(target: str, vertex: Vertex, storage: Storage, waiting: Waiting, delete_endpoint: bool) -> dict:
    endpoint_name, folder = resolve_endpoint(target, vertex, storage)
    undeployed = undeploy_all(vertex, endpoint_name, waiting)
    deleted = False
    if delete_endpoint:
        operation = _call(
            "deleting the endpoint", vertex, lambda: vertex.endpoints.delete_endpoint(name=endpoint_name)
        )
        wait_for(operation, f"deleting endpoint {endpoint_name}", waiting, vertex)
        deleted = True
    if folder is not None:
        record = json.loads(storage.read(join(folder, DEPLOYMENT_JSON)) or b"{}")
        record.update(undeployed_at=_utc_now(), undeployed_model_ids=undeployed, endpoint_deleted=deleted)
        storage.write(join(folder, DEPLOYMENT_JSON), (json.dumps(record, indent=2) + "\n").encode())
    return {"endpoint": endpoint_name, "undeployed": undeployed, "endpoint_deleted": deleted}


def list_deployments(vertex: Vertex) -> list[dict[str, Any]]:
    """Every deployed model of the region's endpoints, with its estimated monthly cost."""
    endpoints = _call(
        "listing endpoints",
        vertex,
        lambda: list(vertex.endpoints.list_endpoints(request={"parent": vertex.parent})),
    )
    rows = []
    for endpoint in endpoints:
        traffic = dict(endpoint.traffic_split)
        for deployed in endpoint.deployed_models:
            resources = deployed.dedicated_resources
            machine = resources.machine_spec.machine_type or "(shared or automatic resources)"
            low = int(resources.min_replica_count or 1)
            cost = estimate_cost(machine, low, int(resources.max_replica_count or low))
            rows.append(
                {
                    "endpoint": endpoint.name,
                    "endpoint_display_name": endpoint.display_name,
                    "deployed_model_id": deployed.id,
                    "model": deployed.model,
                    "machine_type": machine,
                    "min_replicas": cost.min_replicas,
                    "max_replicas": cost.max_replicas,
                    "traffic_percent": int(traffic.get(deployed.id, 0)),
                    "monthly_usd": cost.monthly_usd,
                }
            )
        if not endpoint.deployed_models:
            rows.append(
                {
                    "endpoint": endpoint.name,
                    "endpoint_display_name": endpoint.display_name,
                    "deployed_model_id": None,
                    "monthly_usd": 0.0,
                }
            )
    return rows


def format_listing(rows: Sequence[Mapping[str, Any]], vertex: Vertex) -> str:
    if not rows:
        return f"No endpoints in {vertex.parent}: nothing is deployed, nothing is billed for serving."
    lines = [
        f"{'ENDPOINT':<12} {'DISPLAY NAME':<28} {'DEPLOYED':<12} {'MACHINE':<16} {'NODES':<6} {'USD/MONTH':>10}"
    ]
    total, unknown = 0.0, False
    for row in rows:
        endpoint_id = row["endpoint"].rsplit("/", 1)[-1]
        if row["deployed_model_id"] is None:
            lines.append(
                f"{endpoint_id:<12} {row['endpoint_display_name'][:28]:<28} {'(none)':<12} {'':<16} {'':<6} {0:>10.2f}"
            )
            continue
        nodes = f"{row['min_replicas']}" + (
            f"-{row['max_replicas']}" if row["max_replicas"] != row["min_replicas"] else ""
        )
        monthly = row["monthly_usd"]
        unknown |= monthly is None
        total += monthly or 0.0
        shown = "?" if monthly is None else f"{monthly:.2f}"
        lines.append(
            f"{endpoint_id:<12} {row['endpoint_display_name'][:28]:<28} {row['deployed_model_id']:<12} "
            f"{row['machine_type'][:16]:<16} {nodes:<6} {shown:>10}"
        )
    lines.append(
        f"Estimated total: ${total:,.2f} a month at the minimum node counts"
        + (" plus machine types the price table lacks (?)" if unknown else "")
        + f" ({PRICE_SOURCE}, {PRICE_REGION} prices as of {PRICES_AS_OF}). "
        f"Stop one with: python -m model.serving.deploy --undeploy ENDPOINT --project {vertex.project} --region {vertex.region}"
    )
    return "\n".join(lines)


# --- command line ----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog("model.serving.deploy"),
        formatter_class=HelpFormatter,
        description="Deploy a model folder to a Vertex AI endpoint for ee.Model.fromVertexAi, list deployments "
        "and their cost, undeploy.",
    )
    parser.add_argument(
        "model_dir", nargs="?", help="Model folder (local or gs://) with eeified/ and earthengine.json."
    )
    parser.add_argument("--project", required=True, help="Google Cloud project id.")
    parser.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1.")
    parser.add_argument(
        "--staging", help="gs:// folder a local model folder is copied to (required for local folders)."
    )
    parser.add_argument(
        "--name",
        help="Display name of the model and endpoint; an endpoint of that name is reused (default: terrabeam-<folder>).",
    )
    parser.add_argument(
        "--machine-type",
        default=DEFAULT_MACHINE_TYPE,
        help="Machine type of the serving nodes (default %(default)s).",
    )
    parser.add_argument(
        "--min-replicas", type=int, default=1, help="Nodes kept running (default %(default)s)."
    )
    parser.add_argument(
        "--max-replicas", type=int, default=None, help="Nodes under load (default: --min-replicas)."
    )
    parser.add_argument(
        "--serving-image",
        metavar="IMAGE_URI",
        help="Serve with this image built from model/serving/Dockerfile.serve (model.serving.serve) instead of Google's prebuilt "
        "TensorFlow container.",
    )
    parser.add_argument(
        "--keep-previous", action="store_true", help="Leave models already deployed on the endpoint deployed."
    )
    parser.add_argument(
        "--hourly-price", type=float, help="USD per node hour, for a machine type the table lacks."
    )
    parser.add_argument("--yes", action="store_true", help="Deploy without asking (scripts).")
    parser.add_argument(
        "--undeploy",
        metavar="MODEL_DIR|ENDPOINT",
        help="Undeploy every model of this endpoint (billing stops).",
    )
    parser.add_argument(
        "--delete-endpoint", action="store_true", help="With --undeploy: delete the endpoint too."
    )
    parser.add_argument(
        "--list", action="store_true", help="List deployed models and their estimated monthly cost."
    )
    parser.add_argument(
        "--key-file", help="Service-account JSON key (default: application default credentials)."
    )
    parser.add_argument(
        "--api-endpoint",
        help="Vertex AI API endpoint (default REGION-aiplatform.googleapis.com), e.g. for Private Service Connect.",
    )
    parser.add_argument("--poll-interval", type=float, default=10.0, help="Seconds between operation polls.")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="Give up waiting for one operation after this."
    )
    return parser


def _display_name(args: argparse.Namespace) -> str:
    if args.name:
        name = args.name
    else:
        base = args.model_dir.rstrip("/").rsplit("/", 1)[-1] or "model"
        name = "terrabeam-" + re.sub(r"[^A-Za-z0-9_-]+", "-", base)
    if not 1 <= len(name) <= 128:
        raise DeployError(f"--name {name!r} must be 1 to 128 characters.")
    return name


def settings_from(args: argparse.Namespace) -> DeploySettings:
    """Validate the deploy command line (no network)."""
    if not args.model_dir:
        raise DeployError("Name the model folder to deploy (or use --undeploy / --list).")
    if args.min_replicas < 1:
        raise DeployError(
            f"--min-replicas must be at least 1 (Vertex AI keeps one node running), got {args.min_replicas}."
        )
    max_replicas = args.max_replicas if args.max_replicas is not None else args.min_replicas
    if max_replicas < args.min_replicas:
        raise DeployError(
            f"--max-replicas ({max_replicas}) must be at least --min-replicas ({args.min_replicas})."
        )
    if not re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)+", args.machine_type):
        raise DeployError(
            f"--machine-type {args.machine_type!r} is not a machine type such as n1-standard-4."
        )
    local = not args.model_dir.startswith("gs://")
    if local:
        if not Path(args.model_dir).is_dir():
            raise DeployError(f"No model folder at {args.model_dir!r}.")
        if not args.staging:
            raise DeployError(
                "A local model folder is copied to Cloud Storage first (Vertex AI reads models from there): pass "
                "--staging gs://BUCKET/FOLDER, or deploy a gs:// model folder."
            )
    for value, flag in ((args.staging, "--staging"), (None if local else args.model_dir, "MODEL_DIR")):
        if value is not None and not GCS_FOLDER.fullmatch(value):
            raise DeployError(f"{flag} {value!r} is not a Cloud Storage folder gs://BUCKET/PATH.")
    return DeploySettings(
        model_dir=args.model_dir.rstrip("/") if not local else str(Path(args.model_dir)),
        display_name=_display_name(args),
        machine_type=args.machine_type,
        min_replicas=args.min_replicas,
        max_replicas=max_replicas,
        staging=args.staging,
        serving_image=args.serving_image,
        keep_previous=args.keep_previous,
    )


def _confirm(question: str, ask: Callable[[str], str] | None) -> bool:
    if ask is None:
        if not sys.stdin.isatty():
            raise DeployError("Deploying costs money: confirm with --yes when not running interactively.")
        ask = input
    return ask(question).strip().lower() in ("y", "yes")


def main(
    argv: Sequence[str] | None = None,
    *,
    credentials: Any = None,
    ask: Callable[[str], str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    args = _parser().parse_args(argv)
    waiting = Waiting(
        poll_interval=args.poll_interval,
        timeout=args.timeout,
        sleep=sleep,
        report_every=max(30.0, args.poll_interval),
    )
    try:
        if not PROJECT_ID.fullmatch(args.project):
            raise DeployError(f"--project {args.project!r} is not a Google Cloud project id.")
        check_region(args.region)
        if args.hourly_price is not None and args.hourly_price <= 0:
            raise DeployError("--hourly-price must be a positive number of USD per node hour.")
        if sum(bool(x) for x in (args.list, args.undeploy, args.model_dir)) != 1:
            raise DeployError("Give one of: MODEL_DIR (deploy), --undeploy MODEL_DIR|ENDPOINT, --list.")
        if args.list:
            vertex = connect(
                args.project, args.region, credentials or load_credentials(args.key_file), args.api_endpoint
            )
            print(format_listing(list_deployments(vertex), vertex))
            return 0
        if args.undeploy:
            credentials = credentials or load_credentials(args.key_file)
            vertex = connect(args.project, args.region, credentials, args.api_endpoint)
            result = undeploy(
                args.undeploy, vertex, Storage(args.project, credentials), waiting, args.delete_endpoint
            )
            what = f"Undeployed {len(result['undeployed'])} model(s) from {result['endpoint']}"
            print(
                what
                + (
                    "; endpoint deleted."
                    if result["endpoint_deleted"]
                    else ". It serves nothing and costs nothing now."
                )
            )
            return 0
        settings = settings_from(args)
        cost = estimate_cost(
            settings.machine_type, settings.min_replicas, settings.max_replicas, args.hourly_price
        )
        credentials = credentials or load_credentials(args.key_file)
        storage = Storage(args.project, credentials)
        folder = read_model_folder(settings, storage)
        print(f"Deploying {settings.model_dir} as {settings.display_name!r} in {args.project}/{args.region}:")
        print(f"  {cost.describe()}")
        print(
            f"  Until: python -m model.serving.deploy --undeploy {settings.model_dir} --project {args.project} --region {args.region}"
        )
        if not args.yes and not _confirm("Deploy? [y/N] ", ask):
            print("Not deployed.")
            return 1
        vertex = connect(args.project, args.region, credentials, args.api_endpoint)
        record = deploy(settings, vertex, storage, cost, waiting)
        from transforms.contracts.label_scheme import scheme_from_metadata

        config = folder["earthengine"]
        palette = scheme_from_metadata(config).colors
        python, javascript = write_outputs(settings.model_dir, storage, record, config, palette)
    except DeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.status
    print(f"\nDeployed: {record['endpoint']} (deployed model {record['deployed_model_id']}).")
    print(f"Estimated cost: {cost.describe()}")
    print(f"Written: {join(settings.model_dir, DEPLOYMENT_JSON)}, {SNIPPET_PY}, {SNIPPET_JS}.\n")
    print("--- Python " + "-" * 60 + "\n" + python)
    print("--- Code Editor (JavaScript) " + "-" * 43 + "\n" + javascript)
    print(
        f"Turn it off: python -m model.serving.deploy --undeploy {settings.model_dir} --project {args.project} --region {args.region}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
