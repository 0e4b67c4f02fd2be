"""`python -m model.serving.deploy` against a local fake of Vertex AI's REST API and of Cloud Storage.

The real `google-cloud-aiplatform` GAPIC clients (REST transport) and the real `google-cloud-storage`
client talk to `tests.helpers.fake_vertex.FakeVertexAI` on 127.0.0.1, with anonymous credentials; the fake
enforces the API's rules that matter here (artifacts must exist, traffic splits sum to 100, a model
with traffic cannot be undeployed while others stay, an endpoint with models cannot be deleted).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import ee
import pytest
from google.auth.credentials import AnonymousCredentials

from model.architecture import build_model
from model.export import export_model
from model.serving.deploy.command import main
from model.serving.deploy.errors import DeployError
from model.serving.deploy.pricing import PRICE_SOURCE
from model.serving.deploy.vertex import Waiting, connect, wait_for
from tests.helpers.fake_earthengine import FakeEarthEngine
from tests.helpers.fake_vertex import (
    CREATE_ENDPOINT,
    DELETE_ENDPOINT,
    DEPLOY_MODEL,
    GCS_UPLOAD,
    GET_OPERATION,
    LIST_ENDPOINTS,
    UNDEPLOY_MODEL,
    UPLOAD_MODEL,
    FakeVertexAI,
)
from transforms.io.earthengine import client as earthengine

PROJECT = "fake-project"
REGION = "us-central1"
BANDS = ["red", "nir", "elevation"]
CLASSES = ["water", "trees", "crops", "built"]
TF_IMAGE = re.compile(r"us-docker\.pkg\.dev/vertex-ai/prediction/tf2-cpu\.\d+-\d+:latest")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    keras_model = build_model("minimal", len(BANDS), len(CLASSES), filters=4)
    folder = tmp_path_factory.mktemp("exported") / "model"
    metadata = {"mode": "segmentation", "bands": BANDS, "classes": CLASSES, "patch_size": 16}
    export_model(keras_model, str(folder), {**metadata, "crs": "EPSG:32632", "scale": 10.0})
    return folder


@pytest.fixture
def model_dir(exported, tmp_path) -> Path:
    folder = tmp_path / "run1"
    shutil.copytree(exported, folder)
    return folder


@pytest.fixture
def fake(monkeypatch):
    with FakeVertexAI(PROJECT, REGION, polls=2) as server:
        # google-cloud-storage's documented emulator switch: its JSON API calls go to the fake.
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        yield server
        assert not server.errors, server.errors


def run(fake: FakeVertexAI, *argv: str, ask=None) -> int:
    args = [
        *argv,
        "--project",
        PROJECT,
        "--region",
        REGION,
        "--api-endpoint",
        fake.url,
        "--poll-interval",
        "0",
    ]
    return main(args, credentials=AnonymousCredentials(), ask=ask, sleep=lambda seconds: None)


def deploy_local(fake: FakeVertexAI, folder: Path, *extra: str) -> int:
    return run(fake, str(folder), "--staging", "gs://bucket/staging", "--yes", *extra)


def test_deploy_list_undeploy_cycle(fake, model_dir, capsys):
    assert deploy_local(fake, model_dir) == 0
    out = capsys.readouterr().out

    # The model folder went to the staging bucket, byte for byte.
    (upload,) = fake.bodies(UPLOAD_MODEL)
    artifact = upload["model"]["artifactUri"]
    assert re.fullmatch(r"gs://bucket/staging/terrabeam-run1-\d{8}-\d{6}/eeified", artifact)
    staged = fake.objects[("bucket", artifact.removeprefix("gs://bucket/") + "/saved_model.pb")]
    assert staged == (model_dir / "eeified" / "saved_model.pb").read_bytes()
    assert upload["model"]["displayName"] == "terrabeam-run1"
    assert TF_IMAGE.fullmatch(upload["model"]["containerSpec"]["imageUri"])
    assert upload["model"]["labels"] == {"managed-by": "terrabeam"}

    # A new endpoint, then the deployment with all the traffic; every operation polled to its end.
    (create,) = fake.bodies(CREATE_ENDPOINT)
    assert create["displayName"] == "terrabeam-run1"
    (request,) = fake.bodies(DEPLOY_MODEL)
    assert request["trafficSplit"] == {"0": 100}
    resources = request["deployedModel"]["dedicatedResources"]
    assert resources["machineSpec"] == {"machineType": "n1-standard-4"}
    assert (resources["minReplicaCount"], resources["maxReplicaCount"]) == (1, 1)
    assert fake.routes().count(GET_OPERATION) >= 3 * fake.polls
    (endpoint_name,) = fake.endpoints
    endpoint = fake.endpoints[endpoint_name]
    (deployed,) = endpoint["deployedModels"]
    assert endpoint["trafficSplit"] == {deployed["id"]: 100}
    assert deployed["model"] in fake.models

    record = json.loads((model_dir / "deployment.json").read_text())
    assert record["endpoint"] == endpoint_name and record["deployed_model_id"] == deployed["id"]
    assert record["model"] == deployed["model"] and record["machine_type"] == "n1-standard-4"
    assert record["cost_estimate"]["monthly_usd"] == pytest.approx(0.2190 * 24 * 30)
    assert record["cost_estimate"]["prices"].startswith(PRICE_SOURCE)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["deployed_at"])

    # The cost before, the snippets after, and how to turn it off.
    assert out.index("about $157.68 a month") < out.index("Deployed:")
    python = (model_dir / "earthengine_snippet.py").read_text()
    javascript = (model_dir / "earthengine_snippet.js").read_text()
    assert python in out and javascript in out
    assert f'endpoint="{endpoint_name}"' in python and f'endpoint: "{endpoint_name}"' in javascript
    assert f"--undeploy {model_dir}" in out

    assert run(fake, "--list") == 0
    listing = capsys.readouterr().out
    endpoint_id = endpoint_name.rsplit("/", 1)[1]
    assert re.search(
        rf"{endpoint_id}\s+terrabeam-run1\s+{deployed['id']}\s+n1-standard-4\s+1\s+157\.68", listing
    )
    assert "Estimated total: $157.68 a month" in listing

    assert run(fake, "--undeploy", str(model_dir), "--delete-endpoint") == 0
    assert fake.bodies(UNDEPLOY_MODEL) == [{"deployedModelId": deployed["id"]}]
    assert DELETE_ENDPOINT in fake.routes() and not fake.endpoints
    record = json.loads((model_dir / "deployment.json").read_text())
    assert record["undeployed_model_ids"] == [deployed["id"]] and record["endpoint_deleted"] is True
    capsys.readouterr()
    assert run(fake, "--list") == 0
    assert "No endpoints" in capsys.readouterr().out


def test_an_endpoint_is_reused_by_name_and_the_model_it_serves_is_replaced(fake, model_dir):
    assert deploy_local(fake, model_dir, "--name", "landcover") == 0
    (endpoint_name,) = fake.endpoints
    (first,) = fake.endpoints[endpoint_name]["deployedModels"]
    assert deploy_local(fake, model_dir, "--name", "landcover", "--machine-type", "n1-standard-2") == 0
    assert len(fake.bodies(CREATE_ENDPOINT)) == 1  # found by display name, not created again
    assert [r.query.get("filter") for r in fake.requests if r.route == LIST_ENDPOINTS] == [
        ['display_name="landcover"']
    ] * 2
    (second,) = fake.endpoints[endpoint_name]["deployedModels"]
    assert second["id"] != first["id"] and fake.endpoints[endpoint_name]["trafficSplit"] == {
        second["id"]: 100
    }
    record = json.loads((model_dir / "deployment.json").read_text())
    assert record["replaced_deployed_model_ids"] == [first["id"]]
    assert record["cost_estimate"]["monthly_usd"] == pytest.approx(0.1095 * 720)


def test_undeploying_moves_traffic_off_each_model_before_it_goes(fake, model_dir, capsys):
    for _ in range(3):
        assert deploy_local(fake, model_dir, "--name", "shared", "--keep-previous") == 0
    (endpoint_name,) = fake.endpoints
    endpoint = fake.endpoints[endpoint_name]
    ids = [d["id"] for d in endpoint["deployedModels"]]
    assert len(ids) == 3 and endpoint["trafficSplit"] == {ids[2]: 100}
    endpoint["trafficSplit"] = {ids[0]: 30, ids[1]: 30, ids[2]: 40}  # as an A/B test might leave it
    endpoint_id = endpoint_name.rsplit("/", 1)[1]
    assert run(fake, "--undeploy", endpoint_id) == 0  # an endpoint id works as well as a folder
    bodies = fake.bodies(UNDEPLOY_MODEL)
    assert [b["deployedModelId"] for b in bodies] == [ids[0], ids[1], ids[2]]
    assert bodies[0]["trafficSplit"] == {ids[1]: 30, ids[2]: 70}
    assert bodies[1]["trafficSplit"] == {ids[2]: 100}
    assert "trafficSplit" not in bodies[2]
    assert endpoint["deployedModels"] == [] and endpoint_name in fake.endpoints
    assert "costs nothing now" in capsys.readouterr().out


def test_a_failed_operation_is_one_error_line(fake, model_dir, capsys):
    fake.fail_next_operation(
        DEPLOY_MODEL,
        8,
        "The following quota metrics exceed quota limits: aiplatform.googleapis.com/custom_model_serving_cpus",
    )
    assert deploy_local(fake, model_dir) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Quota exceeded while deploying")
    assert "custom_model_serving_cpus" in err and "--machine-type" in err
    assert not (model_dir / "deployment.json").exists()
    (endpoint,) = fake.endpoints.values()
    assert endpoint["deployedModels"] == []  # nothing deployed, nothing billed


def test_permission_denied_says_which_role_is_missing(fake, model_dir, capsys):
    fake.add_fault(UPLOAD_MODEL, 403, "Permission 'aiplatform.models.upload' denied on resource")
    assert deploy_local(fake, model_dir) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Permission denied while uploading the model")
    assert "aiplatform.models.upload" in err and "roles/aiplatform.user" in err
    assert not fake.models and not fake.endpoints

    fake.fail_next_operation(CREATE_ENDPOINT, 7, "Permission 'aiplatform.endpoints.create' denied")
    assert deploy_local(fake, model_dir) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Permission denied while creating endpoint") and "--key-file" in err


def test_a_gs_model_folder_is_deployed_where_it_is(fake, exported, capsys):
    for path in exported.rglob("*"):
        if path.is_file():
            fake.put_object(f"gs://models/run7/{path.relative_to(exported).as_posix()}", path.read_bytes())
    assert run(fake, "gs://models/run7", "--yes", "--min-replicas", "1", "--max-replicas", "3") == 0
    (upload,) = fake.bodies(UPLOAD_MODEL)
    assert upload["model"]["artifactUri"] == "gs://models/run7/eeified"
    record = json.loads(fake.objects[("models", "run7/deployment.json")])
    assert (record["min_replicas"], record["max_replicas"]) == (1, 3)
    assert record["cost_estimate"]["monthly_usd_at_max_replicas"] == pytest.approx(0.219 * 720 * 3)
    assert ("models", "run7/earthengine_snippet.js") in fake.objects
    assert "up to $473.04 when scaled out" in capsys.readouterr().out


def test_the_projects_serving_image_serves_the_whole_folder(fake, model_dir):
    image = "us-central1-docker.pkg.dev/fake-project/repo/terrabeam-serve:1"
    assert deploy_local(fake, model_dir, "--serving-image", image) == 0
    (upload,) = fake.bodies(UPLOAD_MODEL)
    spec = upload["model"]["containerSpec"]
    assert spec == {
        "imageUri": image,
        "ports": [{"containerPort": 8080}],
        "healthRoute": "/health",
        "predictRoute": "/predict",
    }
    artifact = upload["model"]["artifactUri"]
    staged = fake.object_names(artifact + "/")
    assert f"{artifact}/model.json" in staged and f"{artifact}/saved_model/saved_model.pb" in staged
    assert not any("/eeified/" in name or "/keras/" in name for name in staged)


def test_the_cost_is_confirmed_before_anything_is_spent(fake, model_dir, capsys):
    questions = []

    def ask(question: str) -> str:
        questions.append(question)
        return "n"

    assert run(fake, str(model_dir), "--staging", "gs://bucket/staging", ask=ask) == 1
    assert questions == ["Deploy? [y/N] "]
    out = capsys.readouterr().out
    assert "about $157.68 a month" in out and "Not deployed." in out
    assert fake.requests == []  # not even the staging copy
    assert (
        run(
            fake,
            str(model_dir),
            "--staging",
            "gs://bucket/staging",
            "--machine-type",
            "e2-standard-4",
            ask=ask,
        )
        == 1
    )
    assert "price table has no rate for e2-standard-4" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--region", "mars-central1"], "not a Vertex AI region"),
        (["--staging", "gs://bucket/s", "--min-replicas", "2", "--max-replicas", "1"], "--max-replicas (1)"),
        ([], "pass --staging gs://BUCKET/FOLDER"),
        (["--staging", "/tmp/x"], "not a Cloud Storage folder"),
        (["--staging", "gs://bucket/s", "--machine-type", "big"], "not a machine type"),
        (["--staging", "gs://bucket/s", "--list"], "Give one of"),
    ],
)
def test_bad_input_stops_before_any_request(fake, model_dir, capsys, argv, message):
    args = [str(model_dir), "--yes", *argv]
    if "--region" not in argv:
        args += ["--region", REGION]
    code = main([*args, "--project", PROJECT, "--api-endpoint", fake.url], credentials=AnonymousCredentials())
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert fake.requests == []


def test_a_folder_without_eeified_says_how_to_make_one(fake, model_dir, capsys):
    shutil.rmtree(model_dir / "eeified")
    assert deploy_local(fake, model_dir) == 2
    err = capsys.readouterr().err
    assert "has no eeified/" in err and "python -m model.serving.eeify" in err
    assert not any(r.route == UPLOAD_MODEL for r in fake.requests)
    assert run(fake, "--undeploy", str(model_dir)) == 2
    assert "deployment.json" in capsys.readouterr().err


def test_the_snippets_are_earthengine_json_for_this_endpoint(fake, model_dir, tiny_scene, monkeypatch):
    """The Python snippet runs against the real Earth Engine client (the fake serves its session), and
    the fromVertexAi call it builds carries earthengine.json's arguments; the Code Editor one agrees."""
    assert deploy_local(fake, model_dir) == 0
    config = json.loads((model_dir / "earthengine.json").read_text())
    args = config["fromVertexAi"]
    endpoint = json.loads((model_dir / "deployment.json").read_text())["endpoint"]
    python = (model_dir / "earthengine_snippet.py").read_text()

    monkeypatch.setattr(ee.data, "get_persistent_credentials", lambda: AnonymousCredentials())
    with FakeEarthEngine([tiny_scene.image], tiny_scene.labels) as earth:
        ee.Initialize(AnonymousCredentials(), earth.url, project=earth.project)
        try:
            code = python.replace(f'ee.Initialize(project="{PROJECT}")', "").rsplit("print(", 1)[0]
            namespace: dict = {}
            exec(compile(code, "earthengine_snippet.py", "exec"), namespace)  # noqa: S102 - our own snippet
            graph = namespace["landcover"].serialize()
        finally:
            ee.Reset()
            earthengine._session = None  # the project's session cache must not outlive this one
    assert namespace["BANDS"] == BANDS and namespace["CLASSES"] == CLASSES
    assert "Model.fromVertexAi" in graph and "Model.predictImage" in graph and endpoint in graph
    for name in CLASSES:
        assert json.dumps(name) in graph
    assert str(args["inputTileSize"][0]) in graph and "EPSG:32632" in graph

    javascript = (model_dir / "earthengine_snippet.js").read_text()
    block = javascript.split("ee.Model.fromVertexAi(", 1)[1].split(");\n", 1)[0]
    as_json = re.sub(r"ee\.PixelType\.(\w+)\(\)", r'"\1"', block)
    as_json = re.sub(r"ee\.Projection\(([^)]*)\)\.atScale\(([^)]*)\)", r'{"crs": \1, "scale": \2}', as_json)
    as_json = re.sub(r"^(\s*)(\w+):", r'\1"\2":', as_json, flags=re.M)
    as_json = re.sub(r"(\{|, )(type|dimensions):", r'\1"\2":', as_json)
    parsed = json.loads(re.sub(r",(\s*[}\]])", r"\1", as_json))  # JavaScript allows trailing commas
    assert parsed["endpoint"] == endpoint
    assert (
        parsed["inputTileSize"] == args["inputTileSize"]
        and parsed["inputOverlapSize"] == args["inputOverlapSize"]
    )
    assert parsed["proj"] == args["proj"] and parsed["fixInputProj"] is True
    assert list(parsed["outputBands"]) == CLASSES  # in class order: the bands come out in this order
    assert parsed["payloadFormat"] == "SERIALIZED_TF_TENSORS"
    assert "'#" not in javascript and '"419bdf"' in javascript  # Dynamic World colours for its class names


def test_long_operations_report_progress_until_done(fake):
    """Waiting polls the operation (the client's own GET) and says every half minute how long it took."""
    fake.polls = 8  # answered at 0, 10, ... 70 s: done on the eighth
    vertex = connect(PROJECT, REGION, AnonymousCredentials(), fake.url)
    from google.cloud import aiplatform_v1

    operation = vertex.endpoints.create_endpoint(
        parent=vertex.parent, endpoint=aiplatform_v1.Endpoint(display_name="slow")
    )
    now = [0.0]
    lines: list[str] = []

    def advance(seconds: float) -> None:
        now[0] += seconds

    waiting = Waiting(
        poll_interval=10, report_every=30, report=lines.append, sleep=advance, clock=lambda: now[0]
    )
    endpoint = wait_for(operation, "creating endpoint 'slow'", waiting, vertex)
    assert endpoint.display_name == "slow" and endpoint.name in fake.endpoints
    assert lines[0].startswith("Creating endpoint 'slow' ... (operation projects/")
    assert lines[1:] == [
        "  still creating endpoint 'slow': 30 s",
        "  still creating endpoint 'slow': 60 s",
        "  done in 70 s",
    ]

    fake.polls = 100
    operation = vertex.endpoints.create_endpoint(
        parent=vertex.parent, endpoint=aiplatform_v1.Endpoint(display_name="stuck")
    )
    waiting.timeout = 120
    with pytest.raises(DeployError, match=r"still running after 120 s; Vertex AI goes on with it"):
        wait_for(operation, "creating endpoint 'stuck'", waiting, vertex)


def test_an_unwritable_staging_bucket_is_one_error_line(fake, model_dir, capsys):
    fake.add_fault(GCS_UPLOAD, 403, "caller does not have storage.objects.create access to the bucket")
    assert deploy_local(fake, model_dir) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Cloud Storage refused copying")
    assert "storage.objects.create" in err and "roles/storage.objectAdmin" in err
    assert not any(r.route == UPLOAD_MODEL for r in fake.requests)


def test_an_unreachable_api_endpoint_is_one_error_line(capsys):
    with FakeVertexAI(PROJECT, REGION) as gone:
        url = gone.url  # nothing listens there once the fake stops
    code = main(
        ["--list", "--project", PROJECT, "--region", REGION, "--api-endpoint", url],
        credentials=AnonymousCredentials(),
    )
    assert code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: Cannot reach Vertex AI at {url} while listing")
