"""`python -m model.serving.deploy`: the command line, its checks, and the question before anything is spent."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from model.serving.deploy.deployment import (
    DEFAULT_MACHINE_TYPE,
    DEPLOYMENT_JSON,
    SNIPPET_JS,
    SNIPPET_PY,
    DeploySettings,
    deploy,
    format_listing,
    list_deployments,
    read_model_folder,
    undeploy,
    write_outputs,
)
from model.serving.deploy.errors import DeployError
from model.serving.deploy.pricing import estimate_cost
from model.serving.deploy.storage import Storage
from model.serving.deploy.vertex import Waiting, check_region, connect, load_credentials
from transforms.io.files import join
from transforms.runtime.command import CommandParser, quiet_start

PROJECT_ID = re.compile(r"([a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")
GCS_FOLDER = re.compile(r"gs://[a-z0-9][-_.a-z0-9]{1,61}[a-z0-9](/[^\r\n]*)?")


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        "model.serving.deploy",
        "Deploy a model folder to a Vertex AI endpoint for ee.Model.fromVertexAi, list deployments and "
        "their cost, undeploy.",
        usage="%(prog)s MODEL_DIR --project P --region R [--staging gs://BUCKET/FOLDER] [options]\n"
        "       %(prog)s --list --project P --region R\n"
        "       %(prog)s --undeploy MODEL_DIR|ENDPOINT --project P --region R [--delete-endpoint]",
        allow_abbrev=True,
    )
    what = parser.add_argument_group("what to do (one of)")
    what.add_argument(
        "model_dir",
        metavar="MODEL_DIR",
        nargs="?",
        help="Deploy this model folder (local or gs://) with eeified/ and earthengine.json.",
    )
    what.add_argument(
        "--list", action="store_true", help="List deployed models and their estimated monthly cost."
    )
    what.add_argument(
        "--undeploy",
        metavar="MODEL_DIR|ENDPOINT",
        help="Undeploy every model of this endpoint (billing stops).",
    )
    what.add_argument(
        "--delete-endpoint", action="store_true", help="With --undeploy: delete the endpoint too."
    )
    cloud = parser.add_argument_group("Google Cloud")
    cloud.add_argument("--project", required=True, help="Google Cloud project id.")
    cloud.add_argument("--region", required=True, help="Vertex AI region, e.g. us-central1.")
    cloud.add_argument(
        "--key-file", help="Service-account JSON key (default: application default credentials)."
    )
    cloud.add_argument(
        "--api-endpoint",
        help="Vertex AI API endpoint (default: REGION-aiplatform.googleapis.com), e.g. for Private Service "
        "Connect.",
    )
    deployment = parser.add_argument_group("deployment")
    deployment.add_argument(
        "--staging",
        metavar="GCS_FOLDER",
        help="gs:// folder a local model folder is copied to (required for local folders).",
    )
    deployment.add_argument(
        "--name",
        help="Display name of the model and endpoint; an endpoint of that name is reused (default: "
        "terrabeam-<folder>).",
    )
    deployment.add_argument(
        "--machine-type", default=DEFAULT_MACHINE_TYPE, help="Machine type of the serving nodes."
    )
    deployment.add_argument("--min-replicas", type=int, default=1, help="Nodes kept running.")
    deployment.add_argument(
        "--max-replicas", type=int, default=None, help="Nodes under load (default: --min-replicas)."
    )
    deployment.add_argument(
        "--serving-image",
        metavar="IMAGE_URI",
        help="Serve with this image built from model/serving/Dockerfile.serve (model.serving.serve) instead "
        "of Google's prebuilt TensorFlow container.",
    )
    deployment.add_argument(
        "--keep-previous", action="store_true", help="Leave models already deployed on the endpoint deployed."
    )
    deployment.add_argument("--yes", action="store_true", help="Deploy without asking (scripts).")
    cost = parser.add_argument_group("cost")
    cost.add_argument(
        "--hourly-price",
        type=float,
        metavar="USD",
        help="USD per node hour, for a machine type the price table lacks.",
    )
    waiting = parser.add_argument_group("waiting for Vertex AI")
    waiting.add_argument("--poll-interval", type=float, default=10.0, help="Seconds between operation polls.")
    waiting.add_argument(
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
    argv = list(argv if argv is not None else sys.argv[1:])
    quiet_start(argv)
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
