"""``detector change``: matching, hysteresis, common ground, misregistration, outputs and bad input.

Dates are generated: objects at known ground positions (metres on EPSG:32633), seen by two scene grids whose
georeferencing differs by a known misregistration, with partial overlap, nodata holes, class changes and
moved objects. Scene-level tests paint objects into small GeoTIFFs and run the pipeline with
:class:`tests._fixtures.BrightObjectPredictor`, so no model file is needed.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from click.testing import CliRunner
from rasterio.crs import CRS

from detector import change as ch
from detector import writers
from detector.detections import Detections
from detector.errors import ChangeError, RasterError
from detector.results import read_results
from tests._fixtures import BrightObjectPredictor, paint_box, write_geotiff

NAMES = ("aircraft", "helicopter", "small-vehicle", "large-vehicle", "transport-aircraft")
UTM33 = CRS.from_epsg(32633)
X0, Y0 = 500000.0, 4000000.0


def dets_at(
    ground: np.ndarray,
    lengths: np.ndarray,
    classes: list[str],
    scores: np.ndarray,
    *,
    origin: tuple[float, float] = (X0, Y0),
    gsd: float = 0.5,
    size: int = 2000,
    shift: tuple[float, float] = (0.0, 0.0),
    crs: CRS | None = UTM33,
    source: str = "date.tif",
    model: str = "m1",
) -> Detections:
    """Axis-aligned detections of objects at ``ground`` (metres, EPSG:32633) on a north-up grid at ``gsd``.

    ``shift`` is the grid's misregistration: every object appears ``shift`` metres (east, north) off.
    """
    ground = np.asarray(ground, float).reshape(-1, 2)
    t = Affine(gsd, 0, origin[0] + shift[0], 0, -gsd, origin[1] + shift[1])
    col = (ground[:, 0] - origin[0]) / gsd
    row = (origin[1] - ground[:, 1]) / gsd
    half_l = np.asarray(lengths, float) / gsd / 2
    xyxy = np.stack([col - half_l, row - half_l / 2, col + half_l, row + half_l / 2], 1)
    return Detections(
        xyxy=xyxy,
        scores=np.asarray(scores, np.float32),
        class_ids=np.array([NAMES.index(c) for c in classes], np.int64),
        class_names=NAMES,
        crs=crs,
        transform=t if crs is not None else None,
        gsd=gsd,
        source=source,
        meta={"width": size, "height": size, "model": model},
    )


def scene_box(origin: tuple[float, float], gsd: float, size: int, shift=(0.0, 0.0)) -> shapely.Polygon:
    x, y = origin[0] + shift[0], origin[1] + shift[1]
    return shapely.box(x, y - size * gsd, x + size * gsd, y)


def random_objects(n: int, rng: np.random.Generator, lo: float = 50, hi: float = 950) -> tuple:
    """``n`` objects spread at least 15 m apart over [lo, hi] m of the before grid."""
    pts: list[np.ndarray] = []
    while len(pts) < n:
        p = rng.uniform(lo, hi, 2)
        if all(np.hypot(*(p - q)) > 15 for q in pts):
            pts.append(p)
    ground = np.array(pts) * [1, -1] + [X0, Y0]
    classes = [["small-vehicle", "large-vehicle", "aircraft"][k % 3] for k in range(n)]
    lengths = np.array([{"small-vehicle": 4.5, "large-vehicle": 9.0, "aircraft": 30.0}[c] for c in classes])
    return ground, lengths, classes


def statuses(changes: ch.Changes) -> dict[str, int]:
    return {s: int((changes.status == s).sum()) for s in ch.STATUSES}


# ----------------------------------------------------------------------------------------------------------
# matching, misregistration, hysteresis
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shift", [(0.0, 0.0), (3.0, -2.0), (-7.0, 6.5), (12.0, 9.0), (-14.0, -14.0)])
def test_stayed_objects_survive_misregistration(shift: tuple[float, float]) -> None:
    rng = np.random.default_rng(1)
    ground, lengths, classes = random_objects(60, rng)
    before = dets_at(ground, lengths, classes, rng.uniform(0.5, 0.9, 60))
    jitter = rng.normal(0, 0.2, ground.shape)
    after = dets_at(ground + jitter, lengths, classes, rng.uniform(0.5, 0.9, 60), shift=shift)
    changes = ch.compare(before, after)
    assert np.hypot(*(np.array(changes.shift_m) - shift)) < 0.3
    assert statuses(changes) == {"stayed": 60, "moved": 0, "departed": 0, "arrived": 0, "not-covered": 0}
    assert np.nanmax(changes.columns["displacement_m"]) < 1.5


def test_misregistration_beyond_the_bound_is_not_found() -> None:
    rng = np.random.default_rng(2)
    ground, lengths, classes = random_objects(40, rng)
    before = dets_at(ground, lengths, classes, np.full(40, 0.8))
    after = dets_at(ground, lengths, classes, np.full(40, 0.8), shift=(30.0, 0.0))
    found = ch.compare(before, after, config=ch.ChangeConfig(max_shift_m=40)).shift_m
    assert found == pytest.approx((30.0, 0.0), abs=0.1)
    default = ch.compare(before, after)  # 20 m bound: the 30 m shift is not considered
    assert abs(default.shift_m[0] - 30.0) > 5


def test_shift_estimate_prefers_the_true_shift_in_rows_of_parked_cars() -> None:
    # three rows of 12 cars, 2.6 m apart: shifts of one car spacing have nearly the same support
    xs, ys = np.meshgrid(np.arange(12) * 2.6, np.arange(3) * 8.0)
    before = np.stack([xs.ravel(), ys.ravel()], 1)
    true = np.array([4.1, -1.3])
    after = before + true + np.random.default_rng(0).normal(0, 0.15, before.shape)
    shift, support = ch.estimate_shift(before, after, max_shift=20, tolerance=1.0)
    assert np.hypot(*(shift - true)) < 0.2
    assert support == 36


def test_departed_and_arrived_with_hysteresis() -> None:
    ground = np.array(
        [[X0 + 100, Y0 - 100], [X0 + 200, Y0 - 100], [X0 + 300, Y0 - 100], [X0 + 400, Y0 - 100]]
    )
    ground = np.concatenate([ground, np.array([[X0 + 100 + 30 * k, Y0 - 500] for k in range(8)])])
    lengths = np.full(len(ground), 4.5)
    classes = ["small-vehicle"] * len(ground)
    # 0: high before, low-but-present after (flicker) -> stayed
    # 1: high before, nothing after -> departed
    # 2: high before, only a 0.05 detection after (below low) -> departed
    # 3: below mid before (0.2 < mid < high), nothing after -> not an object, no record
    before = dets_at(
        ground[[0, 1, 2, 3, *range(4, 12)]], lengths[:12], classes[:12], [0.8, 0.8, 0.8, 0.2] + [0.8] * 8
    )
    after_ground = np.concatenate([ground[[0, 2]], ground[4:], [[X0 + 600, Y0 - 300], [X0 + 700, Y0 - 300]]])
    after_scores = [0.15, 0.05] + [0.8] * 8 + [0.9, 0.2]  # arrival at 0.9; a 0.2 blip is not an arrival
    after = dets_at(
        after_ground, np.full(len(after_ground), 4.5), ["small-vehicle"] * len(after_ground), after_scores
    )
    changes = ch.compare(before, after)
    got = {
        (round(float(x) - X0), round(Y0 - float(y))): s
        for x, y, s in zip(changes.columns["x"], changes.columns["y"], changes.status, strict=True)
    }
    assert got[(100, 100)] == "stayed"
    assert got[(200, 100)] == "departed"
    assert got[(300, 100)] == "departed"
    assert (400, 100) not in got
    assert got[(600, 300)] == "arrived"
    assert (700, 300) not in got
    assert changes.meta["dropped"] == {"before": 1, "after": 2}  # 0.2 before; 0.05 and 0.2 after
    stayed = changes[changes.status == "stayed"]
    flicker = stayed[np.isclose(stayed.columns["x"], X0 + 100) & np.isclose(stayed.columns["y"], Y0 - 100)]
    assert flicker.columns["score_before"][0] == pytest.approx(0.8)
    assert flicker.columns["score_after"][0] == pytest.approx(0.15)
    assert flicker.columns["id_before"][0] == 0 and flicker.columns["id_after"][0] == 0


def _mid_scene(shift: tuple[float, float] = (6.0, -4.0)) -> tuple:
    """A 5 x 4 grid of confident cars seen on both dates (they fix the shift), and one probe per row below.

    Probes (small vehicles at y = 300 m, 40 m apart) and what the after date has at each:
    0: 0.33 before, nothing after                        -> departed (mid score, other date clear)
    1: 0.33 before, 0.15 after at the same place         -> a flicker: no record
    2: 0.33 before, 0.12 after 1 m beside its footprint  -> not clear: no record
    3: 0.33 before, a helicopter at 0.5 on its place     -> departed (not a compatible class)
    4: 0.2 before (below mid), nothing after            -> no record
    5: nothing before, 0.33 after                        -> arrived
    6: 0.12 before, 0.33 after at the same place         -> no record
    7: 0.33 before, a parked car 6 m away on both dates  -> departed (the neighbour is outside --clear)
    """
    grid = np.array([[X0 + 100 + 20 * i, Y0 - 100 - 20 * j] for i in range(5) for j in range(4)], float)
    probe = np.array([[X0 + 100 + 40 * k, Y0 - 300] for k in range(8)], float)
    neighbour = probe[7] + [6.0, 0.0]
    b_xy = np.concatenate([grid, probe[[0, 1, 2, 3, 4, 6, 7]], [neighbour]])
    b_cls = ["small-vehicle"] * len(b_xy)
    b_scores = [0.8] * 20 + [0.33, 0.33, 0.33, 0.33, 0.2, 0.12, 0.33, 0.8]
    a_xy = np.concatenate([grid, probe[[1]], probe[[2]] + [0.0, 2.0], probe[[3, 5, 6]], [neighbour]])
    a_cls = ["small-vehicle"] * 22 + ["helicopter"] + ["small-vehicle"] * 3
    a_scores = [0.8] * 20 + [0.15, 0.12, 0.5, 0.33, 0.33, 0.8]
    before = dets_at(b_xy, np.full(len(b_xy), 4.5), b_cls, b_scores)
    after = dets_at(a_xy, np.full(len(a_xy), 4.5), a_cls, a_scores, shift=shift)
    return before, after, probe


def _status_at(changes: ch.Changes, xy: np.ndarray) -> str | None:
    d = np.hypot(changes.columns["x"] - xy[0], changes.columns["y"] - xy[1])
    hit = np.nonzero(d < 1.0)[0]
    return None if len(hit) == 0 else str(changes.status[hit[0]])


def test_mid_score_changes_need_a_clear_other_date() -> None:
    before, after, probe = _mid_scene()
    changes = ch.compare(before, after)
    assert np.hypot(*(np.array(changes.shift_m) - (6.0, -4.0))) < 0.3
    got = [_status_at(changes, p) for p in probe]
    assert got == ["departed", None, None, "departed", None, "arrived", None, "departed"]
    assert changes.meta["mid_changes"] == {"before": 3, "after": 1}
    assert (changes.meta["high"], changes.meta["mid"], changes.meta["low"]) == (0.4, 0.3, 0.1)
    assert changes.meta["clear_radius_m"] == pytest.approx(3.0)
    assert statuses(changes)["stayed"] == 21  # the grid and the neighbour
    # mid = high switches the rule off: only the confident helicopter arrives (it has nothing before)
    off = ch.compare(before, after, config=ch.ChangeConfig(mid=0.4))
    assert [_status_at(off, p) for p in probe] == [None, None, None, "arrived", None, None, None, None]
    assert off.meta["mid_changes"] == {"before": 0, "after": 0}


def test_mid_score_flicker_is_no_change_under_misregistration() -> None:
    rng = np.random.default_rng(7)
    ground, lengths, classes = random_objects(50, rng)
    before = dets_at(ground, lengths, classes, rng.uniform(0.25, 0.4, 50))
    flicker = rng.uniform(0.1, 0.4, 50)  # every object, both dates, between low and high
    after = dets_at(ground + rng.normal(0, 0.3, ground.shape), lengths, classes, flicker, shift=(-9.0, 5.0))
    conf = np.concatenate([before.scores, after.scores])
    assert conf.min() >= 0.1 and conf.max() < 0.4
    changes = ch.compare(before, after, config=ch.ChangeConfig(shift=(-9.0, 5.0)))
    assert not np.isin(changes.status, ["departed", "arrived", "moved"]).any()


def test_mid_score_needs_the_whole_bound_when_no_shift_is_found() -> None:
    # two objects only: no shift can be estimated, so the after date must be clear within max_shift_m
    before = dets_at(
        np.array([[X0 + 300, Y0 - 300], [X0 + 600, Y0 - 600]]),
        [4.5, 4.5],
        ["small-vehicle"] * 2,
        [0.33, 0.33],
    )
    after = dets_at(np.array([[X0 + 308, Y0 - 300]]), [4.5], ["small-vehicle"], [0.12])
    changes = ch.compare(before, after)
    assert changes.meta["shift_method"] == "none"
    assert changes.meta["clear_radius_m"] == pytest.approx(20.0)
    assert _status_at(changes, np.array([X0 + 300, Y0 - 300])) is None  # 8 m off might be misregistration
    assert _status_at(changes, np.array([X0 + 600, Y0 - 600])) == "departed"
    known = ch.compare(before, after, config=ch.ChangeConfig(shift=(0.0, 0.0)))
    assert _status_at(known, np.array([X0 + 300, Y0 - 300])) == "departed"


def test_thresholds_are_validated() -> None:
    for kw in ({"mid": 0.5}, {"mid": 0.05}, {"low": 0.3, "mid": 0.2}):
        with pytest.raises(ValueError, match="low <= mid <= high"):
            ch.ChangeConfig(**kw)
    with pytest.raises(ValueError, match="clear_m"):
        ch.ChangeConfig(clear_m=-1)


def test_cli_threshold_defaults_are_the_config_defaults() -> None:
    from detector.cli.change import change

    defaults = {p.name: p.default for p in change.params}
    cfg = ch.ChangeConfig()
    assert (defaults["high"], defaults["mid"], defaults["low"], defaults["clear_m"]) == (
        cfg.high,
        cfg.mid,
        cfg.low,
        cfg.clear_m,
    )
    assert (defaults["pixel_ratio"], defaults["pixel_same"]) == (cfg.pixel_ratio, cfg.pixel_same)


def test_class_compatibility() -> None:
    ground = np.array([[X0 + 100 + 60 * k, Y0 - 200] for k in range(12)], float)
    before_cls = ["small-vehicle", "aircraft", "transport-aircraft", "aircraft"] + ["large-vehicle"] * 8
    after_cls = ["large-vehicle", "helicopter", "aircraft", "transport-aircraft"] + ["large-vehicle"] * 8
    lengths = np.array([6.0, 20.0, 30.0, 30.0] + [9.0] * 8)
    before = dets_at(ground, lengths, before_cls, np.full(12, 0.8))
    after = dets_at(ground, lengths, after_cls, np.full(12, 0.8))
    c = ch.compare(before, after)
    rows = list(zip(c.status, c.columns["class_before"], c.columns["class_after"], strict=True))
    assert ("stayed", "small-vehicle", "large-vehicle") in rows  # vehicles: one group
    assert ("stayed", "transport-aircraft", "aircraft") in rows  # aircraft kinds: one group
    assert ("stayed", "aircraft", "transport-aircraft") in rows
    assert ("departed", "aircraft", "") in rows  # an aircraft never matches a helicopter
    assert ("arrived", "", "helicopter") in rows
    # a custom table: vehicles apart
    groups = {
        "small": ["small-vehicle"],
        "large": ["large-vehicle"],
        "air": ["aircraft", "transport-aircraft"],
    }
    c2 = ch.compare(before, after, config=ch.ChangeConfig(groups=groups))
    assert ("departed", "small-vehicle", "") in list(
        zip(c2.status, c2.columns["class_before"], c2.columns["class_after"], strict=True)
    )


def test_moved_objects() -> None:
    rng = np.random.default_rng(3)
    ground, lengths, classes = random_objects(30, rng, 100, 900)
    ground[:, 0] -= 0  # keep
    cls = ["aircraft"] * 30
    lengths = np.full(30, 30.0)
    before = dets_at(ground, lengths, cls, np.full(30, 0.8))
    moved_to = ground.copy()
    moved_to[0] += [18.0, 0.0]  # towed to the next stand: moved
    far = ground[1] + [0.0, 200.0]  # 200 m away: departed and arrived, not a move
    moved_to[1] = far
    after = dets_at(moved_to, lengths, cls, np.full(30, 0.8), shift=(4.0, 3.0))
    c = ch.compare(before, after)
    counts = statuses(c)
    assert counts["moved"] == 1
    moved = c[c.status == "moved"]
    assert moved.columns["displacement_m"][0] == pytest.approx(18.0, abs=0.5)
    assert counts["departed"] >= 1 and counts["arrived"] >= 1
    assert counts["stayed"] == 28
    none = ch.compare(before, after, config=ch.ChangeConfig(move_radius_m=0))
    assert statuses(none)["moved"] == 0


def test_partial_overlap_and_nodata_hole_are_not_covered() -> None:
    rng = np.random.default_rng(4)
    ground, lengths, classes = random_objects(80, rng, 20, 980)
    before = dets_at(ground, lengths, classes, np.full(80, 0.8))
    # the after grid starts 400 m east (so half the before scene is outside it) and has a nodata hole
    origin = (X0 + 400, Y0)
    shift = (5.0, -3.0)
    area = scene_box(origin, 0.5, 2000, shift)
    hole = shapely.box(X0 + 600 + shift[0], Y0 - 600 + shift[1], X0 + 800 + shift[0], Y0 - 400 + shift[1])
    area_with_hole = area.difference(hole)
    px = (ground[:, 0] - X0 >= 400) & ~(
        (ground[:, 0] > X0 + 600)
        & (ground[:, 0] < X0 + 800)
        & (ground[:, 1] > Y0 - 600)
        & (ground[:, 1] < Y0 - 400)
    )
    seen = ground[px]
    after = dets_at(
        seen,
        lengths[px],
        [c for c, k in zip(classes, px, strict=True) if k],
        np.full(len(seen), 0.8),
        origin=origin,
        shift=shift,
    )
    c = ch.compare(before, after, before_area=scene_box((X0, Y0), 0.5, 2000), after_area=area_with_hole)
    assert statuses(c)["departed"] == 0 and statuses(c)["arrived"] == 0
    assert statuses(c)["stayed"] + statuses(c)["not-covered"] == 80
    nc = c[c.status == "not-covered"]
    inside_hole = (nc.columns["x"] > X0 + 600) & (nc.columns["x"] < X0 + 800)
    assert inside_hole.any()  # objects in the hole are not-covered, never departed
    assert c.common_area.area < 0.6 * 1000 * 1000


def test_different_gsd_and_crs() -> None:
    rng = np.random.default_rng(5)
    ground, lengths, classes = random_objects(40, rng)
    before = dets_at(ground, lengths, classes, np.full(40, 0.8))
    # after: the same ground, a 0.8 m grid in Web Mercator, misregistered by (6, -2) m
    from rasterio.warp import transform as warp

    merc = CRS.from_epsg(3857)
    gx, gy = warp(UTM33, merc, (ground[:, 0] + 6).tolist(), (ground[:, 1] - 2).tolist())
    ox, oy = warp(UTM33, merc, [X0], [Y0])
    k = 1 / math.cos(math.radians(36.1))  # Mercator scale near 36 N: 0.8 m on the ground is ~0.99 m
    gsd = 0.8 * k
    t = Affine(gsd, 0, ox[0] - 50, 0, -gsd, oy[0] + 50)
    cols, rows = (np.array(gx) - t.c) / gsd, (t.f - np.array(gy)) / gsd
    half = lengths / 0.8 / 2
    after = Detections(
        xyxy=np.stack([cols - half, rows - half / 2, cols + half, rows + half / 2], 1),
        scores=np.full(40, 0.8, np.float32),
        class_ids=np.array([NAMES.index(c) for c in classes]),
        class_names=NAMES,
        crs=merc,
        transform=t,
        gsd=0.8,
        meta={"width": 2000, "height": 2000},
    )
    c = ch.compare(before, after)
    assert statuses(c)["stayed"] == 40
    assert np.hypot(*(np.array(c.shift_m) - (6, -2))) < 0.5
    assert c.meta["gsd_before"] == 0.5 and c.meta["gsd_after"] == 0.8


def test_geographic_before_date_works_in_utm() -> None:
    rng = np.random.default_rng(6)
    ground, lengths, classes = random_objects(30, rng)
    from rasterio.warp import transform as warp

    wgs = CRS.from_epsg(4326)
    lon, lat = warp(UTM33, wgs, ground[:, 0].tolist(), ground[:, 1].tolist())
    deg = 0.5 / 111000
    t = Affine(deg, 0, min(lon) - 0.001, 0, -deg, max(lat) + 0.001)
    cols, rows = (np.array(lon) - t.c) / deg, (t.f - np.array(lat)) / deg
    half = lengths / 0.5 / 2
    before = Detections(
        xyxy=np.stack([cols - half, rows - half / 2, cols + half, rows + half / 2], 1),
        scores=np.full(30, 0.8, np.float32),
        class_ids=np.array([NAMES.index(c) for c in classes]),
        class_names=NAMES,
        crs=wgs,
        transform=t,
        gsd=0.5,
        meta={"width": 3000, "height": 3000},
    )
    after = dets_at(ground, lengths, classes, np.full(30, 0.8), origin=(X0 - 100, Y0 + 100), size=2400)
    c = ch.compare(before, after)
    assert c.crs.to_epsg() == 32633
    assert statuses(c)["stayed"] == 30


def test_large_scenes_match_sparsely() -> None:
    rng = np.random.default_rng(7)
    n = 6000  # a dense matrix of all pairs would be 36M cells per column
    ground = rng.uniform(0, 5000, (n, 2)) * [1, -1] + [X0, Y0]
    cls = ["small-vehicle"] * n
    before = dets_at(ground, np.full(n, 4.5), cls, np.full(n, 0.8), size=10000)
    after = dets_at(ground, np.full(n, 4.5), cls, np.full(n, 0.8), size=10000, shift=(2.0, 1.0))
    c = ch.compare(before, after, config=ch.ChangeConfig(move_radius_m=0))
    assert statuses(c)["stayed"] > 0.95 * n


# ----------------------------------------------------------------------------------------------------------
# summary and writers
# ----------------------------------------------------------------------------------------------------------


def _mixed_changes() -> ch.Changes:
    rng = np.random.default_rng(8)
    ground, lengths, classes = random_objects(30, rng)
    before = dets_at(ground, lengths, classes, np.full(30, 0.8), source="before.tif")
    keep = np.ones(30, bool)
    keep[:3] = False  # 3 departed
    new = np.array([[X0 + 500, Y0 - 20], [X0 + 520, Y0 - 980]])
    after = dets_at(
        np.concatenate([ground[keep], new]),
        np.concatenate([lengths[keep], [4.5, 9.0]]),
        [c for c, k in zip(classes, keep, strict=True) if k] + ["small-vehicle", "large-vehicle"],
        np.full(keep.sum() + 2, 0.7),
        shift=(2.0, 2.0),
        source="after.tif",
    )
    return ch.compare(before, after)


def test_summary_counts() -> None:
    c = _mixed_changes()
    rows = {r["class"]: r for r in ch.summary(c)}
    total = rows["total"]
    assert total["departed"] == 3 and total["arrived"] == 2
    assert total["before"] == total["stayed"] + total["moved"] + total["departed"]
    assert total["after"] == total["stayed"] + total["moved"] + total["arrived"]
    assert rows["small-vehicle"]["arrived"] == 1 and rows["large-vehicle"]["arrived"] == 1
    assert sum(r["departed"] for k, r in rows.items() if k != "total") == 3
    text = ch.format_table(ch.summary(c))
    assert text.splitlines()[0].split() == list(ch.SUMMARY_COLUMNS)


def test_writers(tmp_path: Path) -> None:
    c = _mixed_changes()
    gpkg = ch.write_changes(c, tmp_path / "c.gpkg")
    from pyogrio.raw import read

    meta, _, geom, fields = read(str(gpkg), layer=ch.CHANGE_LAYER)
    cols = dict(zip(meta["fields"], fields, strict=True))
    assert len(geom) == len(c)
    assert sorted(set(cols["status"])) == sorted(set(c.status.tolist()))
    for k in ("class", "score_before", "score_after", "displacement_m", "length_m", "heading_deg"):
        assert k in cols
    assert CRS.from_user_input(meta["crs"]).to_epsg() == 32633

    gj = ch.write_changes(c, tmp_path / "c.geojson")
    doc = json.loads(gj.read_text())
    assert len(doc["features"]) == len(c)
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0]
    assert 14 < lon < 16 and 35 < lat < 37  # lon/lat, lon first
    assert {f["properties"]["status"] for f in doc["features"]} == set(c.status.tolist())

    rows = ch.summary(c)
    with open(ch.write_summary_csv(rows, tmp_path / "s.csv"), newline="") as fh:
        read_rows = list(csv.DictReader(fh))
    assert [r["class"] for r in read_rows] == [r["class"] for r in rows]
    assert int(read_rows[-1]["departed"]) == 3
    js = json.loads(ch.write_summary_json(c, tmp_path / "s.json").read_text())
    assert js["summary"][-1]["arrived"] == 2
    assert js["shift_m"]["east"] == pytest.approx(2.0, abs=0.3)
    assert js["gsd_before"] == 0.5

    with pytest.raises(ChangeError.__mro__[1]):  # WriteError, a DetectorError
        ch.write_changes(c, tmp_path / "c.txt")


def test_quicklook_side_by_side(tmp_path: Path) -> None:
    from PIL import Image

    c = _mixed_changes()
    # scenes for the two panels (the pixel grids of the dates are 2000 px; draw on smaller stand-ins)
    a = write_geotiff(tmp_path / "a.tif", np.full((3, 200, 200), 90, np.uint8))
    out = ch.write_quicklook(c, tmp_path / "q.png", before_scene=a, after_scene=None, max_size=200)
    img = np.asarray(Image.open(out))
    assert img.shape[1] > 200 + 16  # two panels
    colours = {tuple(v) for v in img.reshape(-1, 3)[::7]}
    assert ch.STATUS_COLOURS["departed"] in colours or ch.STATUS_COLOURS["stayed"] in colours


@pytest.mark.parametrize("matplotlib_present", [True, False])
def test_counts_per_date_and_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, matplotlib_present: bool
) -> None:
    from PIL import Image

    rng = np.random.default_rng(9)
    ground, lengths, classes = random_objects(20, rng)
    dates = [
        dets_at(ground[: 10 + 5 * k], lengths[: 10 + 5 * k], classes[: 10 + 5 * k], np.full(10 + 5 * k, 0.8))
        for k in range(3)
    ]
    rows = ch.counts_per_date(dates, ["d1", "d2", "d3"])
    assert [sum(v for k, v in r.items() if k != "date") for r in rows] == [10, 15, 20]
    if not matplotlib_present:
        import builtins

        real = builtins.__import__

        def no_mpl(name: str, *a: object, **k: object) -> object:
            if name.startswith("matplotlib"):
                raise ImportError(name)
            return real(name, *a, **k)

        monkeypatch.setattr(builtins, "__import__", no_mpl)
    png = ch.write_counts_plot(rows, tmp_path / "counts.png")
    assert Image.open(png).size[0] >= 300


# ----------------------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------------------


def test_dates_that_do_not_overlap() -> None:
    rng = np.random.default_rng(10)
    ground, lengths, classes = random_objects(10, rng)
    before = dets_at(ground, lengths, classes, np.full(10, 0.8), source="a.tif")
    after = dets_at(
        ground + [5000, 0], lengths, classes, np.full(10, 0.8), origin=(X0 + 5000, Y0), source="b.tif"
    )
    with pytest.raises(ChangeError, match=r"b\.tif: does not overlap a\.tif"):
        ch.compare(before, after)


def test_crs_that_cannot_be_transformed() -> None:
    rng = np.random.default_rng(11)
    ground, lengths, classes = random_objects(10, rng)
    before = dets_at(ground, lengths, classes, np.full(10, 0.8), source="a.tif")
    local = CRS.from_wkt(
        'LOCAL_CS["site grid",LOCAL_DATUM["site",0],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
    )
    after = dets_at(ground, lengths, classes, np.full(10, 0.8), crs=local, source="b.tif")
    with pytest.raises(ChangeError, match=r"b\.tif: cannot transform"):
        ch.compare(before, after)


def test_no_georeferencing_unless_same_grid() -> None:
    rng = np.random.default_rng(12)
    ground, lengths, classes = random_objects(20, rng)
    before = dets_at(ground, lengths, classes, np.full(20, 0.8), crs=None, source="a.png")
    after_ground = ground.copy()
    after_ground[0] += [100, 0]  # moved 100 m: departed + arrived
    after = dets_at(after_ground, lengths, classes, np.full(20, 0.8), crs=None, source="b.png", shift=(0, 0))
    with pytest.raises(ChangeError, match=r"a\.png: has no georeferencing.*--same-grid"):
        ch.compare(before, after)
    no_gsd = dets_at(ground, lengths, classes, np.full(20, 0.8), crs=None, source="a.png")
    from dataclasses import replace

    with pytest.raises(ChangeError, match="--gsd"):
        ch.compare(replace(no_gsd, gsd=None), replace(after, gsd=None), same_grid=True)
    c = ch.compare(before, after, same_grid=True)
    assert c.crs is None
    assert statuses(c)["stayed"] == 19 and statuses(c)["departed"] == 1 and statuses(c)["arrived"] == 1
    doc = ch.to_geojson(c)
    assert "image pixels" in doc["coordinates"]


def test_models_that_differ_are_named(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(13)
    ground, lengths, classes = random_objects(5, rng)
    a = dets_at(ground, lengths, classes, np.full(5, 0.8), model="detector-cpu")
    b = dets_at(ground, lengths, classes, np.full(5, 0.8), model="yolov8n-obb")
    dates = [ch.Date("a.gpkg", a, None, None), ch.Date("b.gpkg", b, None, None)]
    with caplog.at_level(logging.WARNING, logger="detector.change"):
        msgs = ch.check_models(dates)
    assert len(msgs) == 1 and "detector-cpu" in msgs[0] and "yolov8n-obb" in msgs[0] and "b.gpkg" in msgs[0]
    assert ch.check_models([dates[0], ch.Date("c.gpkg", a, None, None)]) == []


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_corrupt_results_file(tmp_path: Path, suffix: str) -> None:
    p = tmp_path / f"bad{suffix}"
    p.write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(RasterError, match=r"bad\.(gpkg|geojson): cannot read"):
        read_results(p)


def test_a_geojson_that_is_not_ours(tmp_path: Path) -> None:
    p = tmp_path / "other.geojson"
    p.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": "x"},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]],
                        },
                    }
                ],
            }
        )
    )
    with pytest.raises(ChangeError, match=r"other\.geojson: not an output of detector predict"):
        read_results(p)


# ----------------------------------------------------------------------------------------------------------
# earlier outputs read back, valid areas, phase correlation
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["gpkg", "geojson"])
def test_results_round_trip(tmp_path: Path, fmt: str) -> None:
    from detector import georef

    rng = np.random.default_rng(14)
    ground, lengths, classes = random_objects(12, rng)
    d = dets_at(ground, lengths, classes, rng.uniform(0.1, 0.9, 12))
    back = read_results(writers.write(d, tmp_path / f"d.{fmt}", fmt))
    assert back.class_name.tolist() == d.class_name.tolist()
    assert np.allclose(back.scores, d.scores, atol=1e-4)
    assert np.allclose(back.xyxy, d.xyxy, atol=0.01)
    assert back.gsd == pytest.approx(0.5, rel=1e-3)
    c0 = georef.centres(d)
    c1 = georef.centres(back)
    if back.crs != d.crs:
        from rasterio.warp import transform as warp

        xs, ys = warp(back.crs, d.crs, c1[:, 0].tolist(), c1[:, 1].tolist())
        c1 = np.stack([xs, ys], 1)
    assert np.abs(c0 - c1).max() < 0.05
    # the read-back date compares with the original: the same objects, in the same places
    area = scene_box((X0, Y0), 0.5, 2000)
    back_area = area if back.crs == d.crs else ch._transform_area(area, d.crs, back.crs, "test")
    c = ch.compare(d, back, before_area=area, after_area=back_area)
    assert statuses(c)["stayed"] == int((d.scores >= 0.4).sum())
    assert statuses(c)["departed"] == statuses(c)["arrived"] == 0
    assert np.nanmax(c.columns["displacement_m"]) < 0.1


def test_valid_area_follows_nodata(tmp_path: Path) -> None:
    data = np.full((3, 256, 256), 120, np.uint8)
    data[:, :, :64] = 0  # a nodata band on the left
    p = write_geotiff(tmp_path / "n.tif", data, nodata=0)
    area = ch.valid_area(p)
    with rasterio.open(p) as ds:
        full = shapely.box(*ds.bounds)
    assert area.area == pytest.approx(full.area * 0.75, rel=0.02)
    assert area.bounds[0] == pytest.approx(500000 + 64 * 0.5, abs=0.6)
    with pytest.raises(RasterError, match="missing.tif: file not found"):
        ch.valid_area(tmp_path / "missing.tif")


def _texture(rows: int, cols: int, seed: int) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.normal(0, 1, (rows, cols)), 3)
    base = (base - base.min()) / (base.max() - base.min()) * 200 + 20
    return np.repeat(base[None].astype(np.uint8), 3, axis=0)


def test_phase_correlation_finds_the_shift(tmp_path: Path) -> None:
    img = _texture(400, 400, 0)
    g = 0.5
    a = write_geotiff(tmp_path / "a.tif", img, transform=Affine(g, 0, X0, 0, -g, Y0))
    # B: the same ground offset by 40 px, brighter, georeferenced 6.5 m east and 3 m south of the truth
    crop = np.clip(img[:, 40:, 40:].astype(int) * 1.15 + 8, 0, 255).astype(np.uint8)
    e = (6.5, -3.0)
    b = write_geotiff(tmp_path / "b.tif", crop, transform=Affine(g, 0, X0 + 20 + e[0], 0, -g, Y0 - 20 + e[1]))
    area = ch.valid_area(a).intersection(ch.valid_area(b))
    shift, strength = ch.phase_shift(a, b, area, UTM33, max_shift_m=20)
    assert np.hypot(*(shift - e)) < 0.3
    assert strength > ch.PHASE_MIN_STRENGTH


# ----------------------------------------------------------------------------------------------------------
# scenes through the pipeline, and the command
# ----------------------------------------------------------------------------------------------------------


def _scene_pair(tmp_path: Path, e: tuple[float, float]) -> tuple[Path, Path]:
    """Two textured GeoTIFFs with white 'aircraft': B lost one, gained one, and is misregistered by ``e``."""
    g = 0.5
    img = _texture(512, 512, 1) // 2  # dark texture so the fake model sees only the painted objects
    spots = [(60, 60), (200, 80), (340, 90), (90, 300), (260, 260), (400, 380), (150, 430)]
    a = img.copy()
    for x, y in spots:
        paint_box(a, x, y, x + 24, y + 10)
    b = img.copy()
    for x, y in spots[1:]:
        paint_box(b, x, y, x + 24, y + 10)
    paint_box(b, 420, 200, 444, 210)  # arrived
    pa = write_geotiff(tmp_path / "2020.tif", a, transform=Affine(g, 0, X0, 0, -g, Y0))
    pb = write_geotiff(tmp_path / "2021.tif", b, transform=Affine(g, 0, X0 + e[0], 0, -g, Y0 + e[1]))
    return pa, pb


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> dict:
    from detector.pipeline import Detector

    seen: dict = {}

    def load(cls: type, path: object = None, **kwargs: object) -> Detector:
        seen.update(path=path, **kwargs)
        return Detector(BrightObjectPredictor(imgsz=256))

    monkeypatch.setattr(Detector, "load", classmethod(load))
    return seen


def _run(*args: object) -> object:
    from detector.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_on_scenes(tmp_path: Path, fake_model: dict) -> None:
    a, b = _scene_pair(tmp_path, (4.0, -2.5))
    out = tmp_path / "out"
    r = _run("change", a, b, "-o", out)
    assert r.exit_code == 0, r.output
    assert fake_model["conf"] == 0.1  # scenes are predicted at the low threshold
    stem = "2020__2021"
    for suffix in (".changes.gpkg", ".summary.csv", ".summary.json", ".quicklook.jpg"):
        assert (out / f"{stem}{suffix}").is_file(), suffix
    js = json.loads((out / f"{stem}.summary.json").read_text())
    total = js["summary"][-1]
    assert (total["departed"], total["arrived"], total["stayed"]) == (1, 1, 6)
    assert js["shift_m"]["east"] == pytest.approx(4.0, abs=0.5)
    assert (js["high"], js["mid"], js["low"], js["clear_m"]) == (0.4, 0.3, 0.1, 3.0)  # thresholds recorded
    assert js["shift_m"]["north"] == pytest.approx(-2.5, abs=0.5)
    assert "departed" in r.output and "shift" in r.output


def test_cli_mid_outside_the_thresholds(tmp_path: Path, fake_model: dict) -> None:
    a, b = _scene_pair(tmp_path, (0.0, 0.0))
    r = _run("change", a, b, "-o", tmp_path / "out", "--mid", "0.5")
    assert r.exit_code == 2
    assert "--mid 0.5 must lie between --low 0.1 and --high 0.4" in r.output
    assert not (tmp_path / "out").exists()


def test_cli_on_earlier_outputs_and_more_dates(tmp_path: Path) -> None:
    rng = np.random.default_rng(15)
    ground, lengths, classes = random_objects(20, rng)
    paths = []
    for k in range(3):
        d = dets_at(
            ground[: 14 + 3 * k],
            lengths[: 14 + 3 * k],
            classes[: 14 + 3 * k],
            np.full(14 + 3 * k, 0.8),
            shift=(k * 2.0, 0.0),
            source=f"d{k}.tif",
        )
        paths.append(
            writers.write(
                d, tmp_path / f"d{k}.{'gpkg' if k != 1 else 'geojson'}", "gpkg" if k != 1 else "geojson"
            )
        )
    # no scene footprint recorded and no scene beside them: the command says so
    r = _run("change", *paths, "-o", tmp_path / "out")
    if r.exit_code != 0:
        assert "records no scene footprint" in r.stderr or "footprint" in r.stderr
        # give the scenes (same names, beside the outputs) and rerun
        for k in range(3):
            write_geotiff(
                tmp_path / f"d{k}.tif",
                np.full((3, 64, 64), 90, np.uint8),
                transform=Affine(1000 / 64, 0, X0 + 2.0 * k, 0, -1000 / 64, Y0),
            )
        r = _run("change", *paths, "-o", tmp_path / "out", "--no-quicklook")
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    assert (out / "d0__d1.changes.gpkg").is_file() and (out / "d1__d2.changes.gpkg").is_file()
    with open(out / "counts.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [sum(int(v) for k, v in r.items() if k != "date") for r in rows] == [14, 17, 20]
    assert (out / "counts.png").is_file()


@pytest.mark.parametrize("problem", ["no-overlap", "no-georef", "corrupt", "missing"])
def test_cli_bad_input_is_one_line(tmp_path: Path, fake_model: dict, problem: str) -> None:
    a, b = _scene_pair(tmp_path, (0.0, 0.0))
    if problem == "no-overlap":
        img = _texture(64, 64, 2)
        b = write_geotiff(tmp_path / "far.tif", img, transform=Affine(0.5, 0, X0 + 10000, 0, -0.5, Y0))
        needle = "far.tif: does not overlap"
    elif problem == "no-georef":
        b = tmp_path / "plain.png"
        with rasterio.open(b, "w", driver="PNG", width=64, height=64, count=3, dtype="uint8") as dst:
            dst.write(_texture(64, 64, 3))
        needle = "plain.png: has no georeferencing"
    elif problem == "corrupt":
        b = tmp_path / "broken.tif"
        b.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
        needle = "broken.tif"
    else:
        b = tmp_path / "nothere.tif"
        needle = "nothere.tif: file not found"
    r = _run("change", a, b, "-o", tmp_path / "out")
    assert r.exit_code == 1, r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], r.stderr
    assert "Traceback" not in r.output


def test_cli_same_grid(tmp_path: Path, fake_model: dict) -> None:
    imgs = []
    for k, spots in enumerate([[(20, 20), (100, 40), (40, 150)], [(20, 20), (100, 40), (160, 160)]]):
        data = _texture(256, 256, 4) // 2
        for x, y in spots:
            paint_box(data, x, y, x + 24, y + 10)
        p = tmp_path / f"grid{k}.png"
        with rasterio.open(p, "w", driver="PNG", width=256, height=256, count=3, dtype="uint8") as dst:
            dst.write(data)
        imgs.append(p)
    r = _run("change", *imgs, "-o", tmp_path / "out", "--same-grid", "--gsd", "0.5")
    assert r.exit_code == 0, r.output
    js = json.loads((tmp_path / "out" / "grid0__grid1.summary.json").read_text())
    assert js["crs"] == "pixels"
    assert (js["summary"][-1]["stayed"], js["summary"][-1]["departed"], js["summary"][-1]["arrived"]) == (
        2,
        1,
        1,
    )


def test_results_without_provenance_recover_the_georeferencing(tmp_path: Path) -> None:
    rng = np.random.default_rng(16)
    ground, lengths, classes = random_objects(8, rng)
    d = dets_at(ground, lengths, classes, np.full(8, 0.7))
    p = writers.write(d, tmp_path / "old.geojson", "geojson")
    doc = json.loads(p.read_text())
    doc.pop(writers.PROVENANCE_KEY, None)  # an output written before provenance existed
    p.write_text(json.dumps(doc))
    back = read_results(p)
    assert back.crs.to_epsg() == 32633  # lon/lat footprints taken to their UTM zone
    assert back.transform.a == pytest.approx(0.5, rel=1e-3) and back.transform.e == pytest.approx(
        -0.5, rel=1e-3
    )
    assert "footprint" not in back.meta


def test_cli_warns_about_different_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(17)
    ground, lengths, classes = random_objects(10, rng)
    paths = []
    for k, model in enumerate(["detector-cpu", "yolov8n-obb"]):
        d = dets_at(ground, lengths, classes, np.full(10, 0.8), model=model, source=f"s{k}.tif")
        paths.append(writers.write(d, tmp_path / f"s{k}.gpkg", "gpkg"))
    r = _run("change", *paths, "-o", tmp_path / "out", "--no-quicklook")
    assert r.exit_code == 0, r.output
    warning = [line for line in r.stderr.splitlines() if "model" in line]
    assert warning and "detector-cpu" in warning[0] and "yolov8n-obb" in warning[0], r.stderr


def test_cross_class_duplicates_are_one_object() -> None:
    ground = np.array([[X0 + 100 + 40 * k, Y0 - 300] for k in range(10)], float)
    lengths = np.full(10, 7.0)
    cls = ["large-vehicle"] * 10
    before = dets_at(ground, lengths, cls, np.full(10, 0.8))
    # after: the first object also comes out as a small vehicle, on the same footprint
    after = dets_at(
        np.concatenate([ground, ground[:1]]), np.full(11, 7.0), cls + ["small-vehicle"], [0.8] * 10 + [0.6]
    )
    c = ch.compare(before, after)
    assert statuses(c)["arrived"] == 0 and statuses(c)["stayed"] == 10
    assert c.meta["duplicates"] == {"before": 0, "after": 1}
    assert set(c.columns["id_after"].tolist()) == set(range(10))  # ids index the detections as given


# ------------------------------------------------------------------------------------------------ zoom by GSD


def test_change_zooms_only_satellite_resolution() -> None:
    assert ch.change_zoom(None) == 1.0 and ch.change_zoom(0.12) == 1.0 and ch.change_zoom(0.29) == 1.0
    assert ch.change_zoom(ch.CHANGE_ZOOM_GSD_M) == ch.CHANGE_ZOOM == 1.25 and ch.change_zoom(0.5) == 1.25


def test_load_date_zooms_a_coarse_scene_and_leaves_a_fine_one(tmp_path: Path) -> None:
    from detector.pipeline import Detector
    from detector.tiling import TileConfig

    image = np.full((3, 400, 400), 40, np.uint8)
    paint_box(image, 100, 120, 130, 140)
    coarse = write_geotiff(tmp_path / "coarse.tif", image)  # 0.5 m
    fine = write_geotiff(tmp_path / "fine.tif", image, transform=Affine(0.1, 0, 500000.0, 0, -0.1, 4000000.0))
    det = Detector(BrightObjectPredictor(imgsz=256))

    def scale(path: Path, **kw: object) -> float:
        return ch.load_date(path, det, tile=TileConfig(overlap=32), **kw).dets.meta["scale"]

    assert scale(coarse, zoom="auto") == pytest.approx(1 / 1.25, abs=0.01)
    assert scale(fine, zoom="auto") == 1.0
    assert scale(fine, zoom="auto", gsd=0.4) == pytest.approx(1 / 1.25, abs=0.01)  # --gsd decides
    assert scale(coarse) == 1.0  # the Python default: the tiling as given
    assert scale(coarse, zoom=2.0) == pytest.approx(0.5, abs=0.01)
    got = ch.load_date(coarse, det, zoom="auto").dets
    np.testing.assert_allclose(got.xyxy, [[100, 120, 130, 140]], atol=1.5)  # in scene pixels all the same


# ----------------------------------------------------------------------------------------------------------
# the pixels under unmatched objects
# ----------------------------------------------------------------------------------------------------------

PIX_GSD = 0.5


def _car_px(xy: np.ndarray, length: float = 9.0) -> tuple[int, int, int, int]:
    """Pixel box (x0, y0, x1, y1) of a ``dets_at`` car of ``length`` m centred at ground ``xy``."""
    col, row = (xy[0] - X0) / PIX_GSD, (Y0 - xy[1]) / PIX_GSD
    half = length / PIX_GSD / 2
    return (
        int(round(col - half)),
        int(round(row - half / 2)),
        int(round(col + half)),
        int(round(row + half / 2)),
    )


def _pixel_pair(
    tmp_path: Path, e: tuple[float, float]
) -> tuple[Path, Path, np.ndarray, dict[str, np.ndarray]]:
    """Textured scenes A and B (B brighter, misregistered by ``e``) with 12 cars on both and four probes.

    Probes: ``arrived`` painted on B only; ``departed`` on A only; ``still`` on both (a car the model will
    miss on B); ``ground`` on neither (a flicker on bare ground)."""
    img = _texture(400, 400, 3) // 2
    grid = np.array([[X0 + 20 + 25 * i, Y0 - 20 - 25 * j] for i in range(4) for j in range(3)], float)
    probes = {
        k: np.array([X0 + 30 + 45 * n, Y0 - 150])
        for n, k in enumerate(("arrived", "departed", "still", "ground"))
    }
    a, b = img.copy(), img.copy()
    car = (200, 200, 200)
    for xy in grid:
        paint_box(a, *_car_px(xy), car)
        paint_box(b, *_car_px(xy), car)
    for key, where in (("arrived", (b,)), ("departed", (a,)), ("still", (a, b))):
        for im in where:
            paint_box(im, *_car_px(probes[key]), car)
    noise = np.random.default_rng(0).normal(0, 3, b.shape)
    b = np.clip(b.astype(np.float32) * 1.15 + 6 + noise, 0, 255).astype(np.uint8)  # other radiometry
    pa = write_geotiff(tmp_path / "a.tif", a, transform=Affine(PIX_GSD, 0, X0, 0, -PIX_GSD, Y0))
    pb = write_geotiff(tmp_path / "b.tif", b, transform=Affine(PIX_GSD, 0, X0 + e[0], 0, -PIX_GSD, Y0 + e[1]))
    return pa, pb, grid, probes


def test_pixel_change_sees_objects_come_and_go_not_radiometry(tmp_path: Path) -> None:
    e = (3.0, -2.0)
    pa, pb, grid, probes = _pixel_pair(tmp_path, e)
    dets = dets_at(
        np.stack(list(probes.values())), np.full(4, 9.0), ["small-vehicle"] * 4, np.ones(4), size=400
    )
    from detector import georef

    rings = georef.footprints(dets)
    grays = ch.overlap_grays(pa, pb, ch.valid_area(pa).intersection(ch.valid_area(pb)), UTM33)
    assert grays is not None
    lut = ch.radiometric_lut(grays[0], grays[1])
    ratio = ch.pixel_change(pa, pb, rings, UTM33, np.array(e), lut=lut)
    got = dict(zip(probes, ratio, strict=True))
    assert got["arrived"] > 20 and got["departed"] > 20
    assert got["still"] < 1.5 and got["ground"] < 1.5
    # without the radiometry matched, a bright car that stayed looks changed
    assert ch.pixel_change(pa, pb, rings[2:3], UTM33, np.array(e))[0] > 3
    # misregistration not removed: the same ground no longer lines up
    off = ch.pixel_change(pa, pb, rings, UTM33, np.zeros(2), lut=lut)
    assert off[2] > 3 * got["still"]
    # outside the scenes: no evidence
    assert np.isnan(ch.pixel_change(pa, pb, rings + 5000.0, UTM33, np.array(e), lut=lut)).all()


def test_low_score_changes_need_changed_pixels_and_unchanged_ground_is_no_change(tmp_path: Path) -> None:
    e = (3.0, -2.0)
    pa, pb, grid, probes = _pixel_pair(tmp_path, e)
    n = len(grid)
    # the model: confident on the grid; on B it finds the arrival only at 0.2 and flickers at 0.2 on bare
    # ground; on A it finds the departure and the still car at 0.8, and misses the still car on B
    b_xy = np.concatenate([grid, [probes["departed"], probes["still"]]])
    a_xy = np.concatenate([grid, [probes["arrived"], probes["ground"]]])
    before = dets_at(b_xy, np.full(n + 2, 9.0), ["small-vehicle"] * (n + 2), [0.8] * (n + 2), size=400)
    after = dets_at(
        a_xy, np.full(n + 2, 9.0), ["small-vehicle"] * (n + 2), [0.8] * n + [0.2, 0.2], size=400, shift=e
    )
    scenes = {"before_scene": pa, "after_scene": pb}
    changes = ch.compare(before, after, **scenes)
    assert changes.meta["pixel_check"] and changes.meta["shift_method"] == "phase-correlation"
    got = {k: _status_at(changes, p) for k, p in probes.items()}
    assert got == {"arrived": "arrived", "departed": "departed", "still": None, "ground": None}
    assert changes.meta["low_changes"] == {"before": 0, "after": 1}  # the arrival at 0.2
    assert changes.meta["unchanged_pixels"] == {"before": 1, "after": 1}  # the still car, the flicker
    row = np.nonzero(changes.status == "arrived")[0][0]
    assert changes.columns["pixel_change"][row] > 4
    assert np.isnan(changes.columns["pixel_change"][changes.status == "stayed"]).all()
    # without the pixel check: the low-score arrival is not a change and the missed car departs
    off = ch.compare(before, after, config=ch.ChangeConfig(pixel_ratio=None, pixel_same=None), **scenes)
    got = {k: _status_at(off, p) for k, p in probes.items()}
    assert got == {"arrived": None, "departed": "departed", "still": "departed", "ground": None}
    assert not off.meta["pixel_check"]
    # without the scenes: the same as off
    bare = ch.compare(before, after)
    assert {k: _status_at(bare, p) for k, p in probes.items()} == got


def test_pixel_thresholds_are_validated() -> None:
    for kw in ({"pixel_ratio": -1.0}, {"pixel_same": math.inf}):
        with pytest.raises(ValueError, match="finite number >= 0 or None"):
            ch.ChangeConfig(**kw)


def test_a_weak_detection_on_new_ground_does_not_keep_a_departed_object(tmp_path: Path) -> None:
    e = (3.0, -2.0)
    pa, pb, grid, probes = _pixel_pair(tmp_path, e)
    n = len(grid)
    # B has a 0.15 detection where the departed car was (the new ground) and where the still car is
    b_xy = np.concatenate([grid, [probes["departed"], probes["still"]]])
    a_xy = np.concatenate([grid, [probes["departed"], probes["still"]]])
    cars = ["small-vehicle"] * (n + 2)
    before = dets_at(b_xy, np.full(n + 2, 9.0), cars, [0.8] * (n + 2), size=400)
    after = dets_at(a_xy, np.full(n + 2, 9.0), cars, [0.8] * n + [0.15, 0.15], size=400, shift=e)
    changes = ch.compare(before, after, before_scene=pa, after_scene=pb)
    assert _status_at(changes, probes["departed"]) == "departed"
    assert _status_at(changes, probes["still"]) == "stayed"
    assert changes.meta["split_pairs"] == 1
    assert statuses(changes)["stayed"] == n + 1
    off = ch.compare(before, after, config=ch.ChangeConfig(pixel_ratio=None), before_scene=pa, after_scene=pb)
    assert _status_at(off, probes["departed"]) == "stayed"


def test_changed_pixels_outweigh_a_weak_box_over_the_place(tmp_path: Path) -> None:
    e = (3.0, -2.0)
    pa, pb, grid, probes = _pixel_pair(tmp_path, e)
    n = len(grid)
    # A finds the departed car and the still car at 0.35 (below high); on B the model misses both cars and
    # draws a weak 16 m box over each place instead (a box over a whole row): both A cars lie on it
    b_xy = np.concatenate([grid, [probes["departed"], probes["still"]]])
    cars = ["small-vehicle"] * (n + 2)
    before = dets_at(b_xy, np.full(n + 2, 9.0), cars, [0.8] * n + [0.35, 0.35], size=400)
    after = dets_at(
        b_xy, np.r_[np.full(n, 9.0), 16.0, 16.0], cars, [0.8] * n + [0.15, 0.15], size=400, shift=e
    )
    changes = ch.compare(before, after, before_scene=pa, after_scene=pb)
    assert _status_at(changes, probes["departed"]) == "departed"  # its ground changed
    assert _status_at(changes, probes["still"]) is None  # its ground is the same: no change
    assert changes.meta["rescued"] == {"before": 1, "after": 0}
    counts = statuses(changes)
    assert counts["stayed"] == n and counts["departed"] == 1 and counts["arrived"] == 0
    row = np.nonzero(changes.status == "departed")[0][0]
    assert changes.columns["pixel_change"][row] >= ch.ChangeConfig().pixel_ratio
    # without the pixel check both lie on the other date's box: dropped, as before
    off = ch.compare(before, after, config=ch.ChangeConfig(pixel_ratio=None), before_scene=pa, after_scene=pb)
    assert _status_at(off, probes["departed"]) is None and _status_at(off, probes["still"]) is None
    assert off.meta["rescued"] == {"before": 0, "after": 0}
