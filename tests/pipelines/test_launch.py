"""`python -m pipelines.launch`: the request the Dataflow client sends, waiting, and bad input.

The Dataflow client is google-api-python-client built from its bundled discovery document; the HTTP
layer is the library's own `HttpMockSequence`, which records every request, behind anonymous
credentials. Bad input must stop before any request.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest
from google.auth.credentials import AnonymousCredentials
from googleapiclient.http import HttpMockSequence

from pipelines import launch

PROJECT = "my-project"
REGION = "us-central1"
TEMPLATE = "gs://my-bucket/templates/train.json"
JOB_ID = "2026-01-02_03_04_05-1234567890"
ENDPOINT = "https://dataflow.googleapis.com/v1b3"

TRAIN_ARGS = [
    "train",
    "--project",
    PROJECT,
    "--region",
    REGION,
    "--template-path",
    TEMPLATE,
    "--job-name",
    "train-run-1",
    "--param",
    "data=gs://my-bucket/data",
    "--param",
    "model_dir=gs://my-bucket/models/run1",
    "--param",
    "epochs=20",
]


def ok(body: dict) -> tuple[dict, str]:
    return {"status": "200", "content-type": "application/json"}, json.dumps(body)


def run(argv, responses):
    http = HttpMockSequence(list(responses))
    code = launch.main(argv, credentials=AnonymousCredentials(), http=http, sleep=lambda seconds: None)
    return code, http.request_sequence


def test_launch_request_body_and_job_id(capsys):
    code, requests = run(
        [*TRAIN_ARGS, "--temp-location", "gs://my-bucket/tmp", "--machine-type", "n1-standard-8"],
        [ok({"job": {"id": JOB_ID, "projectId": PROJECT, "location": REGION}})],
    )
    assert code == 0
    ((uri, method, body, headers),) = requests
    assert method == "POST"
    assert uri.split("?")[0] == f"{ENDPOINT}/projects/{PROJECT}/locations/{REGION}/flexTemplates:launch"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "launchParameter": {
            "jobName": "train-run-1",
            "containerSpecGcsPath": TEMPLATE,
            "parameters": {
                "data": "gs://my-bucket/data",
                "model_dir": "gs://my-bucket/models/run1",
                "epochs": "20",
                "terrabeam_job": "train",
            },
            "environment": {"tempLocation": "gs://my-bucket/tmp", "machineType": "n1-standard-8"},
        }
    }
    out = capsys.readouterr().out
    assert f"Job id: {JOB_ID}" in out
    assert f"https://console.cloud.google.com/dataflow/jobs/{REGION}/{JOB_ID}?project={PROJECT}" in out


def test_wait_polls_the_job_until_it_is_done(capsys):
    code, requests = run(
        [*TRAIN_ARGS, "--wait", "--poll-interval", "1"],
        [
            ok({"job": {"id": JOB_ID}}),
            ok({"id": JOB_ID, "currentState": "JOB_STATE_QUEUED"}),
            ok({"id": JOB_ID, "currentState": "JOB_STATE_RUNNING"}),
            ok({"id": JOB_ID, "currentState": "JOB_STATE_RUNNING"}),
            ok({"id": JOB_ID, "currentState": "JOB_STATE_DONE"}),
        ],
    )
    assert code == 0
    polls = requests[1:]
    assert len(polls) == 4
    for uri, method, _, _ in polls:
        url = urlparse(uri)
        assert method == "GET"
        assert f"{url.scheme}://{url.netloc}{url.path}" == (
            f"{ENDPOINT}/projects/{PROJECT}/locations/{REGION}/jobs/{JOB_ID}"
        )
        assert parse_qs(url.query)["view"] == ["JOB_VIEW_SUMMARY"]
    out = capsys.readouterr().out
    assert out.count("JOB_STATE_RUNNING") == 1  # state changes are reported once
    assert f"Job {JOB_ID} finished: JOB_STATE_DONE" in out


def test_wait_exits_1_when_the_job_fails(capsys):
    code, _ = run(
        [*TRAIN_ARGS, "--wait"],
        [ok({"job": {"id": JOB_ID}}), ok({"id": JOB_ID, "currentState": "JOB_STATE_FAILED"})],
    )
    assert code == 1
    assert "JOB_STATE_FAILED" in capsys.readouterr().out


def test_gpu_and_validate_only_reach_the_request():
    code, requests = run([*TRAIN_ARGS, "--gpu", "nvidia-tesla-t4", "--validate-only"], [ok({})])
    assert code == 0
    body = json.loads(requests[0][2])
    assert body["validateOnly"] is True
    assert body["launchParameter"]["parameters"]["dataflow_service_options"] == (
        "worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"
    )


def test_api_errors_are_reported(capsys):
    error = {"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}}
    code, _ = run(TRAIN_ARGS, [({"status": "403", "content-type": "application/json"}, json.dumps(error))])
    assert code == 1
    assert "error: Dataflow API: 403" in capsys.readouterr().err


def test_every_job_has_a_template_that_launches(capsys):
    """The extract and predict templates validate and launch with their required parameters."""
    required = {
        "extract": [
            "inputs=gs://my-bucket/s2.tif,gs://my-bucket/dem.tif",
            "label_raster=gs://my-bucket/labels.tif",
            "regions=gs://my-bucket/regions.geojson",
            "output=gs://my-bucket/data",
            "pad_edges=true",
        ],
        "predict": [
            "model=gs://my-bucket/models/run1",
            "inputs=gs://my-bucket/s2.tif",
            "output=gs://my-bucket/maps",
        ],
    }
    for job, params in required.items():
        argv = [
            job,
            "--project",
            PROJECT,
            "--region",
            REGION,
            "--template-path",
            f"gs://my-bucket/t/{job}.json",
        ]
        argv += [a for p in params for a in ("--param", p)]
        code, requests = run(argv, [ok({"job": {"id": JOB_ID}})])
        assert code == 0, capsys.readouterr().err
        parameters = json.loads(requests[0][2])["launchParameter"]["parameters"]
        assert parameters["terrabeam_job"] == job
        assert len(parameters) == len(params) + 1


def predict_args(inputs: str) -> list[str]:
    argv = [
        "predict",
        "--project",
        PROJECT,
        "--region",
        REGION,
        "--template-path",
        "gs://my-bucket/t/predict.json",
    ]
    params = ["model=gs://my-bucket/models/run1", f"inputs={inputs}", "output=gs://my-bucket/maps"]
    return argv + [a for p in params for a in ("--param", p)]


def test_dated_inputs_launch_and_their_paths_are_checked(capsys):
    dated = "before=gs://my-bucket/s2-2019.tif,after=gs://my-bucket/s2-2023.tif"
    code, requests = run(predict_args(dated), [ok({"job": {"id": JOB_ID}})])
    assert code == 0, capsys.readouterr().err
    assert json.loads(requests[0][2])["launchParameter"]["parameters"]["inputs"] == dated
    # The path after a date label is checked as any Cloud Storage path is.
    assert (
        launch.main(
            predict_args("before=gs://my-bucket/a.tif,after=gs://ab/b.tif"), http=HttpMockSequence([])
        )
        == 2
    )
    assert "Parameter inputs 'gs://ab/b.tif' is not a valid Cloud Storage path" in capsys.readouterr().err


def test_an_installed_terrabeam_reads_the_parameters_from_the_staged_spec(tmp_path, monkeypatch, capsys):
    """Without templates/ (terrabeam installed with pip), the metadata that `make template` put into the
    staged spec validates the parameters."""
    import transforms.io.files

    checkout_metadata = json.loads(launch.metadata_path("predict").read_text(encoding="utf-8"))
    monkeypatch.setattr(launch, "TEMPLATES_DIR", tmp_path / "templates")  # no checkout here
    spec_path = "gs://my-bucket/t/predict.json"
    staged = {spec_path: {"image": "us-docker.pkg.dev/p/r/terrabeam:1", "metadata": checkout_metadata}}
    read = []

    def read_json(path: str):  # Cloud Storage, as transforms.io.files reads it
        read.append(path)
        return staged.get(path)

    monkeypatch.setattr(transforms.io.files, "read_json", read_json)
    code, requests = run(predict_args("gs://my-bucket/s2.tif"), [ok({"job": {"id": JOB_ID}})])
    assert code == 0, capsys.readouterr().err
    assert read == [spec_path] and len(requests) == 1
    # The staged formats refuse a bad value before any request, as the checkout's do.
    assert launch.main(predict_args("s2.tif"), http=HttpMockSequence([])) == 2
    assert "Parameter inputs='s2.tif' has the wrong format" in capsys.readouterr().err
    staged[spec_path] = {"image": "us-docker.pkg.dev/p/r/terrabeam:1"}
    assert launch.main(predict_args("gs://my-bucket/s2.tif"), http=HttpMockSequence([])) == 2
    assert f"The template spec {spec_path} holds no parameter metadata" in capsys.readouterr().err
    staged.clear()
    assert launch.main(predict_args("gs://my-bucket/s2.tif"), http=HttpMockSequence([])) == 2
    assert (
        f"There is no template spec at {spec_path}: stage it with `make template`" in capsys.readouterr().err
    )


BAD_INPUT = [
    (
        ["segment", "--project", PROJECT, "--region", REGION, "--template-path", TEMPLATE],
        "Unknown job 'segment'",
    ),
    ([*TRAIN_ARGS[:9]], "The train template needs data, model_dir"),
    ([*TRAIN_ARGS, "--param", "init_model=gs:/my-bucket/models/run0"], "not a valid Cloud Storage path"),
    ([*TRAIN_ARGS[:-2], "--param", "epochs=ten"], "Parameter epochs='ten' has the wrong format"),
    ([*TRAIN_ARGS, "--param", "epoch=3"], "Unknown parameter 'epoch' for the train template"),
    ([*TRAIN_ARGS, "--param", "epochs"], "must be NAME=VALUE"),
    ([*TRAIN_ARGS, "--param", "terrabeam_job=extract"], "contradicts the job 'train'"),
    (
        [*TRAIN_ARGS, "--temp-location", "gs://My_Bucket/tmp"],
        "--temp-location 'gs://My_Bucket/tmp' is not a valid",
    ),
    ([*TRAIN_ARGS, "--gpu", "tesla-t4"], "--gpu 'tesla-t4' must look like"),
    ([*TRAIN_ARGS, "--project", "My Project"], "--project 'My Project' is not a Google Cloud project id"),
    ([*TRAIN_ARGS, "--job-name", "Train_1"], "--job-name 'Train_1'"),
]
BAD_TEMPLATE_PATHS = [
    ("templates/train.json", "must be the Cloud Storage path of a Flex Template spec"),
    ("gs:/my-bucket/templates/train.json", "must be the Cloud Storage path of a Flex Template spec"),
    ("gs://my-bucket/templates/", "does not name a Flex Template spec"),
    ("gs://my-bucket/templates/train.yaml", "does not name a Flex Template spec"),
    ("gs://my-bucket/.json", "does not name a Flex Template spec"),
    ("gs://x/train.json", "is not a valid Cloud Storage path"),
]


@pytest.mark.parametrize(
    "argv, message", BAD_INPUT + [([*TRAIN_ARGS, "--template-path", p], m) for p, m in BAD_TEMPLATE_PATHS]
)
def test_bad_input_stops_before_any_request(argv, message, capsys, monkeypatch):
    import google.auth

    def no_default_credentials(*args, **kwargs):
        raise AssertionError("credentials must not be looked up for bad input")

    monkeypatch.setattr(google.auth, "default", no_default_credentials)
    http = HttpMockSequence([])
    assert launch.main(argv, http=http) == 2
    assert message in capsys.readouterr().err
    assert http.request_sequence == []


def test_missing_credentials_are_explained(capsys, monkeypatch):
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_credentials(*args, **kwargs):
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    http = HttpMockSequence([])
    assert launch.main(TRAIN_ARGS, http=http) == 2
    assert "gcloud auth application-default login" in capsys.readouterr().err
    assert http.request_sequence == []
