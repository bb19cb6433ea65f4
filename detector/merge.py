"""Merge detections across tile seams, so that every object comes out once (rotated boxes included).

Tiles overlap, so an object near a seam is seen by two or more tiles: whole in some, cut by the tile border
in others. :func:`merge_detections` works on the detections of a whole scene, in scene pixels, in tile
order, with one flag per detection saying whether it touches an *inner* tile edge (a tile border that is not
the scene border), i.e. whether the model may have seen only part of the object:

1. **Cut twins.** A cut detection that lies inside an uncut detection of the same class (give or take a
   few pixels, see :data:`TWIN_TOLERANCE`) is dropped: the uncut tile saw the whole object.
2. **Duplicates.** Greedy suppression in score order (stable, so ties keep tile order): a detection
   suppresses lower-scored ones of the same class with IoU > ``iou``, and, where one of the two is cut,
   with intersection over the smaller > ``ios``.
3. **Pieces.** Two cut detections from different tiles whose parts inside the region both tiles share
   match (IoU > ``iou``) are pieces of one object larger than the overlap, cut in every tile that sees it.
   When the kept detection is cut, it grows to enclose the cut detections it suppressed, keeping its
   orientation. (An object spanning three tiles along one axis, larger than a tile, may stay in pieces.)

Overlaps are exact polygon areas, as in :func:`detector.geometry.polygon_overlaps`, computed only for the
pairs whose enclosing boxes overlap; those pairs are found through a grid of cells (vectorised, no N x N
matrix), so 30k detections over a scene cost about a second.

After the seam merge, :func:`merge_cross_class` gives every object one label: where detections of
*different* classes cover one object (IoU >= ``iou`` on their footprints, e.g. one car called both
small-vehicle and large-vehicle), the higher-scoring one is kept and the runner-up's class and score go into
its ``data`` columns ``runner_up_class`` and ``runner_up_score``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import shapely

from detector.detections import Detections
from detector.geometry import corners as footprint_corners
from detector.geometry import corners_to_xyxy, xywhr_to_corners

#: A cut detection is a piece of an uncut one when it lies inside it, grown by this fraction of its short side
TWIN_TOLERANCE = 0.1
#: ... and by at least this many pixels.
TWIN_TOLERANCE_PX = 2.0
#: ``Detections.data`` columns written by :func:`merge_cross_class`: the class of the best detection of
#: another class that covered the same object ("" when none) and its score (NaN when none).
RUNNER_UP_CLASS = "runner_up_class"
RUNNER_UP_SCORE = "runner_up_score"


def merge_detections(
    dets: Detections,
    iou: float = 0.5,
    ios: float = 0.8,
    tile_edges: np.ndarray | None = None,
    windows: np.ndarray | None = None,
) -> Detections:
    """Merge duplicates and seam-cut pieces of the same objects (see the module docstring).

    Args:
        dets: detections of one scene in scene pixels, in tile order (row-major tiles, then the order the
            model returned them).
        iou: same-class detections overlapping more than this (intersection over union) are duplicates.
        ios: intersection over the smaller footprint above which a cut detection belongs to the other one.
        tile_edges: bool ``(N,)``: True where the detection touches an inner edge of the tile it came from;
            ``None`` means no detection is cut (plain class-aware NMS with the IoU test).
        windows: float ``(N, 4)``: ``(x0, y0, x1, y1)`` of the tile each detection came from, in scene pixels.
            With it, two cut detections from different tiles are pieces of one object when their parts
            inside the region both tiles share have IoU > ``iou`` (an object larger than the overlap is cut
            in both tiles and its pieces overlap only there); without it, when their IoS > ``ios``.

    Returns:
        The kept detections, in their input order, with grown boxes where pieces were joined.
    """
    n = len(dets)
    if not 0 < iou <= 1 or not 0 < ios <= 1:
        raise ValueError(f"iou and ios must be in (0, 1], got iou={iou!r}, ios={ios!r}")
    cut = np.zeros(n, bool) if tile_edges is None else np.asarray(tile_edges, bool).reshape(-1)
    if len(cut) != n:
        raise ValueError(f"tile_edges has {len(cut)} flags for {n} detections")
    if windows is not None and np.shape(windows) != (n, 4):
        raise ValueError(f"windows must have shape ({n}, 4), got {np.shape(windows)}")
    if n < 2:
        return dets

    corners = footprint_corners(dets)
    a, b, pair_iou, pair_ios = overlap_pairs(corners, dets.class_ids)

    # 1. cut twins: a cut detection inside (give or take a few pixels) an uncut one of the same class
    dropped = np.zeros(n, bool)
    one_cut = cut[a] != cut[b]
    piece = np.where(cut[a], a, b)[one_cut]
    whole = np.where(cut[a], b, a)[one_cut]
    dropped[piece[_inside(corners[piece], _rotated_boxes(dets)[whole])]] = True

    # 2. greedy suppression in (stable) score order over the conflicting pairs only
    conflict = (pair_iou > iou) | ((pair_ios > ios) & (cut[a] | cut[b]))
    if windows is not None:
        both = np.flatnonzero(cut[a] & cut[b] & ~conflict)
        conflict[both] = _shared_iou(corners, np.asarray(windows, np.float64), a[both], b[both]) > iou
    conflict &= ~dropped[a] & ~dropped[b]
    hi, lo, starts, ends = _pair_groups(dets.scores, a[conflict], b[conflict])

    suppressed = dropped.copy()
    pieces: dict[int, np.ndarray] = {}
    for s, e in zip(starts, ends, strict=True):  # only detections that conflict with a lower-scored one
        head = int(hi[s])
        if suppressed[head]:
            continue
        others = lo[s:e]
        others = others[~suppressed[others]]
        suppressed[others] = True
        if cut[head] and cut[others].any():
            pieces[head] = others[cut[others]]

    keep = np.flatnonzero(~suppressed)
    out = dets[keep]
    if not pieces:
        return out
    return _grow(out, keep, pieces, corners)


def merge_cross_class(dets: Detections, iou: float = 0.8) -> Detections:
    """One label per object: of detections of different classes with footprint IoU >= ``iou``, keep the best.

    Greedy in (stable) score order, like NMS across classes but only for near-identical footprints (rotated
    ones when present): a kept detection suppresses lower-scored detections of *other* classes that overlap
    it by at least ``iou``. Same-class pairs are left alone (the seam merge has dealt with them).

    Args:
        dets: detections of one scene, after the seam merge (:func:`merge_detections`).
        iou: IoU at or above which two detections of different classes are one object, in ``(0, 1]``.

    Returns:
        The kept detections in their input order, with ``data`` columns :data:`RUNNER_UP_CLASS` (str: the
        class of the best suppressed detection, ``""`` when none) and :data:`RUNNER_UP_SCORE` (float32, NaN
        when none). Columns already present (a second pass) are kept where this pass suppresses nothing.
    """
    if not 0 < iou <= 1:
        raise ValueError(f"cross-class iou must be in (0, 1], got {iou!r}")
    n = len(dets)
    runner_class = np.asarray(dets.data.get(RUNNER_UP_CLASS, np.full(n, "", dtype=object)), dtype=object)
    runner_score = np.asarray(dets.data.get(RUNNER_UP_SCORE, np.full(n, np.nan)), dtype=np.float32)
    runner_class, runner_score = runner_class.copy(), runner_score.copy()
    suppressed = np.zeros(n, bool)
    if n > 1:
        a, b, pair_iou, _ = overlap_pairs(footprint_corners(dets), dets.class_ids, same_class=False)
        hit = pair_iou >= iou
        hi, lo, starts, ends = _pair_groups(dets.scores, a[hit], b[hit])
        names = np.asarray(dets.class_names, dtype=object)
        for s, e in zip(starts, ends, strict=True):
            head = int(hi[s])
            if suppressed[head]:
                continue
            others = lo[s:e]
            others = others[~suppressed[others]]
            if len(others) == 0:
                continue
            suppressed[others] = True
            best = int(others[0])  # lo is sorted by rank within the group: the best-scored runner-up
            runner_class[head] = names[dets.class_ids[best]]
            runner_score[head] = dets.scores[best]
    keep = np.flatnonzero(~suppressed)
    data = dict(dets.data)
    data[RUNNER_UP_CLASS] = runner_class.astype(str)
    data[RUNNER_UP_SCORE] = runner_score
    return replace(dets, data=data)[keep]


def _pair_groups(
    scores: np.ndarray, a: np.ndarray, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, list[int], list[int]]:
    """Conflicting pairs ``(a, b)`` as ``(hi, lo)`` (the better-scored one first, stable score order), sorted
    by ``hi``'s rank then ``lo``'s, and the ``[start, end)`` runs of each ``hi``: the greedy suppression order."""
    n = len(scores)
    order = np.argsort(-np.asarray(scores), kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    hi = np.where(rank[a] < rank[b], a, b)
    lo = np.where(rank[a] < rank[b], b, a)
    by_rank = np.lexsort((rank[lo], rank[hi]))
    hi, lo = hi[by_rank], lo[by_rank]
    if not len(hi):
        return hi, lo, [], []
    bounds = np.flatnonzero(np.diff(hi)) + 1  # hi is grouped, groups in score order
    return hi, lo, np.r_[0, bounds].tolist(), np.r_[bounds, len(hi)].tolist()


def overlap_pairs(
    corners: np.ndarray, class_ids: np.ndarray, *, same_class: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All overlapping same-class pairs ``i < j`` of footprints ``(N, K, 2)``, with their IoU and IoS.

    Returns ``(i, j, iou, ios)``, each of length P (the pairs whose footprints intersect with a positive
    area). The values equal those of :func:`detector.geometry.polygon_overlaps`, computed only for pairs
    whose enclosing boxes overlap, found without an N x N matrix. ``same_class=False`` gives the pairs of
    *different* classes instead.
    """
    i, j = (np.zeros(0, np.int64),) * 2
    class_ids = np.asarray(class_ids, np.int64)
    if len(corners) > 1:
        if same_class:
            i, j = _candidate_pairs(corners_to_xyxy(corners), class_ids)
        else:
            i, j = _candidate_pairs(corners_to_xyxy(corners), np.zeros_like(class_ids))
            other = class_ids[i] != class_ids[j]
            i, j = i[other], j[other]
    if len(i) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0), np.zeros(0)
    polys = shapely.polygons(np.asarray(corners, np.float64))
    area = shapely.area(polys)
    inter = shapely.area(shapely.intersection(polys[i], polys[j]))
    union = area[i] + area[j] - inter
    smaller = np.minimum(area[i], area[j])
    iou = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    ios = np.where(smaller > 0, inter / np.maximum(smaller, 1e-12), 0.0)
    hit = inter > 0
    return i[hit], j[hit], iou[hit], ios[hit]


def _candidate_pairs(boxes: np.ndarray, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same-class pairs ``i < j`` whose axis-aligned boxes ``(N, 4)`` overlap, without an N x N matrix.

    Boxes go into square cells at least as large as 99 % of them, so two overlapping boxes have their
    centres in the same or neighbouring cells: each cell is paired with itself and 4 of its 8 neighbours
    (the other 4 pair with it from their side). The few larger boxes are paired with every box.
    """
    extent = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cell = max(float(np.quantile(extent, 0.99)), 1.0)
    big = extent > cell
    small = np.flatnonzero(~big)
    found_i, found_j = [], []

    centre = (boxes[small, :2] + boxes[small, 2:]) / 2
    grid = (
        np.floor((centre - centre.min(axis=0)) / cell).astype(np.int64) + 1
    )  # 1-based: neighbours never wrap
    nx, ny = int(grid[:, 0].max()) + 2, int(grid[:, 1].max()) + 2
    key = (class_ids[small] * ny + grid[:, 1]) * nx + grid[:, 0]
    order = np.argsort(key, kind="stable")
    key, members = key[order], small[order]
    position = np.arange(len(key))
    for dy, dx in ((0, 0), (0, 1), (1, -1), (1, 0), (1, 1)):
        target = key + dy * nx + dx
        lo = np.searchsorted(key, target, "left")
        hi = np.searchsorted(key, target, "right")
        if dy == dx == 0:
            lo = position + 1  # within a cell: each pair once
        counts = np.maximum(hi - lo, 0)
        src = np.repeat(position, counts)
        dst = lo[src] + np.arange(len(src)) - np.repeat(np.cumsum(counts) - counts, counts)
        found_i.append(members[src])
        found_j.append(members[dst])

    for rows in np.array_split(np.flatnonzero(big), int(big.sum()) // 256 + 1):
        if len(rows) == 0:
            continue
        a = boxes[rows][:, None, :]
        b = boxes[None, :, :]
        src, dst = np.nonzero(
            (class_ids[rows][:, None] == class_ids[None, :])
            & (a[..., 0] < b[..., 2])
            & (b[..., 0] < a[..., 2])
            & (a[..., 1] < b[..., 3])
            & (b[..., 1] < a[..., 3])
        )
        src = rows[src]
        keep = (src != dst) & (~big[dst] | (src < dst))
        found_i.append(src[keep])
        found_j.append(dst[keep])

    i, j = np.concatenate(found_i), np.concatenate(found_j)
    touch = (
        (boxes[i, 0] < boxes[j, 2])
        & (boxes[j, 0] < boxes[i, 2])
        & (boxes[i, 1] < boxes[j, 3])
        & (boxes[j, 1] < boxes[i, 3])
    )
    i, j = i[touch], j[touch]
    return np.minimum(i, j), np.maximum(i, j)


def _shared_iou(corners: np.ndarray, windows: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of footprints ``a`` and ``b`` clipped to the region their two tiles share (0 where none)."""
    shared = np.concatenate(
        [np.maximum(windows[a, :2], windows[b, :2]), np.minimum(windows[a, 2:], windows[b, 2:])], 1
    )
    ok = (
        (shared[:, 2] > shared[:, 0]) & (shared[:, 3] > shared[:, 1]) & (windows[a] != windows[b]).any(axis=1)
    )
    out = np.zeros(len(a))
    if not ok.any():
        return out
    region = shapely.box(*shared[ok].T)
    pa = shapely.intersection(shapely.polygons(corners[a[ok]]), region)
    pb = shapely.intersection(shapely.polygons(corners[b[ok]]), region)
    inter = shapely.area(shapely.intersection(pa, pb))
    union = shapely.area(pa) + shapely.area(pb) - inter
    out[ok] = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return out


def _rotated_boxes(dets: Detections) -> np.ndarray:
    """``(N, 5)`` xywhr of every detection (angle 0 for axis-aligned ones)."""
    if dets.xywhr is not None:
        return dets.xywhr
    xyxy = dets.xyxy
    return np.column_stack([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2], np.zeros(len(xyxy))])


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether all points ``(P, K, 2)`` lie in their rotated box ``(P, 5)`` grown by a small tolerance.

    The tolerance (10 % of the box's short side, at least 2 px) absorbs the localisation noise of a thin
    piece along a tile edge, whose overlap ratio alone would swing with a pixel.
    """
    d = points - boxes[:, None, :2]
    cos, sin = np.cos(boxes[:, 4:5]), np.sin(boxes[:, 4:5])
    pu = d[..., 0] * cos + d[..., 1] * sin
    pv = -d[..., 0] * sin + d[..., 1] * cos
    w, h = boxes[:, 2:3], boxes[:, 3:4]
    tol = np.maximum(TWIN_TOLERANCE_PX, TWIN_TOLERANCE * np.minimum(w, h))
    return ((np.abs(pu) <= w / 2 + tol) & (np.abs(pv) <= h / 2 + tol)).all(axis=1)


def _grow(
    out: Detections, keep: np.ndarray, pieces: dict[int, np.ndarray], corners: np.ndarray
) -> Detections:
    """Grow kept boxes to enclose their pieces; rotated boxes keep the kept detection's angle."""
    xyxy = out.xyxy.copy()
    xywhr = None if out.xywhr is None else out.xywhr.copy()
    row_of = {int(k): r for r, k in enumerate(keep)}
    for head, others in pieces.items():
        r = row_of[head]
        points = corners[np.append(others, head)].reshape(-1, 2)
        if xywhr is None:
            xyxy[r] = np.concatenate([points.min(axis=0), points.max(axis=0)])
            continue
        angle = xywhr[r, 4]
        u = np.array([np.cos(angle), np.sin(angle)])
        v = np.array([-np.sin(angle), np.cos(angle)])
        pu, pv = points @ u, points @ v
        cu, cv = (pu.min() + pu.max()) / 2, (pv.min() + pv.max()) / 2
        centre = cu * u + cv * v
        xywhr[r] = [centre[0], centre[1], pu.max() - pu.min(), pv.max() - pv.min(), angle]
        xyxy[r] = corners_to_xyxy(xywhr_to_corners(xywhr[r : r + 1]))[0]
    return replace(out, xyxy=xyxy, xywhr=xywhr)
