"""Deploying a model folder, undeploying it, listing what is deployed: Cloud Storage and Vertex AI together,
with deployment.json and the Earth Engine snippets written into the model folder."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from model.serving.contract import DEFAULT_HEALTH_ROUTE, DEFAULT_PORT, DEFAULT_PREDICT_ROUTE
from model.serving.deploy.errors import DeployError
from model.serving.deploy.pricing import PRICE_REGION, PRICE_SOURCE, PRICES_AS_OF, CostEstimate, estimate_cost
from model.serving.deploy.snippets import javascript_snippet, python_snippet
from model.serving.deploy.storage import Storage
from model.serving.deploy.vertex import (
    ENDPOINT_NAME,
    Vertex,
    Waiting,
    call,
    find_endpoints,
    prebuilt_tensorflow_image,
    undeploy_all,
    wait_for,
)
from transforms.io.files import join

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
SERVE_PORT = DEFAULT_PORT
SERVE_HEALTH_ROUTE = DEFAULT_HEALTH_ROUTE
SERVE_PREDICT_ROUTE = DEFAULT_PREDICT_ROUTE


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
    upload = call(
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
        create = call(
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
    operation = call(
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
        operation = call(
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
    endpoints = call(
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
