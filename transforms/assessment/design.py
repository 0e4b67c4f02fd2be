"""The sampling design of an accuracy assessment, and the files it is written to.

A design folder holds:

    design.json      the map (path, grid, CRS), its label scheme, the options and seed, the strata (pixels
                     N_h, mapped area in hectares, weight W_h, sample size n_h) and every point: the
                     record that `estimate` checks labels against
    points.csv       one row per point: id, stratum, map_class, map_value, lon, lat, x, y, row, col,
                     weight (= N_h / n_h, the pixels each point stands for) and an empty `reference`
                     column to fill in (QGIS, a spreadsheet, Collect Earth Online)
    points.geojson   the same points as a GeoJSON FeatureCollection (lon/lat, WGS 84)

x and y are the pixel centre in the map's CRS, lon and lat the same point in WGS 84, row and col the
pixel in the map.

With `exclude_training`, the population is the map outside the training patches of an extraction:
design.json's `exclusion` says which (the folder, the patches, how they were placed) and how much was
left out (pixels and hectares per class and in all, and their share of the mapped area).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from transforms.assessment.areas import M2_PER_HA
from transforms.assessment.errors import AssessmentError
from transforms.assessment.sample_size import (
    DEFAULT_ANTICIPATED_ACCURACY,
    DEFAULT_MIN_PER_CLASS,
    DEFAULT_TARGET_SE,
    allocate,
    sample_size,
)
from transforms.contracts.label_scheme import LabelScheme, LabelSchemeError, scheme_from_json

FORMAT = "terrabeam-assessment-design/1"
DESIGN_JSON = "design.json"
POINTS_CSV = "points.csv"
POINTS_GEOJSON = "points.geojson"
REFERENCE = "reference"
POINT_FIELDS = (
    "id",
    "stratum",
    "map_class",
    "map_value",
    "lon",
    "lat",
    "x",
    "y",
    "row",
    "col",
    "weight",
    REFERENCE,
)


@dataclasses.dataclass(frozen=True)
class Stratum:
    """One map class as a stratum: its pixels, mapped area and sample size."""

    name: str
    pixels: int  # N_h
    area_ha: float  # mapped area
    n: int  # sample points n_h

    @property
    def inclusion_weight(self) -> float | None:
        """N_h / n_h: the pixels each of the stratum's points stands for."""
        return self.pixels / self.n if self.n else None


@dataclasses.dataclass(frozen=True)
class SamplePoint:
    id: int
    stratum: str  # map class name
    map_value: int  # the map's pixel value
    lon: float
    lat: float
    x: float  # pixel centre in the map's CRS
    y: float
    row: int
    col: int
    weight: float  # N_h / n_h

    def row_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stratum": self.stratum,
            "map_class": self.stratum,
            "map_value": self.map_value,
            "lon": _coordinate(self.lon),
            "lat": _coordinate(self.lat),
            "x": repr(float(self.x)),
            "y": repr(float(self.y)),
            "row": self.row,
            "col": self.col,
            "weight": repr(float(self.weight)),
            REFERENCE: "",
        }


def _coordinate(value: float) -> str:
    # 1e-9 degrees is about 0.1 mm: exact enough to find the pixel, short enough to read.
    return f"{value:.9f}"


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """The map's pixels left out of the population: those inside an extraction's training patches."""

    source: str  # the extraction folder
    patches: int  # training patches in it
    patches_on_map: int  # of which cover at least one map pixel
    placement: str  # how a patch's footprint was placed on the map
    pixels: tuple[int, ...]  # per class, pixels left out
    area_ha: tuple[float, ...]  # per class

    @property
    def total_pixels(self) -> int:
        return sum(self.pixels)

    @property
    def total_area_ha(self) -> float:
        return sum(self.area_ha)

    def describe(self, population_ha: float) -> str:
        """One line: which population the design describes."""
        return (
            f"the map outside the {self.patches} training patches: {population_ha:,.2f} ha of "
            f"{population_ha + self.total_area_ha:,.2f} ha"
        )

    def to_json(self, classes: Sequence[str], population_ha: float) -> dict[str, Any]:
        mapped_ha = population_ha + self.total_area_ha
        return {
            "why": "a model scores well on the pixels it was trained on: sample points in its training "
            "patches would inflate its accuracy",
            "source": self.source,
            "split": "train",
            "patches": self.patches,
            "patches_on_map": self.patches_on_map,
            "footprint": self.placement,
            "pixels": self.total_pixels,
            "area_ha": self.total_area_ha,
            "mapped_area_ha": mapped_ha,
            "share_of_mapped_area": self.total_area_ha / mapped_ha if mapped_ha else 0.0,
            "population": self.describe(population_ha),
            "per_class": {
                name: {"pixels": n, "area_ha": ha} for name, n, ha in zip(classes, self.pixels, self.area_ha)
            },
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], classes: Sequence[str]) -> Exclusion:
        per_class = doc["per_class"]
        return cls(
            source=doc["source"],
            patches=int(doc["patches"]),
            patches_on_map=int(doc["patches_on_map"]),
            placement=doc["footprint"],
            pixels=tuple(int(per_class[n]["pixels"]) for n in classes),
            area_ha=tuple(float(per_class[n]["area_ha"]) for n in classes),
        )


@dataclasses.dataclass(frozen=True)
class DesignOptions:
    target_se: float = DEFAULT_TARGET_SE
    anticipated_users_accuracy: tuple[float, ...] = ()  # per class, in scheme order
    min_per_class: int = DEFAULT_MIN_PER_CLASS
    sample_size: int | None = None  # given instead of computed
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class Design:
    """A stratified random sampling design of a class map."""

    map_path: str
    band: int
    crs: str  # WKT
    transform: tuple[float, ...]
    width: int
    height: int
    nodata: float | None
    scheme: LabelScheme
    area_method: str
    options: DesignOptions
    formula_sample_size: int  # n from the target standard error (before minimums and caps)
    strata: tuple[Stratum, ...]
    nodata_pixels: int
    unknown_values: dict[int, int]
    points: tuple[SamplePoint, ...]
    exclusion: Exclusion | None = None  # training patches left out of the population

    @property
    def classes(self) -> tuple[str, ...]:
        return self.scheme.names

    @property
    def total_pixels(self) -> int:
        return sum(s.pixels for s in self.strata)

    @property
    def total_area_ha(self) -> float:
        return sum(s.area_ha for s in self.strata)

    @property
    def pixel_size(self) -> float:
        a, b, _, d, e, _ = self.transform
        return min(abs(complex(a, d)), abs(complex(b, e)))

    def to_json(self) -> dict[str, Any]:
        names = self.classes
        total_area = self.total_area_ha
        exclusion = {} if self.exclusion is None else {"exclusion": self.exclusion.to_json(names, total_area)}
        return {
            "format": FORMAT,
            "map": {
                "path": self.map_path,
                "band": self.band,
                "crs": self.crs,
                "transform": list(self.transform),
                "width": self.width,
                "height": self.height,
                "nodata": self.nodata,
                "area_method": self.area_method,
            },
            "label_scheme": self.scheme.to_json(),
            "options": {
                "target_se": self.options.target_se,
                "anticipated_users_accuracy": dict(zip(names, self.options.anticipated_users_accuracy)),
                "min_per_class": self.options.min_per_class,
                "sample_size": self.options.sample_size,
                "seed": self.options.seed,
            },
            "sample_size": {
                "formula": self.formula_sample_size,
                "total": len(self.points),
                "formula_text": "n = (sum_h W_h sqrt(U_h (1 - U_h)) / target_se)^2, rounded up "
                "(Olofsson et al. 2014, Eq. 13)",
            },
            "strata": [
                {
                    "class": s.name,
                    "index": i,
                    "values": list(self.scheme.classes[i].values),
                    "color": self.scheme.classes[i].color,
                    "pixels": s.pixels,
                    "area_ha": s.area_ha,
                    "weight": s.area_ha / total_area if total_area else 0.0,
                    "n": s.n,
                    "inclusion_weight": s.inclusion_weight,
                }
                for i, s in enumerate(self.strata)
            ],
            "excluded_pixels": {
                "nodata_or_ignored": self.nodata_pixels,
                "unknown_values": {str(v): n for v, n in sorted(self.unknown_values.items())},
            },
            **exclusion,
            "total": {"pixels": self.total_pixels, "area_ha": total_area},
            "points": {
                "fields": [f for f in POINT_FIELDS if f not in ("map_class", REFERENCE)],
                "rows": [
                    [p.id, p.stratum, p.map_value, p.lon, p.lat, p.x, p.y, p.row, p.col, p.weight]
                    for p in self.points
                ],
            },
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], source: str = DESIGN_JSON) -> Design:
        if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
            raise AssessmentError(
                f'{source} is not a terrabeam assessment design (no "format": "{FORMAT}"); pass the '
                "folder that `terrabeam assess design` wrote, or its design.json."
            )
        try:
            scheme = scheme_from_json(doc["label_scheme"], source=f"{source}: label_scheme")
            names = scheme.names
            options = doc["options"]
            anticipated = options.get("anticipated_users_accuracy") or {}
            fields = doc["points"]["fields"]
            points = tuple(SamplePoint(**dict(zip(fields, row))) for row in doc["points"]["rows"])
            return cls(
                map_path=doc["map"]["path"],
                band=int(doc["map"]["band"]),
                crs=doc["map"]["crs"],
                transform=tuple(float(v) for v in doc["map"]["transform"]),
                width=int(doc["map"]["width"]),
                height=int(doc["map"]["height"]),
                nodata=doc["map"].get("nodata"),
                scheme=scheme,
                area_method=doc["map"].get("area_method", ""),
                options=DesignOptions(
                    target_se=float(options["target_se"]),
                    anticipated_users_accuracy=tuple(float(anticipated.get(n, "nan")) for n in names),
                    min_per_class=int(options["min_per_class"]),
                    sample_size=options.get("sample_size"),
                    seed=int(options["seed"]),
                ),
                formula_sample_size=int(doc["sample_size"]["formula"]),
                strata=tuple(
                    Stratum(s["class"], int(s["pixels"]), float(s["area_ha"]), int(s["n"]))
                    for s in doc["strata"]
                ),
                nodata_pixels=int(doc["excluded_pixels"]["nodata_or_ignored"]),
                unknown_values={int(k): int(v) for k, v in doc["excluded_pixels"]["unknown_values"].items()},
                points=points,
                exclusion=Exclusion.from_json(doc["exclusion"], names) if doc.get("exclusion") else None,
            )
        except (KeyError, TypeError, ValueError, LabelSchemeError) as e:
            raise AssessmentError(
                f"{source} is damaged or was edited ({type(e).__name__}: {e}); run `terrabeam assess design` "
                "again."
            ) from None


def anticipated_accuracies(
    scheme: LabelScheme, given: Mapping[str, float] | None, default: float = DEFAULT_ANTICIPATED_ACCURACY
) -> tuple[float, ...]:
    """One anticipated user's accuracy per class: `given[name]`, else `default`."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(scheme.names))
    if unknown:
        raise AssessmentError(
            f"--users-accuracy names {', '.join(repr(n) for n in unknown)}, which the map's label scheme "
            f"{scheme.name!r} does not have; its classes are {', '.join(scheme.names)}."
        )
    return tuple(float(given.get(name, default)) for name in scheme.names)


def make_design(
    map_path: str,
    *,
    scheme: LabelScheme | None = None,
    band: int = 1,
    target_se: float = DEFAULT_TARGET_SE,
    users_accuracy: Mapping[str, float] | None = None,
    default_users_accuracy: float = DEFAULT_ANTICIPATED_ACCURACY,
    min_per_class: int = DEFAULT_MIN_PER_CLASS,
    total: int | None = None,
    seed: int = 0,
    exclude_training: str | None = None,
) -> Design:
    """Count the map's strata, size and allocate the sample, and draw it. With `exclude_training` (an
    extraction folder), the pixels inside its training patches are left out of the population."""
    from pyproj import Transformer

    from transforms.assessment.exclusion import training_footprints
    from transforms.assessment.sampling import count_strata, draw_sample, open_class_map

    class_map = open_class_map(map_path, band, scheme)
    scheme = class_map.scheme
    footprints = None
    if exclude_training is not None:
        footprints = training_footprints(
            exclude_training, class_map.crs, class_map.transform, class_map.width, class_map.height
        )
    counts = count_strata(class_map, footprints)
    if footprints is not None and sum(counts.pixels) == 0 and sum(counts.excluded_pixels) > 0:
        raise AssessmentError(
            f"every mapped pixel of {map_path} lies in a training patch of {exclude_training} "
            f"({sum(counts.excluded_pixels):,} pixels): nothing is left to assess the map on. Assess a map "
            "of other ground than the training data's, or leave out --exclude-training (its accuracy will "
            "then be inflated)."
        )
    if sum(counts.pixels) == 0:
        raise AssessmentError(
            f"the map {map_path} has no pixel of any class of its label scheme {scheme.name!r} "
            f"({counts.nodata_pixels:,} nodata pixels, values no class lists: "
            f"{', '.join(str(v) for v in counts.unknown_values) or 'none'}); check --label-scheme and --band."
        )
    anticipated = anticipated_accuracies(scheme, users_accuracy, default_users_accuracy)
    # The formula runs over the classes the map has: an absent class is no stratum.
    present = [i for i, n in enumerate(counts.pixels) if n > 0]
    formula_n = sample_size(
        [counts.area_m2[i] for i in present], [anticipated[i] for i in present], target_se
    )
    if total is not None and total < 1:
        raise AssessmentError(f"--sample-size must be at least 1 point, got {total}.")
    allocation = allocate(total or formula_n, counts.pixels, min_per_class)
    pixels = draw_sample(class_map, counts.pixels, allocation, seed, footprints)
    a, b, c, d, e, f = class_map.transform
    xs = [c + a * (p.col + 0.5) + b * (p.row + 0.5) for p in pixels]
    ys = [f + d * (p.col + 0.5) + e * (p.row + 0.5) for p in pixels]
    to_lonlat = Transformer.from_crs(class_map.crs, "EPSG:4326", always_xy=True)
    lons, lats = to_lonlat.transform(xs, ys) if pixels else ([], [])
    strata = tuple(
        Stratum(name, counts.pixels[i], counts.area_m2[i] / M2_PER_HA, allocation[i])
        for i, name in enumerate(scheme.names)
    )
    points = tuple(
        SamplePoint(
            id=number,
            stratum=scheme.names[p.stratum],
            map_value=p.value,
            lon=float(lon),
            lat=float(lat),
            x=float(x),
            y=float(y),
            row=p.row,
            col=p.col,
            weight=strata[p.stratum].inclusion_weight,
        )
        for number, (p, x, y, lon, lat) in enumerate(zip(pixels, xs, ys, lons, lats), start=1)
    )
    return Design(
        map_path=os.path.abspath(map_path) if "://" not in map_path else map_path,
        band=band,
        crs=class_map.crs,
        transform=class_map.transform,
        width=class_map.width,
        height=class_map.height,
        nodata=class_map.nodata,
        scheme=scheme,
        area_method=counts.area_method,
        options=DesignOptions(target_se, anticipated, min_per_class, total, seed),
        formula_sample_size=formula_n,
        strata=strata,
        nodata_pixels=counts.nodata_pixels,
        unknown_values=counts.unknown_values,
        points=points,
        exclusion=None
        if footprints is None
        else Exclusion(
            source=footprints.source,
            patches=footprints.patches,
            patches_on_map=footprints.on_map,
            placement=footprints.placement,
            pixels=counts.excluded_pixels,
            area_ha=tuple(a / M2_PER_HA for a in counts.excluded_area_m2),
        ),
    )


# --- files --------------------------------------------------------------------------------------------


def points_csv(points: Sequence[SamplePoint]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=POINT_FIELDS, lineterminator="\n")
    writer.writeheader()
    for point in points:
        writer.writerow(point.row_dict())
    return out.getvalue()


def points_geojson(points: Sequence[SamplePoint]) -> dict[str, Any]:
    features = []
    for point in points:
        properties = {k: v for k, v in point.row_dict().items() if k not in ("lon", "lat")}
        properties.update(x=point.x, y=point.y, weight=point.weight)
        features.append(
            {
                "type": "Feature",
                "id": point.id,
                "geometry": {"type": "Point", "coordinates": [round(point.lon, 9), round(point.lat, 9)]},
                "properties": properties,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_design(design: Design, folder: str) -> dict[str, str]:
    """Write design.json, points.csv and points.geojson into `folder`; returns their paths."""
    os.makedirs(folder, exist_ok=True)
    paths = {name: os.path.join(folder, name) for name in (DESIGN_JSON, POINTS_CSV, POINTS_GEOJSON)}
    _write(paths[DESIGN_JSON], json.dumps(design.to_json(), indent=1) + "\n")
    _write(paths[POINTS_CSV], points_csv(design.points))
    _write(paths[POINTS_GEOJSON], json.dumps(points_geojson(design.points)) + "\n")
    return paths


def _write(path: str, text: str) -> None:
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(partial, path)


def design_path(path: str) -> str:
    """design.json of a design folder (or the file itself)."""
    return os.path.join(path, DESIGN_JSON) if os.path.isdir(path) else path


def read_design(path: str) -> Design:
    """The design in a folder written by `write_design` (or its design.json)."""
    source = design_path(path)
    if not os.path.exists(source):
        raise AssessmentError(
            f"no assessment design at {path!r} (no {DESIGN_JSON}); run `terrabeam assess design MAP` first and "
            "pass the folder it wrote."
        )
    try:
        with open(source, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AssessmentError(f"cannot read the design {source}: {e}.") from None
    return Design.from_json(doc, source)
