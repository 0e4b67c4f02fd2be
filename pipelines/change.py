"""Change over time: two dates, one model -> the transitions, the binary change, the area that changed.

    terrabeam change                                   # the demo scene's two dates with the demo model
    terrabeam change --model out/model --inputs 2019=s2-2019.tif 2023=s2-2023.tif --aoi region.geojson
    terrabeam change --maps out/maps-2019 out/maps-2023   # compare two finished predictions
    terrabeam change --source earthengine --ee-project P --ee-image 2019=s2-sr:2019-summer \\
        2023=s2-sr:2023-summer --aoi 8.1,46.0,8.3,46.2

Post-classification (the default): each date is predicted with the same model on the model's grid (a
`terrabeam predict` run per date, with its probabilities), then the two maps are compared pixel by pixel
(transforms/change). Direct (`--method direct`): a model trained on two-date stacks (bands `B4_before
... B4_after`, extracted with `--inputs before=... after=...` or recipes with `@before`/`@after`)
predicts the change classes once. Options this command does not know pass through to every prediction
(--aoi, --tile-size, --batch-size, runner options ...).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

from pipelines.shell import UsageError, notice
from transforms.runtime.command import CommandParser, quiet_start

MODULE = "pipelines.change"
DEFAULT_MODEL = "out/demo/model"
DEFAULT_OUTPUT = "out/demo/change"
DATES_DIR = "dates"
METHODS = ("post-classification", "direct")
DEMO_DATES = ("before", "after")

DESCRIPTION = """\
Change between two dates with one model: predict each date on the same grid (or compare two finished
predictions with --maps), then write transitions.tif (one code per from->to pair, unchanged pixels one
code), changed.tif (binary), change_probability.tif (P(from != to) from the two dates' probabilities),
a quick-look transitions.png and change.json (the transition matrix in pixels and hectares, gross gain,
loss and net per class, the top transitions). With no options it compares the demo scene's two dates
with the demo model (out/demo/model) into out/demo/change. `terrabeam assess design out/demo/change`
then samples the transitions map, for their areas with 95 % confidence intervals."""

EPILOG = """\
Any other option is passed to each date's `terrabeam predict` run (--aoi, --tile-size, --overlap,
--batch-size, --max-attempts, --source, --ee-project and the runner options); see `terrabeam predict
--help`. Examples: docs/change.md."""


def build_parser() -> CommandParser:
    parser = CommandParser(
        MODULE, DESCRIPTION, epilog=EPILOG, usage="%(prog)s [options] [prediction options]"
    )
    dates = parser.add_argument_group("the two dates (default: the demo scene's)")
    dates.add_argument(
        "--inputs",
        nargs="+",
        metavar="DATE=PATH",
        help="Imagery of each date, DATE=PATH (repeat a date for several files of it), or a STAC "
        "catalogue / item collection with one item per date; the first date is 'before'.",
    )
    dates.add_argument(
        "--ee-image",
        dest="ee_image",
        nargs="+",
        metavar="DATE=RECIPE",
        help="With --source earthengine: each date's Earth Engine recipe, e.g. 2019=s2-sr:2019-summer "
        "2023=s2-sr:2023-summer (docs/earth-engine.md).",
    )
    dates.add_argument(
        "--band-names",
        dest="band_names",
        metavar="NAMES",
        help="Comma-separated names of each date's bands, in file order (default: the files' band "
        "descriptions).",
    )
    dates.add_argument(
        "--demo-cache",
        dest="demo_cache",
        default=None,
        help="Folder of the generated demo scene (default: $TERRABEAM_CACHE or ~/.cache/terrabeam).",
    )
    dates.add_argument(
        "--maps",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="Compare two finished predictions (output folders of `terrabeam predict`) instead of "
        "predicting.",
    )
    group = parser.add_argument_group("model and method")
    group.add_argument("--model", default=DEFAULT_MODEL, help="Model folder written by `terrabeam train`.")
    group.add_argument(
        "--method",
        choices=METHODS,
        default="post-classification",
        help="post-classification: predict each date, compare the maps; direct: one prediction by a "
        "model trained on two-date stacks (its classes are the change classes).",
    )
    group = parser.add_argument_group("output")
    group.add_argument("--output", default=DEFAULT_OUTPUT, help="Output folder (local or gs://).")
    group.add_argument(
        "--min-confidence",
        dest="min_confidence",
        type=float,
        default=None,
        metavar="P",
        help="A pixel whose classes differ but whose change probability is below P (0-1) is "
        "'uncertain', not a change (default: every difference is a change).",
    )
    group.add_argument(
        "--overwrite", action="store_true", help="Replace an earlier change in --output (and its dates)."
    )
    return parser


@dataclasses.dataclass(frozen=True)
class Dates:
    """The two dates: their labels and, per date, the prediction options that select its imagery."""

    labels: tuple[str, str]
    imagery: tuple[list[str], ...]  # per date; one list (the stack) for the direct method
    source: dict[str, Any]
    truth: tuple[str, str] | None = None  # the demo scene's truth labels of both dates


def resolve_dates(args, direct: bool = False) -> Dates:
    """Which imagery each date is predicted from: --inputs, --ee-image, or the demo scene's two dates.

    Local files are checked here, before anything is predicted: both dates hold the same bands, and
    the model's bands are among them.
    """
    from transforms.io.dated import DatedInputs, DatedInputsError, parse_inputs

    if args.inputs and args.ee_image:
        raise UsageError(
            "--inputs (local files) and --ee-image (Earth Engine) name the dates twice: pick one."
        )
    truth = None
    option = "--ee-image" if args.ee_image else "--inputs"
    tokens = args.ee_image or args.inputs
    if not tokens:
        if args.model != DEFAULT_MODEL:
            raise UsageError("with --model, name each date's imagery: --inputs DATE=PATH ... (or --maps).")
        from pipelines.demo.scene import ensure_demo_scene

        scene = ensure_demo_scene(args.demo_cache)
        tokens = [f"{DEMO_DATES[0]}={scene.image}", f"{DEMO_DATES[1]}={scene.image_after}"]
        truth = (scene.labels, scene.labels_after)
    try:
        dated = parse_inputs(tokens, _comma_list(args.band_names) if option == "--inputs" else None)
    except DatedInputsError as e:
        raise UsageError(f"{option}: {e}") from None
    if dated is None:
        raise UsageError(
            f"{option} takes DATE=VALUE per date, e.g. {option} 2019={'a.tif' if option == '--inputs' else 's2-sr:2019'} "
            f"2023={'b.tif' if option == '--inputs' else 's2-sr:2023'}; got {' '.join(tokens)}."
        )
    if len(dated) != 2:
        raise UsageError(f"{option} names {len(dated)} date(s) ({', '.join(dated)}); change compares two.")
    labels = tuple(dated)
    if direct:
        # One prediction of the stack: bands {band}_{label}, as the model was trained on.
        if option == "--ee-image":
            imagery = (["--ee-image", "+".join(f"{dated[label][0]}@{label}" for label in labels)],)
        else:
            names = ["--band-names", args.band_names] if args.band_names else []
            imagery = (["--inputs", *tokens, *names],)
    elif option == "--ee-image":
        imagery = tuple(["--ee-image", *dated[label]] for label in labels)
    else:
        imagery = tuple(_local_imagery(args, dated, labels))
    source = {"option": option, **dated.to_json()} if isinstance(dated, DatedInputs) else {"option": option}
    return Dates(labels, imagery, source, truth)  # type: ignore[arg-type]


def _comma_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _local_imagery(args, dated, labels: Sequence[str]) -> list[list[str]]:
    """Each date's predict options (its files and their band names), after checking the dates' bands
    against each other and the model's."""
    from pipelines.checks.model_folder import model_info
    from transforms.io.dated import STACKED, check_dates, check_model_bands, date_sources
    from transforms.io.rasters import SourceError

    sources = date_sources(dated)
    bands = model_info(args.model, DEFAULT_MODEL)["bands"]
    try:
        check_dates(sources)  # the grid note is said once, by the comparison
        mode = check_model_bands(bands, sources)
    except SourceError as e:
        raise UsageError(str(e)) from None
    if mode == STACKED:
        raise UsageError(
            f"The model at {args.model!r} reads both dates at once ({', '.join(bands[:4])} ...): it maps "
            "change directly. Pass --method direct, or give a model trained on one date's bands."
        )
    return [
        ["--inputs", *sources[label].paths, "--band-names", ",".join(sources[label].bands)]
        for label in labels
    ]


def predict_date(label: str, imagery: list[str], args, passthrough: Sequence[str], folder: str) -> None:
    """One date's `terrabeam predict` run, with probabilities (the change probability needs them)."""
    from pipelines import predict

    argv = ["--model", args.model, *imagery, "--output", folder, *passthrough]
    if not any(a.split("=", 1)[0] == "--probabilities" for a in passthrough):
        argv += ["--probabilities", "uint8"]
    if not any(a == "--mosaic" for a in passthrough):
        argv.append("--mosaic")
    if args.overwrite:
        argv.append("--overwrite")
    print(f"Predicting date {label} into {folder} ...", file=sys.stderr)
    predict.run(argv)


def run(argv: Sequence[str]) -> dict[str, Any]:
    """Parse, predict each date (unless --maps), compare; returns change.json's content."""
    parser = build_parser()
    args, passthrough = parser.parse_known_args(list(argv))
    from transforms.change.compare import (
        CHANGE_SUMMARY,
        check_comparable,
        compare,
        open_prediction,
        write_summary,
    )
    from transforms.io.files import join

    if args.min_confidence is not None and not 0.0 < args.min_confidence <= 1.0:
        raise UsageError(f"--min-confidence is a probability in (0, 1], got {args.min_confidence:g}.")
    if args.method == "direct":
        return run_direct(args, passthrough)
    output = args.output.rstrip("/") or args.output
    if not args.overwrite and os.path.exists(join(output, CHANGE_SUMMARY)):
        raise UsageError(
            f"{output!r} already holds a change ({CHANGE_SUMMARY}); pass --overwrite to replace it."
        )
    if args.maps:
        if args.inputs or args.ee_image or passthrough:
            extra = " ".join(
                [
                    *(["--inputs"] if args.inputs else []),
                    *(["--ee-image"] if args.ee_image else []),
                    *passthrough,
                ]
            )
            raise UsageError(f"--maps compares finished predictions; {extra} would predict: drop it.")
        labels = tuple(os.path.basename(p.rstrip("/")) or p for p in args.maps)
        if labels[0] == labels[1]:
            labels = ("before", "after")
        folders = tuple(args.maps)
        source: dict[str, Any] = {"option": "--maps", "dates": dict(zip(labels, folders))}
        truth = None
    else:
        dates = resolve_dates(args)
        labels, source, truth = dates.labels, dates.source, dates.truth
        folders = tuple(join(output, DATES_DIR, label) for label in labels)
        for label, imagery, folder in zip(labels, dates.imagery, folders):
            predict_date(label, imagery, args, passthrough, folder)
    before, after = (open_prediction(label, folder) for label, folder in zip(labels, folders))
    _, note = check_comparable(before, after)
    if note:
        notice(note)
    summary = compare(before, after, output, args.min_confidence).to_json()
    doc = {
        "method": "post-classification",
        "dates": {"before": labels[0], "after": labels[1]},
        "model": before.summary.get("model"),
        "predictions": {label: folder for label, folder in zip(labels, folders)},
        "source": source,
        "grid": before.summary.get("grid"),
        "files": {
            "transitions": "transitions.tif",
            "changed": "changed.tif",
            "quicklook": "transitions.png",
            **(
                {"change_probability": "change_probability.tif"}
                if before.probabilities and after.probabilities
                else {}
            ),
        },
        **summary,
    }
    if note:
        doc["reprojected"] = note
    if truth is not None:
        from transforms.change.scoring import score_change

        doc["truth"] = score_change(before.classes, after.classes, *truth, before.scheme.names)
    write_summary(output, doc)
    doc["output"] = output
    return doc


def run_direct(args, passthrough: Sequence[str]) -> dict[str, Any]:
    """One prediction by a model trained on two-date stacks; its classes are the change classes."""
    from pipelines import predict
    from pipelines.checks.model_folder import model_info
    from transforms.assessment.areas import M2_PER_HA, pixel_areas
    from transforms.change.compare import CHANGE_SUMMARY, write_summary
    from transforms.io.files import join

    if args.maps:
        raise UsageError(
            "--maps compares two class maps (post-classification); --method direct predicts once."
        )
    dates = resolve_dates(args, direct=True)
    info = model_info(args.model, DEFAULT_MODEL)
    stacked = [b for b in info["bands"] if any(b.endswith(f"_{label}") for label in dates.labels)]
    if len(stacked) != len(info["bands"]):
        raise UsageError(
            f"--method direct needs a model trained on two-date stacks (bands named like "
            f"B4_{dates.labels[0]}, B4_{dates.labels[1]}); {args.model} reads {', '.join(info['bands'][:6])}"
            f"{' ...' if len(info['bands']) > 6 else ''}. Use the default post-classification method, or "
            "train on `--inputs DATE=... DATE=...` with dates named as here."
        )
    output = args.output.rstrip("/") or args.output
    if not args.overwrite and os.path.exists(join(output, CHANGE_SUMMARY)):
        raise UsageError(
            f"{output!r} already holds a change ({CHANGE_SUMMARY}); pass --overwrite to replace it."
        )
    imagery = dates.imagery[0]
    folder = join(output, "direct")
    argv = ["--model", args.model, *imagery, "--output", folder, "--mosaic", *passthrough]
    if args.overwrite:
        argv.append("--overwrite")
    print(f"Predicting the change {dates.labels[0]} -> {dates.labels[1]} into {folder} ...", file=sys.stderr)
    summary = predict.run(argv)
    grid = summary["grid"]
    areas = pixel_areas(grid["crs"], tuple(grid["transform"]), grid["height"])
    # One area per pixel on a projected grid; on a geographic one the mean row area (counts per row are
    # not in prediction.json): say so.
    m2 = float(areas.per_row.mean())
    counts = summary["class_counts"]
    total = sum(counts.values())
    doc = {
        "method": "direct",
        "dates": {"before": dates.labels[0], "after": dates.labels[1]},
        "model": summary.get("model"),
        "predictions": {"direct": folder},
        "source": dates.source,
        "grid": grid,
        "files": {"classes": join("direct", summary["files"]["classes"])},
        "classes": list(counts),
        "pixel_area": areas.method if areas.uniform else f"{areas.method} (mean over rows)",
        "mapped_pixels": total,
        "class_areas": [
            {"class": name, "pixels": n, "hectares": round(n * m2 / M2_PER_HA, 4)}
            for name, n in counts.items()
        ],
    }
    positive = summary.get("positive_class")
    if positive:
        n = counts.get(positive, 0)
        doc["changed"] = {
            "class": positive,
            "pixels": n,
            "hectares": round(n * m2 / M2_PER_HA, 4),
            "fraction": round(n / total, 6) if total else 0.0,
        }
    write_summary(output, doc)
    doc["output"] = output
    return doc


def report(doc: dict[str, Any]) -> None:
    """What a finished change wrote, on stdout."""
    dates = doc["dates"]
    where = f"Change {dates['before']} -> {dates['after']} ({doc['method']}) written to {doc['output']}"
    if doc["method"] == "direct":
        areas = ", ".join(f"{c['class']} {c['hectares']:,.1f} ha" for c in doc["class_areas"])
        print(f"{where}: {doc['files']['classes']}, change.json; {areas}")
        return
    changed = doc["changed"]
    print(
        f"{where}: {changed['hectares']:,.1f} ha changed ({100 * changed['fraction']:.2f} % of the mapped "
        "pixels); transitions.tif, changed.tif, transitions.png, change.json"
    )
    for top in doc["top_transitions"][:5]:
        print(f"  {top['from']} -> {top['to']}: {top['hectares']:,.1f} ha ({top['pixels']:,} pixels)")
    if "uncertain" in doc:
        print(
            f"  uncertain (change probability below {doc['uncertain']['min_confidence']:g}): "
            f"{doc['uncertain']['hectares']:,.1f} ha"
        )
    if "truth" in doc:
        truth = doc["truth"]
        print(
            f"  against the demo scene's truth: change F1 {truth['f1']:.3f} (precision "
            f"{truth['precision']:.3f}, recall {truth['recall']:.3f}); {truth['true_changed_ha']:,.1f} ha "
            f"truly changed, {truth['mapped_changed_ha']:,.1f} ha mapped as changed"
        )


def input_errors() -> tuple[type[Exception], ...]:
    from pipelines.predict import input_errors as prediction_errors
    from transforms.change.transitions import ChangeError

    return (ChangeError, *prediction_errors())


def main(argv: Sequence[str] | None = None) -> int:
    """`terrabeam change`: 0 written, 1 failed, 2 bad input."""
    from pipelines.predict import SHELL

    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = quiet_start(argv)
    return SHELL.exit_status(run, argv, verbose, input_errors, report)


if __name__ == "__main__":
    sys.exit(main())
