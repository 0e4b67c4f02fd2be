"""The label options of an extraction and their checks: which classes the label values are, never a guess.

`add_label_options` is read by --help, so this module imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

from pipelines.shell import UsageError, comma_list, notice
from transforms.contracts.label_scheme import (
    PRESETS,
    UNKNOWN_ERROR,
    UNKNOWN_POLICIES,
    LabelScheme,
    LabelSchemeError,
    describe_histogram,
    dynamic_world,
    example_classes_file,
    label_histogram,
    resolve_label_scheme,
    scheme_from_raster,
)


def add_label_options(group: Any) -> None:
    """--label-raster, --label-scheme, --unknown-labels and --label-band, to a group of the job's."""
    group.add_argument(
        "--label-raster",
        dest="label_raster",
        default=None,
        help="Label raster (label values per pixel, turned into classes by --label-scheme; default: the "
        "demo scene's). `--labels PATH` is accepted too.",
    )
    group.add_argument(
        "--label-scheme",
        dest="label_scheme",
        default=None,
        help="Classes of the labels: a preset (" + ", ".join(PRESETS) + "), the binary shortcut "
        "binary:NAME=VALUE[,VALUE...][:ignore=VALUE,...], or a classes file (JSON, local or gs://). "
        "Default: dynamic-world for the demo scene and the WorldCover and Dynamic World recipes, "
        "forest-loss for hansen-loss, else the class names the label raster carries.",
    )
    group.add_argument(
        "--unknown-labels",
        dest="unknown_labels",
        choices=UNKNOWN_POLICIES,
        default=UNKNOWN_ERROR,
        help="Label values the scheme does not list: stop with an error (default) or treat them as no label.",
    )
    group.add_argument(
        "--label-band",
        dest="label_band",
        default=None,
        help="Name of the label band in --labels (default: its first band).",
    )


def local_scheme(opts: Any, labels_path: str, band: int, kind: str) -> LabelScheme:
    """--label-scheme, else the demo's preset, else the classes the raster names; never a guess."""
    if opts.label_scheme:
        return resolve(opts.label_scheme)
    if kind == "demo":
        return dynamic_world()
    carried = scheme_from_raster(labels_path, band)
    if carried is not None:
        notice(
            f"Label scheme from the label raster's own class names: "
            f"{', '.join(f'{v}={c.name}' for c in carried.classes for v in c.values)}."
        )
        return carried
    histogram = label_histogram(labels_path, band)
    raise UsageError(
        f"The label raster {labels_path!r} does not name its classes, and no --label-scheme was given: "
        f"terrabeam will not guess class names. Values found: {describe_histogram(histogram)}. Write a "
        f"classes file naming each value's class, e.g. {example_classes_file(histogram)}, and pass "
        f"--label-scheme classes.json; or use a preset ({', '.join(PRESETS)}) or binary:NAME=VALUE. "
        "See README, 'Your own labels'."
    )


def resolve(spec: str) -> LabelScheme:
    """--label-scheme as a scheme: a preset, the binary shortcut, or a classes file."""
    try:
        return resolve_label_scheme(spec)
    except LabelSchemeError as e:
        raise UsageError(str(e)) from None


def check_unknown_values(scheme: LabelScheme, histogram: dict, policy: str, where: str) -> None:
    """Stop on label values the scheme does not list (`where` names the labels), unless --unknown-labels
    ignore: then say that they count as no label."""
    unknown = scheme.unknown_values(histogram)
    if unknown and policy == UNKNOWN_ERROR:
        raise UsageError(
            f"{where} holds label values the label scheme {scheme.name!r} does not list: "
            f"{describe_histogram(unknown)}. Add them to a class (or to 'ignore') in the classes file, or "
            "pass --unknown-labels ignore to treat them as no label."
        )
    if unknown:
        notice(f"Treating label values {describe_histogram(unknown)} as no label (--unknown-labels ignore).")


def class_subset(value: str | None, scheme: LabelScheme) -> tuple[int, ...] | None:
    """--classes as class indices: names of the scheme (a class index is accepted too)."""
    indices = []
    for item in comma_list(value) or []:
        if item in scheme.names:
            indices.append(scheme.names.index(item))
        elif item.isdigit() and int(item) < scheme.num_classes:
            indices.append(int(item))
        else:
            raise UsageError(
                f"--classes {item!r} is not a class of the label scheme {scheme.name!r}; its classes are "
                f"{', '.join(scheme.names)}."
            )
    return tuple(sorted(set(indices))) or None


def earthengine_scheme(opts: Any, recipe: str, recipe_scheme: str | None, histogram: dict) -> LabelScheme:
    """--label-scheme, else the scheme a label preset names (`recipe_scheme`: dynamic-world for the
    WorldCover and Dynamic World recipes, forest-loss for hansen-loss); never a guess. `histogram`: the
    label values Earth Engine counted in the regions."""
    if opts.label_scheme:
        return resolve(opts.label_scheme)
    if recipe_scheme:
        return PRESETS[recipe_scheme]
    raise UsageError(
        f"--ee-labels {recipe!r} needs --label-scheme: terrabeam will not guess class "
        f"names. Values found in the regions: {describe_histogram(histogram)}. Write a classes file, "
        f"e.g. {example_classes_file(histogram)}, or use a preset ({', '.join(PRESETS)}) or "
        "binary:NAME=VALUE. See README, 'Your own labels'."
    )
