"""Georeferencing helpers: GSD validation, scene footprints, reprojection, lengths in metres."""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from detector import georef
from detector.detections import Detections


@pytest.mark.parametrize(
    ("gsd", "expected"),
    [
        (0.5, 0.5),
        (2, 2.0),
        ("0.3", 0.3),
        (None, None),
        (math.inf, None),
        (-math.inf, None),
        (math.nan, None),
        (0.0, None),
        (-0.5, None),
        ("abc", None),
    ],
)
def test_valid_gsd(gsd: object, expected: float | None) -> None:
    assert georef.valid_gsd(gsd) == expected


def test_scene_footprint_north_up_and_rotated() -> None:
    t = Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4000000.0)
    ring = georef.scene_footprint(t, 200, 100)
    assert ring.shape == (4, 2)
    assert ring.min(0).tolist() == [500000.0, 3999950.0] and ring.max(0).tolist() == [500100.0, 4000000.0]
    x, y = ring[:, 0], ring[:, 1]
    assert (x * np.roll(y, -1) - np.roll(x, -1) * y).sum() > 0  # counter-clockwise
    # 90 degrees rotated raster: columns run south
    r = Affine(0.0, -1.0, 10.0, -1.0, 0.0, 20.0)
    assert sorted(map(tuple, georef.scene_footprint(r, 4, 2).tolist())) == [
        (8.0, 16.0),
        (8.0, 20.0),
        (10.0, 16.0),
        (10.0, 20.0),
    ]
    # no georeferencing: the pixel rectangle
    assert georef.scene_footprint(None, 3, 2).min(0).tolist() == [0.0, 0.0]
    assert georef.scene_footprint(None, 3, 2).max(0).tolist() == [3.0, 2.0]


def test_reproject_round_trip_and_identity() -> None:
    utm33, utm34 = CRS.from_epsg(32633), CRS.from_epsg(32634)
    pts = np.array([[[500000.0, 4000000.0], [500100.0, 4000050.0]]])
    lonlat = georef.to_lonlat(utm33, pts)
    assert lonlat[0, 0, 0] == pytest.approx(15.0, abs=1e-9)  # central meridian of zone 33
    other = georef.reproject(pts, utm33, utm34)
    back = georef.reproject(other, utm34, utm33)
    assert np.allclose(back, pts, atol=1e-4) and not np.allclose(other, pts)
    same = georef.reproject(pts, utm33, utm33)
    assert np.array_equal(same, pts) and same is not pts
    assert georef.reproject(np.zeros((0, 4, 2)), utm33, utm34).shape == (0, 4, 2)


def test_lengths_m_with_a_non_finite_gsd_are_nan() -> None:
    d = Detections(xyxy=[[0, 0, 30, 10]], scores=[0.9], class_ids=[0], class_names=("a",), gsd=math.inf)
    long_m, short_m = georef.lengths_m(d)
    assert np.isnan(long_m).all() and np.isnan(short_m).all()
    d = Detections(xyxy=[[0, 0, 30, 10]], scores=[0.9], class_ids=[0], class_names=("a",), gsd=0.5)
    assert [v[0] for v in georef.lengths_m(d)] == [15.0, 5.0]
