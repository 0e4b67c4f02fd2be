"""Where a job's pixels come from, checked before it starts: local rasters (the generated demo scene when
none are given; imagery by date as one stack, transforms.io.dated) or Earth Engine image recipes.

A broken or cut-short file, a band the job needs but the imagery lacks, regions off the rasters, label
values no class claims, an Earth Engine project that is missing or unreachable: each stops the job here,
with a message that says what to change, rather than on the workers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from typing import Any

from rasterio.warp import transform_bounds

from pipelines.checks.area import aoi_regions
from pipelines.checks.labels import check_unknown_values, earthengine_scheme, local_scheme
from pipelines.shell import UsageError, comma_list, notice
from transforms.contracts.label_scheme import label_histogram
from transforms.extract import LabelConfig, raw_label_reading
from transforms.geometry.grid import GridSpec, grid_spec_of
from transforms.geometry.sampling import (
    Region,
    RegionsError,
    features,
    load_regions,
    region_windows,
    whole_raster_region,
)
from transforms.geometry.tiling import TilingSpec
from transforms.io.dated import (
    PER_DATE,
    check_dates,
    check_model_bands,
    date_sources,
    parse_inputs,
    stacked_source,
)
from transforms.io.rasters import LocalRasterSource, PixelSource, SourceError


@dataclasses.dataclass(frozen=True)
class ExtractionSources:
    """What an extraction reads, checked: imagery and labels, the regions to sample, the patch grid."""

    inputs: PixelSource
    labels: PixelSource
    label_band: str
    label_config: LabelConfig
    regions: tuple[Region, ...]
    bands: list[str]
    grid: GridSpec
    source: dict[str, Any]  # the source as manifest.json records it
    strata_band: tuple[str, int] | None = None  # (file, band index) of --strata-band
    strata_edges: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class LocalImagery:
    """--inputs, checked: the source a job reads, what its manifest records, and the dates (dated
    --inputs or a STAC file: one source per date; None for plain paths)."""

    source: LocalRasterSource
    record: dict[str, Any]
    dates: dict[str, LocalRasterSource] | None = None


def local_imagery(inputs: Sequence[str], band_names: str | None) -> LocalImagery:
    """The rasters of --inputs (and --band-names), checked before the job: plain paths as one source;
    dates (`before=a.tif after=b.tif`, or a STAC file) as one stacked source, bands `{band}_{label}`.

    Dates on different grids get one note; the record lists the dates in order, each with its files.
    """
    dated = parse_inputs(inputs, comma_list(band_names))
    if dated is None:
        source = LocalRasterSource(inputs, comma_list(band_names))
        source.check_files()  # a broken or cut-short file stops the job here, not on the workers
        # The names given are recorded, so that what reads the record (the map viewer) opens the same bands.
        named = {"band_names": list(source.bands)} if band_names else {}
        return LocalImagery(source, {"inputs": list(inputs), **named})
    dates = date_sources(dated)
    note = check_dates(dates)
    if note:
        notice(note)
    source = stacked_source(dates)
    # `inputs` and `band_names` open the stack as one source again (the map viewer does).
    record = {"inputs": list(source.paths), "band_names": list(source.bands), **dated.to_json()}
    return LocalImagery(source, record, dates)


def extraction_sources(opts: Any, offline: bool = False) -> ExtractionSources:
    """The extraction's imagery and labels (ExtractOptions): local rasters or Earth Engine recipes.

    `offline` (for a plan): Earth Engine is not contacted, so what only it could check is not checked.
    """
    if opts.source == "earthengine":
        return _earthengine_extraction(opts, offline)
    source = {"kind": "local"}
    inputs, labels_path, regions_path = opts.inputs, opts.label_raster, opts.regions
    if not (inputs and labels_path):
        if inputs or labels_path or regions_path:
            raise UsageError(
                "Give both --inputs and --labels (--label-raster), with --regions optional, or none of the "
                "three for the demo scene."
            )
        from pipelines.demo.scene import ensure_demo_scene

        scene = ensure_demo_scene(opts.demo_cache)
        inputs, labels_path, regions_path = [scene.image], scene.labels, scene.regions
        source["kind"] = "demo"

    imagery = local_imagery(inputs, opts.band_names)
    input_source = imagery.source
    label_source = LocalRasterSource([labels_path])
    label_source.check_files()  # a broken or cut-short file stops the job here, not on the workers
    bands = comma_list(opts.bands) or list(input_source.bands)
    input_source.check_bands(bands)
    label_band = opts.label_band or label_source.bands[0]
    label_source.check_bands([label_band])

    crs, transform, width, height = label_source.native_grid()
    try:
        grid = grid_spec_of(crs, transform)
    except ValueError as e:
        if not (opts.crs and opts.scale):
            raise UsageError(f"Label raster {labels_path!r}: {e}") from None
        grid = None
    if opts.crs or opts.scale:
        grid = GridSpec(opts.crs or crs, opts.scale or grid.scale)
    if opts.patch_size > min(width, height) * abs(transform.a) / grid.scale:
        raise UsageError(
            f"--patch-size {opts.patch_size} is larger than the label raster ({width}x{height} pixels); "
            "use a smaller patch."
        )

    if regions_path:
        regions = tuple(load_regions(regions_path))
        _check_regions_inside(regions, input_source, label_source)
    else:
        regions = (whole_raster_region(labels_path),)
        notice(
            f"No --regions given: sampling the whole label raster {labels_path!r} (less its nodata) as one "
            f"region, {regions[0].name!r}."
        )
    band_index = label_source.band_refs[label_band].index
    margin = math.ceil(opts.patch_size * grid.scale / abs(transform.a) / 2)
    scheme = local_scheme(opts, labels_path, band_index, source["kind"])
    histogram = label_histogram(labels_path, band_index, region_windows(labels_path, regions, margin))
    where = f"The label raster {labels_path!r}, where patches are read,"
    check_unknown_values(scheme, histogram, opts.unknown_labels, where)
    dtype, nodata = label_source.band_type(label_band)
    label_config = LabelConfig(scheme, opts.unknown_labels, **raw_label_reading(dtype, nodata))

    strata_band = None
    strata_edges = tuple(_numbers(opts.strata_edges, float, "--strata-edges"))
    if opts.strata_band:
        input_source.check_bands([opts.strata_band])
        ref = input_source.band_refs[opts.strata_band]
        strata_band = (ref.path, ref.index)
        if not strata_edges:
            raise UsageError("--strata-band needs --strata-edges, e.g. --strata-edges 500,1000,2000.")
    source.update(imagery.record, labels=labels_path, regions=regions_path, label_band=label_band)
    return ExtractionSources(
        input_source,
        label_source,
        label_band,
        label_config,
        regions,
        bands,
        grid,
        source,
        strata_band,
        strata_edges,
    )


def _earthengine_extraction(opts: Any, offline: bool = False) -> ExtractionSources:
    """--source earthengine: images by recipe, points by Earth Engine's stratifiedSample.

    The session is started here, so a missing project, bad credentials or an unreachable endpoint stop
    the job before it starts. `offline`: no session; the bands come from the recipes (an asset without a
    band list needs --bands) and the label values in the regions are not counted.
    """
    from transforms.io.earthengine import client as earthengine
    from transforms.io.earthengine.recipes import DEFAULT_INPUTS, DEFAULT_LABELS, label_scheme_of

    if opts.inputs or opts.label_raster or opts.band_names:
        raise UsageError(
            "--inputs, --labels and --band-names describe local rasters; with --source earthengine use "
            "--ee-image and --ee-labels."
        )
    if not opts.regions:
        raise UsageError("--source earthengine needs --regions, a GeoJSON of lon/lat polygons to sample in.")
    if opts.strata_band:
        raise UsageError(
            "--strata-band works with local rasters only; leave it out with --source earthengine."
        )
    config, (inputs, raw_labels) = earthengine_sources(
        opts, opts.ee_image or DEFAULT_INPUTS, opts.ee_labels or DEFAULT_LABELS
    )
    regions = tuple(load_regions(opts.regions))
    if offline:
        bands = comma_list(opts.bands) or list(inputs.recipe.bands or ())
        if not bands:
            raise UsageError(
                f"--ee-image {inputs.recipe.spec!r} names an asset without its bands: pass --bands to plan "
                "without asking Earth Engine for them."
            )
        if inputs.recipe.bands is not None:
            inputs.check_bands(bands)
        label_band = opts.label_band or (raw_labels.recipe.bands or ("landcover",))[0]
    else:
        inputs.connect()
        raw_labels.connect()
        check_scenes(regions, {"--ee-image": inputs, "--ee-labels": raw_labels})
        bands = comma_list(opts.bands) or list(inputs.bands)
        inputs.check_bands(bands)
        label_band = opts.label_band or raw_labels.bands[0]
        raw_labels.check_bands([label_band])
    inputs.check_request(opts.patch_size, opts.patch_size, len(bands), "float32")
    raw_labels.check_request(opts.patch_size, opts.patch_size, 1, "uint8")
    grid = GridSpec(opts.crs or earthengine.utm_crs_of(regions), opts.scale or earthengine.DEFAULT_SCALE)
    recipe = raw_labels.recipe.spec
    if offline:
        scheme = earthengine_scheme(opts, recipe, label_scheme_of(raw_labels.recipe), {})
    else:
        # The label values in the regions, counted by Earth Engine: unknown values stop the job here.
        histogram = earthengine.label_histogram(raw_labels, label_band, regions, grid)
        scheme = earthengine_scheme(opts, recipe, label_scheme_of(raw_labels.recipe), histogram)
        where = f"--ee-labels {recipe!r}, in the regions,"
        check_unknown_values(scheme, histogram, opts.unknown_labels, where)
    # Earth Engine remaps the labels to class indices on the server (ee.Image.remap).
    labels = earthengine.EarthEngineSource(
        raw_labels.recipe,
        config,
        opts.ee_fetch,
        label_scheme=scheme,
        label_band=label_band,
        unknown_labels=opts.unknown_labels,
    )
    label_config = LabelConfig(scheme, opts.unknown_labels, remapped_by_source=True)
    source = {
        "kind": "earthengine",
        "project": config.project,
        "endpoint": config.endpoint,
        "image": inputs.recipe.spec,
        "labels": labels.recipe.spec,
        "label_band": label_band,
        "fetch": opts.ee_fetch,
        "regions": opts.regions,
        "max_requests": opts.max_requests,
    }
    return ExtractionSources(inputs, labels, label_band, label_config, regions, bands, grid, source)


def prediction_source(
    opts: Any, spec: TilingSpec, model_dir: str, bands: Sequence[str], offline: bool = False
) -> tuple[Any, dict[str, Any]]:
    """The imagery to predict (PredictOptions), with the `bands` the model at `model_dir` needs; and the
    source as prediction.json records it. `offline` (for a plan): Earth Engine is not contacted, and an
    asset's bands are checked only where the recipe lists them."""
    if opts.source == "earthengine":
        source, info = _earthengine_prediction(opts, spec, len(bands), offline)
    else:
        imagery = _local_prediction(opts)
        source, info = imagery.source, imagery.record
        if imagery.dates is not None:
            _check_model_reads_the_stack(model_dir, bands, imagery)
    offline_unknown = offline and getattr(getattr(source, "recipe", None), "bands", ()) is None
    if hasattr(source, "check_bands") and not offline_unknown:
        try:
            source.check_bands(list(bands))
        except SourceError as e:
            raise UsageError(
                f"The model at {model_dir!r} needs bands {list(bands)}, but the imagery lacks some: {e} "
                "Pass imagery with these bands (--inputs, --band-names) or a model trained on the bands you have."
            ) from None
    return source, info


def _local_prediction(opts: Any) -> LocalImagery:
    inputs = opts.inputs
    kind = "local"
    if not inputs:
        from pipelines.demo.scene import ensure_demo_scene

        inputs = [ensure_demo_scene(opts.demo_cache).image]
        kind = "demo"
    try:
        imagery = local_imagery(inputs, opts.band_names)
        imagery.source.native_grid()
    except SourceError as e:
        raise UsageError(str(e)) from None
    return dataclasses.replace(imagery, record={"kind": kind, **imagery.record})


def _check_model_reads_the_stack(model_dir: str, bands: Sequence[str], imagery: LocalImagery) -> None:
    """Dated --inputs predict as one stack: the model's bands must be the stack's `{band}_{label}`."""
    try:
        mode = check_model_bands(bands, imagery.dates)
    except SourceError as e:
        raise UsageError(f"The model at {model_dir!r} cannot read these --inputs: {e}") from None
    if mode == PER_DATE:
        raise UsageError(
            f"The model at {model_dir!r} takes one date's bands ({', '.join(bands)}), but dated --inputs "
            f"are predicted as one stack of dates ({', '.join(imagery.source.bands)}): predict each date "
            "with its own --inputs, or train a model on the stack (extract with the same dated --inputs)."
        )


def _earthengine_prediction(
    opts: Any, spec: TilingSpec, num_bands: int, offline: bool = False
) -> tuple[Any, dict[str, Any]]:
    """An Earth Engine image recipe as the source; the session starts here (unless `offline`), so bad
    credentials stop early."""
    from transforms.io.earthengine.recipes import DEFAULT_INPUTS

    if opts.inputs or opts.band_names:
        raise UsageError(
            "--inputs and --band-names describe local rasters; with --source earthengine use --ee-image."
        )
    if not opts.aoi:
        raise UsageError("--source earthengine needs --aoi: a GeoJSON file of lon/lat polygons, or W,S,E,N.")
    config, (source,) = earthengine_sources(opts, opts.ee_image or DEFAULT_INPUTS)
    if not offline:
        source.connect()
        check_scenes(aoi_regions(opts.aoi), {"--ee-image": source})
    source.check_request(spec.tile_size, spec.tile_size, num_bands, "float32")
    info = {
        "kind": "earthengine",
        "project": config.project,
        "endpoint": config.endpoint,
        "image": source.recipe.spec,
        "fetch": opts.ee_fetch,
    }
    return source, info


def earthengine_sources(opts: Any, *recipes: str) -> tuple[Any, list[Any]]:
    """The Earth Engine session that the Earth Engine options ask for, and a source for each image recipe.

    Each worker process gets its share of --max-requests. The session is not started here.
    """
    from transforms.io.earthengine import client

    if opts.max_requests < 1:
        raise UsageError(f"--max-requests must be at least 1, got {opts.max_requests}.")
    per_process, processes = client.requests_per_process(opts.max_requests, opts)
    if not processes:
        raise UsageError(
            "With --source earthengine on a distributed runner, set --max_num_workers: each worker sends "
            "at most --max-requests / --max_num_workers requests at a time."
        )
    if processes > opts.max_requests:
        logging.warning(
            "%d worker processes share --max-requests %d: each still sends one request at a time.",
            processes,
            opts.max_requests,
        )
    try:
        config = client.EarthEngineConfig(
            project=opts.ee_project,
            endpoint=opts.ee_endpoint or client.HIGH_VOLUME_URL,
            key_file=opts.ee_key_file,
            max_in_flight=per_process,
        )
        return config, [client.EarthEngineSource(recipe, config, opts.ee_fetch) for recipe in recipes]
    except ValueError as e:  # a recipe that does not parse (RecipeError), or settings the source refuses
        raise UsageError(str(e)) from None


def check_scenes(regions: Sequence[Region], sources: dict[str, Any]) -> None:
    """Stop before the job when a dated part of an Earth Engine recipe finds no scenes in its window over
    a region (its image would be masked everywhere); `sources` maps each option to its source. Earth
    Engine counts the scenes of every part and region in one request."""
    from transforms.io.earthengine.client import scene_counts
    from transforms.io.earthengine.recipes import collection_ids

    flags = {source.recipe.spec: flag for flag, source in sources.items()}
    empty = [c for c in scene_counts(list(sources.values()), regions) if c.scenes == 0]
    if not empty:
        return
    found = "; ".join(
        f"{flags[c.recipe]} part {c.part.text!r} ({', '.join(collection_ids(c.part))}, "
        f"{c.part.window.start.isoformat()} to {c.part.window.end.isoformat()}) over region {c.region!r}"
        for c in empty
    )
    raise UsageError(
        f"No scenes in the date window: {found}. Widen the window (e.g. the whole year), pick another "
        "season or year, or another sensor (s2-l1c, s2-sr, landsat, s1-grd), and check that the region "
        "lies where the sensor looks."
    )


def _numbers(value: str | None, kind, flag: str) -> list:
    try:
        return [kind(v) for v in comma_list(value) or []]
    except ValueError:
        raise UsageError(f"{flag} must be comma-separated numbers, got {value!r}.") from None


def _check_regions_inside(regions: Sequence[Region], *sources: LocalRasterSource) -> None:
    outside = []
    for region in regions:
        left, bottom, right, top = features.bounds(region.geometry)
        for src in sources:
            crs = src.native_grid()[0]
            fl, fb, fr, ft = src.footprint(crs)
            rl, rb, rr, rt = transform_bounds("EPSG:4326", crs, left, bottom, right, top)
            if rl >= fr or rr <= fl or rb >= ft or rt <= fb:
                outside.append(region.name)
                break
    if outside:
        raise RegionsError(
            f"Region(s) {', '.join(outside)} lie outside the raster footprint. Regions are lon/lat "
            "(EPSG:4326) polygons; check the coordinates or the rasters."
        )
