"""`terrabeam assess`: map accuracy and area with 95 % confidence intervals, by the good-practice
protocol of Olofsson et al. (2014).

    python -m pipelines.assess design out/demo/predictions            # stratified sample of the class map
    #   ... fill in the 'reference' column of out/demo/predictions/assessment/points.csv ...
    python -m pipelines.assess estimate out/demo/predictions/assessment --labels points.csv
    python -m pipelines.assess estimate out/demo/predictions/assessment --reference-raster truth.tif

    # what `make demo` runs: the map outside the training patches, against the demo scene's truth
    python -m pipelines.assess design out/demo/predictions --exclude-training out/demo/data --overwrite
    python -m pipelines.assess estimate out/demo/predictions/assessment --reference-raster demo

`design` draws a stratified random sample of the class map (strata = map classes), sized for a target
standard error of overall accuracy, with a minimum per class and the rest in proportion, and writes
design.json, points.csv and points.geojson (and, with --ee-table, an Earth Engine table asset); with
--exclude-training DATA, the pixels inside DATA's training patches are left out of the population.
`estimate` reads the reference labels (a filled-in points file, or a reference raster read at each
point) and writes assessment.json, assessment.md and assessment.html: overall, user's and producer's
accuracy and the error-adjusted area of each class, each with its standard error and 95 % interval,
beside the mapped area. The work is in transforms/assessment; this module imports neither TensorFlow
nor Beam (only --exclude-training reads TFRecords, with Beam's file systems), so it starts at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from transforms.assessment.errors import AssessmentError
from transforms.assessment.report import ASSESSMENT_DIR
from transforms.assessment.sample_size import (
    DEFAULT_ANTICIPATED_ACCURACY,
    DEFAULT_MIN_PER_CLASS,
    DEFAULT_TARGET_SE,
)
from transforms.contracts.label_scheme import LabelSchemeError
from transforms.io.earthengine.assets import AssetError
from transforms.runtime.command import CommandParser, prog, quiet_start

MODULE = "pipelines.assess"
REFERENCE_CSV = "reference.csv"
# Class maps that `terrabeam predict` writes into its output folder (the mosaic, else the VRT of tiles),
# and the transitions map that `terrabeam change` writes into its own.
PREDICTION_MAPS = ("classes.tif", "classes.vrt", "transitions.tif")
# The files that link a prediction to its training data: pipelines.predict.SUMMARY_NAME (its "model"),
# model.export.MODEL_JSON (its "training": {"data"}), transforms.contracts.manifest.MANIFEST_NAME. Named
# here, not imported: those modules import TensorFlow or Beam, and this command starts without them.
PREDICTION_JSON = "prediction.json"
MODEL_JSON = "model.json"
MANIFEST_JSON = "manifest.json"
# --reference-raster's preset for the demo scene's truth labels.
DEMO_REFERENCE = "demo"

DESCRIPTION = """\
Map accuracy and area with 95 % confidence intervals (Olofsson et al. 2014, "Good practices for
estimating area and assessing accuracy of land change"): a stratified random sample of the class map,
reference labels for its points, and the stratified estimators of overall, user's and producer's
accuracy and of each class's error-adjusted area."""

EPILOG = """\
how it goes:
  1. `design MAP` draws the sample and writes design.json, points.csv and points.geojson. 2. Label the
  points: fill in the 'reference' column of points.csv (QGIS, a spreadsheet, Collect Earth Online;
  class names or values of the map's label scheme; empty or 'unknown' leaves a point out), or read a
  reference raster with `estimate --reference-raster`. 3. `estimate DESIGN` writes assessment.json,
  assessment.md and assessment.html.

`terrabeam assess design --help` and `terrabeam assess estimate --help` list each step's options."""


def build_parser() -> CommandParser:
    parser = CommandParser(MODULE, DESCRIPTION, epilog=EPILOG, usage="%(prog)s {design,estimate} ...")
    steps = parser.add_subparsers(
        dest="step", title="steps", metavar="{design,estimate}", parser_class=CommandParser
    )

    design = steps.add_parser(
        "design",
        module=MODULE,
        prog=f"{prog(MODULE)} design",
        help="Draw a stratified random sample of a class map: design.json, points.csv, points.geojson.",
        usage="%(prog)s [options] MAP",
        description="Draw a stratified random sample of a class map (strata = map classes), sized for a "
        "target standard error of overall accuracy (Olofsson et al. 2014, Eq. 13), with a minimum per "
        "class and the rest in proportion to the classes' areas. The same map, options and --seed give "
        "the same points.",
    )
    group = design.add_argument_group("map")
    group.add_argument(
        "map",
        metavar="MAP",
        help="Class map (e.g. the classes.tif of `terrabeam predict`), or a prediction folder holding "
        "classes.tif or classes.vrt, or a change folder (its transitions.tif).",
    )
    group.add_argument("--band", type=int, default=1, help="Band of the map that holds the classes.")
    group.add_argument(
        "--exclude-training",
        metavar="DATA",
        help="Leave every map pixel inside a training patch of this extraction (the folder `terrabeam "
        "extract` wrote: manifest.json and TFRecords, e.g. out/demo/data) out of the population: no "
        "stratum, no point, no area. A model scores well on the pixels it was trained on, so points there "
        "inflate its accuracy.",
    )
    group.add_argument(
        "--label-scheme",
        metavar="SPEC",
        help="Which values are which classes, for a map that does not name its classes: a preset "
        "(dynamic-world, worldcover, nlcd, ...), binary:NAME=V or a classes file (default: the classes "
        "the map names in its tags, as a terrabeam class map does).",
    )
    group = design.add_argument_group("sample size and allocation")
    group.add_argument(
        "--target-se",
        type=float,
        default=DEFAULT_TARGET_SE,
        help="Target standard error of overall accuracy; sets the sample size (the paper's example: 0.01).",
    )
    group.add_argument(
        "--users-accuracy",
        metavar="U|NAME=U",
        action="append",
        default=[],
        help="Anticipated user's accuracy, for every class (0.8) or per class (built=0.6,water=0.95); "
        "repeat or separate with commas. Lower values ask for more points (the paper's example: 0.6-0.7 "
        f"for change classes, 0.9-0.95 for stable ones) (default: {DEFAULT_ANTICIPATED_ACCURACY}).",
    )
    group.add_argument(
        "--min-per-class",
        type=int,
        default=DEFAULT_MIN_PER_CLASS,
        help="Points for each class at least (never more than it has pixels); the paper recommends 50-100 "
        "for rare classes and gives them 75 in its example.",
    )
    group.add_argument(
        "--sample-size",
        type=int,
        default=None,
        help="Total points, instead of the number the target standard error asks for.",
    )
    group.add_argument(
        "--seed", type=int, default=0, help="Seed of the random draw: the same seed, the same points."
    )
    group = design.add_argument_group("output")
    group.add_argument(
        "--output",
        metavar="DIR",
        default=None,
        help=f"Design folder (default: {ASSESSMENT_DIR}/ beside the map).",
    )
    group.add_argument("--overwrite", action="store_true", help="Replace a design already in --output.")
    group = design.add_argument_group("Earth Engine (optional)")
    group.add_argument(
        "--ee-table",
        metavar="ASSET_ID",
        help="Also export the points as an Earth Engine table asset (projects/P/assets/NAME), to label them "
        "in the Code Editor.",
    )
    group.add_argument(
        "--ee-project", metavar="PROJECT", help="Earth Engine project (default: the asset's project)."
    )
    group.add_argument(
        "--ee-key-file",
        metavar="FILE",
        help="Service-account JSON key (default: `earthengine authenticate` credentials).",
    )
    group.add_argument(
        "--ee-endpoint", metavar="URL", help="Earth Engine API URL (default: the standard endpoint)."
    )

    estimate = steps.add_parser(
        "estimate",
        module=MODULE,
        prog=f"{prog(MODULE)} estimate",
        help="Estimate accuracy and area from the labelled points: assessment.json, .md, .html.",
        usage="%(prog)s [options] DESIGN",
        description="Estimate overall, user's and producer's accuracy and each class's area (proportion "
        "and hectares), each with its standard error and 95 % confidence interval (estimate ± 1.96 SE), "
        "from the design's points and their reference labels. Points without a label are left out and "
        "counted.",
    )
    group = estimate.add_argument_group("design")
    group.add_argument(
        "design", metavar="DESIGN", help="Design folder written by `design` (or its design.json)."
    )
    group = estimate.add_argument_group("reference labels (one of)")
    labels = group.add_mutually_exclusive_group(required=True)
    labels.add_argument(
        "--labels",
        metavar="FILE",
        help="The design's points.csv (or points.geojson) with the 'reference' column filled in: class names "
        "or values of the map's label scheme; empty or 'unknown' leaves a point out.",
    )
    labels.add_argument(
        "--reference-raster",
        metavar="RASTER",
        help="Read each point's reference class from this raster (a rasterised field survey, another "
        f"agency's map), in any CRS; `{DEMO_REFERENCE}`: the demo scene's truth labels (the scene the demo "
        f"jobs run on, in their default cache; a file named {DEMO_REFERENCE} is ./{DEMO_REFERENCE}).",
    )
    group.add_argument("--reference-band", type=int, default=1, help="Band of --reference-raster.")
    group.add_argument(
        "--reference-scheme",
        metavar="SPEC",
        help="Label scheme that turns --reference-raster's values into the map's class names (e.g. "
        "dynamic-world-from-worldcover for ESA WorldCover) (default: the classes the raster names, else "
        "the map's own scheme).",
    )
    group = estimate.add_argument_group("output")
    group.add_argument(
        "--output",
        metavar="DIR",
        default=None,
        help="Folder for the assessment (default: the design folder).",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `assess design ...` or `assess estimate ...`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_start(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0), or a usage error that argparse reported (2)
        return e.code if isinstance(e.code, int) else 2
    if args.step is None:
        parser.print_usage(sys.stderr)
        print(f"error: name a step: design or estimate (see `{prog(MODULE)} --help`).", file=sys.stderr)
        return 2
    try:
        return run_design(args) if args.step == "design" else run_estimate(args)
    except (AssessmentError, LabelSchemeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except AssetError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.status


# --- design ---------------------------------------------------------------------------------------------


def resolve_map(path: str) -> str:
    """The class map: the path itself, or the class map a prediction folder holds."""
    if os.path.isdir(path):
        for name in PREDICTION_MAPS:
            if os.path.exists(os.path.join(path, name)):
                return os.path.join(path, name)
        raise AssessmentError(
            f"{path} is a folder without a class map ({' or '.join(PREDICTION_MAPS)}); pass the class map "
            "itself, or the output folder of `terrabeam predict`."
        )
    if not os.path.exists(path) and "://" not in path:
        raise AssessmentError(
            f"no class map at {path!r}; pass a class map (GeoTIFF, VRT) or a prediction folder."
        )
    return path


def parse_users_accuracy(items: Sequence[str]) -> tuple[float, dict[str, float]]:
    """(the accuracy for every class, per-class accuracies) from --users-accuracy values."""
    default = DEFAULT_ANTICIPATED_ACCURACY
    per_class: dict[str, float] = {}
    for item in (part.strip() for value in items for part in value.split(",")):
        if not item:
            continue
        name, sep, text = item.rpartition("=")
        try:
            value = float(text)
        except ValueError:
            raise AssessmentError(
                f"--users-accuracy {item!r}: give a number between 0 and 1 for every class (0.8), or NAME=U "
                "for one class (built=0.6)."
            ) from None
        if not 0 < value < 1:
            raise AssessmentError(f"--users-accuracy {item!r}: an accuracy lies strictly between 0 and 1.")
        if sep:
            per_class[name.strip()] = value
        else:
            default = value
    return default, per_class


def run_design(args: argparse.Namespace) -> int:
    from transforms.assessment.design import DESIGN_JSON, make_design, write_design

    map_path = resolve_map(args.map)
    if args.output is None and "://" in map_path:
        raise AssessmentError(
            f"the map {map_path} is not on this machine: pass --output, a local folder for the design."
        )
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(map_path)), ASSESSMENT_DIR)
    if os.path.exists(os.path.join(output, DESIGN_JSON)) and not args.overwrite:
        raise AssessmentError(
            f"{output} already holds a design (and perhaps labels for its points); pass --overwrite to replace "
            "it, or --output another folder."
        )
    if args.seed < 0:
        raise AssessmentError(f"--seed must be 0 or more, got {args.seed}.")
    default, per_class = parse_users_accuracy(args.users_accuracy)
    scheme = None
    if args.label_scheme:
        from transforms.contracts.label_scheme import resolve_label_scheme

        scheme = resolve_label_scheme(args.label_scheme)
    table = None
    if args.ee_table:
        from transforms.io.earthengine.tables import check_table_request

        table = check_table_request(
            args.ee_table,
            project=args.ee_project,
            endpoint=args.ee_endpoint,
            key_file=args.ee_key_file,
            overwrite=args.overwrite,
        )
    design = make_design(
        map_path,
        scheme=scheme,
        band=args.band,
        target_se=args.target_se,
        users_accuracy=per_class,
        default_users_accuracy=default,
        min_per_class=args.min_per_class,
        total=args.sample_size,
        seed=args.seed,
        exclude_training=args.exclude_training,
    )
    paths = write_design(design, output)
    print(describe_design(design))
    print(f"\nWritten: {', '.join(paths.values())}.")
    if args.exclude_training is None:
        trained = training_data_of(map_path)
        if trained is not None:
            model, data = trained
            print(
                f"note: the map's model {model} was trained on {data}, and points in its training patches "
                f"inflate its accuracy; pass --exclude-training {data} to leave them out.",
                file=sys.stderr,
            )
    if table is not None:
        from transforms.io.earthengine.tables import upload_points

        rows = [
            {k: v for k, v in p.row_dict().items() if k not in ("x", "y")} | {"lon": p.lon, "lat": p.lat}
            for p in design.points
        ]
        started = upload_points(table, rows)
        print(
            f"\nEarth Engine: export task {started['task']} writes the points to {started['asset']} (see the "
            f"Code Editor's Tasks tab). In the Code Editor:\n\n{started['snippet']}"
        )
    points = paths["points.csv"]
    print(
        f"\nNext: fill in the 'reference' column of {points} (class names or values; empty or 'unknown' leaves "
        f"a point out), then:\n  {prog(MODULE)} estimate {output} --labels {points}\n"
        f"or read the labels from a reference raster:\n  {prog(MODULE)} estimate {output} --reference-raster "
        "TRUTH.tif"
    )
    return 0


def training_data_of(map_path: str) -> tuple[str, str] | None:
    """(model, training data) behind a map that `terrabeam predict` wrote: its folder's prediction.json
    names the model, whose model.json names the extraction it was trained on. None where a link is
    missing, remote or unreadable, or the extraction is not on this machine."""
    if "://" in map_path:
        return None

    def read(path: str) -> dict[str, Any]:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return doc if isinstance(doc, dict) else {}

    try:
        model = read(os.path.join(os.path.dirname(map_path), PREDICTION_JSON)).get("model")
        if not isinstance(model, str) or "://" in model:
            return None
        training = read(os.path.join(model, MODEL_JSON)).get("training")
        data = training.get("data") if isinstance(training, dict) else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(data, str) or "://" in data or not os.path.exists(os.path.join(data, MANIFEST_JSON)):
        return None
    return model, data


def describe_design(design: Any) -> str:
    width = max(len(n) for n in design.classes) + 2
    lines = [
        f"Stratified random sample of {design.map_path} (label scheme {design.scheme.name!r}, seed "
        f"{design.options.seed}):",
        f"  sample size: {len(design.points)} points; the target standard error of overall accuracy "
        f"{design.options.target_se:g} asks for {design.formula_sample_size} (Olofsson et al. 2014, Eq. 13), "
        f"every class gets at least {design.options.min_per_class} (or all its pixels)",
        f"  {'class':<{width}}{'pixels':>12}{'area (ha)':>14}{'points':>8}  anticipated user's accuracy",
    ]
    for stratum, u in zip(design.strata, design.options.anticipated_users_accuracy):
        lines.append(
            f"  {stratum.name:<{width}}{stratum.pixels:>12,}{stratum.area_ha:>14,.2f}{stratum.n:>8}  {u:g}"
        )
    lines.append(
        f"  {'total':<{width}}{design.total_pixels:>12,}{design.total_area_ha:>14,.2f}{len(design.points):>8}"
    )
    lines.append(f"  pixel area: {design.area_method}")
    exclusion = design.exclusion
    if exclusion is not None:
        mapped = design.total_area_ha + exclusion.total_area_ha
        share = exclusion.total_area_ha / mapped if mapped else 0.0
        off_map = exclusion.patches - exclusion.patches_on_map
        lines.append(f"  population: {exclusion.describe(design.total_area_ha)}")
        lines.append(
            f"  left out: {exclusion.total_pixels:,} pixels, {100 * share:.1f} % of the mapped area, inside the "
            f"training patches of {exclusion.source}"
            + (f" ({off_map} of them off the map)" if off_map else "")
        )
    if design.nodata_pixels or design.unknown_values:
        unknown = ", ".join(f"{v} ({n:,} px)" for v, n in sorted(design.unknown_values.items()))
        lines.append(
            f"  not sampled: {design.nodata_pixels:,} nodata/ignored pixels"
            + (f"; values no class lists: {unknown}" if unknown else "")
        )
    return "\n".join(lines)


# --- estimate -------------------------------------------------------------------------------------------


def run_estimate(args: argparse.Namespace) -> int:
    from transforms.assessment.design import POINT_FIELDS, REFERENCE, design_path, points_csv, read_design
    from transforms.assessment.reference import labels_from_raster, read_labels
    from transforms.assessment.report import (
        ASSESSMENT_HTML,
        ASSESSMENT_JSON,
        ASSESSMENT_MD,
        assess,
        html_page,
        markdown,
    )

    design = read_design(args.design)
    output = args.output or os.path.dirname(os.path.abspath(design_path(args.design)))
    written = []
    if args.labels:
        labels = read_labels(args.labels, design)
    else:
        scheme = None
        if args.reference_scheme:
            from transforms.contracts.label_scheme import resolve_label_scheme

            scheme = resolve_label_scheme(args.reference_scheme)
        raster = args.reference_raster
        if raster == DEMO_REFERENCE:
            raster, what = demo_truth(design, output)
            print(f"Reference raster {DEMO_REFERENCE!r}: {what}, {raster}.")
        labels = labels_from_raster(raster, design, args.reference_band, scheme)
    _, doc = assess(design, labels)
    os.makedirs(output, exist_ok=True)
    if args.reference_raster:
        # The labels read from the raster, in the points file's own form: for a look, or to correct.
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(points_csv(design.points))))
        for row in rows:
            index = labels.labels.get(int(row["id"]))
            row[REFERENCE] = "unknown" if index is None else design.classes[index]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=POINT_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        written.append(_write(os.path.join(output, REFERENCE_CSV), out.getvalue()))
    written.append(_write(os.path.join(output, ASSESSMENT_JSON), json.dumps(doc, indent=1) + "\n"))
    written.append(_write(os.path.join(output, ASSESSMENT_MD), markdown(doc)))
    written.append(_write(os.path.join(output, ASSESSMENT_HTML), html_page(doc)))
    print(describe_assessment(doc))
    for warning in doc["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"\nWritten: {', '.join(written)}.")
    return 0


def demo_truth(design: Any, output: str) -> tuple[str, str]:
    """The demo scene's truth for `design`'s map, and what it is: its truth labels for a class map; for a
    change between the demo's two dates (a transitions map beside change.json), the true transitions,
    written into `output`. The scene is generated into its default cache if it is not there yet."""
    from pipelines.demo.scene import ensure_demo_scene

    scene = ensure_demo_scene()
    change = os.path.join(os.path.dirname(design.map_path), "change.json")
    if os.path.basename(design.map_path) != "transitions.tif" or not os.path.exists(change):
        return scene.labels, "the demo scene's truth labels"
    from transforms.change.compare import open_prediction
    from transforms.change.scoring import write_true_transitions

    with open(change, encoding="utf-8") as f:
        doc = json.load(f)
    label, folder = next(iter(doc["predictions"].items()))
    scheme = open_prediction(label, folder).scheme
    os.makedirs(output, exist_ok=True)
    path = write_true_transitions(
        scene.labels, scene.labels_after, scheme, os.path.join(output, "true_transitions.tif")
    )
    return path, "the demo scene's true transitions between its two dates"


def _write(path: str, text: str) -> str:
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(partial, path)
    return path


def describe_assessment(doc: dict[str, Any]) -> str:
    from transforms.assessment.report import (
        CLASS_HEADER,
        class_rows,
        estimate_of,
        plus_minus,
        population_line,
    )

    sample = doc["sample"]
    lines = [
        f"Overall accuracy: {plus_minus(estimate_of(doc['overall_accuracy']))} (95 % CI = ± 1.96 SE; n = "
        f"{sample['labelled']} labelled points of {sample['design_points']}; left out: {sample['missing']} "
        f"without a label, {sample['unknown']} unknown)."
    ]
    population = population_line(doc)
    if population:
        lines.append(population)
    if doc["reference"]["notes"]:
        lines.append("Reference raster: " + "; ".join(doc["reference"]["notes"]) + ".")
    rows = [CLASS_HEADER, *class_rows(doc)]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(CLASS_HEADER))]
    lines.append("")
    for row in rows:
        lines.append(
            "  "
            + "  ".join(
                f"{str(c):<{w}}" if i == 0 else f"{str(c):>{w}}" for i, (c, w) in enumerate(zip(row, widths))
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
