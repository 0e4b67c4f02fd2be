"""The assessment: estimates of a labelled design as JSON, a Markdown report and an HTML page with an
inline SVG plot of the estimated areas (± 95 % CI) beside the mapped areas.

Every figure says how it was measured: the sample (n, how many points were left out and why), the
estimators (Olofsson et al. 2014, stratified by map class) and the interval (estimate ± 1.96 · SE).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from transforms.assessment.design import Design
from transforms.assessment.errors import AssessmentError
from transforms.assessment.estimators import Z_95, Estimate, StratifiedEstimates, stratified_estimates
from transforms.assessment.reference import ReferenceLabels

FORMAT = "terrabeam-assessment/1"
# Where `terrabeam assess` writes by default: this folder beside the map (the viewer looks there too).
ASSESSMENT_DIR = "assessment"
ASSESSMENT_JSON = "assessment.json"
ASSESSMENT_MD = "assessment.md"
ASSESSMENT_HTML = "assessment.html"
CITATION = (
    "Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A. (2014). Good "
    "practices for estimating area and assessing accuracy of land change. Remote Sensing of Environment "
    "148, 42-57. doi:10.1016/j.rse.2014.02.015"
)


def assess(design: Design, labels: ReferenceLabels) -> tuple[StratifiedEstimates, dict[str, Any]]:
    """The estimates of a labelled design, and the assessment.json document that reports them."""
    counts = labels.counts(design)
    if counts.sum() == 0:
        raise AssessmentError(
            f"none of the design's {len(design.points)} points has a reference label in {labels.source} "
            f"({len(labels.missing)} empty, {len(labels.unknown)} unknown); fill in the 'reference' column first."
        )
    areas = [s.area_ha for s in design.strata]
    # A class of a few pixels is sampled whole: every pixel labelled, no sampling error.
    census = [0 < s.pixels <= row.sum() for s, row in zip(design.strata, counts)]
    estimates = stratified_estimates(counts, areas, design.classes, census)
    total_ha = design.total_area_ha * estimates.assessed_share
    n_design = [s.n for s in design.strata]
    per_class = []
    for i, cls in enumerate(design.scheme.classes):
        stratum = design.strata[i]
        per_class.append(
            {
                "class": cls.name,
                "values": "*" if cls.rest else list(cls.values),
                "color": cls.color,
                "mapped": {
                    "pixels": stratum.pixels,
                    "proportion": stratum.area_ha / design.total_area_ha if design.total_area_ha else 0.0,
                    "area_ha": stratum.area_ha,
                },
                "n_design": n_design[i],
                "n": int(counts[i].sum()),
                "users_accuracy": estimates.users[i].to_json(),
                "producers_accuracy": estimates.producers[i].to_json(),
                "area_proportion": estimates.area_proportion[i].to_json(),
                "area_ha": estimates.area_proportion[i].scaled(total_ha).to_json(),
            }
        )
    doc = {
        "format": FORMAT,
        "design": {
            "map": design.map_path,
            "label_scheme": design.scheme.name,
            "points": len(design.points),
            "seed": design.options.seed,
            "area_method": design.area_method,
        },
        "reference": {"source": labels.source, "notes": list(labels.notes)},
        "method": {
            "sampling": "stratified random sample, strata = map classes, inclusion weight N_h / n_h",
            "estimators": "stratified estimators of Olofsson et al. (2014): error matrix in area "
            "proportions p_ij = W_i n_ij / n_i. (Eq. 4); overall, user's and producer's accuracy with "
            "variances Eq. 5-7; area proportion and its variance Eq. 9-10",
            "weights": "W_h = mapped area of class h / mapped area of the assessed strata",
            "confidence_interval": f"95 %: estimate ± {Z_95} · SE",
            "citation": CITATION,
        },
        "sample": {
            "design_points": len(design.points),
            "labelled": int(counts.sum()),
            "missing": len(labels.missing),
            "unknown": len(labels.unknown),
            "missing_ids": list(labels.missing),
            "unknown_ids": list(labels.unknown),
        },
        "classes": list(design.classes),
        "assessed_share": estimates.assessed_share,
        "total_area_ha": total_ha,
        "overall_accuracy": estimates.overall.to_json(),
        "per_class": per_class,
        "error_matrix": {
            "rows": "map class (stratum)",
            "columns": "reference class",
            "counts": counts.tolist(),
            "area_proportions": estimates.proportions.tolist(),
        },
        "warnings": list(estimates.warnings),
    }
    if design.exclusion is not None:
        doc["population"] = design.exclusion.to_json(design.classes, design.total_area_ha)
    return estimates, doc


# --- text ---------------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ha(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"


def plus_minus(estimate: Estimate, digits: int = 3, area: bool = False) -> str:
    show = _ha if area else (lambda v: _number(v, digits))
    if estimate.value is None:
        return "–"
    if estimate.se is None:
        return f"{show(estimate.value)} ± ?"
    return f"{show(estimate.value)} ± {show(estimate.half_width)}"


def estimate_of(doc: dict[str, Any]) -> Estimate:
    return Estimate(doc["estimate"], doc["se"])


def class_rows(doc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in doc["per_class"]:
        rows.append(
            [
                c["class"],
                f"{c['n']}" + (f" of {c['n_design']}" if c["n"] != c["n_design"] else ""),
                _ha(c["mapped"]["area_ha"]),
                plus_minus(estimate_of(c["area_ha"]), area=True),
                plus_minus(estimate_of(c["area_proportion"]), 4),
                plus_minus(estimate_of(c["users_accuracy"])),
                plus_minus(estimate_of(c["producers_accuracy"])),
            ]
        )
    return rows


CLASS_HEADER = [
    "class",
    "n",
    "mapped area (ha)",
    "estimated area (ha) ± 95 % CI",
    "area proportion ± 95 % CI",
    "user's accuracy ± 95 % CI",
    "producer's accuracy ± 95 % CI",
]


def population_line(doc: dict[str, Any]) -> str | None:
    """What the estimates describe, when the design left training patches out of the map; else None."""
    population = doc.get("population")
    if not population:
        return None
    inside = population["mapped_area_ha"] - population["area_ha"]
    return (
        f"Population: the map outside the {population['patches']} training patches: {_ha(inside)} ha of "
        f"{_ha(population['mapped_area_ha'])} ha ({100 * population['share_of_mapped_area']:.1f} % of the "
        f"mapped area left out; training data {population['source']})."
    )


def _measured(doc: dict[str, Any]) -> list[str]:
    sample = doc["sample"]
    population = population_line(doc)
    lines = [
        *([population] if population else []),
        f"Sample: {sample['labelled']} labelled points of the design's {sample['design_points']} "
        f"(stratified random sample, strata = map classes, seed {doc['design']['seed']}); "
        f"{sample['missing']} without a label and {sample['unknown']} labelled unknown were left out.",
        "Estimators: the stratified estimators of Olofsson et al. (2014), each stratum weighted by its "
        "mapped area; the error matrix in area proportions is p_ij = W_i · n_ij / n_i.",
        f"95 % confidence interval: estimate ± {Z_95} · SE. Mapped area: pixels counted on the map's grid "
        f"({doc['design']['area_method']}).",
    ]
    if doc["reference"]["notes"]:
        lines.append("Reference raster: " + "; ".join(doc["reference"]["notes"]) + ".")
    if doc["assessed_share"] < 1:
        lines.append(
            f"The estimates describe {100 * doc['assessed_share']:.2f} % of the mapped area: strata without a "
            "labelled point are left out (see the warnings)."
        )
    return lines


def markdown(doc: dict[str, Any]) -> str:
    """assessment.md: the tables and how every figure was measured."""
    names = doc["classes"]
    overall = estimate_of(doc["overall_accuracy"])
    out = [
        "# Map accuracy and area",
        "",
        f"Map: `{doc['design']['map']}` (label scheme `{doc['design']['label_scheme']}`); reference: "
        f"`{doc['reference']['source']}`.",
        "",
        f"**Overall accuracy: {plus_minus(overall)}** (n = {doc['sample']['labelled']}).",
        "",
        *(f"- {line}" for line in _measured(doc)),
        "",
    ]
    if doc["warnings"]:
        out += ["## Warnings", "", *(f"- {w}" for w in doc["warnings"]), ""]
    out += ["## Per class", "", *_md_table(CLASS_HEADER, class_rows(doc)), ""]
    out += [
        "Estimated area: error-adjusted (from the reference labels); mapped area: pixel count × pixel area, "
        "which keeps the map's errors.",
        "",
        "## Error matrix: sample counts",
        "",
        "Rows: map class (stratum); columns: reference class.",
        "",
    ]
    counts = doc["error_matrix"]["counts"]
    header = ["map \\ reference", *names, "n"]
    out += _md_table(header, [[n, *map(str, row), str(sum(row))] for n, row in zip(names, counts)])
    out += [
        "",
        "## Error matrix: estimated area proportions",
        "",
        "Rows: map class; columns: reference class.",
        "",
    ]
    proportions = doc["error_matrix"]["area_proportions"]
    rows = [[n, *(f"{v:.4f}" for v in row), f"{sum(row):.4f}"] for n, row in zip(names, proportions)]
    rows.append(
        ["total", *(f"{sum(col):.4f}" for col in zip(*proportions)), f"{sum(map(sum, proportions)):.4f}"]
    )
    out += _md_table([*header[:-1], "total"], rows)
    out += ["", f"Source: {CITATION}", ""]
    return "\n".join(out)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(r) for r in rows)]


# --- HTML and the plot --------------------------------------------------------------------------------


def area_plot_svg(doc: dict[str, Any], width: int = 720) -> str:
    """Per class: the mapped area (grey bar) and the estimated area with its 95 % CI (dot and whisker)."""
    classes = doc["per_class"]
    row_height, left, right, top = 34, 170, 30, 44
    height = top + row_height * len(classes) + 46
    ends = [c["mapped"]["area_ha"] for c in classes]
    for c in classes:
        ci = c["area_ha"]["ci95"]
        ends += [ci[1]] if ci else [c["area_ha"]["estimate"] or 0.0]
    top_value = _nice_ceiling(max(ends + [1e-9]))
    plot_width = width - left - right

    def x(value: float) -> float:
        return left + plot_width * max(0.0, value) / top_value

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img" '
        'aria-label="Estimated area with 95 % confidence interval beside mapped area, per class">',
        f'<text x="{left}" y="16" font-weight="bold">Area per class (ha): estimated ± 95 % CI vs mapped</text>',
        f'<rect x="{left}" y="24" width="14" height="9" fill="#bbbbbb"/>'
        f'<text x="{left + 18}" y="33">mapped (pixel count)</text>'
        f'<circle cx="{left + 170}" cy="29" r="4" fill="#000"/>'
        f'<text x="{left + 178}" y="33">estimated, line = 95 % CI (± {Z_95} SE)</text>',
    ]
    for tick in range(6):
        value = top_value * tick / 5
        tx = x(value)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{top - 4}" x2="{tx:.1f}" y2="{height - 40}" stroke="#e5e5e5"/>'
            f'<text x="{tx:.1f}" y="{height - 26}" text-anchor="middle">{_tick(value, top_value / 5)}</text>'
        )
    for i, c in enumerate(classes):
        y = top + i * row_height
        mid = y + row_height / 2
        parts.append(
            f'<text x="{left - 8}" y="{mid + 4:.1f}" text-anchor="end">{html.escape(c["class"])}</text>'
            f'<rect x="{left}" y="{mid - 8:.1f}" width="{x(c["mapped"]["area_ha"]) - left:.1f}" height="16" '
            f'fill="#bbbbbb"><title>mapped {html.escape(_ha(c["mapped"]["area_ha"]))} ha</title></rect>'
        )
        estimate = c["area_ha"]["estimate"]
        if estimate is None:
            parts.append(f'<text x="{left + 4}" y="{mid + 4:.1f}" fill="#a00">not estimated</text>')
            continue
        ci = c["area_ha"]["ci95"]
        colour = html.escape(c["color"])
        title = f"estimated {_ha(estimate)} ha" + (f", 95 % CI {_ha(ci[0])} to {_ha(ci[1])} ha" if ci else "")
        if ci:
            x0, x1 = x(ci[0]), x(ci[1])
            parts.append(
                f'<line x1="{x0:.1f}" y1="{mid:.1f}" x2="{x1:.1f}" y2="{mid:.1f}" stroke="#000" stroke-width="2"/>'
                f'<line x1="{x0:.1f}" y1="{mid - 6:.1f}" x2="{x0:.1f}" y2="{mid + 6:.1f}" stroke="#000"/>'
                f'<line x1="{x1:.1f}" y1="{mid - 6:.1f}" x2="{x1:.1f}" y2="{mid + 6:.1f}" stroke="#000"/>'
            )
        parts.append(
            f'<circle cx="{x(estimate):.1f}" cy="{mid:.1f}" r="5" fill="{colour}" stroke="#000">'
            f"<title>{html.escape(title)}</title></circle>"
        )
    n = doc["sample"]["labelled"]
    parts.append(
        f'<text x="{left}" y="{height - 8}" fill="#555">n = {n} labelled points; stratified estimator '
        f"(Olofsson et al. 2014); 95 % CI = estimate ± {Z_95} · SE</text>"
    )
    parts.append("</svg>")
    return "".join(parts)


def _tick(value: float, step: float) -> str:
    return f"{value:,.0f}" if step >= 1 else f"{value:g}"


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5 or 5 × 10^k at or above `value` (round tick values)."""
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def html_page(doc: dict[str, Any]) -> str:
    """assessment.html: the same tables as the Markdown report, and the area plot, in one file."""
    names = doc["classes"]
    overall = estimate_of(doc["overall_accuracy"])
    esc = html.escape

    def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    counts = doc["error_matrix"]["counts"]
    proportions = doc["error_matrix"]["area_proportions"]
    warnings = "".join(f"<li>{esc(w)}</li>" for w in doc["warnings"])
    measured = "".join(f"<li>{esc(line)}</li>" for line in _measured(doc))
    proportion_rows = [
        [n, *(f"{v:.4f}" for v in row), f"{sum(row):.4f}"] for n, row in zip(names, proportions)
    ]
    proportion_rows.append(
        ["total", *(f"{sum(col):.4f}" for col in zip(*proportions)), f"{sum(map(sum, proportions)):.4f}"]
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8"><title>Map accuracy and area</title>',
            "<style>body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222}"
            "table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;"
            "text-align:right}td:first-child,th:first-child{text-align:left}.warn{color:#a00}</style>",
            "</head><body>",
            "<h1>Map accuracy and area</h1>",
            f"<p>Map: <code>{esc(doc['design']['map'])}</code> (label scheme <code>"
            f"{esc(doc['design']['label_scheme'])}</code>); reference: <code>{esc(doc['reference']['source'])}"
            "</code>.</p>",
            f"<p><strong>Overall accuracy: {esc(plus_minus(overall))}</strong> (n = {doc['sample']['labelled']}).</p>",
            f"<ul>{measured}</ul>",
            f'<h2 class="warn">Warnings</h2><ul class="warn">{warnings}</ul>' if warnings else "",
            area_plot_svg(doc),
            "<h2>Per class</h2>",
            table(CLASS_HEADER, class_rows(doc)),
            "<p>Estimated area: error-adjusted (from the reference labels); mapped area: pixel count × pixel "
            "area, which keeps the map's errors.</p>",
            "<h2>Error matrix: sample counts</h2><p>Rows: map class (stratum); columns: reference class.</p>",
            table(
                ["map \\ reference", *names, "n"],
                [[n, *map(str, row), str(sum(row))] for n, row in zip(names, counts)],
            ),
            "<h2>Error matrix: estimated area proportions</h2><p>Rows: map class; columns: reference class.</p>",
            table(["map \\ reference", *names, "total"], proportion_rows),
            f"<p>Source: {esc(CITATION)}</p>",
            "</body></html>",
            "",
        ]
    )
