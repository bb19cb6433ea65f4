"""Box geometry shared by backends, merging, writers and evaluation (numpy, vectorised)."""

from __future__ import annotations

import numpy as np

from detector.detections import Detections


def xywhr_to_corners(xywhr: np.ndarray) -> np.ndarray:
    """Rotated boxes ``(N, 5)`` -> corner points ``(N, 4, 2)`` in the same pixel frame.

    Same construction as Ultralytics' ``xywhr2xyxyxyxy``: the ``w`` side runs along ``(cos r, sin r)``.
    """
    xywhr = np.asarray(xywhr, dtype=np.float64).reshape(-1, 5)
    ctr = xywhr[:, None, :2]
    w, h, r = xywhr[:, 2:3], xywhr[:, 3:4], xywhr[:, 4:5]
    cos, sin = np.cos(r), np.sin(r)
    vec1 = np.concatenate([w / 2 * cos, w / 2 * sin], axis=-1)[:, None, :]
    vec2 = np.concatenate([-h / 2 * sin, h / 2 * cos], axis=-1)[:, None, :]
    signs1 = np.array([1, 1, -1, -1], dtype=np.float64)[None, :, None]
    signs2 = np.array([1, -1, -1, 1], dtype=np.float64)[None, :, None]
    return ctr + signs1 * vec1 + signs2 * vec2


#: Classes whose pixels inside a rotated rectangle form a cross (fuselage and wings): their axis-aligned box is
#: the cross's box, not the rectangle's (a rectangle's corners are empty for an aircraft).
CROSS_CLASSES = frozenset({"aircraft", "transport-aircraft", "small-aircraft"})
#: Classes whose rotated rectangle is drawn around a disc (a helicopter's rotor, DOTA's convention).
DISC_CLASSES = frozenset({"helicopter"})


def object_boxes(
    xywhr: np.ndarray, shapes: np.ndarray, cross_fill: float = 0.0, rect_fill: float = 1.0
) -> np.ndarray:
    """Axis-aligned boxes ``(N, 4)`` of the objects inside rotated rectangles ``(N, 5)``.

    ``shapes`` ``(N,)`` says what fills each rectangle: ``"rect"`` (a vehicle: the rectangle's enclosing box),
    ``"cross"`` (an aircraft: the box of the rectangle's two centre lines, fuselage and wings) or ``"disc"``
    (a rotor disc: a square of the rectangle's longer side, whatever the angle). At angle 0 all three are the
    rectangle itself; at 45 degrees a cross's box has a quarter of the area of the rectangle's enclosing box.

    ``cross_fill`` (0-1) moves each side of a cross's box that share of the way towards the rectangle's
    enclosing box: a real aircraft is wider than two lines (swept wings, tailplane, a label's margin), so a
    diagonal one's box is larger than the cross's. A model file may carry its own value, fitted on training
    images (``extra["object_box"]["cross_fill"]``, ``python -m training.boxfit``); 0 is the plain cross.

    ``rect_fill`` (0-1) does the same for a ``"rect"``: its box runs from the box of the ellipse inscribed in the
    rectangle (0: a vehicle's rounded outline, as iSAID traces it) to the rectangle's enclosing box (1, the
    default). The two differ only off the image axes: at 45 degrees a 2:1 rectangle's enclosing box is 1.34x
    its ellipse's per side. A model file may carry a value fitted on training images
    (``extra["object_box"]["rect_fill"]``, ``python -m training.boxfit --vehicles``).
    """
    for name, value in (("cross_fill", cross_fill), ("rect_fill", rect_fill)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    xywhr = np.asarray(xywhr, dtype=np.float64).reshape(-1, 5)
    shapes = np.asarray(shapes).reshape(-1)
    cx, cy, w, h, r = xywhr.T
    c, s = np.abs(np.cos(r)), np.abs(np.sin(r))
    ex, ey = w * c + h * s, w * s + h * c
    cross = shapes == "cross"
    kx, ky = np.maximum(w * c, h * s), np.maximum(w * s, h * c)
    ex = np.where(cross, kx + cross_fill * (ex - kx), ex)
    ey = np.where(cross, ky + cross_fill * (ey - ky), ey)
    rect = shapes == "rect"
    lx, ly = np.hypot(w * c, h * s), np.hypot(w * s, h * c)  # the inscribed ellipse's box
    ex = np.where(rect, lx + rect_fill * (ex - lx), ex)
    ey = np.where(rect, ly + rect_fill * (ey - ly), ey)
    disc = shapes == "disc"
    side = np.maximum(w, h)
    ex = np.where(disc, side, ex)
    ey = np.where(disc, side, ey)
    return np.stack([cx - ex / 2, cy - ey / 2, cx + ex / 2, cy + ey / 2], axis=1)


def class_shapes(names: np.ndarray | list[str]) -> np.ndarray:
    """The :func:`object_boxes` shape of each class name."""
    return np.array(
        ["cross" if n in CROSS_CLASSES else "disc" if n in DISC_CLASSES else "rect" for n in names],
        dtype=object,
    )


def with_object_boxes(dets: Detections, cross_fill: float = 0.0, rect_fill: float = 1.0) -> Detections:
    """``dets`` with ``xyxy`` the objects' own boxes (:func:`object_boxes`) where they are rotated."""
    from dataclasses import replace

    if dets.xywhr is None or not len(dets):
        return dets
    names = np.asarray(dets.class_names, dtype=object)[dets.class_ids]
    return replace(dets, xyxy=object_boxes(dets.xywhr, class_shapes(names), cross_fill, rect_fill))


def fuselage_discs(xyxy: np.ndarray, scale: float) -> np.ndarray:
    """Axis-aligned helicopter boxes ``(N, 4)`` of a fuselage -> boxes of the rotor disc: squares of side
    ``scale`` x the box's longer side, on the same centre.

    A detect model trained on fuselage labels (iSAID's) draws the fuselage; DOTA's convention, and ours, is the
    rotor disc, whose box is a square of about 1.1x the fuselage length (:func:`detector.labels.types.rotor_disc`)
    widened by the angle. ``scale`` is fitted on training images (``python -m training.boxfit MODEL
    --helicopters``) and carried by the model file (``extra["object_box"]["disc_scale"]``).
    """
    if not 0.0 < scale <= 3.0:
        raise ValueError(f"disc_scale must be in (0, 3], got {scale!r}")
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2
    half = scale * np.max(xyxy[:, 2:] - xyxy[:, :2], axis=1, keepdims=True) / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def with_discs(dets: Detections, scale: float) -> Detections:
    """``dets`` (axis-aligned) with the boxes of helicopters (:data:`DISC_CLASSES`) made rotor discs
    (:func:`fuselage_discs`); other classes as they are."""
    from dataclasses import replace

    if dets.xywhr is not None or not len(dets):
        return dets
    names = np.asarray(dets.class_names, dtype=object)[dets.class_ids]
    heli = np.isin(names, list(DISC_CLASSES))
    if not heli.any():
        return dets
    xyxy = dets.xyxy.astype(np.float64, copy=True)
    xyxy[heli] = fuselage_discs(xyxy[heli], scale)
    return replace(dets, xyxy=xyxy.astype(dets.xyxy.dtype, copy=False))


def clip_boxes(dets: Detections, width: float, height: float) -> Detections:
    """``dets`` with ``xyxy`` clipped to the scene extent ``[0, width] x [0, height]``.

    An object cut by the scene edge is boxed by the part of it in the scene (as labels of cut objects are).
    A rotated detection keeps its rectangle ``xywhr``: the model's estimate of the whole object, which may run
    past the edge; only its box is clipped.
    """
    from dataclasses import replace

    if not len(dets):
        return dets
    xyxy = dets.xyxy.copy()
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0.0, float(width))
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0.0, float(height))
    return replace(dets, xyxy=xyxy)


def model_cross_fill(meta: object) -> float:
    """The ``cross_fill`` of :func:`object_boxes` a model file carries (``extra["object_box"]``), else 0.

    Raises:
        ValueError: the value is there but not a number in [0, 1].
    """
    return _model_fill(meta, "cross_fill", 0.0)


def model_rect_fill(meta: object) -> float:
    """The ``rect_fill`` of :func:`object_boxes` a model file carries (``extra["object_box"]``), else 1 (the
    rectangle's enclosing box).

    Raises:
        ValueError: the value is there but not a number in [0, 1].
    """
    return _model_fill(meta, "rect_fill", 1.0)


def model_disc_scale(meta: object) -> float | None:
    """The ``disc_scale`` of :func:`fuselage_discs` a detect model file carries (``extra["object_box"]``), else
    ``None`` (its helicopter boxes are used as they come).

    Raises:
        ValueError: the value is there but not a number in (0, 3].
    """
    extra = getattr(meta, "extra", None) or {}
    value = (extra.get("object_box") or {}).get("disc_scale")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 3.0:
        raise ValueError(
            f"model metadata extra.object_box.disc_scale must be a number in (0, 3], got {value!r}"
        )
    return float(value)


def _model_fill(meta: object, key: str, default: float) -> float:
    extra = getattr(meta, "extra", None) or {}
    value = (extra.get("object_box") or {}).get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"model metadata extra.object_box.{key} must be a number in [0, 1], got {value!r}")
    return float(value)


def xyxy_to_corners(xyxy: np.ndarray) -> np.ndarray:
    """Axis-aligned boxes ``(N, 4)`` -> corner points ``(N, 4, 2)``, clockwise on screen from top-left."""
    b = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    return np.stack(
        [np.stack([x1, y1], -1), np.stack([x2, y1], -1), np.stack([x2, y2], -1), np.stack([x1, y2], -1)], 1
    )


def corners_to_xyxy(corners: np.ndarray) -> np.ndarray:
    """Corner points ``(N, K, 2)`` -> enclosing axis-aligned boxes ``(N, 4)``."""
    c = np.asarray(corners, dtype=np.float64)
    if len(c) == 0:
        return np.zeros((0, 4))
    return np.concatenate([c.min(axis=1), c.max(axis=1)], axis=1)


def corners(dets: Detections) -> np.ndarray:
    """The footprint of every detection as 4 corner points ``(N, 4, 2)`` in scene pixels."""
    if dets.xywhr is not None:
        return xywhr_to_corners(dets.xywhr)
    return xyxy_to_corners(dets.xyxy)


def box_iou_xyxy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of axis-aligned boxes: ``(N, 4) x (M, 4) -> (N, M)``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def polygon_overlaps(corners_a: np.ndarray, corners_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise IoU and intersection-over-smaller of convex footprints ``(N, K, 2) x (M, K, 2)``.

    Exact polygon areas through shapely, computed only for pairs whose enclosing boxes touch (the rest are
    0), so it stays cheap on thousands of boxes spread over a scene. Returns ``(iou, ios)``, both ``(N, M)``.
    """
    import shapely

    a = np.asarray(corners_a, dtype=np.float64)
    b = np.asarray(corners_b, dtype=np.float64)
    iou = np.zeros((len(a), len(b)))
    ios = np.zeros((len(a), len(b)))
    if len(a) == 0 or len(b) == 0:
        return iou, ios
    ba, bb = corners_to_xyxy(a), corners_to_xyxy(b)
    touch = (
        (ba[:, None, 0] < bb[None, :, 2])
        & (bb[None, :, 0] < ba[:, None, 2])
        & (ba[:, None, 1] < bb[None, :, 3])
        & (bb[None, :, 1] < ba[:, None, 3])
    )
    ia, ib = np.nonzero(touch)
    if len(ia) == 0:
        return iou, ios
    pa = shapely.polygons(a)
    pb = shapely.polygons(b)
    area_a, area_b = shapely.area(pa), shapely.area(pb)
    inter = shapely.area(shapely.intersection(pa[ia], pb[ib]))
    union = area_a[ia] + area_b[ib] - inter
    smaller = np.minimum(area_a[ia], area_b[ib])
    iou[ia, ib] = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    ios[ia, ib] = np.where(smaller > 0, inter / np.maximum(smaller, 1e-12), 0.0)
    return iou, ios
