"""Decoding of raw YOLO outputs into :class:`~detector.detections.Detections`: numpy only, every runtime.

The onnxruntime and OpenVINO backends run the same exported graph and decode its output here; the PyTorch
backend follows the same rules on the device. Nothing in this module imports a runtime.

Network input: float32 ``(B, 3, S, S)``, RGB, ``pixel / 255`` (``meta.normalization == "rgb/255"``). ``S`` is
any multiple of 32 (:data:`STRIDE`) for files exported with dynamic height and width (``meta.imgsz`` is then the
default tile size), or exactly the fixed size of older files (their input shape says which).

Network outputs decoded here (all coordinates in input pixels):

* raw detect head ``(B, 4 + nc, A)``: ``cx, cy, w, h`` then ``nc`` class probabilities per anchor;
* raw OBB head ``(B, 4 + nc + 1, A)``: ``cx, cy, w, h``, ``nc`` class probabilities, then the angle in
  radians (Ultralytics' convention, see :mod:`detector.detections`);
* end-to-end (NMS-free) heads ``(B, K, 6)`` ``x1, y1, x2, y2, score, class`` for detect, and ``(B, K, 7)``
  ``cx, cy, w, h, score, class, angle`` for OBB, sorted by score.

Decoding follows Ultralytics' ``non_max_suppression``: the best raw class per anchor, ``score > conf``, then
only classes in ``meta.class_map`` (renumbered to ``meta.names``), class-aware NMS on *our* class ids (greedy
IoU NMS for boxes, Fast-NMS with probabilistic IoU for rotated boxes, as Ultralytics does), ``max_det``.
End-to-end outputs get no NMS. Rotated boxes are regularised to ``0 <= r < pi/2`` (``w``/``h`` swapped where
needed, the same rectangle).

Also here, because every runtime needs them to read a model file: the class maps (raw class -> ours) and the
check that a file's metadata matches the input and output shapes of its graph.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from detector.backends.base import META_KEY, ModelMeta
from detector.detections import Detections
from detector.errors import ModelError
from detector.taxonomy import default_classes, default_taxonomy

#: Strides of the YOLO heads we export (P3-P5); the input size must be a multiple of the largest.
_STRIDES = (8, 16, 32)

#: Tile sides a model accepts are multiples of this (its largest stride).
STRIDE = max(_STRIDES)


#: Per-class coordinate offset separating classes in one NMS call (Ultralytics' ``max_wh``).
MAX_WH = 7680.0

#: At most this many candidates (highest scores) enter NMS (Ultralytics' ``max_nms``).
MAX_NMS = 30000


# ----------------------------------------------------------------------------------------------------------
# class maps and the metadata / graph shape check
# ----------------------------------------------------------------------------------------------------------


def normalize_name(name: str) -> str:
    """``"Small Vehicle"``, ``"small_vehicle"``, ``"small-vehicle"`` -> ``"small-vehicle"``."""
    return re.sub(r"[\s_\-]+", "-", str(name).strip().lower())


def default_class_map(
    raw_names: tuple[str, ...], source: str | Path = "", names: tuple[str, ...] | None = None
) -> dict[int, str]:
    """The class map a model gets when none is given.

    DOTA v1.0 models (the 15 DOTA names in channel order) get the ``dota_v1`` table of
    ``configs/taxonomy.yaml`` (:meth:`~detector.taxonomy.Taxonomy.dota_class_map`); any other model maps its
    classes by name (spelling of spaces, ``_`` and case does not matter) to ``names`` when given, else to
    themselves: a model trained on another class list outputs that list.

    Raises:
        ModelError: ``names`` is given and some of the model's classes are not in it (the message names the
            file and the classes without a mapping).
    """
    tax = default_taxonomy()
    if tax.is_dota_v1(raw_names) and (names is None or set(tax.dota_class_map().values()) <= set(names)):
        return tax.dota_class_map()
    norm = [normalize_name(n) for n in raw_names]
    unmapped = [n for n, k in zip(raw_names, norm, strict=True) if names is not None and k not in names]
    if not unmapped:
        return {i: k for i, k in enumerate(norm)}
    raise ModelError(
        f"{source}: cannot map the model's classes to {list(names or ())}: no default mapping for "
        f"{unmapped!r}. Pass an explicit class map (raw class index -> output class name), e.g. "
        "`detector export MODEL.pt --class-map 0=aircraft,3=small-vehicle`"
    )


def default_names(class_map: Mapping[int, str]) -> tuple[str, ...]:
    """Output class names for a class map given without names: the shipped taxonomy's classes when the map
    stays within them (so class ids agree across our models), else the map's own classes in raw order."""
    ours = default_classes()
    if all(v in ours for v in class_map.values()):
        return ours
    return tuple(dict.fromkeys(class_map[k] for k in sorted(class_map)))


def check_class_map(
    class_map: Mapping[Any, str],
    raw_names: tuple[str, ...],
    source: str | Path,
    names: tuple[str, ...] | None = None,
) -> dict[int, str]:
    """Validate a user class map (raw index or raw name -> output name) and return it keyed by raw index.

    Every output name must be one of ``names`` (default: the classes of ``configs/taxonomy.yaml``).

    Raises:
        ModelError: an unknown raw class or index, an output name outside ``names``, or an empty map.
    """
    targets = tuple(names) if names else default_classes()
    norm_raw = {normalize_name(n): i for i, n in enumerate(raw_names)}
    out: dict[int, str] = {}
    for k, v in class_map.items():
        if isinstance(k, str) and not k.strip().lstrip("-").isdigit():
            if normalize_name(k) not in norm_raw:
                raise ModelError(
                    f"{source}: class map names {k!r}, which is not one of the model's classes {raw_names}"
                )
            idx = norm_raw[normalize_name(k)]
        else:
            idx = int(k)
        if not 0 <= idx < len(raw_names):
            raise ModelError(
                f"{source}: class map index {idx} is outside the model's {len(raw_names)} classes"
            )
        ours = normalize_name(v)
        if ours not in targets:
            hint = "" if names else " (pass the model's output names to use other classes)"
            raise ModelError(
                f"{source}: class map maps {k!r} to {v!r}, which is not one of {list(targets)}{hint}"
            )
        out[idx] = ours
    if not out:
        raise ModelError(f"{source}: the class map is empty, the model would detect nothing")
    return out


def class_lut(meta: ModelMeta) -> np.ndarray:
    """Raw class index -> index into ``meta.names``, ``-1`` for raw classes that are dropped."""
    lut = np.full(len(meta.raw_names), -1, dtype=np.int64)
    for k, v in meta.class_map.items():
        lut[k] = meta.names.index(v)
    return lut


def n_anchors(size: int) -> int:
    """Anchors of a raw YOLO head (P3-P5) for a ``size`` x ``size`` input: ``(size/8)^2 + (size/16)^2 + ...``."""
    return sum((int(size) // s) ** 2 for s in _STRIDES)


def min_tile(meta: ModelMeta) -> int:
    """The smallest tile side a model accepts: 32, or for end-to-end heads enough anchors for their K rows."""
    rows = int(meta.extra.get("max_det", 0)) if meta.end_to_end else 0
    size = STRIDE
    while n_anchors(size) < rows:
        size += STRIDE
    return size


def check_meta_against_shapes(
    meta: ModelMeta, input_shape: list[Any], output_shape: list[Any], source: str | Path
) -> None:
    """Raise :class:`ModelError` when the metadata does not describe a network with these I/O shapes.

    ``input_shape`` is ``(B, 3, S, S)``; ``output_shape`` is ``(B, 4 + nc (+1 for obb), anchors)`` for raw
    heads or ``(B, K, 6 (+1 for obb))`` for end-to-end heads. Batch, height, width and anchors may be
    symbolic (strings / None, as in files exported with dynamic sizes) and are then not checked; when fixed,
    the size must be ``meta.imgsz`` and the anchors those of that size. The input channels (3) and the values
    per detection are always checked.
    """
    nc = len(meta.raw_names)

    def fixed(d: Any) -> int | None:
        return int(d) if isinstance(d, (int, np.integer)) and int(d) > 0 else None

    if len(input_shape) != 4 or fixed(input_shape[1]) not in (None, 3):
        raise ModelError(f"{source}: network input shape {input_shape} is not (batch, 3, height, width)")
    for d in input_shape[2:]:
        if fixed(d) is not None and fixed(d) != meta.imgsz:
            raise ModelError(
                f"{source}: weights do not match the metadata: network input is {input_shape[2:]} pixels, "
                f"metadata says imgsz={meta.imgsz}"
            )
    if len(output_shape) != 3:
        raise ModelError(f"{source}: network output shape {output_shape} is not 3-dimensional")
    extra = 1 if meta.task == "obb" else 0
    if meta.end_to_end:
        want, got = 6 + extra, fixed(output_shape[2])
        what = f"end-to-end rows of {want} values ([box(4), score, class{', angle' if extra else ''}])"
    else:
        want, got = 4 + nc + extra, fixed(output_shape[1])
        what = f"4 box + {nc} class{' + 1 angle' if extra else ''} channels"
        anchors = fixed(output_shape[2])
        if anchors is not None and anchors != n_anchors(meta.imgsz):  # fixed only in fixed-size files
            raise ModelError(
                f"{source}: weights do not match the metadata: {anchors} anchors in the output, "
                f"{n_anchors(meta.imgsz)} expected for imgsz={meta.imgsz}"
            )
    if got is None:  # every head we export fixes it; a dynamic one here is another kind of output
        raise ModelError(
            f"{source}: network output shape {output_shape} does not fix the values per detection where the "
            f"metadata ({meta.task}, end_to_end={meta.end_to_end}) expects {want}: {what}"
        )
    if got != want:
        raise ModelError(
            f"{source}: weights do not match the metadata: the output has {got} values per detection, the "
            f"metadata ({meta.task}, {nc} classes, end_to_end={meta.end_to_end}) means {want}: {what}"
        )


# ----------------------------------------------------------------------------------------------------------
# tiles in, network input out
# ----------------------------------------------------------------------------------------------------------


def meta_from_graph(
    text: str | None, input_shapes: list[list[Any]], output_shapes: list[list[Any]], source: str | Path
) -> ModelMeta:
    """The :class:`ModelMeta` stored in an ``.onnx`` file, checked against its graph (any runtime).

    Args:
        text: the JSON stored under ``META_KEY`` in the file's ``metadata_props`` (``None`` when absent).
        input_shapes: the shapes of the graph's inputs (symbolic dimensions as strings or ``None``).
        output_shapes: the shapes of its outputs.
        source: the file, for messages.

    Raises:
        ModelError: the metadata is missing or unreadable, or does not match the network.
    """
    if text is None:
        raise ModelError(
            f"{source} has no detector metadata (key {META_KEY!r}): it was not exported by this package. "
            f"Export the Ultralytics checkpoint with `detector export MODEL.pt -o {Path(source).name}`"
        )
    try:
        meta = ModelMeta.from_json(text)
    except (TypeError, ValueError, KeyError) as e:
        raise ModelError(f"{source}: unreadable detector metadata ({type(e).__name__}: {e})") from e
    if len(input_shapes) != 1 or not output_shapes:
        raise ModelError(
            f"{source}: expected one input and at least one output, got {len(input_shapes)} / "
            f"{len(output_shapes)}"
        )
    check_meta_against_shapes(meta, list(input_shapes[0]), list(output_shapes[0]), source)
    return meta


def check_tiles(tiles: np.ndarray, size: int | None = None) -> int:
    """Check a batch of tiles and return their side ``S``.

    Raises:
        ValueError: ``tiles`` is not a ``(B, S, S, 3)`` uint8 array with ``S`` a multiple of 32 (the models'
            stride), or ``S`` is not ``size`` when one is given (a model with a fixed input size).
    """
    if not isinstance(tiles, np.ndarray) or tiles.ndim != 4 or tiles.shape[-1] != 3:
        raise ValueError(
            f"tiles must be a (B, S, S, 3) uint8 RGB array, got shape {getattr(tiles, 'shape', None)}"
        )
    if tiles.dtype != np.uint8:
        raise ValueError(f"tiles must be uint8 RGB 0-255, got dtype {tiles.dtype}")
    h, w = int(tiles.shape[1]), int(tiles.shape[2])
    if size is not None and (h != size or w != size):
        raise ValueError(f"tiles must be {size}x{size} (the model's input size), got {h}x{w}")
    if h != w:
        raise ValueError(f"tiles must be square, got {h}x{w}")
    if h < 1 or h % STRIDE:
        raise ValueError(
            f"tile size must be a multiple of {STRIDE} (the model's stride), got {h}x{w}; "
            f"use e.g. {max(STRIDE, h // STRIDE * STRIDE)} or {(h // STRIDE + 1) * STRIDE}"
        )
    return h


def check_tile_size(size: int, meta: ModelMeta, source: str | Path, *, fixed_size: int | None = None) -> None:
    """Raise ``ValueError`` unless a model file runs ``size`` x ``size`` tiles (the message says how to fix).

    Args:
        size: the tile side (already a multiple of :data:`STRIDE`, see :func:`check_tiles`).
        meta: the model's metadata (end-to-end heads need enough anchors for their rows: :func:`min_tile`).
        source: the model file, for messages.
        fixed_size: the input side the file's graph is fixed to, ``None`` when any size runs.
    """
    if fixed_size is not None and size != fixed_size:
        raise ValueError(
            f"{source} has a fixed {fixed_size}x{fixed_size} input and cannot run {size}x{size} tiles: use "
            f"tile {fixed_size}, or re-export the model from its .pt with "
            f"`detector export MODEL.pt -o {Path(source).name}` (any multiple of {STRIDE} then works)"
        )
    smallest = min_tile(meta)
    if size < smallest:
        raise ValueError(
            f"{source}: {size}x{size} tiles are too small for this end-to-end model, which returns "
            f"{meta.extra.get('max_det')} rows per tile; use tiles of at least {smallest} px"
        )


def to_input(tiles: np.ndarray, size: int | None = None, *, out: np.ndarray | None = None) -> np.ndarray:
    """``(B, S, S, 3)`` uint8 RGB -> float32 ``(B, 3, S, S)`` in ``[0, 1]`` (checks the shape, see
    :func:`check_tiles`), in one pass.

    ``out``: a C-contiguous float32 buffer of at least ``B`` rows of ``(3, S, S)`` to write into (its first
    ``B`` rows are returned); a fresh array when ``None`` or of another shape. Reusing one buffer per batch
    size saves the page faults of a new 40 MB array per batch of 8 x 640 px tiles (24 -> 14 ms a batch).
    """
    s = check_tiles(tiles, size)
    shape = (tiles.shape[0], 3, s, s)
    if (
        out is not None
        and out.dtype == np.float32
        and out.flags.c_contiguous
        and out.shape[1:] == shape[1:]
        and out.shape[0] >= shape[0]
    ):
        x = out[: shape[0]]
    else:
        x = np.empty(shape, dtype=np.float32)
    np.multiply(tiles.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=x, casting="unsafe")
    return x


# ----------------------------------------------------------------------------------------------------------
# decoding
# ----------------------------------------------------------------------------------------------------------


def decode_batch(
    out: np.ndarray, meta: ModelMeta, lut: np.ndarray, *, conf: float, iou: float, max_det: int
) -> list[Detections]:
    """Decode a raw or end-to-end output batch (see the module docstring) into one Detections per tile."""
    rotated = meta.task == "obb"
    nc = len(meta.raw_names)
    decode = decode_end_to_end if meta.end_to_end else decode_raw
    results = []
    for pred in out:
        xywhr, xyxy, scores, cls = decode(
            pred, nc=nc, lut=lut, rotated=rotated, conf=conf, iou=iou, max_det=max_det
        )
        results.append(
            Detections(
                xyxy=xyxy,
                scores=scores,
                class_ids=cls,
                class_names=meta.names,
                xywhr=xywhr if rotated else None,
            )
        )
    return results


Decoded = tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]


def decode_raw(
    pred: np.ndarray, *, nc: int, lut: np.ndarray, rotated: bool, conf: float, iou: float, max_det: int
) -> Decoded:
    """One tile of a raw head ``(4 + nc (+1), A)`` -> ``(xywhr | None, xyxy, scores, class_ids)``."""
    cls_scores = pred[4 : 4 + nc]
    idx = np.flatnonzero(cls_scores.max(axis=0) > conf)
    if len(idx):
        sub = cls_scores[:, idx]
        raw_cls = sub.argmax(axis=0)
        ours = lut[raw_cls]
        keep = ours >= 0
        idx, raw_cls, ours = idx[keep], raw_cls[keep], ours[keep]
        scores = sub[raw_cls, np.flatnonzero(keep)]
    else:
        ours, scores = np.zeros(0, np.int64), np.zeros(0, np.float32)
    if len(idx) > MAX_NMS:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS]
        idx, ours, scores = idx[top], ours[top], scores[top]
    box = pred[:4, idx].T.astype(np.float64)
    offset = ours[:, None] * MAX_WH
    if rotated:
        xywhr = np.concatenate([box, pred[4 + nc, idx].astype(np.float64)[:, None]], axis=1)
        shifted = xywhr.copy()
        shifted[:, :2] += offset
        keep_idx = fast_nms_rotated(shifted, scores, iou)[:max_det]
        xywhr = regularize_rboxes(xywhr[keep_idx])
        return xywhr, rbox_to_xyxy(xywhr), scores[keep_idx], ours[keep_idx]
    xyxy = xywh_to_xyxy(box)
    keep_idx = nms_xyxy(xyxy + np.tile(offset, (1, 4)), scores, iou)[:max_det]
    return None, xyxy[keep_idx], scores[keep_idx], ours[keep_idx]


def decode_end_to_end(
    pred: np.ndarray, *, nc: int, lut: np.ndarray, rotated: bool, conf: float, iou: float, max_det: int
) -> Decoded:
    """One tile of an end-to-end head ``(K, 6 | 7)`` -> ``(xywhr | None, xyxy, scores, class_ids)``.

    No NMS (the one-to-one head is trained not to duplicate); ``iou`` is accepted for a uniform signature.
    """
    del nc, iou
    raw_cls = pred[:, 5].astype(np.int64)
    valid = (pred[:, 4] > conf) & (raw_cls >= 0) & (raw_cls < len(lut))
    rows = np.flatnonzero(valid)
    ours = lut[raw_cls[rows]]
    rows, ours = rows[ours >= 0][:max_det], ours[ours >= 0][:max_det]
    p = pred[rows].astype(np.float64)
    scores = pred[rows, 4].astype(np.float32)
    if rotated:
        xywhr = regularize_rboxes(np.concatenate([p[:, :4], p[:, 6:7]], axis=1))
        return xywhr, rbox_to_xyxy(xywhr), scores, ours
    return None, p[:, :4], scores, ours


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """Centre boxes ``(N, 4)`` -> corner boxes."""
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def rbox_to_xyxy(xywhr: np.ndarray) -> np.ndarray:
    """Rotated boxes ``(N, 5)`` -> the axis-aligned boxes enclosing them."""
    c, s = np.abs(np.cos(xywhr[:, 4])), np.abs(np.sin(xywhr[:, 4]))
    w, h = xywhr[:, 2], xywhr[:, 3]
    ex = (w * c + h * s) / 2
    ey = (w * s + h * c) / 2
    return np.stack([xywhr[:, 0] - ex, xywhr[:, 1] - ey, xywhr[:, 0] + ex, xywhr[:, 1] + ey], axis=1)


def regularize_rboxes(xywhr: np.ndarray) -> np.ndarray:
    """Angles to ``[0, pi/2)``, swapping ``w`` and ``h`` where needed (Ultralytics' ``regularize_rboxes``)."""
    out = np.array(xywhr, dtype=np.float64, copy=True).reshape(-1, 5)
    t = out[:, 4]
    swap = np.mod(t, np.pi) >= np.pi / 2
    out[swap, 2], out[swap, 3] = xywhr[swap, 3], xywhr[swap, 2]
    out[:, 4] = np.mod(t, np.pi / 2)
    return out


def nms_xyxy(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS of axis-aligned boxes (same result as ``torchvision.ops.nms``): kept indices, best first.

    One vectorised IoU row per kept box; boxes that never overlap a kept box leave in one step.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        ov = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[ov <= iou]
    return np.asarray(keep, dtype=np.int64)


def _covariance(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = b[:, 2] ** 2 / 12
    bb = b[:, 3] ** 2 / 12
    c, s = np.cos(b[:, 4]), np.sin(b[:, 4])
    return a * c * c + bb * s * s, a * s * s + bb * c * c, (a - bb) * c * s


def batch_probiou(obb1: np.ndarray, obb2: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Pairwise probabilistic IoU of rotated boxes ``(N, 5) x (M, 5) -> (N, M)`` (Ultralytics' formula)."""
    obb1 = np.asarray(obb1, dtype=np.float64).reshape(-1, 5)
    obb2 = np.asarray(obb2, dtype=np.float64).reshape(-1, 5)
    x1, y1 = obb1[:, 0:1], obb1[:, 1:2]
    x2, y2 = obb2[None, :, 0], obb2[None, :, 1]
    a1, b1, c1 = (v[:, None] for v in _covariance(obb1))
    a2, b2, c2 = (v[None, :] for v in _covariance(obb2))
    sa, sb, sc = a1 + a2, b1 + b2, c1 + c2
    denom = sa * sb - sc**2
    t1 = (sa * (y1 - y2) ** 2 + sb * (x1 - x2) ** 2) / (denom + eps) * 0.25
    t2 = (sc * (x2 - x1) * (y1 - y2)) / (denom + eps) * 0.5
    det1 = np.clip(a1 * b1 - c1**2, 0, None)
    det2 = np.clip(a2 * b2 - c2**2, 0, None)
    t3 = np.log(denom / (4 * np.sqrt(det1 * det2) + eps) + eps) * 0.5
    bd = np.clip(t1 + t2 + t3, eps, 100.0)
    hd = np.sqrt(1.0 - np.exp(-bd) + eps)
    return 1 - hd


def fast_nms_rotated(xywhr: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Fast-NMS with probabilistic IoU (Ultralytics' rotated NMS): kept indices, best first.

    A box is dropped when any higher-scoring box (kept or not) overlaps it by more than ``iou``, exactly as
    Ultralytics' ``TorchNMS.fast_nms(..., iou_func=batch_probiou)``, but only for pairs of boxes that are
    close enough to overlap that much, so a tile with thousands of candidates costs milliseconds instead of
    an ``N x N`` matrix.

    Why the pruning is exact: probIoU is ``1 - sqrt(1 - exp(-bd))`` with ``bd`` the Bhattacharyya distance of
    the boxes' Gaussians, so ``probiou > iou`` needs ``bd < bd_max = -ln(1 - (1 - iou)^2)``. Its log-det term
    is never negative and its Mahalanobis term is at least ``3 |d|^2 / (L1^2 + L2^2)`` (``d`` the centre
    offset, ``L`` the longer side of each box: a box's covariance has eigenvalues ``w^2/12``, ``h^2/12``).
    Pairs with ``|d|^2 >= bd_max / 3 * (L1^2 + L2^2)`` therefore cannot suppress each other.
    """
    n = len(xywhr)
    if n == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    if iou < 1e-3:  # everything overlaps everything a little: no useful pruning bound
        return _fast_nms_rotated_dense(xywhr, order, iou)
    bd_max = -np.log1p(-((1.0 - iou) ** 2)) if iou < 1.0 else 0.0
    k = bd_max / 3.0 * 1.05  # 5% margin over the bound for float rounding and Ultralytics' eps terms
    long2 = np.maximum(xywhr[:, 2], xywhr[:, 3]) ** 2
    radius = np.sqrt(k * 2.0 * long2) + 1.0  # |d| < radius_i or radius_j is needed (and 1 px spare)
    by_x = np.argsort(xywhr[:, 0], kind="stable")
    xs = xywhr[by_x, 0]
    lo = np.searchsorted(xs, xs - radius[by_x], side="left")
    hi = np.searchsorted(xs, xs + radius[by_x], side="right")
    counts = hi - lo
    a = np.repeat(np.arange(n), counts)  # positions in x order
    b = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
    i, j = by_x[a], by_x[b]
    d2 = (xywhr[i, 0] - xywhr[j, 0]) ** 2 + (xywhr[i, 1] - xywhr[j, 1]) ** 2
    near = (i != j) & (d2 < k * (long2[i] + long2[j]) + 1.0)
    i, j = i[near], j[near]
    hi_, lo_ = np.where(rank[i] < rank[j], i, j), np.where(rank[i] < rank[j], j, i)  # (better, worse)
    ov = _pair_probiou(xywhr[hi_], xywhr[lo_])
    suppressed = np.zeros(n, dtype=bool)
    suppressed[lo_[ov > iou]] = True
    return order[~suppressed[order]]


def _pair_probiou(b1: np.ndarray, b2: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """probIoU of row-aligned pairs ``(N, 5), (N, 5) -> (N,)`` (the diagonal of :func:`batch_probiou`)."""
    a1, b1_, c1 = _covariance(b1)
    a2, b2_, c2 = _covariance(b2)
    sa, sb, sc = a1 + a2, b1_ + b2_, c1 + c2
    dx, dy = b1[:, 0] - b2[:, 0], b1[:, 1] - b2[:, 1]
    denom = sa * sb - sc**2
    t1 = (sa * dy**2 + sb * dx**2) / (denom + eps) * 0.25
    t2 = (sc * (-dx) * dy) / (denom + eps) * 0.5
    det1 = np.clip(a1 * b1_ - c1**2, 0, None)
    det2 = np.clip(a2 * b2_ - c2**2, 0, None)
    t3 = np.log(denom / (4 * np.sqrt(det1 * det2) + eps) + eps) * 0.5
    bd = np.clip(t1 + t2 + t3, eps, 100.0)
    return 1 - np.sqrt(1.0 - np.exp(-bd) + eps)


def _fast_nms_rotated_dense(
    xywhr: np.ndarray, order: np.ndarray, iou: float, block: int = 1024
) -> np.ndarray:
    """Fast-NMS on the full probIoU matrix, in column blocks (memory ``O(block * N)``)."""
    n = len(xywhr)
    b = xywhr[order]
    suppressed = np.zeros(n, dtype=bool)
    for start in range(1, n, block):
        stop = min(start + block, n)
        ov = batch_probiou(b[:stop], b[start:stop])
        ov[np.arange(stop)[:, None] >= np.arange(start, stop)[None, :]] = 0.0  # only better boxes suppress
        suppressed[start:stop] = (ov > iou).any(axis=0)
    return order[~suppressed]
