"""Merging detections across tile seams: cut twins, duplicates, pieces, rotated boxes, speed."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from detector.detections import Detections
from detector.geometry import corners, corners_to_xyxy, polygon_overlaps, xywhr_to_corners
from detector.merge import (
    RUNNER_UP_CLASS,
    RUNNER_UP_SCORE,
    merge_cross_class,
    merge_detections,
    overlap_pairs,
)
from detector.taxonomy import default_classes
from detector.tiling import tile_grid

TAXONOMY = default_classes()  # our classes in id order (configs/taxonomy.yaml)
AIRCRAFT, SMALL_VEHICLE = TAXONOMY.index("aircraft"), TAXONOMY.index("small-vehicle")


def _aabb(boxes, scores=None, classes=None) -> Detections:
    boxes = np.asarray(boxes, float)
    n = len(boxes)
    return Detections(
        xyxy=boxes,
        scores=np.full(n, 0.9) if scores is None else scores,
        class_ids=np.zeros(n, int) if classes is None else classes,
        class_names=TAXONOMY,
    )


def _obb(xywhr, scores=None, classes=None) -> Detections:
    xywhr = np.asarray(xywhr, float)
    n = len(xywhr)
    return Detections(
        xyxy=corners_to_xyxy(xywhr_to_corners(xywhr)),
        xywhr=xywhr,
        scores=np.full(n, 0.9) if scores is None else scores,
        class_ids=np.zeros(n, int) if classes is None else classes,
        class_names=TAXONOMY,
    )


def test_cut_piece_gives_way_to_its_whole_twin_even_with_a_higher_score() -> None:
    # tile A ends at x=256 and cuts the object [230, 290]; tile B (from x=192) sees it whole
    dets = _aabb([[230, 100, 256, 130], [230, 100, 290, 130], [400, 400, 420, 420]], scores=[0.95, 0.7, 0.8])
    out = merge_detections(dets, tile_edges=np.array([True, False, False]))
    np.testing.assert_array_equal(out.xyxy, [[230, 100, 290, 130], [400, 400, 420, 420]])
    np.testing.assert_allclose(out.scores, [0.7, 0.8])


def test_rotated_cut_piece_gives_way_to_its_whole_twin() -> None:
    r = 0.6
    u = np.array([np.cos(r), np.sin(r)])
    whole = [300, 200, 120, 30, r]
    piece = [*(np.array([300, 200]) - 20 * u), 80, 30, r]  # the first 80 px of its length, cut by a tile edge
    other = [*(np.array([300, 200]) + 200 * u), 40, 20, r]
    out = merge_detections(
        _obb([piece, whole, other], scores=[0.9, 0.6, 0.5]), tile_edges=np.array([True, False, False])
    )
    np.testing.assert_allclose(out.xywhr, [whole, other])


def test_duplicates_keep_the_best_score_and_ties_keep_tile_order() -> None:
    dets = _aabb([[10, 10, 50, 40], [11, 10, 51, 41], [12, 11, 50, 40]], scores=[0.6, 0.8, 0.8])
    out = merge_detections(dets, tile_edges=np.zeros(3, bool))
    np.testing.assert_array_equal(out.xyxy, [[11, 10, 51, 41]])
    assert merge_detections(dets[[0, 2, 1]]).xyxy.tolist() == [[12, 11, 50, 40]]


def test_merge_is_class_aware() -> None:
    dets = _aabb([[10, 10, 50, 40], [10, 10, 50, 40]], classes=[AIRCRAFT, SMALL_VEHICLE])
    assert len(merge_detections(dets)) == 2


def test_uncut_small_box_inside_a_big_one_is_kept() -> None:
    # intersection over the smaller is 1, IoU is small, and neither was cut: two objects
    dets = _aabb([[0, 0, 100, 100], [40, 40, 60, 60]])
    assert len(merge_detections(dets, tile_edges=np.zeros(2, bool))) == 2
    # ... but a cut small box inside a whole big one is its piece
    assert len(merge_detections(dets, tile_edges=np.array([False, True]))) == 1


def test_adjacent_objects_at_a_seam_stay_apart() -> None:
    dets = _aabb([[200, 10, 255, 40], [257, 10, 300, 40]])
    assert len(merge_detections(dets, tile_edges=np.array([True, True]))) == 2


def test_pieces_of_an_object_larger_than_the_overlap_are_joined() -> None:
    # object [150, 400] x [20, 60]; tile A is [0, 256), tile B [192, 448): both cut it
    dets = _aabb([[150, 20, 256, 60], [192, 20, 400, 60]], scores=[0.7, 0.8])
    out = merge_detections(dets, ios=0.6, tile_edges=np.array([True, True]))
    np.testing.assert_array_equal(out.xyxy, [[150, 20, 400, 60]])
    np.testing.assert_allclose(out.scores, [0.8])


def test_rotated_pieces_are_joined_along_the_kept_angle() -> None:
    r = 0.3
    u = np.array([np.cos(r), np.sin(r)])
    # two overlapping pieces of one rotated object, along its length: [-100, 40] and [-30, 100]
    a = [*(np.array([500, 500]) + (-30) * u), 140, 24, r]
    b = [*(np.array([500, 500]) + 35 * u), 130, 24, r]
    out = merge_detections(_obb([a, b], scores=[0.5, 0.9]), ios=0.5, tile_edges=np.array([True, True]))
    assert len(out) == 1
    np.testing.assert_allclose(out.xywhr[0], [500, 500, 200, 24, r], atol=1e-9)
    np.testing.assert_allclose(out.xyxy[0], corners_to_xyxy(xywhr_to_corners(out.xywhr))[0])


def test_no_tile_edges_means_plain_nms_and_bad_flags_are_errors() -> None:
    dets = _aabb([[0, 0, 10, 10], [0, 0, 10, 11], [0, 0, 3, 3]])
    assert len(merge_detections(dets)) == 2
    with pytest.raises(ValueError, match="2 flags for 3"):
        merge_detections(dets, tile_edges=np.zeros(2, bool))
    with pytest.raises(ValueError, match="iou"):
        merge_detections(dets, iou=0)
    assert len(merge_detections(dets[:0])) == 0


def test_overlap_pairs_match_dense_polygon_overlaps() -> None:
    rng = np.random.default_rng(0)
    n = 600
    xywhr = np.column_stack(
        [
            rng.uniform(0, 2000, n),
            rng.uniform(0, 1500, n),
            rng.uniform(5, 80, n),
            rng.uniform(5, 40, n),
            rng.uniform(0, np.pi, n),
        ]
    )
    xywhr[:5, 2] = 900  # a few very large boxes go through the slow lane
    classes = rng.integers(0, 2, n)
    c = xywhr_to_corners(xywhr)
    i, j, iou, ios = overlap_pairs(c, classes)
    dense_iou, dense_ios = polygon_overlaps(c, c)
    same = classes[:, None] == classes[None, :]
    ei, ej = np.nonzero(np.triu((dense_ios > 0) & same, k=1))
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == sorted(
        zip(ei.tolist(), ej.tolist(), strict=True)
    )
    order = np.lexsort((j, i))
    np.testing.assert_allclose(iou[order], dense_iou[ei, ej])
    np.testing.assert_allclose(ios[order], dense_ios[ei, ej])


def _simulate_tiled_detections(n_objects: int, seed: int = 0) -> tuple[Detections, np.ndarray, int]:
    """What a tiled run over a 20000 px scene returns: one box per (object, tile), cut where a tile cuts."""
    rng = np.random.default_rng(seed)
    size, tile, overlap = 20000, 640, 128
    cell = 100  # one object per 100 px cell, at most 60 px: objects never touch
    cells = rng.choice((size // cell) ** 2, n_objects, replace=False)
    x0 = (cells % (size // cell)) * cell + rng.uniform(0, 35, n_objects)
    y0 = (cells // (size // cell)) * cell + rng.uniform(0, 35, n_objects)
    w, h = rng.uniform(8, 60, n_objects), rng.uniform(8, 60, n_objects)
    starts = np.array(sorted({int(win.col_off) for win in tile_grid(size, size, tile, overlap)}))
    boxes, cut, tiles_of = [], [], []
    for k in range(n_objects):
        box = np.array([x0[k], y0[k], x0[k] + w[k], y0[k] + h[k]])
        xs = starts[(starts < box[2]) & (starts + tile > box[0])]
        ys = starts[(starts < box[3]) & (starts + tile > box[1])]
        for ty in ys:
            for tx in xs:
                clipped = np.array(
                    [max(box[0], tx), max(box[1], ty), min(box[2], tx + tile), min(box[3], ty + tile)]
                )
                if (clipped[2:] - clipped[:2]).min() < 3:
                    continue  # no detector reports a sliver
                is_cut = bool((clipped != box).any())
                boxes.append(clipped + rng.normal(0, 0.5, 4))
                cut.append(is_cut)
                tiles_of.append((ty, tx))
    order = np.lexsort(np.array(tiles_of).T[::-1])  # tile order, like the pipeline
    boxes_arr = np.array(boxes)[order]
    n = len(boxes_arr)
    dets = Detections(
        xyxy=boxes_arr,
        scores=rng.uniform(0.3, 1.0, n).astype(np.float32),
        class_ids=np.zeros(n, int),
        class_names=TAXONOMY,
        xywhr=np.column_stack(
            [(boxes_arr[:, :2] + boxes_arr[:, 2:]) / 2, boxes_arr[:, 2:] - boxes_arr[:, :2], np.zeros(n)]
        ),
    )
    return dets, np.array(cut)[order], n_objects


def test_every_object_comes_out_once_on_30k_boxes_in_seconds() -> None:
    dets, cut, n_objects = _simulate_tiled_detections(17000)
    assert len(dets) > 28000 and cut.sum() > 4000
    start = time.perf_counter()
    out = merge_detections(dets, tile_edges=cut)
    elapsed = time.perf_counter() - start
    # the simulated boxes carry 0.5 px of noise: a handful of thin pieces may stick out of their twin
    assert n_objects <= len(out) <= n_objects * 1.001
    i, _, iou, _ = overlap_pairs(corners(out), out.class_ids)
    assert not (iou > 0.5).any()
    assert elapsed < 10, f"merging {len(dets)} boxes took {elapsed:.1f} s"


LARGE_VEHICLE = TAXONOMY.index("large-vehicle")


def test_cross_class_keeps_the_better_label_and_records_the_runner_up() -> None:
    # one car called both small-vehicle (0.7) and large-vehicle (0.6), IoU ~0.9; a second car alone;
    # and an aircraft that overlaps the first car only a little (IoU < 0.8): kept, no runner-up
    dets = _aabb(
        [[10, 10, 50, 30], [11, 10, 51, 31], [200, 200, 240, 220], [30, 10, 90, 40]],
        scores=np.array([0.6, 0.7, 0.5, 0.9]),
        classes=np.array([LARGE_VEHICLE, SMALL_VEHICLE, SMALL_VEHICLE, AIRCRAFT]),
    )
    out = merge_cross_class(dets, iou=0.8)
    np.testing.assert_array_equal(out.xyxy, dets.xyxy[1:])
    assert out.data[RUNNER_UP_CLASS].tolist() == ["large-vehicle", "", ""]
    np.testing.assert_allclose(out.data[RUNNER_UP_SCORE], [0.6, np.nan, np.nan])
    assert out.data[RUNNER_UP_SCORE].dtype == np.float32
    # a stricter threshold than the pair's IoU keeps both labels
    assert len(merge_cross_class(dets, iou=0.95)) == 4


def test_cross_class_leaves_same_class_pairs_and_is_greedy_in_score_order() -> None:
    same = _aabb([[0, 0, 40, 20], [0, 0, 40, 20]], classes=np.array([SMALL_VEHICLE, SMALL_VEHICLE]))
    assert len(merge_cross_class(same)) == 2
    # three labels on one object: the best one wins, the runner-up is the second best
    three = _aabb(
        [[0, 0, 40, 20]] * 3,
        scores=np.array([0.3, 0.8, 0.5]),
        classes=np.array([AIRCRAFT, SMALL_VEHICLE, LARGE_VEHICLE]),
    )
    out = merge_cross_class(three)
    assert out.class_name.tolist() == ["small-vehicle"]
    assert out.data[RUNNER_UP_CLASS].tolist() == ["large-vehicle"]
    np.testing.assert_allclose(out.data[RUNNER_UP_SCORE], [0.5])
    # other data columns travel with the kept rows
    tagged = replace(three, data={"tile": np.array([7, 8, 9])})
    assert merge_cross_class(tagged).data["tile"].tolist() == [8]


def test_cross_class_uses_rotated_footprints() -> None:
    # two thin rotated boxes at 45 and 135 degrees: their enclosing boxes coincide (IoU 1), their footprints
    # barely overlap, so they are two objects; the same rotated box twice is one object
    a = [100, 100, 80, 10, np.pi / 4]
    b = [100, 100, 80, 10, 3 * np.pi / 4]
    crossed = _obb([a, b], scores=np.array([0.9, 0.8]), classes=np.array([SMALL_VEHICLE, LARGE_VEHICLE]))
    assert len(merge_cross_class(crossed)) == 2
    twin = _obb([a, a], scores=np.array([0.8, 0.9]), classes=np.array([SMALL_VEHICLE, LARGE_VEHICLE]))
    out = merge_cross_class(twin)
    assert out.class_name.tolist() == ["large-vehicle"] and out.is_rotated
    np.testing.assert_allclose(out.data[RUNNER_UP_SCORE], [0.8])


def test_cross_class_edge_cases() -> None:
    empty = merge_cross_class(Detections.empty(TAXONOMY))
    assert len(empty) == 0 and set(empty.data) == {RUNNER_UP_CLASS, RUNNER_UP_SCORE}
    with pytest.raises(ValueError, match="cross-class iou"):
        merge_cross_class(_aabb([[0, 0, 1, 1]]), iou=0)


def test_cross_class_on_many_boxes_is_vectorised() -> None:
    dets, cut, _ = _simulate_tiled_detections(3000, seed=1)
    dets = merge_detections(dets, tile_edges=cut)
    rng = np.random.default_rng(0)
    relabelled = replace(dets, class_ids=rng.integers(0, 4, len(dets)))
    doubled = Detections.concatenate([dets, replace(relabelled, scores=relabelled.scores * 0.5)])
    t0 = time.perf_counter()
    out = merge_cross_class(doubled)
    assert time.perf_counter() - t0 < 5
    # every relabelled copy whose class differs is absorbed by its original
    differs = relabelled.class_ids != dets.class_ids
    assert len(out) == len(doubled) - int(differs.sum())
