"""Georeferencing of detections, shared by the writers and :mod:`detector.change`.

Pixel geometry comes from :mod:`detector.geometry` (scene pixels, see :mod:`detector.detections`); this module
takes it into the scene CRS (through the affine ``transform``), to lon/lat (EPSG:4326, lon first), and to
lengths in metres (through the scene GSD). Pure functions of numpy arrays and the rasterio CRS; nothing here
writes files.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from detector.detections import Detections
from detector.geometry import corners

#: A rotated box whose sides differ by less than this fraction has no meaningful long-side heading.
SQUARE_TOLERANCE = 0.05


def footprints(dets: Detections) -> np.ndarray:
    """Footprint corners ``(N, 4, 2)`` in the scene CRS, or in scene pixels when ``dets.crs`` is ``None``."""
    pts = corners(dets)
    if dets.crs is None or dets.transform is None:
        return pts
    return apply_affine(dets.transform, pts)


def apply_affine(transform: Any, pts: np.ndarray) -> np.ndarray:
    """Points ``(..., 2)`` through an affine ``transform`` (``affine.Affine`` or its 6 coefficients)."""
    a, b, c, d, e, f = (float(v) for v in tuple(transform)[:6])
    x, y = pts[..., 0], pts[..., 1]
    return np.stack([a * x + b * y + c, d * x + e * y + f], axis=-1)


def to_lonlat(crs: Any, pts: np.ndarray) -> np.ndarray:
    """Points ``(..., 2)`` in ``crs`` -> longitude/latitude on EPSG:4326 (always lon first)."""
    from rasterio.crs import CRS

    return reproject(pts, crs, CRS.from_epsg(4326))


def reproject(pts: np.ndarray, src_crs: Any, dst_crs: Any) -> np.ndarray:
    """Points ``(..., 2)`` from ``src_crs`` to ``dst_crs`` (x/easting/longitude first on both sides).

    Raises:
        ValueError: some points do not transform (outside the target's area of use).
    """
    from rasterio.warp import transform as warp_transform

    if src_crs == dst_crs:
        return np.array(pts, dtype=np.float64)
    shape = pts.shape
    flat = pts.reshape(-1, 2)
    if len(flat) == 0:
        return np.array(pts, dtype=np.float64)
    x, y = warp_transform(src_crs, dst_crs, flat[:, 0].tolist(), flat[:, 1].tolist())
    out = np.stack([np.asarray(x, np.float64), np.asarray(y, np.float64)], axis=-1).reshape(shape)
    if not np.isfinite(out).all():
        raise ValueError(
            f"some footprints cannot be reprojected from {crs_name(src_crs)} to {crs_name(dst_crs)} "
            "(outside its area of use?)"
        )
    return out


def valid_gsd(gsd: Any) -> float | None:
    """``gsd`` as a float when it is a finite positive number of metres per pixel, else ``None``.

    ``--gsd inf``, ``nan``, ``0`` or a negative value carry no usable scale: lengths in metres are unknown.
    """
    if gsd is None:
        return None
    try:
        value = float(gsd)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def scene_footprint(transform: Any, width: int, height: int) -> np.ndarray:
    """The 4 corners ``(4, 2)`` of a whole ``width`` x ``height`` px raster, in its CRS (through ``transform``)
    or in pixels when ``transform`` is ``None``; counter-clockwise in the output axes, not closed."""
    px = np.array([[0.0, 0.0], [width, 0.0], [width, height], [0.0, height]], dtype=np.float64)
    pts = px if transform is None else apply_affine(transform, px)
    return ccw(pts[None])[0]


def ccw(rings: np.ndarray) -> np.ndarray:
    """Orient 4-corner rings ``(N, 4, 2)`` counter-clockwise (positive shoelace area in the given axes)."""
    if len(rings) == 0:
        return rings
    x, y = rings[..., 0], rings[..., 1]
    area2 = (x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y).sum(axis=1)
    return np.where((area2 < 0)[:, None, None], rings[:, ::-1], rings)


def side_lengths(dets: Detections) -> tuple[np.ndarray, np.ndarray]:
    """Long and short side of every footprint in pixels."""
    if dets.xywhr is not None:
        w, h = dets.xywhr[:, 2], dets.xywhr[:, 3]
    else:
        w, h = dets.xyxy[:, 2] - dets.xyxy[:, 0], dets.xyxy[:, 3] - dets.xyxy[:, 1]
    return np.maximum(w, h), np.minimum(w, h)


def headings(dets: Detections) -> np.ndarray:
    """Azimuth of each footprint's long side in degrees ``[0, 180)`` clockwise from grid north.

    Grid north is the ``+y`` axis of the scene CRS (the pixel vector goes through the linear part of the
    affine transform, so rotated and flipped rasters are handled; for geographic CRSs the easting is scaled by
    the cosine of the latitude). Without georeferencing the angle is measured from image up. ``nan`` for
    axis-aligned boxes and for rotated boxes whose sides differ by less than :data:`SQUARE_TOLERANCE`.
    """
    n = len(dets)
    out = np.full(n, np.nan)
    if dets.xywhr is None or n == 0:
        return out
    w, h, r = dets.xywhr[:, 2], dets.xywhr[:, 3], dets.xywhr[:, 4]
    # Ultralytics convention: the w side runs along (cos r, sin r) in pixels (y down)
    vx = np.where(w >= h, np.cos(r), -np.sin(r))
    vy = np.where(w >= h, np.sin(r), np.cos(r))
    if dets.crs is not None and dets.transform is not None:
        a, b, _, d, e, _ = (float(v) for v in tuple(dets.transform)[:6])
        east, north = a * vx + b * vy, d * vx + e * vy
        if getattr(dets.crs, "is_geographic", False):
            lat = apply_affine(dets.transform, dets.xywhr[:, :2])[:, 1]
            east = east * np.cos(np.radians(np.clip(lat, -89.9, 89.9)))
    else:
        east, north = vx, -vy
    az = np.degrees(np.arctan2(east, north)) % 180.0
    az = np.where(np.isclose(az, 180.0), 0.0, az)
    long_side = np.maximum(w, h)
    square = (long_side - np.minimum(w, h)) < SQUARE_TOLERANCE * np.maximum(long_side, 1e-12)
    out[:] = np.where(square, np.nan, az)
    return out


def crs_name(crs: Any) -> str:
    """``"EPSG:32633"`` when the CRS has an EPSG code, else its WKT; ``""`` for ``None``."""
    if crs is None:
        return ""
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def centres(dets: Detections) -> np.ndarray:
    """Footprint centres ``(N, 2)`` in the scene CRS (scene pixels when not georeferenced)."""
    if dets.xywhr is not None:
        pts = dets.xywhr[:, :2].copy()
    else:
        pts = np.stack([(dets.xyxy[:, 0] + dets.xyxy[:, 2]) / 2, (dets.xyxy[:, 1] + dets.xyxy[:, 3]) / 2], 1)
    if dets.crs is None or dets.transform is None:
        return pts
    return apply_affine(dets.transform, pts)


def lengths_m(dets: Detections) -> tuple[np.ndarray, np.ndarray]:
    """Long and short side of every footprint in metres (``nan`` when the GSD is unknown or not finite)."""
    long_px, short_px = side_lengths(dets)
    gsd = valid_gsd(dets.gsd)
    if gsd is None:
        nan = np.full(len(dets), np.nan)
        return nan, nan.copy()
    return long_px * gsd, short_px * gsd
