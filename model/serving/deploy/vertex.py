"""The Vertex AI calls: the GAPIC clients over REST, credentials, regions and prebuilt images, waiting for
long-running operations, and API errors turned into one `error:` line that says what to change."""

from __future__ import annotations

import dataclasses
import functools
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from model.serving.deploy.errors import DeployError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
ENDPOINT_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/endpoints/[^/]+")


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


def call(doing: str, vertex: Vertex, fn: Callable[[], Any]) -> Any:
    """`fn()`, one Vertex AI request; an API or network error becomes one DeployError about `doing`."""
    from google.api_core import exceptions as api
    from google.auth.exceptions import TransportError

    try:
        return fn()
    # requests' connection errors (e.g. no DNS name for the endpoint) are OSErrors.
    except (api.GoogleAPIError, TransportError, OSError) as e:
        raise explain(e, doing, vertex) from None


def find_endpoints(vertex: Vertex, display_name: str) -> list[Any]:
    request = {"parent": vertex.parent, "filter": f'display_name="{display_name}"'}
    return call("listing endpoints", vertex, lambda: list(vertex.endpoints.list_endpoints(request=request)))


def undeploy_all(vertex: Vertex, endpoint_name: str, waiting: Waiting, keep: Sequence[str] = ()) -> list[str]:
    """Undeploy every deployed model of an endpoint but `keep`; returns the ids undeployed.

    A deployed model that still has traffic can only go when a traffic split moves its share to the
    models that stay, so models without traffic go first and each one's share moves on to the busiest
    model left.
    """
    endpoint = call("reading the endpoint", vertex, lambda: vertex.endpoints.get_endpoint(name=endpoint_name))
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
        operation = call(
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
