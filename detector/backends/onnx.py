"""The onnxruntime backend: :class:`OnnxPredictor` and the decoders of raw YOLO outputs (numpy only).

Network input: float32 ``(B, 3, S, S)``, RGB, ``pixel / 255`` (``meta.normalization == "rgb/255"``). ``S`` is
any multiple of 32 for files exported with dynamic height and width (``meta.imgsz`` is then the default tile
size), or exactly the fixed size of older files (their input shape says which).

Network outputs decoded here (all coordinates in input pixels):

* raw detect head ``(B, 4 + nc, A)``: ``cx, cy, w, h`` then ``nc`` class probabilities per anchor;
* raw OBB head ``(B, 4 + nc + 1, A)``: ``cx, cy, w, h``, ``nc`` class probabilities, then the angle in
  radians (Ultralytics' convention, see :mod:`detector.detections`);
* end-to-end (NMS-free) heads ``(B, K, 6)`` ``x1, y1, x2, y2, score, class`` for detect, and ``(B, K, 7)``
  ``cx, cy, w, h, score, class, angle`` for OBB, sorted by score.

Decoding follows Ultralytics' ``non_max_suppression``: the best raw class per anchor, ``score > conf``, then
only classes in ``meta.class_map`` (renumbered to the taxonomy), class-aware NMS on *our* class ids (greedy
IoU NMS for boxes, Fast-NMS with probabilistic IoU for rotated boxes, as Ultralytics does), ``max_det``.
End-to-end outputs get no NMS. Rotated boxes are regularised to ``0 <= r < pi/2`` (``w``/``h`` swapped where
needed, the same rectangle).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from detector.backends.base import META_KEY, TAXONOMY, ModelMeta
from detector.detections import Detections
from detector.model import STRIDE, min_tile

log = logging.getLogger(__name__)

#: Per-class coordinate offset separating classes in one NMS call (Ultralytics' ``max_wh``).
MAX_WH = 7680.0
#: At most this many candidates (highest scores) enter NMS (Ultralytics' ``max_nms``).
MAX_NMS = 30000


def open_session(
    path: str | Path, *, device: str = "cpu", threads: int | None = None, optimize: bool = True
) -> Any:
    """An onnxruntime ``InferenceSession`` for ``path``.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; CUDA falls back to the CPU with a warning when
            onnxruntime has no CUDA provider.
        threads: intra-op threads (``None``: ``os.cpu_count()``).
        optimize: full graph optimisation (off for a quick metadata read).

    Raises:
        ModelError: the file is missing or is not an ONNX model.
    """
    import onnxruntime as ort

    from detector.model import ModelError

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # The memory-pattern planner keeps a buffer per batch shape it has seen: ~1.1 GB peak at batch 8 of 1024
    # tiles against ~0.66 GB without it, at the same speed (measured by scripts/bench.py's floor runs).
    opts.enable_mem_pattern = False
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    providers: list[Any] = ["CPUExecutionProvider"]
    dev = str(device).lower()
    if dev.startswith("cuda"):
        device_id = int(dev.split(":", 1)[1]) if ":" in dev else 0
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        else:
            log.warning(
                "device=%r asked for, but this onnxruntime has no CUDA provider (install onnxruntime-gpu); "
                "running %s on the CPU",
                device,
                p.name,
            )
    elif dev != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    try:
        session = ort.InferenceSession(str(p), sess_options=opts, providers=providers)
    except Exception as e:  # InvalidProtobuf, Fail, InvalidGraph, ...
        raise ModelError(f"{p} is not a readable ONNX model: {type(e).__name__}: {e}") from e
    log.debug("onnxruntime session for %s on %s", p.name, session.get_providers()[0])
    return session


def session_meta(session: Any, path: str | Path) -> ModelMeta:
    """Our :class:`ModelMeta` stored in an ONNX session's model, checked against its input/output shapes.

    Raises:
        ModelError: the metadata is missing or unreadable, or does not match the network.
    """
    from detector.model import ModelError, check_meta_against_shapes

    props = session.get_modelmeta().custom_metadata_map
    if META_KEY not in props:
        raise ModelError(
            f"{path} has no detector metadata (key {META_KEY!r}): it was not exported by this package. "
            f"Export the Ultralytics checkpoint with `detector export MODEL.pt -o {Path(path).name}`"
        )
    try:
        meta = ModelMeta.from_json(props[META_KEY])
    except (TypeError, ValueError, KeyError) as e:
        raise ModelError(f"{path}: unreadable detector metadata ({type(e).__name__}: {e})") from e
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise ModelError(
            f"{path}: expected one input and at least one output, got {len(inputs)} / {len(outputs)}"
        )
    check_meta_against_shapes(meta, list(inputs[0].shape), list(outputs[0].shape), path)
    return meta


def class_lut(meta: ModelMeta) -> np.ndarray:
    """Raw class index -> taxonomy index, ``-1`` for raw classes that are dropped."""
    lut = np.full(len(meta.raw_names), -1, dtype=np.int64)
    for k, v in meta.class_map.items():
        lut[k] = TAXONOMY.index(v)
    return lut


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


def to_input(tiles: np.ndarray, size: int | None = None) -> np.ndarray:
    """``(B, S, S, 3)`` uint8 RGB -> float32 ``(B, 3, S, S)`` in ``[0, 1]`` (checks the shape, see
    :func:`check_tiles`)."""
    s = check_tiles(tiles, size)
    x = np.empty((tiles.shape[0], 3, s, s), dtype=np.float32)
    np.multiply(tiles.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=x, casting="unsafe")
    return x


def fixed_input_size(session: Any) -> int | None:
    """The input side an ONNX session is fixed to, or ``None`` when height and width are dynamic."""
    dims = list(session.get_inputs()[0].shape)[2:]
    fixed = [int(d) for d in dims if isinstance(d, (int, np.integer)) and int(d) > 0]
    return fixed[0] if len(fixed) == len(dims) == 2 and fixed[0] == fixed[1] else None


class OnnxPredictor:
    """A model exported by :func:`detector.model.export_onnx`, run with onnxruntime.

    Implements :class:`~detector.backends.base.Predictor`. Needs numpy and onnxruntime only. Tiles may be any
    multiple of 32 px (``meta.imgsz`` is the model's default) unless the file fixes its input size
    (``fixed_size``, files exported before dynamic sizes): such a file runs only tiles of that size.

    Args:
        path: the ``.onnx`` file (its metadata says everything else).
        device: ``"cpu"`` or ``"cuda"`` (CUDA provider when available, else the CPU with a log line).
        conf: score threshold (kept when ``score > conf``).
        iou: NMS IoU threshold (unused by end-to-end models).
        max_det: at most this many detections per tile.
        threads: onnxruntime intra-op threads (``None``: all CPUs).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        conf: float = 0.25,
        iou: float = 0.6,
        max_det: int = 300,
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.session = open_session(self.path, device=device, threads=threads)
        self.meta = session_meta(self.session, self.path)
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.lut = class_lut(self.meta)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        #: the input side the file is fixed to, ``None`` when any multiple of 32 runs
        self.fixed_size = fixed_input_size(self.session)
        self.min_size = min_tile(self.meta)
        if self.meta.normalization != "rgb/255":
            raise ValueError(f"{self.path}: unsupported normalization {self.meta.normalization!r}")
        log.info(
            "loaded %s (%s, %s, imgsz %d, %s) on %s",
            self.path.name,
            self.meta.name or "unnamed",
            self.meta.task,
            self.meta.imgsz,
            "fixed input size" if self.fixed_size else "any tile size",
            self.session.get_providers()[0],
        )

    def run(self, x: np.ndarray) -> np.ndarray:
        """The raw network output for a normalised float32 ``(B, 3, S, S)`` batch."""
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def check_size(self, size: int) -> None:
        """Raise ``ValueError`` unless this model runs ``size`` x ``size`` tiles (the message says how to fix)."""
        if self.fixed_size is not None and size != self.fixed_size:
            raise ValueError(
                f"{self.path} has a fixed {self.fixed_size}x{self.fixed_size} input and cannot run "
                f"{size}x{size} tiles: use tile {self.fixed_size}, or re-export the model from its .pt with "
                f"`detector export MODEL.pt -o {self.path.name}` (any multiple of {STRIDE} then works)"
            )
        if size < self.min_size:
            raise ValueError(
                f"{self.path}: {size}x{size} tiles are too small for this end-to-end model, which returns "
                f"{self.meta.extra.get('max_det')} rows per tile; use tiles of at least {self.min_size} px"
            )

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        """``(B, S, S, 3)`` uint8 RGB tiles -> one :class:`Detections` per tile, in tile pixels."""
        if len(tiles) == 0:
            return []
        self.check_size(check_tiles(tiles))
        out = self.run(to_input(tiles))
        return decode_batch(out, self.meta, self.lut, conf=self.conf, iou=self.iou, max_det=self.max_det)

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.path)!r}, task={self.meta.task!r}, imgsz={self.meta.imgsz})"


# ----------------------------------------------------------------------------------------------------------
# decoding (pure numpy)
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
                class_names=TAXONOMY,
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
