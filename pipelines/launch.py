"""Launch terrabeam's Dataflow Flex Templates, and run a job inside the template container.

    python -m pipelines.launch train --project P --region us-central1 \\
        --template-path gs://BUCKET/templates/train.json \\
        --param data=gs://BUCKET/data --param output=gs://BUCKET/models/run1 --param epochs=20 --wait

One container image (`templates/Dockerfile`) is the Flex Template launcher of every job and the Dataflow
worker image. Each template (`templates/<job>/metadata.json`, staged by `make template`) declares the
job's parameters under the `dest` names of its options class (`patch_size`, `label_raster`, ...) plus
`terrabeam_job`, which tells the shared entry point (`templates/main.py` -> `run_template`) which job to
run; this launcher sets it.

Client side, everything is checked before any network call: the job name, the template path (a
`gs://bucket/....json` spec), every parameter against the job's metadata (known name, `regexes`, required
ones present), and every `gs://` value. The request goes through the Dataflow API client
(`projects.locations.flexTemplates.launch`, google-api-python-client with its bundled discovery
document); credentials come from `google.auth.default()` when the request is sent. `--wait` polls
`projects.locations.jobs.get` until the job reaches a terminal state.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transforms.runtime.command import CommandParser, quiet_start

JOB_PARAMETER = "terrabeam_job"
# Set in the image by templates/Dockerfile: the image's own name, used as the workers' container image.
IMAGE_ENV = "TERRABEAM_IMAGE"
TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
METADATA_NAME = "metadata.json"

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
CONSOLE_URL = "https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}?project={project}"
TERMINAL_STATES = frozenset(
    {"JOB_STATE_DONE", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_UPDATED", "JOB_STATE_DRAINED"}
)
SUCCESS_STATES = frozenset({"JOB_STATE_DONE"})

# Cloud Storage bucket names: 3-63 characters, lowercase letters, digits, '-', '_' and '.', starting and
# ending with a letter or digit (https://cloud.google.com/storage/docs/buckets#naming).
GCS_PATH = re.compile(r"gs://[a-z0-9][-_.a-z0-9]{1,61}[a-z0-9](/[^\r\n]*)?")
# A Flex Template spec: a JSON object in Cloud Storage.
TEMPLATE_PATH = re.compile(r"gs://[a-z0-9][-_.a-z0-9]{1,61}[a-z0-9]/[^\r\n]*[^/\r\n]\.json")
# Project ids: 6-30 characters, lowercase letters, digits and hyphens, starting with a letter, not ending
# with a hyphen; older ones may carry a `domain:` prefix.
PROJECT_ID = re.compile(r"([a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]")
REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+")
# Dataflow job names: lowercase letters, digits and hyphens, starting with a letter, not ending with '-'.
JOB_NAME = re.compile(r"[a-z]([-a-z0-9]{0,1022}[a-z0-9])?")


@dataclasses.dataclass(frozen=True)
class JobSpec:
    module: str
    options: str


JOBS: dict[str, JobSpec] = {
    "extract": JobSpec("pipelines.extract", "ExtractOptions"),
    "train": JobSpec("pipelines.train", "TrainOptions"),
    "predict": JobSpec("pipelines.predict", "PredictOptions"),
}


class LaunchError(ValueError):
    """Bad launch input; the message says what to change."""


# --- Jobs, their options and their template metadata ----------------------------------------------------


def job_spec(job: str) -> JobSpec:
    if job not in JOBS:
        raise LaunchError(f"Unknown job {job!r}; choose one of {', '.join(JOBS)}.")
    return JOBS[job]


def options_class(job: str) -> type:
    """The job's `PipelineOptions` subclass (imports the job module)."""
    spec = job_spec(job)
    module = importlib.import_module(spec.module)
    return getattr(module, spec.options)


def option_actions(options_cls: type) -> dict[str, argparse.Action]:
    """The argparse actions an options class adds, keyed by `dest` (the template parameter names)."""
    from apache_beam.options.pipeline_options import _BeamArgumentParser

    parser = _BeamArgumentParser(add_help=False, allow_abbrev=False)
    options_cls._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions if a.option_strings}


def required_options(options_cls: type) -> set[str]:
    """Options the job cannot run without: argparse `required=True` ones and the class's REQUIRED_OPTIONS.

    Options classes cannot use `required=True` in practice (Beam parses every registered options class for
    every pipeline), so a job that needs some options lists their dests in `REQUIRED_OPTIONS` and its own
    validation checks them.
    """
    actions = option_actions(options_cls)
    return {dest for dest, a in actions.items() if a.required} | set(
        getattr(options_cls, "REQUIRED_OPTIONS", ())
    )


def metadata_path(job: str) -> Path:
    job_spec(job)
    return TEMPLATES_DIR / job / METADATA_NAME


def load_metadata(job: str, template_path: str | None = None) -> dict[str, Any]:
    """The job's template parameters: `templates/<job>/metadata.json` of this checkout, else (an installed
    terrabeam has no templates/ folder) the metadata that `gcloud dataflow flex-template build
    --metadata-file` put into the staged spec at `template_path`."""
    path = metadata_path(job)
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    if template_path is None:
        raise LaunchError(f"No template metadata for {job!r} at {path}; run from a terrabeam checkout.")
    from transforms.io.files import read_json

    try:
        spec = read_json(template_path)
    except Exception as e:  # tf.io.gfile's errors (credentials, permissions) are no OSError
        raise LaunchError(
            f"This installation has no {path.relative_to(TEMPLATES_DIR.parent)}, and the template spec "
            f"{template_path} could not be read for its parameters ({e.__class__.__name__}: {e}). Check "
            "the path and your credentials (gcloud auth application-default login), or run from a "
            "terrabeam checkout."
        ) from None
    if spec is None:
        raise LaunchError(f"There is no template spec at {template_path}: stage it with `make template`.")
    metadata = spec.get("metadata") if isinstance(spec, dict) else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("parameters"), list):
        raise LaunchError(
            f"The template spec {template_path} holds no parameter metadata: stage it again with `make "
            "template` (gcloud dataflow flex-template build --metadata-file templates/<job>/metadata.json)."
        )
    return metadata


def beam_option_names() -> set[str]:
    """`dest` names of Apache Beam's own pipeline options (runner, temp_location, sdk_container_image, ...)."""
    from apache_beam.options import pipeline_options
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(add_help=False, allow_abbrev=False)
    seen: set[type] = set()
    pending = [PipelineOptions]
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        pending.extend(cls.__subclasses__())
        if cls.__module__ == pipeline_options.__name__ and "_add_argparse_args" in vars(cls):
            cls._add_argparse_args(parser)
    return {a.dest for a in parser._actions if a.option_strings}


# --- Client-side validation -----------------------------------------------------------------------------


def check_gcs_path(value: str, what: str) -> str:
    if not GCS_PATH.fullmatch(value):
        raise LaunchError(
            f"{what} {value!r} is not a valid Cloud Storage path: expected gs://BUCKET/PATH with a bucket "
            "name of 3-63 lowercase letters, digits, '-', '_' or '.'."
        )
    return value


def check_template_path(path: str) -> str:
    if not path.startswith("gs://"):
        raise LaunchError(
            f"--template-path {path!r} must be the Cloud Storage path of a Flex Template spec, "
            "e.g. gs://my-bucket/templates/train.json (`make template` prints it)."
        )
    check_gcs_path(path, "--template-path")
    if not TEMPLATE_PATH.fullmatch(path):
        raise LaunchError(
            f"--template-path {path!r} does not name a Flex Template spec: expected a JSON file such as "
            "gs://my-bucket/templates/train.json, not a folder or another kind of file."
        )
    return path


def parse_params(pairs: Iterable[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise LaunchError(f"--param {pair!r} must be NAME=VALUE, e.g. --param epochs=20.")
        if key in params:
            raise LaunchError(f"--param {key} is given twice.")
        params[key] = value
    return params


def _gcs_values(value: str) -> list[str]:
    """The gs:// paths of a comma-separated parameter, a dated input's LABEL= cut off
    (`before=gs://b/a.tif`)."""
    paths = []
    for part in (p.strip() for p in value.split(",")):
        label, dated, path = part.partition("=")
        if dated and path.startswith("gs:") and not any(c in label for c in "/:"):
            part = path
        if part.startswith("gs:"):
            paths.append(part)
    return paths


def check_parameters(job: str, params: Mapping[str, str], metadata: Mapping[str, Any]) -> dict[str, str]:
    """Check `params` against the job's template metadata; return them with `terrabeam_job` set."""
    declared = {p["name"]: p for p in metadata.get("parameters", [])}
    given = dict(params)
    if given.get(JOB_PARAMETER, job) != job:
        raise LaunchError(
            f"{JOB_PARAMETER}={given[JOB_PARAMETER]} contradicts the job {job!r}; leave it out."
        )
    given[JOB_PARAMETER] = job
    beam_names = None
    for name, value in given.items():
        if name not in declared:
            beam_names = beam_names if beam_names is not None else beam_option_names()
            if name not in beam_names:
                names = ", ".join(sorted(n for n in declared if n != JOB_PARAMETER))
                raise LaunchError(
                    f"Unknown parameter {name!r} for the {job} template. Its parameters: {names}; "
                    "Beam pipeline options (e.g. max_num_workers, dataflow_service_options) pass through too."
                )
        for part in _gcs_values(value):
            check_gcs_path(part.strip(), f"Parameter {name}")
        for regex in declared.get(name, {}).get("regexes", []):
            if not re.fullmatch(regex, value):
                raise LaunchError(
                    f"Parameter {name}={value!r} has the wrong format ({regex}). {declared[name]['helpText']}"
                )
    missing = [n for n, p in declared.items() if not p.get("isOptional", False) and n not in given]
    if missing:
        raise LaunchError(
            f"The {job} template needs {', '.join(missing)}: add "
            + " ".join(f"--param {n}=VALUE" for n in missing)
        )
    return given


def gpu_service_option(gpu: str) -> str:
    """`--gpu nvidia-tesla-t4[:N]` as a Dataflow service option (driver installed by Dataflow)."""
    kind, _, count = gpu.partition(":")
    if not re.fullmatch(r"nvidia-[a-z0-9-]+", kind) or not re.fullmatch(r"[1-8]?", count):
        raise LaunchError(f"--gpu {gpu!r} must look like nvidia-tesla-t4 or nvidia-l4:2.")
    return f"worker_accelerator=type:{kind};count:{count or 1};install-nvidia-driver"


def launch_body(
    *,
    job_name: str,
    template_path: str,
    parameters: Mapping[str, str],
    environment: Mapping[str, Any],
    validate_only: bool = False,
) -> dict[str, Any]:
    """A LaunchFlexTemplateRequest (Dataflow API v1b3)."""
    launch_parameter: dict[str, Any] = {
        "jobName": job_name,
        "containerSpecGcsPath": template_path,
        "parameters": dict(parameters),
    }
    if environment:
        launch_parameter["environment"] = dict(environment)
    body: dict[str, Any] = {"launchParameter": launch_parameter}
    if validate_only:
        body["validateOnly"] = True
    return body


# --- The Dataflow API -----------------------------------------------------------------------------------


def dataflow_client(credentials: Any = None, http: Any = None) -> Any:
    """A Dataflow v1b3 client from the discovery document bundled with google-api-python-client.

    `credentials` default to `google.auth.default()`; `http` (an httplib2.Http or a test double such as
    googleapiclient.http.HttpMockSequence) is wrapped with them.
    """
    import google_auth_httplib2
    import httplib2
    from googleapiclient import discovery

    if credentials is None:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
        except DefaultCredentialsError as e:
            raise LaunchError(
                f"No Google Cloud credentials ({e}). Run `gcloud auth application-default login`."
            ) from None
    authorized = google_auth_httplib2.AuthorizedHttp(credentials, http=http or httplib2.Http(timeout=60))
    return discovery.build("dataflow", "v1b3", http=authorized, static_discovery=True, cache_discovery=False)


def launch(client: Any, project: str, region: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Send the launch request; return the job resource from the response."""
    request = (
        client.projects()
        .locations()
        .flexTemplates()
        .launch(projectId=project, location=region, body=dict(body))
    )
    return request.execute(num_retries=3).get("job", {})


def wait_for_job(
    client: Any,
    project: str,
    region: str,
    job_id: str,
    *,
    poll_interval: float = 30.0,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    report: Callable[[str], None] = print,
) -> str:
    """Poll the job until it reaches a terminal state (or `timeout` seconds pass); return its state."""
    start = clock()
    last = None
    while True:
        job = (
            client.projects()
            .locations()
            .jobs()
            .get(projectId=project, location=region, jobId=job_id, view="JOB_VIEW_SUMMARY")
            .execute(num_retries=3)
        )
        state = job.get("currentState", "JOB_STATE_UNKNOWN")
        if state != last:
            report(f"{job_id}: {state}")
            last = state
        if state in TERMINAL_STATES:
            return state
        if timeout is not None and clock() - start >= timeout:
            raise TimeoutError(f"Job {job_id} is still {state} after {timeout:.0f} s.")
        sleep(poll_interval)


def console_url(project: str, region: str, job_id: str) -> str:
    return CONSOLE_URL.format(project=project, region=region, job_id=job_id)


def default_job_name(job: str) -> str:
    return f"terrabeam-{job}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


# --- Command line ---------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        "pipelines.launch",
        "Launch a terrabeam Dataflow Flex Template (built and staged by `make template`): checks the "
        "parameters against templates/<job>/metadata.json, sends the launch request with your application "
        "default credentials, prints the job id and console URL, and with --wait follows the job to its "
        'end. Examples: docs/cloud.md, "Launching a template".',
        usage="%(prog)s {" + ",".join(JOBS) + "} --project P --region R --template-path gs://... [options]",
    )
    template = parser.add_argument_group("the template and its parameters")
    template.add_argument("job", metavar="JOB", help=f"Which job: {', '.join(JOBS)}.")
    template.add_argument(
        "--template-path",
        metavar="GCS_PATH",
        required=True,
        help="The template spec, e.g. gs://my-bucket/templates/train.json.",
    )
    template.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="A template parameter (repeatable); see templates/<job>/metadata.json.",
    )
    cloud = parser.add_argument_group("Google Cloud")
    cloud.add_argument("--project", required=True, help="Google Cloud project id.")
    cloud.add_argument("--region", required=True, help="Dataflow region, e.g. us-central1.")
    cloud.add_argument("--job-name", help="Dataflow job name (default: terrabeam-<job>-<UTC time>).")
    cloud.add_argument("--temp-location", metavar="GCS_FOLDER", help="gs:// folder for temporary files.")
    cloud.add_argument("--staging-location", metavar="GCS_FOLDER", help="gs:// folder for staged files.")
    workers = parser.add_argument_group("workers")
    workers.add_argument("--machine-type", help="Worker machine type, e.g. n1-standard-8.")
    workers.add_argument("--max-workers", type=int, help="Maximum number of workers.")
    workers.add_argument("--service-account-email", metavar="EMAIL", help="Worker service account.")
    workers.add_argument(
        "--sdk-container-image",
        metavar="IMAGE_URI",
        help="Worker container image (default: the template's own image, which the image knows).",
    )
    workers.add_argument(
        "--gpu",
        metavar="TYPE[:COUNT]",
        help="Attach GPUs to the workers, e.g. nvidia-tesla-t4 (use an image built with GPU=true and an "
        "N1 machine type for T4s).",
    )
    run = parser.add_argument_group("launching and waiting")
    run.add_argument(
        "--validate-only", action="store_true", help="Ask Dataflow to validate the launch without running it."
    )
    run.add_argument("--wait", action="store_true", help="Wait until the job finishes; exit 1 if it fails.")
    run.add_argument("--poll-interval", type=float, default=30.0, help="Seconds between --wait polls.")
    run.add_argument("--timeout", type=float, default=None, help="Give up --wait after this many seconds.")
    return parser


@dataclasses.dataclass(frozen=True)
class LaunchRequest:
    job: str
    project: str
    region: str
    body: dict[str, Any]


def build_request(args: argparse.Namespace) -> LaunchRequest:
    """Validate the command line and build the launch request (no network, except to read the staged
    spec's parameters where this installation has no templates/ folder)."""
    job_spec(args.job)
    if not PROJECT_ID.fullmatch(args.project):
        raise LaunchError(f"--project {args.project!r} is not a Google Cloud project id.")
    if not REGION.fullmatch(args.region):
        raise LaunchError(f"--region {args.region!r} is not a Dataflow region such as us-central1.")
    template_path = check_template_path(args.template_path)
    job_name = args.job_name or default_job_name(args.job)
    if not JOB_NAME.fullmatch(job_name):
        raise LaunchError(
            f"--job-name {job_name!r}: use lowercase letters, digits and '-', starting with a letter."
        )
    params = parse_params(args.param)
    if args.gpu:
        if "dataflow_service_options" in params:
            raise LaunchError("Give either --gpu or --param dataflow_service_options, not both.")
        params["dataflow_service_options"] = gpu_service_option(args.gpu)
    parameters = check_parameters(args.job, params, load_metadata(args.job, template_path))
    environment: dict[str, Any] = {}
    for flag, key in (("temp_location", "tempLocation"), ("staging_location", "stagingLocation")):
        value = getattr(args, flag)
        if value is not None:
            environment[key] = check_gcs_path(value, "--" + flag.replace("_", "-"))
    for flag, key in (
        ("machine_type", "machineType"),
        ("max_workers", "maxWorkers"),
        ("service_account_email", "serviceAccountEmail"),
        ("sdk_container_image", "sdkContainerImage"),
    ):
        value = getattr(args, flag)
        if value is not None:
            environment[key] = value
    if args.max_workers is not None and args.max_workers < 1:
        raise LaunchError(f"--max-workers must be at least 1, got {args.max_workers}.")
    body = launch_body(
        job_name=job_name,
        template_path=template_path,
        parameters=parameters,
        environment=environment,
        validate_only=args.validate_only,
    )
    return LaunchRequest(args.job, args.project, args.region, body)


def main(
    argv: Sequence[str] | None = None,
    *,
    credentials: Any = None,
    http: Any = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    argv = list(argv if argv is not None else sys.argv[1:])
    quiet_start(argv)
    args = _parser().parse_args(argv)
    from googleapiclient.errors import HttpError

    try:
        request = build_request(args)
        client = dataflow_client(credentials=credentials, http=http)
        job = launch(client, request.project, request.region, request.body)
        if args.validate_only:
            print(f"The {args.job} launch request is valid (validate-only: no job was started).")
            return 0
        job_id = job.get("id")
        if not job_id:
            print(f"error: Dataflow returned no job id: {json.dumps(job)}", file=sys.stderr)
            return 1
        print(f"Job id: {job_id}")
        print(f"Console: {console_url(request.project, request.region, job_id)}")
        if not args.wait:
            return 0
        state = wait_for_job(
            client,
            request.project,
            request.region,
            job_id,
            poll_interval=args.poll_interval,
            timeout=args.timeout,
            sleep=sleep,
        )
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except HttpError as e:
        print(f"error: Dataflow API: {e.status_code} {e.reason}", file=sys.stderr)
        return 1
    except TimeoutError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Job {job_id} finished: {state}")
    return 0 if state in SUCCESS_STATES else 1


# --- Inside the template container ----------------------------------------------------------------------

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no", ""}


def template_argv(argv: Sequence[str]) -> tuple[str, list[str]]:
    """Turn Flex Template parameters into the job's own command line.

    Dataflow passes each parameter as `--name=value`. This picks the job from `--terrabeam_job`, maps
    each parameter named after an option's `dest` onto that option's flag (`--patch_size=64` ->
    `--patch-size=64`), turns `true`/`false` into present/absent switches, splits comma-separated values
    of multi-value options, and leaves everything else (Beam's options) as it is. The workers get this
    image unless `sdk_container_image` says otherwise.
    """
    job = None
    rest: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith(f"--{JOB_PARAMETER}="):
            job = arg.split("=", 1)[1]
        elif arg == f"--{JOB_PARAMETER}" and i + 1 < len(args):
            job = args[i + 1]
            i += 1
        else:
            rest.append(arg)
        i += 1
    if job is None:
        raise LaunchError(f"--{JOB_PARAMETER} is missing; it names the job to run ({', '.join(JOBS)}).")
    actions = option_actions(options_class(job))
    out: list[str] = []
    for arg in rest:
        name, sep, value = arg.partition("=")
        action = actions.get(name.lstrip("-").replace("-", "_")) if arg.startswith("--") and sep else None
        if action is None:
            out.append(arg)
            continue
        flag = next(s for s in action.option_strings if s.startswith("--"))
        if action.nargs == 0:
            if value.strip().lower() in _TRUE:
                out.append(flag)
            elif value.strip().lower() not in _FALSE:
                raise LaunchError(f"{name} is a switch: give true or false, not {value!r}.")
        elif action.nargs in ("+", "*"):
            out.append(flag)
            out.extend(v.strip() for v in value.split(",") if v.strip())
        else:
            out.append(f"{flag}={value}")
    image = os.environ.get(IMAGE_ENV)
    if image and not any(a.split("=", 1)[0] == "--sdk_container_image" for a in out):
        out.append(f"--sdk_container_image={image}")
    return job, out


def run_template(argv: Sequence[str]) -> int:
    """The Flex Template entry point: run the job named by `--terrabeam_job` with the given parameters."""
    quiet_start(argv)
    try:
        job, job_argv = template_argv(argv)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "yes" in option_actions(options_class(job)) and "--yes" not in job_argv:
        # The launch itself was the decision to spend, and the launcher has no terminal to ask on: the
        # job prints its plan (and writes plan.json) whatever --budget says.
        job_argv.append("--yes")
    module = importlib.import_module(JOBS[job].module)
    entry = getattr(module, "main", None)
    if entry is not None:
        return int(entry(job_argv) or 0)
    module.run(job_argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
