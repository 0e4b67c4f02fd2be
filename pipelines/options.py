"""Helpers shared by the Beam entry points' option handling."""

from __future__ import annotations

import difflib
import logging

from apache_beam.options.pipeline_options import PipelineOptions


def unknown_flags(options: PipelineOptions) -> list[str]:
    """Flags no registered option class knows (Beam would only log and drop them)."""
    beam_logger = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_logger.level
    beam_logger.setLevel(logging.ERROR)  # we report unknown flags ourselves, with suggestions
    try:
        every = options.get_all_options(retain_unknown_options=True)
        known = options.get_all_options()
    finally:
        beam_logger.setLevel(level)
    return sorted(set(every) - set(known))


def unknown_flags_message(options: PipelineOptions) -> str | None:
    """A message naming each unknown flag and the closest known one, or None when all are known."""
    unknown = unknown_flags(options)
    if not unknown:
        return None
    known = list(options.get_all_options())
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean --{close[0].replace('_', '-')}?)" if close else ""
        parts.append(f"--{name.replace('_', '-')}{hint}")
    return f"Unknown option(s): {', '.join(parts)}. Run with --help to list the options."


class SharedArgumentGroup:
    """An argument group that skips flags another job's options class already registered.

    Beam builds one parser from every `PipelineOptions` subclass it has seen, so two jobs that both
    offer `--inputs` or `--output` would clash once both modules are imported. Each job's own view
    (`options.view_as(ExtractOptions)`) still parses with its own definitions and defaults; only the
    merged parser keeps the first definition.
    """

    def __init__(self, parser, title: str) -> None:
        self._parser = parser
        self._group = parser.add_argument_group(title)

    def add_argument(self, *flags: str, **kwargs):
        registered = self._parser._option_string_actions  # argparse keeps no public registry
        if any(flag in registered for flag in flags):
            return None
        return self._group.add_argument(*flags, **kwargs)


def add_earthengine_options(parser, *, with_labels: bool) -> None:
    """The Earth Engine source options, the same for every job that reads imagery."""
    ee = SharedArgumentGroup(parser, "terrabeam Earth Engine source (--source earthengine)")
    ee.add_argument(
        "--source",
        choices=("local", "earthengine"),
        default="local",
        help="Read pixels from local rasters (--inputs) or from Earth Engine (--ee-image).",
    )
    ee.add_argument(
        "--ee-project",
        dest="ee_project",
        default=None,
        help="Cloud project registered for Earth Engine (required with --source earthengine).",
    )
    ee.add_argument(
        "--ee-key-file",
        dest="ee_key_file",
        default=None,
        help="Service-account JSON key, local or gs:// (default: `earthengine authenticate` or application "
        "default credentials).",
    )
    ee.add_argument(
        "--ee-endpoint",
        dest="ee_endpoint",
        default=None,
        help="Earth Engine API URL (default: the high-volume endpoint "
        "https://earthengine-highvolume.googleapis.com).",
    )
    ee.add_argument(
        "--ee-image",
        dest="ee_image",
        default=None,
        help="Input image recipe: presets s2-l1c-median[:YEAR] and elevation, or ASSET_ID[:BAND,...], joined "
        "with + (default: s2-l1c-median:2020+elevation).",
    )
    if with_labels:
        ee.add_argument(
            "--ee-labels",
            dest="ee_labels",
            default=None,
            help="Label image recipe (default: worldcover-dynamicworld, band landcover); points come from "
            "Earth Engine's stratifiedSample on it.",
        )
    ee.add_argument(
        "--ee-fetch",
        dest="ee_fetch",
        choices=("computePixels", "getDownloadURL"),
        default="computePixels",
        help="How pixels are fetched (default: computePixels).",
    )
    ee.add_argument(
        "--max-requests",
        dest="max_requests",
        type=int,
        default=20,
        help="Earth Engine requests in flight across the whole job (a project allows 40 by default).",
    )
