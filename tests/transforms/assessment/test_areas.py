"""Pixel areas on the map's own grid: projected (one area, in the CRS's unit) and geographic (per row,
on the ellipsoid)."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Geod

from transforms.assessment.areas import pixel_areas
from transforms.assessment.errors import AssessmentError


def test_a_projected_pixel_is_its_transforms_area():
    areas = pixel_areas("EPSG:32632", (10.0, 0, 600_000, 0, -10.0, 5_120_000), 3)
    assert areas.per_row.tolist() == [100.0, 100.0, 100.0] and areas.uniform
    assert "100 m²" in areas.method


def test_a_projected_pixel_in_feet_is_converted_to_square_metres():
    # NAD83 / New York Long Island in US survey feet: 10 ft = 3.048006096 m.
    areas = pixel_areas("EPSG:2263", (10.0, 0, 0, 0, -10.0, 0), 1)
    assert areas.per_row[0] == pytest.approx((10 * 1200 / 3937) ** 2, rel=1e-12)
    assert "US survey foot" in areas.method


def test_a_rotated_projected_pixel_keeps_its_area():
    angle = np.radians(30)
    a, b = 10 * np.cos(angle), 10 * np.sin(angle)
    d, e = 10 * np.sin(angle), -10 * np.cos(angle)
    assert pixel_areas("EPSG:32632", (a, b, 0, d, e, 0), 1).per_row[0] == pytest.approx(100.0)


def test_geographic_rows_sum_to_the_ellipsoids_area():
    areas = pixel_areas("EPSG:4326", (1.0, 0, -180.0, 0, -1.0, 90.0), 180)
    # WGS 84's surface: 510,065,621.7 km² (its authalic sphere, R = 6,371,007.18 m).
    assert areas.per_row.sum() * 360 / 1e6 == pytest.approx(510_065_621.7, abs=0.1)
    assert not areas.uniform and areas.per_row[90] > areas.per_row[0]
    assert np.allclose(areas.per_row, areas.per_row[::-1])  # the hemispheres mirror each other
    assert "WGS 84 ellipsoid" in areas.method


def test_a_small_geographic_cell_matches_pyprojs_geodesic_polygon():
    size = 0.0001  # about 10 m
    areas = pixel_areas("EPSG:4326", (size, 0, 10.0, 0, -size, 45.0 + size), 1)
    lon = [10.0, 10.0 + size, 10.0 + size, 10.0, 10.0]
    lat = [45.0 + size, 45.0 + size, 45.0, 45.0, 45.0 + size]
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lon, lat)
    assert areas.per_row[0] == pytest.approx(abs(area), rel=1e-7)


def test_a_sphere_has_the_spheres_zone_areas():
    sphere = "+proj=longlat +R=6371000 +no_defs"
    areas = pixel_areas(sphere, (1.0, 0, 0.0, 0, -1.0, 1.0), 1)
    expected = 6_371_000**2 * np.radians(1.0) * np.sin(np.radians(1.0))
    assert areas.per_row[0] == pytest.approx(expected, rel=1e-12)


def test_a_rotated_geographic_grid_is_refused():
    with pytest.raises(AssessmentError, match="rotated in a geographic CRS.*gdalwarp"):
        pixel_areas("EPSG:4326", (0.001, 0.0001, 0, 0.0001, -0.001, 0), 1)
