"""Earth Engine as a source, through the real `earthengine-api` client and a local fake of its REST API."""

from __future__ import annotations

import json
import pickle
import random
import socket
import threading
import time
from email.utils import formatdate

import ee
import numpy as np
import pytest
from apache_beam import pvalue
from apache_beam.options.pipeline_options import PipelineOptions
from google.auth.credentials import AnonymousCredentials
from rasterio.enums import Resampling

from pipelines.extract import main
from tests.helpers.fake_earthengine import (
    ALGORITHMS_LIST,
    COMPUTE_PIXELS,
    COMPUTE_VALUE,
    THUMBNAIL_PIXELS,
    FakeEarthEngine,
)
from tests.helpers.records import read_all
from tests.helpers.scenes import TINY_CLASSES
from transforms.contracts.label_scheme import scheme_from_metadata
from transforms.contracts.manifest import read_manifest
from transforms.contracts.schema import LABEL_NODATA, PatchSchema
from transforms.extract import CENTRES, ERRORS, STATS, FetchPatches, LabelConfig, SplitConfig
from transforms.geometry.grid import GridSpec
from transforms.geometry.sampling import load_regions, sample_region
from transforms.io.earthengine import client as earthengine
from transforms.io.rasters import LocalRasterSource, SourceError, TransientSourceError
from transforms.io.retry import RetryConfig

CRS = "EPSG:32632"
IMAGE = "fake/image:red,nir,elevation"
LABELS = "fake/labels:landcover"
FAST_RETRY = RetryConfig(attempts=5, delay=0.01, backoff=2.0, max_delay=0.05)


@pytest.fixture(autouse=True)
def anonymous_credentials(monkeypatch):
    """The fake checks no credentials; stand in for `earthengine authenticate` / ADC."""
    monkeypatch.setattr(ee.data, "get_persistent_credentials", lambda: AnonymousCredentials())


@pytest.fixture(scope="module")
def regions(tiny_scene):
    return load_regions(tiny_scene.regions)


@pytest.fixture(scope="module")
def server(tiny_scene, regions):
    with FakeEarthEngine([tiny_scene.image], tiny_scene.labels, regions) as fake:
        yield fake


@pytest.fixture
def fake(server):
    """The module's fake server with no faults, an empty log and fresh per-process gates.

    One server for the module keeps one Earth Engine session for most tests (a new session costs a
    discovery and algorithms round trip).
    """
    server.clear()
    earthengine._gates.clear()
    yield server
    assert not server.errors, server.errors


def config_for(fake: FakeEarthEngine, **changes) -> earthengine.EarthEngineConfig:
    settings = dict(
        project=fake.project,
        endpoint=fake.url,
        timeout_s=2.0,
        throttle_window_s=1.0,
        throttle_delay_s=0.01,
    )
    settings.update(changes)
    return earthengine.EarthEngineConfig(**settings)


def scene_grid(tiny_scene) -> GridSpec:
    return GridSpec(CRS, 10.0, 600_000.0, 5_120_000.0)


def local_sources(tiny_scene):
    return LocalRasterSource([tiny_scene.image]), LocalRasterSource([tiny_scene.labels])


# --- reading patches ----------------------------------------------------------------------------
@pytest.mark.parametrize("fetch", ["computePixels", "getDownloadURL"])
def test_reads_equal_local_reads(fake, tiny_scene, fetch):
    image = earthengine.EarthEngineSource(IMAGE, config_for(fake), fetch)
    labels = earthengine.EarthEngineSource(LABELS, config_for(fake), fetch)
    local_image, local_labels = local_sources(tiny_scene)
    grid = scene_grid(tiny_scene)
    inside = grid.patch_around(600_505.0, 5_119_505.0, 12)
    result = image.read(inside, ["elevation", "red"])
    assert result.pixels.dtype == np.float32 and result.pixels.shape == (12, 12, 2)
    np.testing.assert_array_equal(result.pixels, local_image.read(inside, ["elevation", "red"]).pixels)
    # Half outside the scene: filled like a local read (which also flags it padded).
    edge = grid.patch_around(600_005.0, 5_119_005.0, 12)
    label = labels.read(edge, ["landcover"], fill=LABEL_NODATA, dtype="uint8", resampling=Resampling.nearest)
    expected = local_labels.read(
        edge, ["landcover"], fill=LABEL_NODATA, dtype="uint8", resampling=Resampling.nearest
    )
    assert label.pixels.dtype == np.uint8 and (label.pixels == LABEL_NODATA).any()
    np.testing.assert_array_equal(label.pixels, expected.pixels)
    if fetch == "computePixels":
        body = fake.requests[0].body
        assert body["grid"] == inside.to_earth_engine() and body["fileFormat"] == "NPY"
    else:
        assert fake.count(THUMBNAIL_PIXELS) == 2 and fake.count(COMPUTE_PIXELS) == 0


TINY_SCHEME = scheme_from_metadata({"classes": TINY_CLASSES})


def remapped_labels(fake, scheme=TINY_SCHEME, **config):
    """The label image as extraction reads it: remapped to class indices on the (fake) server."""
    return earthengine.EarthEngineSource(
        LABELS, config_for(fake, **config), label_scheme=scheme, label_band="landcover"
    )


def test_records_are_byte_identical_to_the_local_source(fake, tiny_scene, regions):
    grid = scene_grid(tiny_scene)
    points = [p for region in regions for p in sample_region(region, tiny_scene.labels, 2, seed=3)]
    schema = PatchSchema(("red", "nir", "elevation"), 16)

    def records(inputs, labels, label_config):
        fn = FetchPatches(
            inputs, labels, "landcover", schema, grid, SplitConfig(0.3), label_config, retry=FAST_RETRY
        )
        fn.setup()
        out = [o for p in points for o in fn.process(p)]
        fn.teardown()
        return [(o.tag, o.value) for o in out if o.tag not in (STATS, CENTRES)]

    local = records(*local_sources(tiny_scene), LabelConfig(TINY_SCHEME))
    remote = records(
        earthengine.EarthEngineSource(IMAGE, config_for(fake)),
        remapped_labels(fake),
        LabelConfig(TINY_SCHEME, remapped_by_source=True),
    )
    assert len(local) == len(points) > 0 and all(tag != ERRORS for tag, _ in local)
    assert remote == local


def test_sources_pickle_without_a_session(fake, tiny_scene):
    source = earthengine.EarthEngineSource("fake/image", config_for(fake))
    assert source.bands == ("red", "nir", "elevation", "landcover")  # looked up: no band list given
    copy = pickle.loads(pickle.dumps(source))
    assert copy._image is None and copy.bands == source.bands
    patch = copy.read(scene_grid(tiny_scene).patch_around(600_505.0, 5_119_505.0, 4), ["nir"])
    assert patch.pixels.shape == (4, 4, 1)
    with pytest.raises(SourceError, match="Band\\(s\\) B4 not in Earth Engine image 'fake/image'"):
        copy.check_bands(["B4"])


def test_too_big_a_request_is_refused_before_sending(fake):
    source = earthengine.EarthEngineSource("fake/image", config_for(fake))
    grid = GridSpec(CRS, 10.0).window(0, 0, 2048, 2048)
    with pytest.raises(SourceError, match="= 64.0 MiB, over the 48 MiB per request"):
        source.read(grid, ["red", "nir", "elevation", "landcover"])
    assert fake.count(COMPUTE_PIXELS) == 0
    source.check_request(1500, 1500, 4)  # 34 MiB: fits computePixels ...
    download = earthengine.EarthEngineSource("fake/image", config_for(fake), "getDownloadURL")
    with pytest.raises(SourceError, match="over the 32 MiB per request"):
        download.check_request(1500, 1500, 4)  # ... but not a download URL
    with pytest.raises(SourceError, match="40000 pixels per side"):
        source.check_request(40000, 1, 1)


# --- retries, dead letters, quota ----------------------------------------------------------------
def fetch(fake, tiny_scene, point_xy=(600_505.0, 5_119_505.0), retry=FAST_RETRY, **config):
    """FetchPatches on one point through the fake; returns its (tag, value) outputs but stats."""
    from transforms.geometry.sampling import Point

    x, y = point_xy
    point = Point("north/45/50", "north", x, y, CRS, 10.3, 46.2, 1, 1)
    fn = FetchPatches(
        earthengine.EarthEngineSource(IMAGE, config_for(fake, **config)),
        remapped_labels(fake, **config),
        "landcover",
        PatchSchema(("red", "nir", "elevation"), 8),
        scene_grid(tiny_scene),
        SplitConfig(0.0),
        LabelConfig(TINY_SCHEME, remapped_by_source=True),
        retry=retry,
    )
    fn.setup()
    return [
        (o.tag, o.value)
        for o in fn.process(point)
        if isinstance(o, pvalue.TaggedOutput) and o.tag not in (STATS, CENTRES)
    ]


def test_three_429s_then_success_delivers_the_patch(fake, tiny_scene):
    fake.add_fault(status=429, message="Too many concurrent aggregations.", retry_after="0", times=3)
    outputs = fetch(fake, tiny_scene)
    assert [tag for tag, _ in outputs] == ["train"]
    assert fake.count(COMPUTE_PIXELS) == 3 + 1 + 1  # three refusals, the inputs, the label


def test_retry_after_is_honoured(fake, tiny_scene):
    fake.add_fault(status=429, retry_after="0.6")
    start = time.monotonic()
    outputs = fetch(fake, tiny_scene)
    assert [tag for tag, _ in outputs] == ["train"]
    assert time.monotonic() - start >= 0.6


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "message": "Internal error."},
        {"status": 503, "message": "The service is currently unavailable."},
        {"drop": True},
        {"truncate": True},
        {"delay": 0.8},
    ],
    ids=["500", "503", "dropped", "truncated", "slow"],
)
def test_transient_failures_are_retried(fake, tiny_scene, fault):
    source = earthengine.EarthEngineSource(IMAGE, config_for(fake, timeout_s=0.4))
    grid = scene_grid(tiny_scene).patch_around(600_505.0, 5_119_505.0, 8)
    fake.add_fault(**fault)
    with pytest.raises(TransientSourceError):
        source.read(grid, ["red"])
    fake.add_fault(**fault)
    result = FAST_RETRY.call(source.read, grid, ["red"])
    expected = local_sources(tiny_scene)[0].read(grid, ["red"]).pixels
    np.testing.assert_array_equal(result.pixels, expected)


def test_transient_download_failures_are_retried(fake, tiny_scene):
    source = earthengine.EarthEngineSource(IMAGE, config_for(fake), "getDownloadURL")
    grid = scene_grid(tiny_scene).patch_around(600_505.0, 5_119_505.0, 8)
    fake.add_fault(status=503, retry_after="0", routes=(THUMBNAIL_PIXELS,))
    fake.add_fault(truncate=True, routes=(THUMBNAIL_PIXELS,))
    result = FAST_RETRY.call(source.read, grid, ["red"])
    assert fake.count(THUMBNAIL_PIXELS) == 3 and result.pixels.shape == (8, 8, 1)


def test_a_permanent_400_is_dead_lettered_with_the_servers_message(fake, tiny_scene):
    message = "Image.select: Pattern 'B99' did not match any bands."
    fake.add_fault(status=400, message=message)
    outputs = fetch(fake, tiny_scene)
    assert [tag for tag, _ in outputs] == [ERRORS]
    letter = json.loads(outputs[0][1])
    assert (
        letter["error_type"] == "SourceError" and "HTTP 400" in letter["error"] and message in letter["error"]
    )
    assert fake.count(COMPUTE_PIXELS) == 1  # not retried


def test_retries_run_out_into_the_dead_letters(fake, tiny_scene):
    fake.add_fault(status=503, message="Backend overloaded.", times=10)
    retry = RetryConfig(attempts=3, delay=0.01, max_delay=0.02)
    outputs = fetch(fake, tiny_scene, retry=retry)
    assert [tag for tag, _ in outputs] == [ERRORS]
    assert "Backend overloaded." in json.loads(outputs[0][1])["error"]
    assert fake.count(COMPUTE_PIXELS) == 3


def test_never_more_requests_in_flight_than_allowed(fake, tiny_scene):
    source = earthengine.EarthEngineSource(IMAGE, config_for(fake, max_in_flight=3))
    fake.add_fault(delay=0.15, times=24)
    grid = scene_grid(tiny_scene)
    errors = []

    def work(i):
        try:
            source.read(grid.patch_around(600_505.0 + 10 * i, 5_119_505.0, 4), ["red"])
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and fake.count(COMPUTE_PIXELS) == 12
    assert fake.max_in_flight == 3  # the bound, and it was reached


def test_a_burst_of_429s_makes_the_client_back_off(fake, tiny_scene):
    config = config_for(fake, throttle_window_s=1.0, throttle_delay_s=0.05)
    source = earthengine.EarthEngineSource(IMAGE, config)
    grid = scene_grid(tiny_scene).patch_around(600_505.0, 5_119_505.0, 4)
    earthengine.gate_for(config)._throttler._random = random.Random(0)  # deterministic throttling draws
    fake.add_fault(status=429, retry_after="0", times=4)
    for _ in range(4):
        with pytest.raises(earthengine.EarthEngineBusy):
            source.read(grid, ["red"])
    start = time.monotonic()
    source.read(grid, ["red"])
    assert time.monotonic() - start >= 0.05  # held back client-side before the request went out
    assert fake.count(COMPUTE_PIXELS) == 5


def test_credential_failures_are_classified():
    from google.auth.exceptions import RefreshError, TransportError

    assert type(earthengine.classify(TransportError("reset"), "computePixels")) is TransientSourceError
    revoked = earthengine.classify(RefreshError("invalid_grant: Token has been revoked."), "computePixels")
    assert type(revoked) is SourceError and "Token has been revoked" in str(revoked)
    assert earthengine.classify(KeyError("a bug"), "computePixels") is None  # not ours to hide


def test_retry_after_header_forms():
    assert earthengine.parse_retry_after("3") == 3.0
    assert earthengine.parse_retry_after("0.5") == 0.5
    assert 8 <= earthengine.parse_retry_after(formatdate(time.time() + 10, usegmt=True)) <= 10
    assert earthengine.parse_retry_after("soon") is None and earthengine.parse_retry_after(None) is None


def test_quota_is_shared_between_worker_processes():
    def share(*flags):
        return earthengine.requests_per_process(20, PipelineOptions(list(flags)))

    assert share() == (20, 1)
    assert share("--direct_num_workers", "4", "--direct_running_mode", "multi_threading") == (20, 1)
    assert share("--direct_num_workers", "4", "--direct_running_mode", "multi_processing") == (5, 4)
    assert share("--runner", "DataflowRunner", "--max_num_workers", "10") == (2, 10)
    assert share("--runner", "DataflowRunner") == (0, 0)


# --- server-side sampling -----------------------------------------------------------------------
def test_server_side_sampling_gives_the_local_points(fake, tiny_scene, regions):
    labels = earthengine.EarthEngineSource(LABELS, config_for(fake))
    grid = scene_grid(tiny_scene)
    for region in regions:
        remote = earthengine.sample_region_ee(region, labels, "landcover", grid, 4, seed=7, classes=[1, 2])
        local = sample_region(region, tiny_scene.labels, 4, seed=7, classes=[1, 2])
        assert sorted((p.id, p.x, p.y, p.lon, p.lat, p.label) for p in remote) == sorted(
            (p.id, p.x, p.y, p.lon, p.lat, p.label) for p in local
        )
    args = fake.requests[-1].body["expression"]
    assert "Image.stratifiedSample" in json.dumps(args)


def test_large_samples_are_split_across_seeds(fake, tiny_scene, regions):
    points = earthengine.sample_region_ee(
        regions[0],
        remapped_labels(fake),
        "landcover",
        scene_grid(tiny_scene),
        10,
        seed=1,
        max_points_per_request=12,
    )
    assert fake.count(COMPUTE_VALUE) == 4  # 10 points x 4 classes / 12 per request
    seeds = [json.dumps(r.body).count('"seed"') for r in fake.requests]
    assert all(seeds)
    ids = [p.id for p in points]
    assert len(ids) == len(set(ids))
    per_class = np.bincount([p.label for p in points])
    assert per_class.max() <= 10 and per_class.sum() > 10


def test_sampling_failure_names_the_server_message(fake, tiny_scene, regions):
    labels = earthengine.EarthEngineSource(LABELS, config_for(fake))
    fake.add_fault(
        status=400, message="Image.stratifiedSample: Parameter 'region' is required.", routes=(COMPUTE_VALUE,)
    )
    with pytest.raises(SourceError, match="Parameter 'region' is required"):
        earthengine.stratified_sample(
            regions[0], labels, "landcover", scene_grid(tiny_scene), 2, 0, retry=FAST_RETRY
        )


def test_points_in_a_projected_crs_are_understood(regions):
    grid = GridSpec(CRS, 10.0)
    feature = {
        "type": "Feature",
        "geometry": {
            "type": "Point",
            "coordinates": [600_955.2, 5_119_545.1],
            "crs": {"type": "name", "properties": {"name": CRS}},
        },
        "properties": {"landcover": 2},
    }
    point = earthengine.point_of_feature(feature, regions[0], "landcover", grid)
    assert (point.x, point.y, point.label, point.crs) == (600_955.0, 5_119_545.0, 2, CRS)
    assert point.id == "north/-511955/60095" and 10.30 < point.lon < 10.31 and 46.2 < point.lat < 46.3
    assert earthengine.point_of_feature({**feature, "properties": {}}, regions[0], "landcover", grid) is None


def test_utm_zone_of_regions(regions):
    assert earthengine.utm_crs_of(regions) == CRS


# --- initialization errors ----------------------------------------------------------------------
def test_no_project_is_a_clear_error():
    with pytest.raises(earthengine.EarthEngineInitError, match="pass --ee-project"):
        earthengine.EarthEngineConfig(project=None)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "No such file"),
        ("not json", "Expecting value"),
        ('{"type": "service_account"}', "missing fields"),
    ],
)
def test_bad_key_file_is_a_clear_error(fake, tmp_path, content, message):
    key = tmp_path / "key.json"
    if content is not None:
        key.write_text(content)
    source = earthengine.EarthEngineSource(IMAGE, config_for(fake, key_file=str(key)))
    with pytest.raises(earthengine.EarthEngineInitError, match=f"service-account key file .*{message}"):
        source.connect()


def test_missing_credentials_say_how_to_authenticate(fake, monkeypatch):
    def no_credentials():
        raise ee.EEException("Please authorize access to your Earth Engine account")

    monkeypatch.setattr(ee.data, "get_persistent_credentials", no_credentials)
    with pytest.raises(earthengine.EarthEngineInitError, match="earthengine authenticate"):
        earthengine.EarthEngineSource(IMAGE, config_for(fake, project="other")).connect()


def test_unreachable_endpoint_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = earthengine.EarthEngineConfig(project="p", endpoint=f"http://127.0.0.1:{port}", timeout_s=1)
    with pytest.raises(
        earthengine.EarthEngineInitError, match=f"Cannot reach Earth Engine at http://127.0.0.1:{port}"
    ):
        earthengine.EarthEngineSource(IMAGE, config).connect()
    with pytest.raises(earthengine.EarthEngineUnavailable):  # on a worker: retried, then dead-lettered
        earthengine.initialize(config)


def test_refused_session_names_the_project(fake):
    fake.add_fault(
        status=403, message="Earth Engine API has not been used in project 42.", routes=(ALGORITHMS_LIST,)
    )
    with pytest.raises(
        earthengine.EarthEngineInitError, match="refused a session for project 'fresh'.*not been used"
    ):
        earthengine.EarthEngineSource(IMAGE, config_for(fake, project="fresh")).connect()


@pytest.mark.slow
def test_extraction_through_earthengine_equals_local(fake, tiny_scene, tmp_path, capsys):
    classes = tmp_path / "tiny.json"
    classes.write_text(json.dumps(TINY_SCHEME.to_json()))
    common = ["--regions", tiny_scene.regions, "--patch-size", "16", "--points-per-class", "8"]
    common += ["--crs", CRS, "--scale", "10", "--split-block-size", "400", "--validation-fraction", "0.5"]
    common += ["--label-scheme", str(classes)]
    local = ["--inputs", tiny_scene.image, "--labels", tiny_scene.labels, "--output", str(tmp_path / "local")]
    assert main([*local, *common]) == 0
    remote = ["--source", "earthengine", "--ee-project", fake.project, "--ee-endpoint", fake.url]
    remote += ["--ee-image", IMAGE, "--ee-labels", LABELS, "--max-requests", "2"]
    assert main([*remote, *common, "--output", str(tmp_path / "ee")]) == 0, capsys.readouterr().err
    expected, got = read_all(tmp_path / "local"), read_all(tmp_path / "ee")
    assert len(got) == len(expected) > 8
    assert {s for s, *_ in got} == {"train", "validation"}
    assert got.keys() == expected.keys()
    for key, record in expected.items():
        for name, value in record.items():
            np.testing.assert_array_equal(got[key][name], value, err_msg=f"{key} {name}")
    manifest = read_manifest(str(tmp_path / "ee"))
    assert manifest["source"]["kind"] == "earthengine" and manifest["source"]["image"] == IMAGE
    assert fake.max_in_flight <= 2
    assert fake.count(COMPUTE_VALUE) == 4  # per region: a histogram of its label values, a stratifiedSample
    assert manifest["errors"]["count"] == 0
    assert manifest["label_scheme"] == read_manifest(str(tmp_path / "local"))["label_scheme"]


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "pass --ee-project"),
        (["--ee-project", "p", "--inputs", "a.tif"], "use --ee-image and --ee-labels"),
        (["--ee-project", "p", "--ee-image", "s2-l2a"], "Unknown Earth Engine image 's2-l2a'"),
        (["--ee-project", "p", "--runner", "DataflowRunner"], "set --max_num_workers"),
        (["--ee-project", "p", "--max-requests", "0"], "--max-requests must be at least 1"),
    ],
)
def test_bad_earthengine_options_stop_before_the_job(tiny_scene, tmp_path, capsys, flags, message):
    output = tmp_path / "out"
    argv = ["--source", "earthengine", "--regions", tiny_scene.regions, "--output", str(output), *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_patch_too_big_for_earthengine_stops_before_the_job(fake, tiny_scene, tmp_path, capsys):
    argv = ["--source", "earthengine", "--ee-project", fake.project, "--ee-endpoint", fake.url]
    argv += ["--ee-image", "fake/image", "--ee-labels", LABELS, "--regions", tiny_scene.regions]
    argv += [
        "--patch-size",
        "2048",
        "--bands",
        "red,nir,elevation,landcover",
        "--output",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2
    assert "over the 48 MiB per request" in capsys.readouterr().err
