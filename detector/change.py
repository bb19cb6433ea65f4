"""Object-level change between two dates: which objects stayed, moved, departed, arrived or were not covered.

The flow of :func:`compare`, top to bottom:

    both dates' detections (scene pixels + CRS/transform/GSD, see detector.detections)
      -> per date, cross-class duplicates of one object dropped (a van both small and large vehicle)
      -> one metric working CRS (the before date's when it is projected, else its UTM zone)
      -> each date's valid-pixel area (footprint minus nodata, :func:`valid_area`) in that CRS
      -> the residual misregistration, estimated robustly from same-group pairs (:func:`estimate_shift`)
      -> the after date moved by -shift; the common area = both valid areas, intersected
      -> stage 1: one-to-one Hungarian assignment on centre distance (+ size, heading) within a small
         tolerance, same compatibility group, against every after object above the *low* score -> stayed
      -> stage 2: confident leftovers of both dates within ``move_radius_m``, similar size -> moved
      -> leftovers above the *high* score -> departed / arrived; leftovers between *mid* and *high* only
         when the other date is clear at their place; objects outside the common area -> not-covered
      -> with both scenes at hand, the pixels under each leftover (:func:`pixel_change`): ones between *low*
         and *mid* are changes too when the other date is clear and the pixels changed (``pixel_ratio``);
         any leftover on ground that looks the same on both dates is none (``pixel_same``); a leftover held
         back only by weak detections of the other date (below *mid*: a box over a whole row, the new ground)
         is a change when the pixels under it changed

Hysteresis: predict with a low confidence (e.g. 0.1) and compare with three thresholds. An object of the
before date counts as departed when it is unmatched and either its score is at least ``high``, or it is at
least ``mid`` *and* the after date is clear there: nothing of a compatible class scores at least ``low`` with
its centre within ``clear_m`` of the object's footprint (after removing the misregistration; within
``max_shift_m`` when no shift could be estimated). Symmetrically for arrived. An object that merely flickers
around the model's threshold (0.3 one date, 0.15 the other) is therefore never a change: stage 1 matches it
when one side is high, and otherwise the other date is not clear. Unmatched detections below ``mid``, and
below ``high`` where the other date is not clear, are not objects; an unmatched one whose footprint lies
mostly (``stay_ios``) on a detection of the other date is a duplicate, not a change: all are dropped
(``Changes.meta["dropped"]`` counts them; ``meta["mid_changes"]`` counts the changes taken at ``mid``).

Coordinates in :class:`Changes`: ``x``/``y`` and the footprints are in :attr:`Changes.crs` and in the before
date's frame (after-date objects moved by ``-shift``, so they overlay the before scene); ``x_after`` /
``y_after`` keep the after date's own georeferencing. Pixel corners of each date are kept for quicklooks.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from detector import georef
from detector.detections import Detections
from detector.errors import ChangeError, RasterError, WriteError
from detector.geometry import corners

logger = logging.getLogger(__name__)

#: Statuses of a change record, in the order of summaries and legends.
STATUSES = ("stayed", "moved", "departed", "arrived", "not-covered")
#: Columns of the per-class summary.
SUMMARY_COLUMNS = ("class", "before", "after", "stayed", "moved", "departed", "arrived", "not_covered")
#: Classes that may match each other across dates (a small table: the class list is data). A class that is
#: in no group is compatible with itself only.
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "aircraft": ("aircraft", "transport-aircraft", "small-aircraft"),
    "helicopter": ("helicopter",),
    "vehicle": ("small-vehicle", "large-vehicle"),
}
#: Quicklook colour per status (RGB).
STATUS_COLOURS: dict[str, tuple[int, int, int]] = {
    "stayed": (60, 220, 60),
    "moved": (60, 140, 255),
    "departed": (255, 40, 40),
    "arrived": (255, 210, 0),
    "not-covered": (150, 150, 150),
}
#: ``detector change`` magnifies scenes from this GSD on by :data:`CHANGE_ZOOM` (``load_date(zoom="auto")``):
#: change detection wants recall, and at satellite resolution the model under-resolves small objects. Measured
#: with scripts/change_bench.py (2026-12-02, pooled seeds 0-2): the 0.5 m airport pairs, zoom 1 / 1.25 / 1.5:
#: arrived 0.82 / 0.89 / 0.89, departed 0.94 / 0.95 / 0.95, stayed flagged 0.021 / 0.006 / 0.007, spurious
#: 79 / 84 / 109; the 0.12 m DOTA pairs lose at any zoom (departed 0.90 / 0.86 / 0.76), hence the GSD bound.
#: Helicopters lose at 1.25 (``detector eval --zoom 1.25``: iSAID rotor discs 0.888 -> 0.861); vehicles and
#: aircraft at 0.3-0.5 m gain (iSAID small vehicles 0.521 -> 0.585, gdit aircraft 0.916 -> 0.934). The cost is
#: 1.25^2 = 1.56x the model time on such scenes. ``--zoom`` overrides it.
CHANGE_ZOOM_GSD_M = 0.3
CHANGE_ZOOM = 1.25
#: Phase-correlation peaks at least this many robust standard deviations high are trusted.
PHASE_MIN_STRENGTH = 8.0

#: Samples a side of the footprint grid of :func:`pixel_change`.
PIXEL_SAMPLES = 12
#: Layer name of GeoPackage change outputs.
CHANGE_LAYER = "changes"


@dataclass(frozen=True)
class ChangeConfig:
    """Thresholds of :func:`compare` (metres are on the ground).

    Attributes:
        high: score an object needs to count as departed, arrived, moved or not-covered.
        mid: score at which an unmatched object still counts as departed or arrived when the other date is
            clear at its place (nothing compatible at ``low`` or more within ``clear_m``); ``mid = high``
            turns this off.
        low: score above which a detection counts as "something is there" (predict with at most this conf).
        clear_m: the other date must be clear within this distance of a ``mid``-score object's footprint
            (the residual misregistration after the shift is removed; ``max_shift_m`` when none is found).
        max_shift_m: largest misregistration searched for.
        shift_tolerance_m: radius within which displacements vote for the same shift.
        shift: a known shift ``(dx, dy)`` of the after date in metres (east, north): skips the estimate.
        stay_m: centres closer than ``max(stay_m, stay_fraction * length)`` after alignment are the same
            object in the same place.
        stay_fraction: see ``stay_m``.
        stay_ios: footprints overlapping by at least this (intersection over the smaller, after alignment)
            are the same object in the same place too, however far apart their centres.
        move_radius_m: confident leftovers closer than this, of similar size, are one object that moved
            (0 disables ``moved``).
        move_size_ratio: largest ratio of lengths of a moved object's two dates.
        size_weight: weight of ``|log(length ratio)|`` in the matching cost (distance counts 1 per tolerance).
        heading_weight: weight of the heading difference (in units of 90 degrees), when both dates have one.
        edge_m: an object whose footprint, grown by this, is not inside the common area is not-covered.
        duplicate_ios: two detections of one date, of different classes of one group, whose footprints overlap
            by more than this (intersection over the smaller) are one object: the lower score is dropped.
        pixel_ratio: with both scenes at hand, an unmatched object scoring from ``low`` up to ``mid`` still
            counts as departed or arrived when the other date is clear at its place (as for ``mid``) and
            :func:`pixel_change` under it is at least this; and an unmatched object from ``low`` up, dropped
            only because it lies on (or is not clear of) detections of the other date scoring below ``mid``,
            counts as departed or arrived when its :func:`pixel_change` is at least this (``meta["rescued"]``);
            ``None``: off.
        pixel_same: with both scenes at hand, an unmatched object whose :func:`pixel_change` is below this is
            no change at any score: the ground under it looks the same on both dates, so the model missed it
            on one of them; ``None``: off.
        groups: compatibility groups: name -> class names that may match each other.
    """

    high: float = 0.4
    mid: float = 0.3
    low: float = 0.1
    clear_m: float = 3.0
    max_shift_m: float = 20.0
    shift_tolerance_m: float = 1.0
    shift: tuple[float, float] | None = None
    stay_m: float = 2.5
    stay_fraction: float = 0.3
    stay_ios: float = 0.5
    move_radius_m: float = 30.0
    move_size_ratio: float = 1.25
    size_weight: float = 0.5
    heading_weight: float = 0.25
    edge_m: float = 1.0
    duplicate_ios: float = 0.7
    pixel_ratio: float | None = 5.0
    pixel_same: float | None = 1.5
    groups: Mapping[str, Sequence[str]] = field(default_factory=lambda: dict(DEFAULT_GROUPS))

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.mid <= self.high <= 1:
            raise ValueError(
                f"need 0 <= low <= mid <= high <= 1, got low {self.low!r}, mid {self.mid!r}, high {self.high!r}"
            )
        for name in ("max_shift_m", "shift_tolerance_m", "stay_m", "move_radius_m", "edge_m", "clear_m"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("pixel_ratio", "pixel_same"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value < math.inf):
                raise ValueError(f"{name} must be a finite number >= 0 or None, got {value!r}")
        if self.move_size_ratio < 1:
            raise ValueError(f"move_size_ratio must be at least 1, got {self.move_size_ratio!r}")


def load_groups(path: str | Path) -> dict[str, tuple[str, ...]]:
    """Compatibility groups from a YAML file ``{group: [class, ...]}`` (or ``{groups: {...}}``).

    Raises:
        ConfigError: the file cannot be read or is not such a mapping.
    """
    import yaml

    from detector.errors import ConfigError

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the class groups ({e})") from e
    if isinstance(data, dict) and "groups" in data:
        data = data["groups"]
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ConfigError(f"{path}: expected a mapping of group name -> list of class names")
    return {str(k): tuple(str(c) for c in v) for k, v in data.items()}


def group_of(names: Sequence[str], groups: Mapping[str, Sequence[str]]) -> np.ndarray:
    """A group index per class name (classes in no group get a group of their own)."""
    lookup: dict[str, int] = {}
    for k, members in enumerate(groups.values()):
        for m in members:
            lookup.setdefault(str(m), k)
    out = []
    extra: dict[str, int] = {}
    for n in names:
        if n in lookup:
            out.append(lookup[n])
        else:
            out.append(extra.setdefault(n, len(groups) + len(extra)))
    return np.asarray(out, np.int64)


# ----------------------------------------------------------------------------------------------------------
# the result type
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Changes:
    """Change records between two dates: one row per object, columns as equal-length numpy arrays.

    Columns (``columns``): ``status`` (one of :data:`STATUSES`), ``class`` (the before class when the object
    exists before, else the after class), ``class_before``/``class_after`` (``""`` when absent),
    ``score_before``/``score_after`` and ``length_m``/``heading_deg`` (``nan`` when absent/unknown),
    ``id_before``/``id_after`` (index into that date's detections, ``-1`` when absent), ``pixel_change``
    (:func:`pixel_change` under an unmatched object when the scenes were looked at, else ``nan``), ``date`` (``"before"``
    or ``"after"``: which date a not-covered object was seen in; ``"both"`` for matched objects), ``x``/``y``
    (centre in :attr:`crs`, before frame), ``x_after``/``y_after`` (after's own georeferencing, in
    :attr:`crs`), ``displacement_m`` (after centre, aligned, minus before centre; ``nan`` when unmatched).

    Attributes:
        columns: the columns above.
        footprints: ``(N, 4, 2)`` footprint corners in :attr:`crs` (before frame).
        px_before, px_after: ``(N, 4, 2)`` pixel corners in each date's scene (``nan`` where absent).
        crs: the working CRS (metric), ``None`` for same-grid pixel comparisons.
        shift_m: the after date's misregistration ``(dx, dy)`` in metres (east, north) that was removed.
        common_area: the area both dates cover with valid pixels (a shapely geometry in :attr:`crs`).
        meta: per-comparison facts: sources, models, GSDs, shift support, dropped low-score detections.
    """

    columns: dict[str, np.ndarray]
    footprints: np.ndarray
    px_before: np.ndarray
    px_after: np.ndarray
    crs: Any = None
    shift_m: tuple[float, float] = (0.0, 0.0)
    common_area: Any = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.columns["status"])

    @property
    def status(self) -> np.ndarray:
        """The status of every record."""
        return self.columns["status"]

    def __getitem__(self, index: Any) -> Changes:
        return replace(
            self,
            columns={k: v[index] for k, v in self.columns.items()},
            footprints=self.footprints[index],
            px_before=self.px_before[index],
            px_after=self.px_after[index],
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={int((self.status == s).sum())}" for s in STATUSES)
        dx, dy = self.shift_m
        return f"Changes(n={len(self)}, {counts}, shift=({dx:.2f}, {dy:.2f}) m)"


# ----------------------------------------------------------------------------------------------------------
# valid areas and the working frame
# ----------------------------------------------------------------------------------------------------------


def valid_area(path: str | Path, *, max_size: int = 1024) -> Any:
    """The valid-pixel area of a raster as a shapely geometry in its CRS (pixels when not georeferenced).

    The dataset mask (nodata, alpha, internal masks) is read decimated to at most ``max_size`` pixels a side
    and polygonized (``rasterio.features.shapes``), so the area is exact to about a decimated pixel.

    Raises:
        RasterError: the file cannot be read.
    """
    import warnings

    import rasterio
    import shapely
    from affine import Affine
    from rasterio import features
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    name = str(path)
    if not Path(name).exists():
        raise RasterError(f"{name}: file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(name) as ds:
                factor = max(1.0, max(ds.width, ds.height) / max_size)
                shape = (max(1, math.ceil(ds.height / factor)), max(1, math.ceil(ds.width / factor)))
                mask = ds.dataset_mask(out_shape=shape)
                transform = ds.transform @ Affine.scale(ds.width / shape[1], ds.height / shape[0])
    except RasterioError as e:
        raise RasterError(f"{name}: cannot read the valid-pixel mask ({e})") from e
    valid = (mask > 0).astype(np.uint8)
    polys = [
        shapely.geometry.shape(geom)
        for geom, value in features.shapes(valid, mask=valid > 0, transform=transform)
        if value
    ]
    if not polys:
        raise RasterError(f"{name}: every pixel is nodata or masked")
    return shapely.make_valid(shapely.union_all(polys))


def _scene_bounds_area(dets: Detections) -> Any:
    """The scene rectangle from ``meta`` width/height and the transform (no nodata known)."""
    import shapely

    w, h = dets.meta.get("width"), dets.meta.get("height")
    if not w or not h:
        return None
    ring = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    if dets.transform is not None and dets.crs is not None:
        ring = georef.apply_affine(dets.transform, ring)
    return shapely.Polygon(ring)


def _working_crs(dets: Detections, area: Any) -> Any:
    """A metric CRS for the comparison: ``dets.crs`` when projected, else the UTM zone of the area's centre."""
    from rasterio.crs import CRS

    crs = dets.crs
    if crs.is_projected:
        return crs
    c = area.centroid
    lon, lat = georef.to_lonlat(crs, np.array([[c.x, c.y]]))[0]
    zone = int((lon + 180) // 6) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def _unit_factor(crs: Any) -> float:
    if crs is None:
        return 1.0
    try:
        return float(crs.linear_units_factor[1])
    except Exception as e:  # noqa: BLE001 - pyproj raises several types for unknown units
        raise ChangeError(f"the working CRS {georef.crs_name(crs)} has no known linear unit ({e})") from e


def _transform_points(pts: np.ndarray, src: Any, dst: Any, what: str) -> np.ndarray:
    from rasterio.warp import transform as warp_transform

    if src == dst or len(pts) == 0:
        return np.asarray(pts, np.float64)
    flat = pts.reshape(-1, 2)
    try:
        xs, ys = warp_transform(src, dst, flat[:, 0].tolist(), flat[:, 1].tolist())
    except Exception as e:  # noqa: BLE001 - PROJ errors come as several types
        raise ChangeError(
            f"{what}: cannot transform from {georef.crs_name(src)} to {georef.crs_name(dst)} ({e})"
        ) from e
    out = np.stack([np.asarray(xs, np.float64), np.asarray(ys, np.float64)], -1).reshape(pts.shape)
    if not np.isfinite(out).all():
        raise ChangeError(
            f"{what}: cannot transform from {georef.crs_name(src)} to {georef.crs_name(dst)} "
            f"(points outside the CRS's area of use)"
        )
    return out


def _transform_area(area: Any, src: Any, dst: Any, what: str) -> Any:
    import shapely
    from rasterio.warp import transform_geom

    if src == dst:
        return area
    try:
        geom = shapely.geometry.shape(transform_geom(src, dst, shapely.geometry.mapping(area)))
    except Exception as e:  # noqa: BLE001
        raise ChangeError(
            f"{what}: cannot transform its footprint from {georef.crs_name(src)} to {georef.crs_name(dst)} ({e})"
        ) from e
    if geom.is_empty or not np.isfinite(shapely.bounds(geom)).all():
        raise ChangeError(
            f"{what}: cannot transform its footprint from {georef.crs_name(src)} to {georef.crs_name(dst)}"
        )
    return shapely.make_valid(geom)


@dataclass
class _Date:
    """One date in the working frame: centres/footprints in metres, lengths, headings, groups."""

    dets: Detections
    xy: np.ndarray  # (N, 2) centres, working CRS units
    rings: np.ndarray  # (N, 4, 2) footprints, working CRS units
    length: np.ndarray  # (N,) metres (nan unknown)
    heading: np.ndarray  # (N,) degrees (nan unknown)
    group: np.ndarray  # (N,) int
    area: Any  # valid area, working CRS


def _name(dets: Detections, default: str) -> str:
    return str(dets.source) if dets.source else default


def _prepare(dets: Detections, area: Any, work: Any, groups: Mapping[str, Sequence[str]], what: str) -> _Date:
    """Move one date's detections and valid area into the working CRS."""
    rings = georef.footprints(dets)
    xy = georef.centres(dets)
    if work is not None:
        rings = _transform_points(rings, dets.crs, work, what)
        xy = _transform_points(xy, dets.crs, work, what)
        area = _transform_area(area, dets.crs, work, what)
    length, _ = georef.lengths_m(dets)
    if np.isnan(length).all() and len(dets) and work is not None:
        # no GSD recorded: the footprint's long side in the working CRS
        side = np.linalg.norm(np.diff(rings[:, :3], axis=1), axis=2)
        length = side.max(axis=1) * _unit_factor(work)
    return _Date(
        dets=dets,
        xy=xy,
        rings=rings,
        length=length,
        heading=georef.headings(dets),
        group=group_of(dets.class_names, groups)[dets.class_ids] if len(dets) else np.zeros(0, np.int64),
        area=area,
    )


# ----------------------------------------------------------------------------------------------------------
# misregistration
# ----------------------------------------------------------------------------------------------------------


def estimate_shift(
    before_xy: np.ndarray,
    after_xy: np.ndarray,
    *,
    before_group: np.ndarray | None = None,
    after_group: np.ndarray | None = None,
    max_shift: float = 20.0,
    tolerance: float = 1.0,
    max_candidates: int = 2_000_000,
    top_cells: int = 25,
) -> tuple[np.ndarray, int]:
    """The displacement ``after - before`` most pairs of same-group objects agree on (1-point RANSAC).

    Every pair of a before and an after object of one group closer than ``max_shift`` is a candidate
    displacement; they vote in a 2-D histogram (the mode), and the ``top_cells`` strongest cells are checked:
    a cell's support is the number of before objects that have an after object of their group within
    ``tolerance`` of themselves plus the cell's displacement. The best-supported cell is refined to the median
    of its inliers' displacements (one more support pass around the median). Periodic patterns (rows of
    parked cars) give near-ties one spacing apart; the true shift still wins because row ends drop out of the
    others. Ties go to the smaller shift.

    Args:
        before_xy, after_xy: centres ``(N, 2)`` and ``(M, 2)`` in one metric frame.
        before_group, after_group: compatibility group per object (default: all one group).
        max_shift: largest displacement considered (same units as the centres).
        tolerance: inlier radius.
        max_candidates: candidate displacements voting (an evenly spaced subset when there are more).
        top_cells: histogram cells checked against every object.

    Returns:
        ``(shift (2,), support)``; ``((0, 0), 0)`` when no pair is close enough.
    """
    from scipy.spatial import cKDTree

    b = np.asarray(before_xy, np.float64).reshape(-1, 2)
    a = np.asarray(after_xy, np.float64).reshape(-1, 2)
    gb = np.zeros(len(b), np.int64) if before_group is None else np.asarray(before_group, np.int64)
    ga = np.zeros(len(a), np.int64) if after_group is None else np.asarray(after_group, np.int64)
    if len(b) == 0 or len(a) == 0:
        return np.zeros(2), 0
    trees = {g: (cKDTree(a[ga == g]), a[ga == g]) for g in np.unique(ga)}
    pieces = []
    for g, (tree, pts) in trees.items():
        sel = b[gb == g]
        if len(sel) == 0:
            continue
        for i, js in enumerate(tree.query_ball_point(sel, r=max_shift)):
            if js:
                pieces.append(pts[js] - sel[i])
    if not pieces:
        return np.zeros(2), 0
    cand = np.concatenate(pieces)
    if len(cand) > max_candidates:  # an evenly spaced subset keeps the vote's shape
        cand = cand[np.linspace(0, len(cand) - 1, max_candidates).astype(int)]
    # the vote: a histogram of displacements (bins of half the tolerance, summed over the tolerance); only
    # its strongest cells are then checked against every object
    from scipy import ndimage

    step = tolerance / 2
    edges = np.arange(-max_shift - step, max_shift + 2 * step, step)
    hist, _, _ = np.histogram2d(cand[:, 0], cand[:, 1], bins=[edges, edges])
    votes = ndimage.uniform_filter(hist, size=3, mode="constant") * 9
    centres = (edges[:-1] + edges[1:]) / 2
    top = np.argsort(votes, axis=None)[::-1][:top_cells]
    ix, iy = np.unravel_index(top, votes.shape)
    cand = np.stack([centres[ix], centres[iy]], 1)[votes[ix, iy] > 0]

    def support(d: np.ndarray) -> tuple[int, np.ndarray]:
        disp = []
        for g, (tree, pts) in trees.items():
            sel = b[gb == g]
            if len(sel) == 0:
                continue
            dist, j = tree.query(sel + d, k=1, distance_upper_bound=tolerance)
            hit = np.isfinite(dist)
            disp.append(pts[j[hit]] - sel[hit])
        found = np.concatenate(disp) if disp else np.zeros((0, 2))
        return len(found), found

    sup = np.array([support(d)[0] for d in cand], np.int64)
    ties = np.nonzero(sup == sup.max())[0]
    k = ties[np.argmin(np.linalg.norm(cand[ties], axis=1))]  # ties: the smallest shift
    n, disp = support(cand[k])
    shift = np.median(disp, axis=0)
    n2, disp2 = support(shift)
    if n2 >= n:
        shift, n = np.median(disp2, axis=0), n2
    return np.asarray(shift, np.float64), int(n)


def phase_shift(
    before_scene: str | Path,
    after_scene: str | Path,
    common: Any,
    crs: Any,
    *,
    max_shift_m: float = 20.0,
    resolution_m: float | None = None,
    max_pixels: int = 1024,
) -> tuple[np.ndarray, float] | None:
    """The after scene's misregistration ``(dx, dy)`` in metres (east, north) by phase correlation.

    Both scenes are resampled (:func:`overlap_grays`: bilinear, one gray band) onto one grid of the working
    ``crs`` covering the bounds of ``common`` (the overlap of the two valid areas, before any shift) at the
    coarser of the two GSDs (or ``resolution_m``; at most ``max_pixels`` a side), invalid pixels set to the
    mean, windowed (Hann), and the normalised cross-power spectrum's peak within ``max_shift_m`` is refined
    to a fraction of a pixel (parabola through its neighbours).

    Returns:
        ``(shift, strength)``, where ``strength`` is the peak's height over the correlation surface's robust
        spread (above about 8 the peak is unambiguous), or ``None`` when the overlap is too small.
    """
    grays = overlap_grays(
        before_scene, after_scene, common, crs, resolution_m=resolution_m, max_pixels=max_pixels
    )
    return None if grays is None else _phase_correlate(*grays, crs, max_shift_m)


def overlap_grays(
    before_scene: str | Path,
    after_scene: str | Path,
    common: Any,
    crs: Any,
    *,
    resolution_m: float | None = None,
    max_pixels: int = 1024,
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Both scenes' gray (the mean of the first three bands) on one grid of ``crs`` over ``common``'s bounds,
    ``nan`` where invalid, and the grid's cell size in ``crs`` units; ``None`` when the overlap is too small
    (under 32 cells a side, or under 10 % valid)."""
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    unit = _unit_factor(crs)
    x0, y0, x1, y1 = common.bounds
    gsds = []
    for scene in (before_scene, after_scene):
        with rasterio.open(scene) as ds:
            a, b, _, d, e, _ = tuple(ds.transform)[:6]
            gsds.append(math.sqrt(abs(a * e - b * d)) * _unit_factor(ds.crs))
    res = max(resolution_m or 0.0, *gsds) / unit
    res = max(res, max(x1 - x0, y1 - y0) / max_pixels)
    cols, rows = int((x1 - x0) / res), int((y1 - y0) / res)
    if min(cols, rows) < 32:
        return None
    grid = Affine(res, 0, x0, 0, -res, y1)
    grays = []
    for scene in (before_scene, after_scene):
        with rasterio.open(scene) as ds:
            count = 3 if ds.count >= 3 else 1
            dst = np.full((count, rows, cols), np.nan, np.float32)
            reproject(  # GDAL's warper reads the source block by block and honours its nodata and masks
                rasterio.band(ds, list(range(1, count + 1))),
                dst,
                dst_transform=grid,
                dst_crs=crs,
                dst_nodata=np.nan,
                resampling=Resampling.bilinear,
            )
        gray = dst.mean(axis=0)
        if np.isfinite(gray).sum() < 0.1 * gray.size:
            return None
        grays.append(gray)
    return grays[0], grays[1], float(res)


def _phase_correlate(
    gray_b: np.ndarray, gray_a: np.ndarray, res: float, crs: Any, max_shift_m: float
) -> tuple[np.ndarray, float]:
    unit = _unit_factor(crs)
    rows, cols = gray_b.shape
    images = []
    for gray in (gray_b, gray_a):
        good = np.isfinite(gray)
        z = (gray - gray[good].mean()) / (gray[good].std() + 1e-6)
        images.append(np.where(good, z, 0.0).astype(np.float32))
    window = np.outer(np.hanning(rows), np.hanning(cols)).astype(np.float32)
    fa = np.fft.fft2(images[0] * window)
    fb = np.fft.fft2(images[1] * window)
    cross = fb * np.conj(fa)
    corr = np.fft.ifft2(cross / (np.abs(cross) + 1e-9)).real
    corr = np.fft.fftshift(corr)
    cy, cx = rows // 2, cols // 2
    reach = int(math.ceil(max_shift_m / unit / res)) + 1
    yy, xx = np.ogrid[:rows, :cols]
    inside = (np.abs(yy - cy) <= reach) & (np.abs(xx - cx) <= reach)
    masked = np.where(inside, corr, -np.inf)
    py, px = np.unravel_index(int(np.argmax(masked)), corr.shape)

    def refine(m: float, c: float, p: float) -> float:
        den = m - 2 * c + p
        return 0.0 if abs(den) < 1e-12 else float(np.clip(0.5 * (m - p) / den, -0.5, 0.5))

    dy = py - cy + (refine(corr[py - 1, px], corr[py, px], corr[py + 1, px]) if 0 < py < rows - 1 else 0)
    dx = px - cx + (refine(corr[py, px - 1], corr[py, px], corr[py, px + 1]) if 0 < px < cols - 1 else 0)
    spread = np.median(np.abs(corr - np.median(corr))) * 1.4826 + 1e-12
    strength = float((corr[py, px] - np.median(corr)) / spread)
    # grid columns run east, rows run south
    return np.array([dx * res * unit, -dy * res * unit]), strength


def pixel_change(
    before_scene: str | Path,
    after_scene: str | Path,
    rings: np.ndarray,
    crs: Any,
    shift: np.ndarray,
    *,
    lut: tuple[np.ndarray, np.ndarray] | None = None,
    samples: int = PIXEL_SAMPLES,
) -> np.ndarray:
    """How much the ground under each footprint changed between the two scenes' pixels.

    ``rings`` are footprints ``(N, 4, 2)`` in the working ``crs`` and the before date's frame; the after scene
    is sampled at ``rings + shift`` (``shift`` in the same units: the misregistration that was removed). Each
    footprint is sampled on a ``samples`` x ``samples`` grid, and its surroundings (a square of 3 x its long
    side around it, less the footprint grown by 30 %) on another, in one gray band of each scene (bilinear).
    The after date's gray is brought into the before date's radiometry by ``lut`` (:func:`radiometric_lut`
    of the whole overlap; none: as it is) and then by the surroundings' median difference (local
    illumination). The change is the root mean square difference of the footprint's samples over that of
    the surroundings' (their noise and misregistration; at least 1 % of the surroundings' range): about 1
    where only the radiometry changed, several where an object came or went. A saturated sample (at the top
    of its format) bounds its value from below only.

    Returns:
        ``(N,)`` ratios, ``nan`` where either scene has too few valid pixels at the footprint.
    """
    n = len(rings)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    rings = np.asarray(rings, np.float64)
    foot, ctx = _sample_grids(samples)
    centre = rings.mean(axis=1)
    e1 = rings[:, 1] - rings[:, 0]
    e2 = rings[:, 3] - rings[:, 0]
    long_side = np.maximum(np.linalg.norm(e1, axis=1), np.linalg.norm(e2, axis=1))
    # the footprint in its own frame; the surroundings as a square in the same orientation
    pts_f = centre[:, None] + foot[None, :, :1] * e1[:, None] + foot[None, :, 1:] * e2[:, None]
    u1 = e1 / np.maximum(np.linalg.norm(e1, axis=1), 1e-12)[:, None]
    u2 = e2 / np.maximum(np.linalg.norm(e2, axis=1), 1e-12)[:, None]
    side = 3.0 * long_side[:, None, None]
    pts_c = centre[:, None] + ctx[None, :, :1] * u1[:, None] * side + ctx[None, :, 1:] * u2[:, None] * side
    # surroundings less the footprint grown by 30 %: in the footprint's frame, |s|, |t| <= 0.65
    rel = pts_c - centre[:, None]
    s = np.einsum("npk,nk->np", rel, e1) / np.maximum((e1 * e1).sum(1), 1e-12)[:, None]
    t = np.einsum("npk,nk->np", rel, e2) / np.maximum((e2 * e2).sum(1), 1e-12)[:, None]
    outside = (np.abs(s) > 0.65) | (np.abs(t) > 0.65)
    pts = np.concatenate([pts_f, pts_c], axis=1)
    nf = pts_f.shape[1]
    vals_b, top_b = _sample_gray(before_scene, pts, crs)
    vals_a, top_a = _sample_gray(after_scene, pts + np.asarray(shift, np.float64), crs)
    for k in range(n):
        fb, fa = vals_b[k, :nf], vals_a[k, :nf]
        cb, ca = vals_b[k, nf:], vals_a[k, nf:]
        okf = np.isfinite(fb) & np.isfinite(fa)
        okc = np.isfinite(cb) & np.isfinite(ca) & outside[k]
        if okf.sum() < 0.5 * nf or okc.sum() < 0.25 * outside[k].sum() or okc.sum() < 16:
            continue
        cb, ca = cb[okc], ca[okc]
        res_c = _residual(cb, ca, lut, top_b, top_a)
        offset = float(np.median(res_c))
        res_c = res_c - offset
        res_f = _residual(fb[okf], fa[okf], lut, top_b, top_a) - offset
        span = float(np.percentile(cb, 98) - np.percentile(cb, 2))
        floor = max(float(np.sqrt(np.mean(res_c**2))), 0.01 * span, 1e-6)
        out[k] = float(np.sqrt(np.mean(res_f**2)) / floor)
    return out


def radiometric_lut(
    gray_b: np.ndarray, gray_a: np.ndarray, points: int = 101
) -> tuple[np.ndarray, np.ndarray]:
    """Quantile matching of the after date's gray to the before date's over the pixels valid on both grids
    (:func:`overlap_grays`): ``(after quantiles, before quantiles)`` for :func:`numpy.interp`. It follows
    any monotone change of radiometry (gain, offset, gamma, saturation); the few pixels that changed barely
    move the quantiles, and misregistration does not matter."""
    both = np.isfinite(gray_b) & np.isfinite(gray_a)
    q = np.linspace(0, 100, points)
    return np.percentile(gray_a[both], q), np.percentile(gray_b[both], q)


def _residual(
    before: np.ndarray,
    after: np.ndarray,
    lut: tuple[np.ndarray, np.ndarray] | None,
    top_b: float,
    top_a: float,
) -> np.ndarray:
    """Before minus the after date's gray values in the before date's radiometry, where a saturated sample
    (at its format's top) only bounds the true value from below: 0 where the two ranges overlap."""
    pred = after if lut is None else np.interp(after, lut[0], lut[1])
    pred_hi = np.where(after >= top_a - 0.5, np.inf, pred)
    obs_hi = np.where(before >= top_b - 0.5, np.inf, before)
    return np.where(obs_hi < pred, obs_hi - pred, np.where(pred_hi < before, before - pred_hi, 0.0))


def _sample_grids(samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred sample grids in ``[-0.5, 0.5]^2``: the footprint's (``samples`` a side) and its surroundings'
    (twice as dense, over the same unit square: it is scaled to 3 x the long side)."""
    u = (np.arange(samples) + 0.5) / samples - 0.5
    s, t = np.meshgrid(u, u)
    v = (np.arange(2 * samples) + 0.5) / (2 * samples) - 0.5
    cs, ct = np.meshgrid(v, v)
    return np.stack([s.ravel(), t.ravel()], 1), np.stack([cs.ravel(), ct.ravel()], 1)


def _sample_gray(scene: str | Path, pts: np.ndarray, crs: Any) -> tuple[np.ndarray, float]:
    """Bilinear samples of one gray band (the mean of the first three) at points ``(N, P, 2)`` given in
    ``crs`` (pixels when ``None``), ``nan`` outside the scene and on invalid pixels; and the top of the
    scene's format (saturation: 255 for 8 bits, ``inf`` for floating point)."""
    from rasterio.errors import RasterioError
    from rasterio.windows import Window
    from scipy.ndimage import map_coordinates

    from detector.raster import open_dataset

    n, p, _ = pts.shape
    out = np.full((n, p), np.nan)
    with open_dataset(scene) as ds:
        flat = pts.reshape(-1, 2)
        if crs is not None:
            if ds.crs is not None and ds.crs != crs:
                flat = _transform_points(flat, crs, ds.crs, str(scene))
            cols, rows = georef.apply_affine(~ds.transform, flat).T
        else:
            cols, rows = flat[:, 0], flat[:, 1]
        dtype = np.dtype(ds.dtypes[0])
        top = float(np.iinfo(dtype).max) if dtype.kind in "iu" else math.inf
        cols = np.asarray(cols, np.float64).reshape(n, p) - 0.5  # array index of pixel centres
        rows = np.asarray(rows, np.float64).reshape(n, p) - 0.5
        count = min(3, ds.count)
        for k in range(n):
            c0 = max(int(math.floor(np.nanmin(cols[k]))) - 1, 0)
            r0 = max(int(math.floor(np.nanmin(rows[k]))) - 1, 0)
            c1 = min(int(math.ceil(np.nanmax(cols[k]))) + 2, ds.width)
            r1 = min(int(math.ceil(np.nanmax(rows[k]))) + 2, ds.height)
            if c1 - c0 < 2 or r1 - r0 < 2:
                continue
            win = Window(c0, r0, c1 - c0, r1 - r0)
            try:
                data = ds.read(list(range(1, count + 1)), window=win).astype(np.float32)
                mask = ds.read_masks(1, window=win)
            except RasterioError as e:
                raise RasterError(f"{scene}: cannot read pixels for the pixel check ({e})") from e
            gray = data.mean(axis=0)
            rr, cc = rows[k] - r0, cols[k] - c0
            inside = (rr >= -0.5) & (cc >= -0.5) & (rr <= gray.shape[0] - 0.5) & (cc <= gray.shape[1] - 0.5)
            near_r = np.clip(np.rint(rr).astype(np.int64), 0, gray.shape[0] - 1)
            near_c = np.clip(np.rint(cc).astype(np.int64), 0, gray.shape[1] - 1)
            valid = inside & (mask[near_r, near_c] > 0)
            vals = map_coordinates(gray, [rr, cc], order=1, mode="nearest")
            out[k] = np.where(valid, vals, np.nan)
    return out, top


# ----------------------------------------------------------------------------------------------------------
# matching
# ----------------------------------------------------------------------------------------------------------


def _pairs(b: np.ndarray, a: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)`` of points ``b[i]``, ``a[j]`` closer than ``radius`` (a k-d tree, not N x M)."""
    from scipy.spatial import cKDTree

    if len(b) == 0 or len(a) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    hits = cKDTree(a).query_ball_point(b, r=radius)
    i = np.repeat(np.arange(len(b)), [len(h) for h in hits]).astype(np.int64)
    j = np.fromiter((k for h in hits for k in h), np.int64, count=len(i))
    return i, j


def _assign(i: np.ndarray, j: np.ndarray, cost: np.ndarray) -> list[tuple[int, int, float]]:
    """One-to-one minimum-cost assignment over the allowed pairs ``(i, j)`` (Hungarian, per connected
    component of the pair graph, so each solve is small)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(i) == 0:
        return []
    rows_u, ri = np.unique(i, return_inverse=True)
    cols_u, cj = np.unique(j, return_inverse=True)
    n, m = len(rows_u), len(cols_u)
    graph = coo_matrix((np.ones(len(i)), (ri, n + cj)), shape=(n + m, n + m))
    _, label = connected_components(graph, directed=False)
    big = 1e9
    comp_of_pair = label[ri]
    pairs_per_comp = np.bincount(comp_of_pair, minlength=n + m)
    single = pairs_per_comp[comp_of_pair] == 1  # an isolated pair: nothing to assign
    out = [(int(a), int(b), float(c)) for a, b, c in zip(i[single], j[single], cost[single], strict=True)]
    rest = np.nonzero(~single)[0]
    order = rest[np.argsort(comp_of_pair[rest], kind="stable")]
    bounds = np.flatnonzero(np.diff(comp_of_pair[order])) + 1
    for idx in np.split(order, bounds) if len(order) else []:
        r_loc, r_inv = np.unique(ri[idx], return_inverse=True)
        c_loc, c_inv = np.unique(cj[idx], return_inverse=True)
        sub = np.full((len(r_loc), len(c_loc)), big)
        sub[r_inv, c_inv] = cost[idx]
        rr, cc = linear_sum_assignment(sub)
        for x, y in zip(rr, cc, strict=True):
            if sub[x, y] < big:
                out.append((int(rows_u[r_loc[x]]), int(cols_u[c_loc[y]]), float(sub[x, y])))
    return out


def _heading_diff(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """Element-wise difference of axial headings in ``[0, 90]`` degrees (``0`` where either is unknown)."""
    d = np.abs(h1 - h2) % 180.0
    d = np.minimum(d, 180.0 - d)
    return np.nan_to_num(d, nan=0.0)


def _dedupe(dets: Detections, groups: Mapping[str, Sequence[str]], ios: float) -> np.ndarray:
    """Keep mask: a detection whose footprint lies mostly (intersection over the smaller > ``ios``) on a
    better-scoring one of a compatible class is a duplicate (merging is per class, so they survive it)."""
    import shapely
    from scipy.spatial import cKDTree

    n = len(dets)
    keep = np.ones(n, bool)
    if n < 2 or ios >= 1:
        return keep
    px = corners(dets)
    ctr = px.mean(axis=1)
    long_px = np.linalg.norm(px[:, 1] - px[:, 0], axis=1).clip(min=0)
    long_px = np.maximum(long_px, np.linalg.norm(px[:, 2] - px[:, 1], axis=1))
    pairs = cKDTree(ctr).query_pairs(r=float(long_px.max()), output_type="ndarray")
    if len(pairs) == 0:
        return keep
    group = group_of(dets.class_names, groups)[dets.class_ids]
    i, j = pairs[:, 0], pairs[:, 1]
    ok = (group[i] == group[j]) & (dets.class_ids[i] != dets.class_ids[j])
    i, j = i[ok], j[ok]
    if len(i) == 0:
        return keep
    polys = shapely.polygons(px)
    inter = shapely.area(shapely.intersection(polys[i], polys[j]))
    smaller = np.minimum(shapely.area(polys[i]), shapely.area(polys[j]))
    dup = inter > ios * np.maximum(smaller, 1e-12)
    for a, b in sorted(
        zip(i[dup], j[dup], strict=True), key=lambda p: -max(dets.scores[p[0]], dets.scores[p[1]])
    ):
        if keep[a] and keep[b]:
            keep[b if dets.scores[a] >= dets.scores[b] else a] = False
    return keep


def _covered(rings: np.ndarray, common: Any, margin: float) -> np.ndarray:
    import shapely

    if len(rings) == 0:
        return np.zeros(0, bool)
    polys = shapely.polygons(rings)
    if margin > 0:
        polys = shapely.buffer(polys, margin, join_style="mitre")
    return np.asarray(shapely.covers(common, polys), bool)


def _clear(
    where: np.ndarray,
    rings: np.ndarray,
    xy: np.ndarray,
    group: np.ndarray,
    other_xy: np.ndarray,
    other_group: np.ndarray,
    radius: float,
) -> np.ndarray:
    """``where`` (a mask over the objects: footprints ``rings``, centres ``xy``) narrowed to the objects that no
    centre of ``other_xy`` of the same group lies within ``radius`` of (one frame, one unit)."""
    import shapely

    out = where.copy()
    if not where.any() or len(other_xy) == 0:
        return out
    idx = np.flatnonzero(where)
    rings, xy, group = rings[idx], xy[idx], group[idx]
    half = np.linalg.norm(rings - xy[:, None, :], axis=2).max(axis=1)
    i, j = _pairs(xy, other_xy, float(half.max()) + radius)
    same = group[i] == other_group[j]
    i, j = i[same], j[same]
    if len(i) == 0:
        return out
    d = shapely.distance(shapely.polygons(rings[i]), shapely.points(other_xy[j]))
    out[idx[i[d <= radius]]] = False
    return out


def compare(
    before: Detections,
    after: Detections,
    *,
    config: ChangeConfig | None = None,
    before_area: Any = None,
    after_area: Any = None,
    same_grid: bool = False,
    before_scene: str | Path | None = None,
    after_scene: str | Path | None = None,
) -> Changes:
    """Object-level change from ``before`` to ``after`` (see the module docstring for the flow).

    Args:
        before, after: detections of the two dates, predicted with a confidence of at most ``config.low``.
        config: thresholds (default :class:`ChangeConfig()`).
        before_area, after_area: each date's valid-pixel area (shapely, in that date's CRS, or pixels when not
            georeferenced), e.g. from :func:`valid_area`; default ``dets.meta["valid_area"]``, else the scene
            rectangle from ``meta`` width/height.
        same_grid: the dates carry no georeferencing but share one pixel grid: compare in pixels, with
            ``gsd`` (of either date) giving metres.
        before_scene, after_scene: the scene files, when at hand: the misregistration then comes from phase
            correlation of their pixels (:func:`phase_shift`) when its peak is clear, else from the objects.

    Returns:
        The change records (:class:`Changes`).

    Raises:
        ChangeError: a date without georeferencing (and not ``same_grid``), CRSs that do not transform,
            dates that do not overlap, an unknown valid area.
    """
    import shapely

    cfg = config or ChangeConfig()
    names = (_name(before, "the before date"), _name(after, "the after date"))
    areas = []
    for dets, area, what in ((before, before_area, names[0]), (after, after_area, names[1])):
        georeferenced = dets.crs is not None and dets.transform is not None
        if not georeferenced and not same_grid:
            raise ChangeError(
                f"{what}: has no georeferencing; georeference it, or pass --same-grid when both dates share "
                f"one pixel grid"
            )
        if area is None:
            area = dets.meta.get("valid_area")
        if area is None:
            area = _scene_bounds_area(dets)
        if area is None:
            raise ChangeError(f"{what}: its valid area is unknown (no scene footprint recorded)")
        areas.append(area)
    gsd: float | None = None
    if same_grid:
        if (before.crs is None) != (after.crs is None):
            raise ChangeError(f"{names[1]}: --same-grid needs both dates without georeferencing")
        gsd = before.gsd or after.gsd
        if not gsd:
            raise ChangeError(f"{names[0]}: --same-grid needs the ground sample distance (--gsd)")
        if before.crs is not None:  # both georeferenced: --same-grid is moot
            same_grid = False
    if same_grid and gsd:
        work, unit = None, float(gsd)
        before = replace(before, gsd=before.gsd or gsd)
        after = replace(after, gsd=after.gsd or gsd)
    else:
        work = _working_crs(before, areas[0])
        unit = _unit_factor(work)
    # one object, two compatible classes (a van as both small and large vehicle): keep the better score
    keep_b = _dedupe(before, cfg.groups, cfg.duplicate_ios)
    keep_a = _dedupe(after, cfg.groups, cfg.duplicate_ios)
    orig_b, orig_a = np.flatnonzero(keep_b), np.flatnonzero(keep_a)
    before, after = before[orig_b], after[orig_a]
    b = _prepare(before, areas[0], work, cfg.groups, names[0])
    a = _prepare(after, areas[1], work, cfg.groups, names[1])
    if not b.area.intersects(a.area) or b.area.intersection(a.area).area <= 0:
        raise ChangeError(f"{names[1]}: does not overlap {names[0]} (no common area with valid pixels)")

    # -- misregistration (in metres; the working CRS may be in feet)
    strength = float("nan")
    grays = None  # both scenes on one coarse grid: for the shift and the radiometry of the pixel check
    scenes = before_scene is not None and after_scene is not None and not same_grid
    pixels = scenes and (cfg.pixel_ratio is not None or cfg.pixel_same is not None)
    if scenes and (cfg.shift is None or pixels):
        overlap = shapely.make_valid(b.area.intersection(a.area))
        grays = overlap_grays(before_scene, after_scene, overlap, work)  # type: ignore[arg-type]
    if cfg.shift is not None:
        shift_m, support, method = np.asarray(cfg.shift, np.float64), -1, "given"
    else:
        phase = None if grays is None else _phase_correlate(*grays, work, cfg.max_shift_m)
        hb = before.scores >= cfg.high
        ha = after.scores >= cfg.high
        shift_m, support = estimate_shift(
            b.xy[hb] * unit,
            a.xy[ha] * unit,
            before_group=b.group[hb],
            after_group=a.group[ha],
            max_shift=cfg.max_shift_m,
            tolerance=cfg.shift_tolerance_m,
        )
        method = "objects"
        if phase is not None and phase[1] >= PHASE_MIN_STRENGTH:
            shift_m, method, strength = phase[0], "phase-correlation", phase[1]
        elif support < 3:
            logger.warning(
                "%s vs %s: only %d objects agree on a misregistration%s; assuming none",
                names[0],
                names[1],
                support,
                "" if phase is None else f" and the pixels' phase correlation is weak ({phase[1]:.1f})",
            )
            shift_m, method = np.zeros(2), "none"
    if same_grid:  # pixels, y down: the metric shift is (east, north)
        shift_units = np.array([shift_m[0], -shift_m[1]]) / unit
    else:
        shift_units = shift_m / unit
    a_xy = a.xy - shift_units
    a_rings = a.rings - shift_units
    a_area = shapely.affinity.translate(a.area, -shift_units[0], -shift_units[1])
    common = shapely.make_valid(b.area.intersection(a_area))
    if common.is_empty or common.area <= 0:
        raise ChangeError(f"{names[1]}: does not overlap {names[0]} after removing the misregistration")
    logger.info(
        "%s -> %s: shift (%.2f, %.2f) m from %d objects; common area %.0f m2",
        names[0],
        names[1],
        shift_m[0],
        shift_m[1],
        support,
        common.area * unit * unit,
    )
    cov_b = _covered(b.rings, common, cfg.edge_m / unit)
    cov_a = _covered(a_rings, common, cfg.edge_m / unit)

    # -- stage 1: stayed (sparse: only pairs within the largest gate are ever looked at)
    nb, na = len(before), len(after)
    lo_b, lo_a = before.scores >= cfg.low, after.scores >= cfg.low
    hi_b, hi_a = before.scores >= cfg.high, after.scores >= cfg.high
    mid_b, mid_a = before.scores >= cfg.mid, after.scores >= cfg.mid
    longest = np.nanmax(np.concatenate([b.length, a.length, [0.0]]))
    reach = max(cfg.stay_m, cfg.stay_fraction * longest, cfg.move_radius_m)
    pi, pj = _pairs(b.xy, a_xy, reach / unit)
    dist = np.linalg.norm(b.xy[pi] - a_xy[pj], axis=1) * unit
    size = np.fmax(b.length[pi], a.length[pj])
    gate = np.fmax(cfg.stay_m, cfg.stay_fraction * np.nan_to_num(size, nan=0.0))
    ratio = np.abs(np.log(np.fmax(b.length[pi], 1e-3) / np.fmax(a.length[pj], 1e-3)))
    ratio = np.nan_to_num(ratio, nan=0.0)
    same_group = b.group[pi] == a.group[pj]
    heading = _heading_diff(b.heading[pi], a.heading[pj]) / 90.0
    cost = dist / np.maximum(gate, 1e-9) + cfg.size_weight * ratio + cfg.heading_weight * heading
    # footprints that overlap well are one object even when the centres are apart (one long truck seen as
    # one box on one date and as a shorter one on the other)
    near = same_group & (dist <= np.fmax(gate, np.nan_to_num(size, nan=0.0)))
    overlap = np.zeros(len(pi), bool)
    if near.any():
        import shapely

        pb, pa = shapely.polygons(b.rings[pi[near]]), shapely.polygons(a_rings[pj[near]])
        inter = shapely.area(shapely.intersection(pb, pa))
        smaller = np.minimum(shapely.area(pb), shapely.area(pa))
        overlap[near] = inter >= cfg.stay_ios * np.maximum(smaller, 1e-12)
    allowed = same_group & ((dist <= gate) | overlap) & lo_b[pi] & lo_a[pj]
    allowed &= hi_b[pi] | hi_a[pj]  # two low-score detections are not an object
    allowed &= cov_b[pi] | cov_a[pj]
    stayed = _assign(pi[allowed], pj[allowed], cost[allowed])
    # a confident object matched only to a weak detection (below mid) of the other date, where the pixels
    # under the confident one changed: the weak one is something else (a shadow, the new ground), not it
    lut = radiometric_lut(grays[0], grays[1]) if pixels and grays is not None else None
    split = np.zeros(len(pi), bool)
    pix_b, pix_a = np.full(nb, np.nan), np.full(na, np.nan)  # pixel_change under unmatched objects
    if lut is not None and cfg.pixel_ratio is not None and before_scene and after_scene and stayed:
        pair_index = {(int(i), int(j)): k for k, (i, j) in enumerate(zip(pi, pj, strict=True))}
        weak_pairs = [(i, j) for i, j, _ in stayed if min(before.scores[i], after.scores[j]) < cfg.mid]
        if weak_pairs:
            wi, wj = np.array(weak_pairs, np.int64).T
            from_b = before.scores[wi] >= after.scores[wj]
            rings = np.where(from_b[:, None, None], b.rings[wi], a_rings[wj])
            changed = pixel_change(before_scene, after_scene, rings, work, shift_units, lut=lut)
            cut = changed >= cfg.pixel_ratio
            pix_b[wi[cut & from_b]] = changed[cut & from_b]  # the confident side, measured once
            pix_a[wj[cut & ~from_b]] = changed[cut & ~from_b]
            cut_pairs = {p for p, c in zip(weak_pairs, cut, strict=True) if c}
            stayed = [s for s in stayed if (s[0], s[1]) not in cut_pairs]
            split[[pair_index[p] for p in cut_pairs]] = True
    matched_b = np.zeros(nb, bool)
    matched_a = np.zeros(na, bool)
    for i, j, _ in stayed:
        matched_b[i] = matched_a[j] = True
    # hysteresis on presence, not on the assignment: a leftover that lies mostly on a detection of the other
    # date (one already matched: overlapping boxes of a row of trailers) is not a change, it is dropped
    there = overlap & lo_b[pi] & lo_a[pj] & ~split
    seen_b = np.zeros(nb, bool)
    seen_a = np.zeros(na, bool)
    seen_b[pi[there]] = True
    seen_a[pj[there]] = True
    absorbed_b = ~matched_b & seen_b
    absorbed_a = ~matched_a & seen_a
    # the same by the other date's detections of at least mid only: a leftover held back only by weak ones
    # (a box over a whole row, the new ground, a shadow) is looked at again when the pixels are at hand
    firm_b = np.zeros(nb, bool)
    firm_a = np.zeros(na, bool)
    firm_b[pi[there & mid_a[pj]]] = True
    firm_a[pj[there & mid_b[pi]]] = True
    # the weak side of a split pair is dropped; the confident side goes on as a leftover
    weak_side = split & (before.scores[pi] < after.scores[pj]) if len(pi) else split
    absorbed_b[pi[weak_side]] = True
    absorbed_a[pj[split & ~weak_side]] = True
    split_weak_b = np.zeros(nb, bool)
    split_weak_a = np.zeros(na, bool)
    split_weak_b[pi[weak_side]] = True
    split_weak_a[pj[split & ~weak_side]] = True

    # -- stage 2: moved (both confident, both covered, similar size; the old place is empty after stage 1)
    moved: list[tuple[int, int, float]] = []
    if cfg.move_radius_m > 0:
        free_b = ~matched_b & ~absorbed_b & hi_b & cov_b
        free_a = ~matched_a & ~absorbed_a & hi_a & cov_a
        known = np.isfinite(b.length[pi]) & np.isfinite(a.length[pj])
        similar = ~known | (ratio <= math.log(cfg.move_size_ratio))
        ok = same_group & (dist <= cfg.move_radius_m) & similar & free_b[pi] & free_a[pj]
        moved = _assign(pi[ok], pj[ok], (dist + cfg.size_weight * ratio)[ok])
        for i, j, _ in moved:
            matched_b[i] = matched_a[j] = True
    pair_dist = dict(zip(zip(pi.tolist(), pj.tolist(), strict=True), dist.tolist(), strict=True))

    # -- stage 3: mid-score leftovers are changes only where the other date has nothing at all (>= low)
    # within the footprint plus what is left of the misregistration; with both scenes at hand, low-score
    # ones too when the pixels under them changed
    radius = (cfg.max_shift_m if method == "none" else cfg.clear_m) / unit
    weak = lut is not None and cfg.pixel_ratio is not None
    weak_b = lo_b & ~mid_b if weak else np.zeros(nb, bool)
    weak_a = lo_a & ~mid_a if weak else np.zeros(na, bool)
    cand_b = ~matched_b & ~absorbed_b & (mid_b | weak_b) & ~hi_b & cov_b  # outside the common area: high only
    cand_a = ~matched_a & ~absorbed_a & (mid_a | weak_a) & ~hi_a & cov_a
    sure_b = hi_b | _clear(cand_b, b.rings, b.xy, b.group, a_xy[lo_a], a.group[lo_a], radius)
    sure_a = hi_a | _clear(cand_a, a_rings, a_xy, a.group, b.xy[lo_b], b.group[lo_b], radius)

    unchanged = {"before": 0, "after": 0}
    rescued = {"before": 0, "after": 0}
    if lut is not None and before_scene is not None and after_scene is not None:
        look_b = ~matched_b & ~absorbed_b & sure_b & cov_b
        look_a = ~matched_a & ~absorbed_a & sure_a & cov_a
        # held back only by the other date's weak detections: not absorbed by one of at least mid, clear of
        # them, and not the weak side of a split pair
        back_b = back_a = None
        if weak:
            mid_lo_b, mid_lo_a = lo_b & ~split_weak_b, lo_a & ~split_weak_a
            back_b = ~matched_b & mid_lo_b & cov_b & ~firm_b & ~look_b
            back_a = ~matched_a & mid_lo_a & cov_a & ~firm_a & ~look_a
            back_b = _clear(back_b, b.rings, b.xy, b.group, a_xy[mid_a], a.group[mid_a], radius)
            back_a = _clear(back_a, a_rings, a_xy, a.group, b.xy[mid_b], b.group[mid_b], radius)
        for look, back, rings, pix in ((look_b, back_b, b.rings, pix_b), (look_a, back_a, a_rings, pix_a)):
            todo = (look if back is None else look | back) & np.isnan(pix)  # split ones are measured already
            pix[todo] = pixel_change(before_scene, after_scene, rings[todo], work, shift_units, lut=lut)
        if cfg.pixel_ratio is not None:  # nan (no valid pixels): no evidence
            need_b, need_a = look_b & weak_b, look_a & weak_a
            sure_b[need_b] = pix_b[need_b] >= cfg.pixel_ratio
            sure_a[need_a] = pix_a[need_a] >= cfg.pixel_ratio
        if back_b is not None and back_a is not None:  # changed pixels outweigh weak detections
            for back, pix, sure, absorbed, side in (
                (back_b, pix_b, sure_b, absorbed_b, "before"),
                (back_a, pix_a, sure_a, absorbed_a, "after"),
            ):
                take = back & (pix >= cfg.pixel_ratio)
                sure[take] = True
                absorbed[take] = False
                rescued[side] = int(take.sum())
        if cfg.pixel_same is not None:  # the ground looks the same on both dates: the model flickered
            same_b = look_b & (pix_b < cfg.pixel_same)
            same_a = look_a & (pix_a < cfg.pixel_same)
            sure_b &= ~same_b
            sure_a &= ~same_a
            unchanged = {"before": int(same_b.sum()), "after": int(same_a.sum())}

    # -- records
    rows: list[tuple[str, int, int]] = [("stayed", i, j) for i, j, _ in stayed]
    rows += [("moved", i, j) for i, j, _ in moved]
    dropped_b = dropped_a = 0
    for i in range(nb):
        if matched_b[i]:
            continue
        if not sure_b[i] or absorbed_b[i]:
            dropped_b += 1
        else:
            rows.append(("departed" if cov_b[i] else "not-covered", i, -1))
    for j in range(na):
        if matched_a[j]:
            continue
        if not sure_a[j] or absorbed_a[j]:
            dropped_a += 1
        else:
            rows.append(("arrived" if cov_a[j] else "not-covered", -1, j))
    rows.sort(key=lambda r: (STATUSES.index(r[0]), r[1] if r[1] >= 0 else nb + r[2]))
    changes = _records(rows, b, a, a_xy, pair_dist)
    changes["pixel_change"] = np.array(
        [pix_b[i] if j < 0 else pix_a[j] if i < 0 else np.nan for _, i, j in rows], np.float64
    ).reshape(-1)
    for key, orig in (("id_before", orig_b), ("id_after", orig_a)):  # ids index the detections as given
        ids = changes[key]
        changes[key] = np.where(ids >= 0, orig[np.maximum(ids, 0)] if len(orig) else -1, -1)
    # a matched pair outside the common area is not-covered too (seen by one date only)
    both_out = np.array(
        [(i >= 0 and not cov_b[i]) and (j >= 0 and not cov_a[j]) for _, i, j in rows], bool
    ).reshape(-1)
    if both_out.any():
        changes["status"][both_out] = "not-covered"
    meta = {
        "before": names[0],
        "after": names[1],
        "model_before": before.meta.get("model", ""),
        "model_after": after.meta.get("model", ""),
        "gsd_before": before.gsd,
        "gsd_after": after.gsd,
        "shift_support": support,
        "shift_method": method,
        "phase_strength": None if math.isnan(strength) else round(strength, 1),
        "shift_m": [round(float(v), 3) for v in shift_m],
        "high": cfg.high,
        "mid": cfg.mid,
        "low": cfg.low,
        "clear_m": cfg.clear_m,
        "clear_radius_m": round(float(radius * unit), 3),
        "dropped": {"before": dropped_b, "after": dropped_a},
        "mid_changes": {
            "before": int((sure_b & mid_b & ~hi_b & ~matched_b & ~absorbed_b).sum()),
            "after": int((sure_a & mid_a & ~hi_a & ~matched_a & ~absorbed_a).sum()),
        },
        "pixel_check": lut is not None,
        "pixel_ratio": cfg.pixel_ratio,
        "pixel_same": cfg.pixel_same,
        "low_changes": {
            "before": int((sure_b & weak_b & ~matched_b & ~absorbed_b).sum()),
            "after": int((sure_a & weak_a & ~matched_a & ~absorbed_a).sum()),
        },
        "unchanged_pixels": unchanged,
        "rescued": rescued,
        "split_pairs": int(split.sum()),
        "dropped_on_another": {"before": int(absorbed_b.sum()), "after": int(absorbed_a.sum())},
        "duplicates": {"before": int((~keep_b).sum()), "after": int((~keep_a).sum())},
        "common_area_m2": float(common.area * unit * unit),
        "pixels": work is None,
    }
    return Changes(
        columns=changes,
        footprints=_pick_rings(rows, b.rings, a_rings),
        px_before=_pick_px(rows, before, 1),
        px_after=_pick_px(rows, after, 2),
        crs=work,
        shift_m=(float(shift_m[0]), float(shift_m[1])),
        common_area=common,
        meta=meta,
    )


def _records(
    rows: list[tuple[str, int, int]],
    b: _Date,
    a: _Date,
    a_xy: np.ndarray,
    pair_dist: dict[tuple[int, int], float],
) -> dict[str, np.ndarray]:
    n = len(rows)
    ib = np.array([r[1] for r in rows], np.int64)
    ia = np.array([r[2] for r in rows], np.int64)
    has_b, has_a = ib >= 0, ia >= 0
    cb = b.dets.class_name if len(b.dets) else np.zeros(0, str)
    ca = a.dets.class_name if len(a.dets) else np.zeros(0, str)

    def take(values: np.ndarray, idx: np.ndarray, ok: np.ndarray, fill: Any) -> np.ndarray:
        out = np.full(n, fill, dtype=object if isinstance(fill, str) else np.float64)
        out[ok] = values[idx[ok]]
        return out

    class_b = take(cb, ib, has_b, "").astype(str)
    class_a = take(ca, ia, has_a, "").astype(str)
    x = np.where(has_b, take(b.xy[:, 0], ib, has_b, np.nan), take(a_xy[:, 0], ia, has_a, np.nan))
    y = np.where(has_b, take(b.xy[:, 1], ib, has_b, np.nan), take(a_xy[:, 1], ia, has_a, np.nan))
    disp = np.full(n, np.nan)
    both = has_b & has_a
    disp[both] = [pair_dist[(int(i), int(j))] for i, j in zip(ib[both], ia[both], strict=True)]
    length_b = take(b.length, ib, has_b, np.nan)
    length_a = take(a.length, ia, has_a, np.nan)
    head_b = take(b.heading, ib, has_b, np.nan)
    head_a = take(a.heading, ia, has_a, np.nan)
    return {
        "status": np.array([r[0] for r in rows], dtype="<U11"),
        "class": np.where(has_b, class_b, class_a).astype(str),
        "class_before": class_b,
        "class_after": class_a,
        "score_before": take(b.dets.scores.astype(np.float64), ib, has_b, np.nan),
        "score_after": take(a.dets.scores.astype(np.float64), ia, has_a, np.nan),
        "id_before": ib,
        "id_after": ia,
        "date": np.where(both, "both", np.where(has_b, "before", "after")).astype(str),
        "x": x,
        "y": y,
        "x_after": take(a.xy[:, 0], ia, has_a, np.nan),
        "y_after": take(a.xy[:, 1], ia, has_a, np.nan),
        "displacement_m": disp,
        "length_m": np.where(np.isfinite(length_b), length_b, length_a),
        "heading_deg": np.where(np.isfinite(head_b), head_b, head_a),
    }


def _pick_rings(rows: list[tuple[str, int, int]], rb: np.ndarray, ra: np.ndarray) -> np.ndarray:
    out = np.zeros((len(rows), 4, 2))
    for k, (_, i, j) in enumerate(rows):
        out[k] = rb[i] if i >= 0 else ra[j]
    return out


def _pick_px(rows: list[tuple[str, int, int]], dets: Detections, which: int) -> np.ndarray:
    px = corners(dets)
    out = np.full((len(rows), 4, 2), np.nan)
    for k, row in enumerate(rows):
        idx = int(row[which])
        if idx >= 0:
            out[k] = px[idx]
    return out


# ----------------------------------------------------------------------------------------------------------
# summaries
# ----------------------------------------------------------------------------------------------------------


def summary(changes: Changes) -> list[dict[str, Any]]:
    """Counts per class: ``before`` (stayed + moved + departed, by before class), ``after`` (stayed + moved +
    arrived, by after class), then each status; not-covered objects count in neither date. A last row
    ``total`` sums the classes."""
    st = changes.status
    cb, ca, cl = changes.columns["class_before"], changes.columns["class_after"], changes.columns["class"]
    covered = st != "not-covered"
    classes = sorted({c for c in (*cb.tolist(), *ca.tolist()) if c})
    rows = []
    for c in classes:
        rows.append(
            {
                "class": c,
                "before": int(((cb == c) & covered & (st != "arrived")).sum()),
                "after": int(((ca == c) & covered & (st != "departed")).sum()),
                "stayed": int(((cl == c) & (st == "stayed")).sum()),
                "moved": int(((cl == c) & (st == "moved")).sum()),
                "departed": int(((cl == c) & (st == "departed")).sum()),
                "arrived": int(((cl == c) & (st == "arrived")).sum()),
                "not_covered": int(((cl == c) & (st == "not-covered")).sum()),
            }
        )
    total = {"class": "total", **{k: sum(r[k] for r in rows) for k in SUMMARY_COLUMNS[1:]}}
    return [*rows, total]


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as an aligned plain-text table (first column left, the rest right-aligned)."""
    cols = list(columns or (rows[0].keys() if rows else SUMMARY_COLUMNS))
    cells = [[str(c) for c in cols]] + [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    return "\n".join(lines)


def write_summary_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write summary rows (dicts) as CSV atomically."""
    from detector.writers import atomic_path

    path = Path(path)
    cols = list(rows[0].keys()) if rows else list(SUMMARY_COLUMNS)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return path


def write_summary_json(changes: Changes, path: str | Path) -> Path:
    """Write the summary table plus the comparison facts (shift, GSDs, models, thresholds) as JSON."""
    from detector.writers import atomic_path

    path = Path(path)
    doc = {
        "before": changes.meta.get("before"),
        "after": changes.meta.get("after"),
        "crs": georef.crs_name(changes.crs) if changes.crs is not None else "pixels",
        "shift_m": {"east": round(changes.shift_m[0], 3), "north": round(changes.shift_m[1], 3)},
        "shift_length_m": round(float(np.hypot(*changes.shift_m)), 3),
        **{k: v for k, v in changes.meta.items() if k not in ("before", "after", "shift_m")},
        "summary": summary(changes),
    }
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


# ----------------------------------------------------------------------------------------------------------
# change layers
# ----------------------------------------------------------------------------------------------------------

_LAYER_FIELDS = (
    "status",
    "class",
    "class_before",
    "class_after",
    "score_before",
    "score_after",
    "id_before",
    "id_after",
    "date",
    "displacement_m",
    "length_m",
    "heading_deg",
    "pixel_change",
)


def _attributes(changes: Changes) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for k in _LAYER_FIELDS:
        col = changes.columns[k]
        if col.dtype.kind == "f":
            out[k] = [None if not np.isfinite(v) else round(float(v), 4) for v in col]
        elif col.dtype.kind in "iu":
            out[k] = [int(v) for v in col]
        else:
            out[k] = [str(v) for v in col]
    return out


def to_geojson(changes: Changes, *, keep_crs: bool = False) -> dict[str, Any]:
    """The change records as a GeoJSON FeatureCollection (RFC 7946 lon/lat unless ``keep_crs``)."""
    pixels = changes.crs is None
    pts = changes.footprints
    if not pixels and not keep_crs:
        pts = georef.to_lonlat(changes.crs, pts)
    nd = 8 if (not pixels and not keep_crs) else 3
    pts = np.round(georef.ccw(pts), nd)
    from detector.writers import polygon_features

    features = polygon_features(pts, _attributes(changes), _LAYER_FIELDS)
    out: dict[str, Any] = {"type": "FeatureCollection"}
    if pixels:
        out["coordinates"] = "image pixels of the before date (x right, y down); not georeferenced"
    elif keep_crs:
        epsg = changes.crs.to_epsg()
        out["crs"] = {
            "type": "name",
            "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else changes.crs.to_wkt()},
        }
    out["before"] = Path(str(changes.meta.get("before", ""))).name
    out["after"] = Path(str(changes.meta.get("after", ""))).name
    out["shift_m"] = [round(v, 3) for v in changes.shift_m]
    out["features"] = features
    return out


def write_changes(changes: Changes, path: str | Path, *, keep_crs: bool = False) -> Path:
    """Write the change layer: ``.gpkg`` (layer ``changes``, working CRS) or ``.geojson`` (lon/lat).

    Raises:
        WriteError: the file cannot be written or its extension is neither.
    """
    from detector.writers import atomic_path, write_json

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        write_json(path, to_geojson(changes, keep_crs=keep_crs))  # unknown values are null, never NaN
        return path
    if suffix != ".gpkg":
        raise WriteError(f"{path}: change layers are .gpkg or .geojson, got {path.suffix!r}")
    import shapely
    from pyogrio.raw import write

    polys = shapely.polygons(georef.ccw(changes.footprints)) if len(changes) else np.empty(0, object)
    attrs = _attributes(changes)
    fields = list(_LAYER_FIELDS)
    data = []
    for k in fields:
        kind = changes.columns[k].dtype.kind
        if kind == "f":
            data.append(np.asarray([np.nan if v is None else v for v in attrs[k]], np.float64))
        elif kind in "iu":
            data.append(np.asarray(attrs[k], np.int64))
        else:
            data.append(np.asarray(attrs[k], dtype=object))
    with atomic_path(path) as tmp:
        try:
            write(
                str(tmp),
                geometry=shapely.to_wkb(polys) if len(polys) else np.empty(0, dtype=object),
                field_data=data,
                fields=fields,
                layer=CHANGE_LAYER,
                driver="GPKG",
                geometry_type="Polygon",
                crs=None if changes.crs is None else changes.crs.to_wkt(),
                nan_as_null=True,
                layer_metadata={
                    "before": str(changes.meta.get("before", "")),
                    "after": str(changes.meta.get("after", "")),
                    "shift_m": json.dumps([round(v, 3) for v in changes.shift_m]),
                },
            )
        except Exception as e:  # noqa: BLE001 - GDAL errors come as several types
            raise WriteError(f"{path}: cannot write ({e})") from e
    return path


# ----------------------------------------------------------------------------------------------------------
# quicklook
# ----------------------------------------------------------------------------------------------------------


def write_quicklook(
    changes: Changes,
    path: str | Path,
    *,
    before_scene: str | Path | None,
    after_scene: str | Path | None,
    max_size: int = 1024,
    bands: tuple[int, ...] | None = None,
) -> Path:
    """The two dates side by side (each at most ``max_size`` px a side), outlines coloured by status, legend.

    Objects of the before date are drawn on the left (stayed, moved, departed, not-covered), those of the after
    date on the right (stayed, moved, arrived, not-covered). A date whose scene file is missing is a grey panel.

    Raises:
        WriteError: the file cannot be written or is not PNG/JPEG.
    """
    from PIL import Image, ImageDraw, ImageFont

    from detector.writers import atomic_path

    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise WriteError(f"{path}: quicklook must be .png, .jpg or .jpeg, got {path.suffix!r}")
    panels = []
    for scene, px, title in (
        (before_scene, changes.px_before, "before"),
        (after_scene, changes.px_after, "after"),
    ):
        img, scale = _panel(scene, px, max_size, bands)
        draw = ImageDraw.Draw(img)
        width = 1 if max(img.size) < 700 else 2
        for k in np.argsort([STATUSES.index(s) for s in changes.status])[::-1]:
            if not np.isfinite(px[k]).all():
                continue
            pts = [(float(x) * scale[0], float(y) * scale[1]) for x, y in px[k]]
            draw.line([*pts, pts[0]], fill=STATUS_COLOURS[changes.status[k]], width=width + 1)
        font = ImageFont.load_default()
        name = Path(str(changes.meta.get(title, title))).name
        draw.rectangle([0, 0, draw.textlength(f"{title}: {name}", font=font) + 8, 16], fill=(0, 0, 0))
        draw.text((4, 2), f"{title}: {name}", fill=(255, 255, 255), font=font)
        panels.append(img)
    gap, legend_h = 8, 22
    w = panels[0].width + gap + panels[1].width
    h = max(p.height for p in panels) + legend_h
    canvas = Image.new("RGB", (w, h), (0, 0, 0))
    canvas.paste(panels[0], (0, legend_h))
    canvas.paste(panels[1], (panels[0].width + gap, legend_h))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    x = 4
    dx, dy = changes.shift_m
    for s in STATUSES:
        text = f"{s}: {int((changes.status == s).sum())}"
        draw.rectangle([x, 6, x + 10, 16], fill=STATUS_COLOURS[s])
        draw.text((x + 14, 5), text, fill=(255, 255, 255), font=font)
        x += 14 + int(draw.textlength(text, font=font)) + 14
    draw.text((x, 5), f"shift {math.hypot(dx, dy):.1f} m", fill=(255, 255, 255), font=font)
    with atomic_path(path) as tmp:
        if fmt == "JPEG":
            canvas.save(tmp, format=fmt, quality=88)
        else:
            canvas.save(tmp, format=fmt, optimize=True)
    return path


def _panel(
    scene: str | Path | None, px: np.ndarray, max_size: int, bands: tuple[int, ...] | None
) -> tuple[Any, tuple[float, float]]:
    from PIL import Image
    from rasterio.windows import Window

    from detector.raster import open_scene

    if scene is not None and Path(str(scene)).exists():
        with open_scene(scene, bands=bands) as s:
            f = min(1.0, max_size / max(s.width, s.height))
            rows, cols = max(1, round(s.height * f)), max(1, round(s.width * f))
            rgb, _ = s.read(Window(0, 0, s.width, s.height), out_shape=(rows, cols))
            return Image.fromarray(rgb, "RGB"), (cols / s.width, rows / s.height)
    finite = px[np.isfinite(px).all(axis=(1, 2))]
    extent = finite.reshape(-1, 2).max(axis=0) if len(finite) else np.array([max_size, max_size])
    f = min(1.0, max_size / max(float(extent.max()), 1.0))
    size = (max(16, int(extent[0] * f) + 8), max(16, int(extent[1] * f) + 8))
    return Image.new("RGB", size, (60, 60, 60)), (f, f)


# ----------------------------------------------------------------------------------------------------------
# more than two dates
# ----------------------------------------------------------------------------------------------------------


def counts_per_date(
    dates: Sequence[Detections],
    labels: Sequence[str],
    *,
    high: float = 0.4,
    areas: Sequence[Any] | None = None,
) -> list[dict[str, Any]]:
    """Objects per class per date (score at least ``high``), one row per date: ``date``, then each class.

    With ``areas`` (each date's common area in its own CRS, e.g. the intersection of all dates), only objects
    whose centre lies inside are counted.
    """
    import shapely

    classes: list[str] = []
    for d in dates:
        classes += [c for c in d.class_names if c not in classes]
    rows = []
    for k, (dets, label) in enumerate(zip(dates, labels, strict=True)):
        keep = dets.scores >= high
        if areas is not None and areas[k] is not None and len(dets):
            xy = georef.centres(dets)
            keep &= np.asarray(shapely.contains_xy(areas[k], xy[:, 0], xy[:, 1]), bool)
        names = dets.class_name[keep] if len(dets) else np.zeros(0, str)
        rows.append({"date": label, **{c: int((names == c).sum()) for c in classes}})
    return rows


def write_counts_plot(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """A small line plot of objects per class per date (PNG): matplotlib when installed, else drawn with PIL."""
    from detector.writers import atomic_path

    path = Path(path)
    classes = [k for k in rows[0] if k != "date"] if rows else []
    labels = [str(r["date"]) for r in rows]
    with atomic_path(path) as tmp:
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            from matplotlib.figure import Figure
        except ImportError:
            _pil_plot(rows, classes, labels, tmp)
            return path
        fig = Figure(figsize=(6, 3.5), dpi=100)
        ax = fig.subplots()
        for c in classes:
            ax.plot(range(len(rows)), [r[c] for r in rows], marker="o", label=c)
        ax.set_xticks(range(len(rows)), [Path(lbl).stem[:18] for lbl in labels], rotation=20, fontsize=8)
        ax.set_ylabel("objects")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(tmp, format="png")
    return path


def _pil_plot(rows: Sequence[Mapping[str, Any]], classes: list[str], labels: list[str], tmp: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    from detector.writers import class_colour

    w, h, pad = 600, 350, 40
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    top = max([1, *(int(r[c]) for r in rows for c in classes)])
    n = max(1, len(rows) - 1)
    draw.line([(pad, pad), (pad, h - pad), (w - pad, h - pad)], fill=(0, 0, 0))
    for k, c in enumerate(classes):
        pts = [
            (pad + i * (w - 2 * pad) / n, h - pad - r[c] / top * (h - 2 * pad)) for i, r in enumerate(rows)
        ]
        colour = class_colour(c, classes)
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        draw.text((w - pad - 110, pad + 12 * k), c, fill=colour, font=font)
    for i, lbl in enumerate(labels):
        draw.text(
            (pad + i * (w - 2 * pad) / n - 10, h - pad + 6), Path(lbl).stem[:12], fill=(0, 0, 0), font=font
        )
    draw.text((4, 4), f"max {top}", fill=(0, 0, 0), font=font)
    img.save(tmp, format="PNG")


# ----------------------------------------------------------------------------------------------------------
# files in, files out (what ``detector change`` runs)
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Date:
    """One input date: its detections, valid area (in its CRS) and the scene file to draw (if any)."""

    path: str
    dets: Detections
    area: Any
    scene: str | None


def load_date(
    path: str | Path,
    detector: Any = None,
    *,
    tile: Any = None,
    bands: tuple[int, ...] | None = None,
    gsd: float | None = None,
    zoom: float | str | None = None,
) -> Date:
    """A scene (run through ``detector.predict``) or an earlier output of ours (:func:`detector.results.read_results`).

    The valid area is the scene's valid pixels (:func:`valid_area`); for an earlier output whose scene cannot
    be found (as recorded, or beside the file), the scene footprint its provenance records.

    Args:
        path: a raster, or a ``.gpkg`` / ``.geojson`` written by ``detector predict``.
        detector: a :class:`~detector.pipeline.Detector` (needed for scenes; load it with a low ``conf``).
        tile, bands, gsd: passed to ``predict`` for scenes.
        zoom: for scenes, the tiling's zoom (:attr:`~detector.tiling.TileConfig.zoom`) instead of ``tile``'s;
            ``"auto"`` (what ``detector change`` does): :func:`change_zoom` of the scene's GSD; ``None``: as
            ``tile`` says.

    Raises:
        RasterError: the file is missing or unreadable.
        ChangeError: an output that is not ours or has no georeferencing; a scene but no detector.
    """
    from detector.results import is_results_file, read_results

    name = str(path)
    if is_results_file(name):
        dets = read_results(name)
        if gsd is not None:
            dets = replace(dets, gsd=float(gsd))
        scene = _scene_of(dets, Path(name))
        # the scene's valid pixels when the scene is at hand, else the footprint the file records
        area = _area_in(valid_area(scene), scene, dets) if scene is not None else dets.meta.get("footprint")
        if area is None:
            raise ChangeError(
                f"{name}: records no scene footprint and its scene {dets.source!r} is not found; "
                f"give the scene itself instead"
            )
        return Date(name, replace(dets, meta={**dets.meta, "valid_area": area}), area, scene)
    if detector is None:
        raise ChangeError(f"{name}: is a scene; comparing scenes needs a model")
    if not Path(name).exists():
        raise RasterError(f"{name}: file not found")
    area = valid_area(name)
    if zoom is not None:
        from detector.tiling import TileConfig

        z = change_zoom(_scene_gsd(name, gsd)) if zoom == "auto" else float(zoom)
        tile = replace(tile or TileConfig(), zoom=z)
    dets = detector.predict(name, tile=tile, bands=bands, gsd=gsd)
    meta = {**dets.meta, "valid_area": area, "model": detector.meta.name}
    return Date(name, replace(dets, meta=meta), area, name)


def change_zoom(gsd: float | None) -> float:
    """The zoom ``detector change`` runs a scene of this GSD at: :data:`CHANGE_ZOOM` from
    :data:`CHANGE_ZOOM_GSD_M` on (satellite imagery, where the small objects are), else 1 (unknown GSD too)."""
    return CHANGE_ZOOM if gsd is not None and gsd >= CHANGE_ZOOM_GSD_M else 1.0


def _scene_gsd(path: str, gsd: float | None) -> float | None:
    """The GSD a scene would be predicted at: ``gsd`` when given, else its georeferencing's."""
    if gsd is not None:
        return float(gsd)
    from detector.raster import gsd_of

    return gsd_of(path)


def _scene_of(dets: Detections, results_file: Path) -> str | None:
    """The scene a results file was made from, when it can be found (as recorded, or beside the file)."""
    if not dets.source:
        return None
    for cand in (Path(str(dets.source)), results_file.parent / Path(str(dets.source)).name):
        if cand.is_file():
            return str(cand)
    return None


def _area_in(area: Any, scene: str, dets: Detections) -> Any:
    """A scene's valid area (its CRS) in the CRS the detections were read into (UTM for lon/lat GeoJSON)."""
    import rasterio

    with rasterio.open(scene) as ds:
        crs = ds.crs
    if crs is None or dets.crs is None or crs == dets.crs:
        return area
    return _transform_area(area, crs, dets.crs, scene)


def check_models(dates: Sequence[Date]) -> list[str]:
    """Warnings (also logged) for dates whose detections come from different models, naming both."""
    out = []
    first = dates[0]
    m0, h0 = first.dets.meta.get("model") or "", first.dets.meta.get("model_hash") or ""
    for d in dates[1:]:
        m, h = d.dets.meta.get("model") or "", d.dets.meta.get("model_hash") or ""
        differ = (m0 and m and m != m0) or (h0 and h and h != h0)
        if differ:
            msg = (
                f"{d.path} was made by model {m or '?'}{f' ({h[:12]})' if h else ''} but {first.path} by "
                f"{m0 or '?'}{f' ({h0[:12]})' if h0 else ''}: changes may come from the models, not the ground"
            )
            logger.warning("%s", msg)
            out.append(msg)
    return out


def pair_name(before: str, after: str) -> str:
    """Output stem of a pair: ``<before stem>__<after stem>``."""
    return f"{Path(before).name.split('.')[0]}__{Path(after).name.split('.')[0]}"


def write_pair(
    changes: Changes,
    out: Path,
    stem: str,
    *,
    fmt: str = "gpkg",
    before_scene: str | None = None,
    after_scene: str | None = None,
    quicklook: bool = True,
    bands: tuple[int, ...] | None = None,
) -> list[Path]:
    """Every output of one pair: the change layer, the summary as CSV and JSON, the side-by-side quicklook."""
    suffix = {"gpkg": ".gpkg", "geojson": ".geojson"}.get(fmt)
    if suffix is None:
        raise ValueError(f"unknown change layer format {fmt!r}; expected gpkg or geojson")
    written = [
        write_changes(changes, out / f"{stem}.changes{suffix}"),
        write_summary_csv(summary(changes), out / f"{stem}.summary.csv"),
        write_summary_json(changes, out / f"{stem}.summary.json"),
    ]
    if quicklook:
        written.append(
            write_quicklook(
                changes,
                out / f"{stem}.quicklook.jpg",
                before_scene=before_scene,
                after_scene=after_scene,
                bands=bands,
            )
        )
    return written
