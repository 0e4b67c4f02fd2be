"""Where a prediction is: --aoi as a lon/lat box or GeoJSON polygons, inside the imagery, else the
imagery's whole footprint."""

from __future__ import annotations

import json

import pytest

from pipelines.checks.area import area_to_predict
from pipelines.shell import UsageError

IMAGERY = (10.0, 45.0, 11.0, 46.0)  # lon/lat, so that the area's CRS can be EPSG:4326 too


class _Imagery:
    def footprint(self, crs: str) -> tuple[float, float, float, float]:
        return IMAGERY


def test_without_an_aoi_the_whole_imagery():
    assert area_to_predict(None, "EPSG:4326", _Imagery()) == (IMAGERY, None)


def test_a_box_inside_the_imagery_has_no_mask():
    bounds, region = area_to_predict("10.2,45.2,10.4,45.4", "EPSG:4326", _Imagery())
    assert bounds == pytest.approx((10.2, 45.2, 10.4, 45.4)) and region is None


def test_polygons_give_their_bounds_and_a_mask(tmp_path):
    square = [[[10.1, 45.1], [10.3, 45.1], [10.3, 45.3], [10.1, 45.3], [10.1, 45.1]]]
    path = tmp_path / "aoi.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": square}))
    bounds, region = area_to_predict(str(path), "EPSG:4326", _Imagery())
    assert bounds == pytest.approx((10.1, 45.1, 10.3, 45.3))
    assert json.loads(json.dumps(region.geometry)) == {"type": "MultiPolygon", "coordinates": [square]}


@pytest.mark.parametrize(
    "aoi, message",
    [
        (
            "20,45,21,46",
            "The region '20,45,21,46' lies outside the imagery: in EPSG:4326 the region spans "
            "(20.0, 45.0, 21.0, 46.0) and the imagery (10.0, 45.0, 11.0, 46.0).",
        ),
        ("10,45,9,46", "a bounding box is W,S,E,N in degrees with W < E and S < N"),
        ("a,b,c,d", "a bounding box is four numbers W,S,E,N in lon/lat."),
        ("missing.geojson", "is neither a bounding box W,S,E,N nor a readable GeoJSON file"),
    ],
)
def test_a_bad_aoi_says_what_to_change(aoi, message):
    with pytest.raises(UsageError) as error:
        area_to_predict(aoi, "EPSG:4326", _Imagery())
    assert message in str(error.value)
