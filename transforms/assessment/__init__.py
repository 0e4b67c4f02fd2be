"""Map accuracy and area with confidence intervals, by the good-practice protocol of Olofsson et al.
(2014): a stratified random sample of the class map (strata = map classes), reference labels for its
points, and the stratified estimators of the error matrix, overall / user's / producer's accuracy and
error-adjusted class area, each with its standard error and 95 % confidence interval.

- `estimators`: the stratified estimators and their variances (numpy only, vectorised).
- `sample_size`: the sample size for a target standard error of overall accuracy, and its allocation
  (a minimum per class, the rest in proportion).
- `areas`: the ground area of a grid's pixels (projected: pixel area; geographic: per row, on the
  ellipsoid).
- `exclusion`: an extraction's training patches as rectangles of map pixels, left out of the population.
- `sampling`: a class map's strata counted and a stratified random sample drawn, window by window.
- `design`: the design (design.json, points.csv, points.geojson).
- `reference`: reference labels from a filled-in points file or a reference raster, checked.
- `report`: assessment.json, assessment.md and assessment.html.

No Beam and no TensorFlow: the command that uses it (`terrabeam assess`) starts in a moment.
"""

from transforms.assessment.areas import PixelAreas, pixel_areas
from transforms.assessment.design import (
    Design,
    DesignOptions,
    Exclusion,
    SamplePoint,
    Stratum,
    make_design,
    read_design,
    write_design,
)
from transforms.assessment.errors import AssessmentError
from transforms.assessment.estimators import (
    Z_95,
    Estimate,
    StratifiedEstimates,
    area_proportions,
    overall_accuracy,
    producers_accuracy,
    proportion_matrix,
    stratified_estimates,
    users_accuracy,
)
from transforms.assessment.exclusion import TrainingFootprints, training_footprints
from transforms.assessment.reference import ReferenceLabels, class_of, labels_from_raster, read_labels
from transforms.assessment.report import area_plot_svg, assess, html_page, markdown
from transforms.assessment.sample_size import allocate, sample_size
from transforms.assessment.sampling import ClassMap, StrataCounts, count_strata, draw_sample, open_class_map

__all__ = [
    "Z_95",
    "AssessmentError",
    "ClassMap",
    "Design",
    "DesignOptions",
    "Estimate",
    "Exclusion",
    "PixelAreas",
    "ReferenceLabels",
    "SamplePoint",
    "StrataCounts",
    "StratifiedEstimates",
    "Stratum",
    "TrainingFootprints",
    "allocate",
    "area_plot_svg",
    "area_proportions",
    "assess",
    "class_of",
    "count_strata",
    "draw_sample",
    "html_page",
    "labels_from_raster",
    "make_design",
    "markdown",
    "open_class_map",
    "overall_accuracy",
    "pixel_areas",
    "producers_accuracy",
    "proportion_matrix",
    "read_design",
    "read_labels",
    "sample_size",
    "stratified_estimates",
    "training_footprints",
    "users_accuracy",
    "write_design",
]
