"""Accuracy of a detector on labelled images: COCO-style AP per class and object size, through the same path
as ``detector predict``.

Two layers:

* :func:`evaluate_detections` is the metric (pure numpy, no torch, no pycocotools): labelled images plus one
  :class:`~detector.detections.Detections` per image in -> :class:`EvalResult` out.
* :func:`evaluate` runs a :class:`~detector.pipeline.Detector` over the images (the very same tiled
  ``Detector.predict`` a user calls, with the image's GSD from its labels where known) and scores the result;
  :func:`run` does that for the eval sets of ``configs/eval.yaml`` and writes the reports (markdown table,
  JSON, one PR-curve PNG per set), with a side-by-side table when two or more models are given.

The metric, in COCO's words (``pycocotools.cocoeval``, ``iouType="bbox"``), with two documented departures:

* **AP** is the area under the precision/recall curve sampled at 101 recall points ``0, 0.01, ..., 1``
  with interpolated precision (at each recall point, the best precision at that recall or beyond; 0 past
  the highest recall reached). ``AP50`` at IoU 0.50, ``AP50:95`` averaged over IoU ``0.50, 0.55, ..., 0.95``.
* **Matching**, per image and class, at each IoU threshold: detections in descending score order; each one
  takes the not-yet-matched regular ground truth with the highest IoU at or above the threshold, or, failing
  that, an ignored ground truth. A detection matched to a regular ground truth is a true positive, one matched
  to an ignored ground truth is neither TP nor FP, an unmatched one is a false positive. A regular ground truth
  is matched at most once (a duplicate detection is a false positive).
* **Ignored ground truth**: ``difficult`` objects (DOTA difficulty 1) and crowd regions (COCO ``iscrowd``,
  which the COCO reader stores as ``difficult``). Like COCO crowd regions (and DOTA's difficult objects in the
  VOC-style devkit), one such object may absorb any number of detections. Objects whose class the taxonomy
  maps to ``"ignore"`` (ships, cyclists, ...) are *dropped*, not ignored: a vehicle detection on a ship is a
  false positive, because the taxonomy says the model should not fire there.
* **Size buckets** (COCO area ranges, in pixels of the image as labelled): small ``area < 32**2``, medium
  ``32**2 <= area < 96**2``, large ``area >= 96**2``. A ground truth belongs to a bucket by *its own box
  area*; outside the bucket it is treated as ignored, so a detection matching it is neither TP nor FP there.
  A detection is counted in a bucket when it matches a ground truth of that bucket (TP); an unmatched
  detection counts as a false positive only in the bucket of its *own* box area, and is ignored in the others
  (exactly COCO's ``aRng`` + ``gtIgnore`` / ``dtIgnore`` scheme). The matching is re-run per bucket.
* **Box convention** (``iou_type``): ``"aabb"`` (default) compares the objects' own axis-aligned boxes: a
  ground truth by the box of its outline (the annotator's polygon where there is one, e.g. iSAID; not the box
  enclosing its minimum-area rectangle, which is up to 2x too large for a diagonal aircraft), a prediction by
  its ``xyxy`` (for a rotated prediction the object's box inside the rectangle, :func:`detector.geometry.object_boxes`). This is the
  common ground for detect and OBB models, and most of our eval labels are axis-aligned anyway. ``"rotated"``
  compares footprints (:func:`detector.geometry.polygon_overlaps`) wherever the ground truth is rotated:
  a rotated prediction by its rectangle, a detect model's by its axis-aligned box (the footprint the writers
  write for it), and enclosing boxes for axis-aligned ground truth. Areas follow the same
  convention (enclosing-box area for ``"aabb"``, polygon area for rotated footprints under ``"rotated"``).
* **Departures from COCO**: no cap on detections per image (COCO keeps the top 100; a DOTA scene holds
  hundreds of vehicles, so the detector's own ``max_det`` is the cap), size ranges are half-open (COCO's are
  closed, so an object of exactly 32**2 px counts as both small and medium there), and ties in IoU go to the
  first ground truth rather than the last.
* **Operating point**: precision and recall (IoU 0.50, all sizes) of the detections scoring at least the
  operating threshold ``conf`` (the model's default confidence), i.e. what a user of ``predict`` gets. AP is
  computed from the detections the detector returned, so it should run at a low confidence (``conf_eval``,
  default 0.001) for the curve to reach high recall.

AP is undefined (``nan``, ``null`` in JSON, ``-`` in tables) for a class or bucket without regular ground
truth; precision is ``nan`` when nothing was detected at the operating threshold.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from detector.detections import Detections
from detector.errors import ConfigError
from detector.geometry import box_iou_xyxy, corners, polygon_overlaps
from detector.resources import config_path
from detector.taxonomy import IGNORE

if TYPE_CHECKING:
    from detector.labels import LabeledImage
    from detector.tiling import TileConfig

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: IoU thresholds of AP50:95 (COCO): 0.50, 0.55, ..., 0.95.
IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, 10)
#: Recall points at which interpolated precision is sampled (COCO's 101-point AP).
RECALL_POINTS: np.ndarray = np.linspace(0.0, 1.0, 101)
#: Object size buckets in pixel area ``[lo, hi)`` (COCO convention).
SIZE_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, math.inf),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, math.inf),
}
IOU_TYPES = ("aabb", "rotated")
#: Keys of an eval set in ``configs/eval.yaml`` that are not ``read_dataset`` spec keys.
_EVAL_KEYS = ("classes", "iou_type", "description")
#: ``configs/eval.yaml`` of a source checkout.
DEFAULT_CONFIG = config_path("eval.yaml")


# --------------------------------------------------------------------------------------------------------------
# Result types


@dataclass
class ClassResult:
    """Scores of one class on one eval set. AP values are ``nan`` where there is no regular ground truth.

    Attributes:
        name: our class name.
        n_gt: regular (non-ignored) ground-truth objects, per size bucket (``"all"``, ``"small"``, ...).
        n_ignored: ignored ground-truth objects (difficult / crowd).
        ap50: AP at IoU 0.50, per size bucket.
        ap: AP averaged over IoU 0.50:0.95, per size bucket.
        ap75: AP at IoU 0.75 (all sizes).
        precision, recall: at the operating threshold, IoU 0.50, all sizes.
        tp, fp: true / false positives at the operating threshold (IoU 0.50, all sizes).
        n_det: detections of the class returned by the detector (any score).
        pr_precision: interpolated precision at :data:`RECALL_POINTS`, IoU 0.50, all sizes ``(101,)``.
        pr_scores: score at which each recall point is reached (0 where it is not) ``(101,)``.
    """

    name: str
    n_gt: dict[str, int]
    n_ignored: int
    ap50: dict[str, float]
    ap: dict[str, float]
    ap75: float
    precision: float
    recall: float
    tp: int
    fp: int
    n_det: int
    pr_precision: np.ndarray
    pr_scores: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``nan`` -> ``None``)."""
        return {
            "name": self.name,
            "n_gt": dict(self.n_gt),
            "n_ignored": self.n_ignored,
            "ap50": {k: _num(v) for k, v in self.ap50.items()},
            "ap50_95": {k: _num(v) for k, v in self.ap.items()},
            "ap75": _num(self.ap75),
            "precision": _num(self.precision),
            "recall": _num(self.recall),
            "tp": self.tp,
            "fp": self.fp,
            "n_det": self.n_det,
            "pr_curve": {
                "recall": [round(float(r), 2) for r in RECALL_POINTS],
                "precision": [_num(p, 5) for p in self.pr_precision],
                "score": [_num(s, 5) for s in self.pr_scores],
            },
        }


@dataclass
class EvalResult:
    """Scores of one model on one eval set.

    Attributes:
        name: the eval set (``"hrplanes/test"``).
        classes: per-class results, for every evaluated class that has regular ground truth in the set.
        n_images: images evaluated.
        iou_type: ``"aabb"`` or ``"rotated"``.
        conf: the operating threshold of ``precision`` / ``recall``.
        extra_fp: evaluated classes without ground truth in the set -> false positives at ``conf``
            (a vehicle-free airport set still shows how often the model calls something a vehicle).
        meta: model name, weights, tiling, timing, ... (free form, goes to JSON).
    """

    name: str
    classes: dict[str, ClassResult]
    n_images: int
    iou_type: str
    conf: float
    extra_fp: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def map50(self) -> float:
        """Mean AP50 over the classes with ground truth (``nan`` when there is none)."""
        return _nanmean([c.ap50["all"] for c in self.classes.values()])

    @property
    def map(self) -> float:
        """Mean AP50:95 over the classes with ground truth."""
        return _nanmean([c.ap["all"] for c in self.classes.values()])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``nan`` -> ``None``)."""
        return {
            "name": self.name,
            "n_images": self.n_images,
            "iou_type": self.iou_type,
            "conf": self.conf,
            "map50": _num(self.map50),
            "map50_95": _num(self.map),
            "classes": {k: v.to_dict() for k, v in self.classes.items()},
            "extra_fp": dict(self.extra_fp),
            "meta": self.meta,
        }


def _num(x: float, nd: int = 6) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, nd)


def _nanmean(values: Sequence[float]) -> float:
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    return float(v.mean()) if len(v) else math.nan


# --------------------------------------------------------------------------------------------------------------
# The metric


def match_detections(
    iou: np.ndarray,
    gt_ignore: np.ndarray,
    gt_region: np.ndarray | None = None,
    thresholds: np.ndarray = IOU_THRESHOLDS,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of score-sorted detections to ground truth, at every IoU threshold at once.

    Args:
        iou: ``(D, G)`` IoU of the detections (rows, **already sorted by descending score**) with the ground truth.
        gt_ignore: ``(G,)`` ground truth that is ignored (difficult, crowd, or outside the size bucket).
        gt_region: ``(G,)`` ignored ground truth that may absorb any number of detections (difficult, crowd);
            other ground truth is matched at most once.
        thresholds: ``(T,)`` IoU thresholds (a pair matches when ``iou >= threshold``).

    Returns:
        ``(matched, dt_ignore)``, both ``(T, D)`` bool: the detection matched some ground truth, and the
        ground truth it matched is ignored.
    """
    iou = np.asarray(iou, dtype=np.float64)
    n_dt, n_gt = iou.shape
    thr = np.minimum(np.asarray(thresholds, dtype=np.float64), 1 - 1e-10)[:, None]
    matched = np.zeros((len(thr), n_dt), dtype=bool)
    dt_ignore = np.zeros((len(thr), n_dt), dtype=bool)
    if n_dt == 0 or n_gt == 0:
        return matched, dt_ignore
    gt_ignore = np.asarray(gt_ignore, dtype=bool)
    gt_region = np.zeros(n_gt, dtype=bool) if gt_region is None else np.asarray(gt_region, dtype=bool)
    taken = np.zeros((len(thr), n_gt), dtype=bool)
    rows = np.arange(len(thr))
    for d in np.flatnonzero((iou >= thr.min()).any(axis=1)):
        ok = (iou[d][None, :] >= thr) & ~taken  # (T, G)
        regular, ignored = ok & ~gt_ignore, ok & gt_ignore
        best_reg = np.where(regular, iou[d], -1.0).argmax(axis=1)
        best_ign = np.where(ignored, iou[d], -1.0).argmax(axis=1)
        has_reg = regular.any(axis=1)
        g = np.where(has_reg, best_reg, best_ign)
        hit = has_reg | ignored.any(axis=1)
        t, g = rows[hit], g[hit]
        matched[t, d] = True
        dt_ignore[t, d] = gt_ignore[g]
        keep = ~gt_region[g]
        taken[t[keep], g[keep]] = True
    return matched, dt_ignore


def precision_recall_curve(
    scores: np.ndarray, tp: np.ndarray, fp: np.ndarray, n_gt: int
) -> tuple[np.ndarray, np.ndarray]:
    """COCO's 101-point interpolated precision from pooled detections.

    Args:
        scores: ``(N,)`` scores of the detections of all images.
        tp, fp: ``(T, N)`` bool true / false positive flags per IoU threshold (both ``False`` for a detection
            ignored at that threshold).
        n_gt: regular ground-truth objects (> 0).

    Returns:
        ``(precision, score)``, both ``(T, 101)``: interpolated precision at each recall point (0 where the
        recall is never reached), and the detection score at which it is reached (0 likewise).
    """
    order = np.argsort(-np.asarray(scores), kind="mergesort")
    scores = np.asarray(scores, dtype=np.float64)[order]
    tp_sum = np.cumsum(np.asarray(tp, dtype=bool)[:, order], axis=1, dtype=np.float64)
    fp_sum = np.cumsum(np.asarray(fp, dtype=bool)[:, order], axis=1, dtype=np.float64)
    n_thr = tp_sum.shape[0]
    precision = np.zeros((n_thr, len(RECALL_POINTS)))
    score_at = np.zeros((n_thr, len(RECALL_POINTS)))
    if len(scores) == 0:
        return precision, score_at
    for t in range(n_thr):
        rc = tp_sum[t] / n_gt
        pr = tp_sum[t] / np.maximum(tp_sum[t] + fp_sum[t], np.finfo(np.float64).eps)
        pr = np.maximum.accumulate(pr[::-1])[
            ::-1
        ]  # precision envelope: best precision at this recall or beyond
        idx = np.searchsorted(rc, RECALL_POINTS, side="left")
        ok = idx < len(rc)
        precision[t, ok] = pr[idx[ok]]
        score_at[t, ok] = scores[idx[ok]]
    return precision, score_at


def _polygon_area(corners: np.ndarray) -> np.ndarray:
    x, y = corners[..., 0], corners[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y, axis=-1))


def _box_area(xyxy: np.ndarray) -> np.ndarray:
    return (xyxy[:, 2] - xyxy[:, 0]).clip(0) * (xyxy[:, 3] - xyxy[:, 1]).clip(0)


@dataclass
class _Truth:
    """Ground truth of one image and class, as arrays."""

    corners: np.ndarray  # (G, 4, 2)
    xyxy: np.ndarray  # (G, 4): the object's own box (of its outline where the label is a polygon)
    rotated: np.ndarray  # (G,) bool
    region: np.ndarray  # (G,) bool: difficult / crowd (ignored, absorbs any number of detections)


def _truth_of(image: LabeledImage, cls: str) -> _Truth:
    anns = [a for a in image.annotations if a.cls == cls]
    if not anns:
        return _Truth(np.zeros((0, 4, 2)), np.zeros((0, 4)), np.zeros(0, bool), np.zeros(0, bool))
    return _Truth(
        corners=np.stack([np.asarray(a.polygon, dtype=np.float64) for a in anns]),
        xyxy=np.stack([a.xyxy for a in anns]),
        rotated=np.array([bool(a.rotated) for a in anns]),
        region=np.array([bool(a.difficult) or bool(a.attrs.get("iscrowd", False)) for a in anns]),
    )


def _pairwise(dets: Detections, truth: _Truth, iou_type: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(iou (D, G), det_area (D,), gt_area (G,))`` under the box convention ``iou_type``."""
    gt_xyxy = truth.xyxy
    iou = box_iou_xyxy(dets.xyxy, gt_xyxy)
    dt_area, gt_area = _box_area(dets.xyxy), _box_area(gt_xyxy)
    if iou_type == "rotated":
        gt_area = np.where(truth.rotated, _polygon_area(truth.corners), gt_area)
        if dets.xywhr is not None:
            dt_area = dets.xywhr[:, 2] * dets.xywhr[:, 3]
        # footprints: a rotated prediction's rectangle, a detect model's box (as the writers write them)
        rot = np.flatnonzero(truth.rotated)
        if len(rot) and len(dets):
            iou[:, rot] = polygon_overlaps(corners(dets), truth.corners[rot])[0]
    return iou, dt_area, gt_area


def evaluate_detections(
    images: Sequence[LabeledImage],
    predictions: Sequence[Detections],
    *,
    classes: Sequence[str] | None = None,
    iou_type: str = "aabb",
    conf: float = 0.25,
    name: str = "",
) -> EvalResult:
    """Score detections against labelled images (the metric of the module docstring).

    Args:
        images: labelled images (``detector.labels``); annotations whose ``cls`` is not an evaluated class
            (``"ignore"``, or a class outside ``classes``) are dropped.
        predictions: one :class:`Detections` per image, in the image's pixels, in the same order. Detections of
            classes outside ``classes`` are dropped.
        classes: the classes to evaluate (those the eval set labels exhaustively); default: the classes that
            occur in the labels, in the order of the predictions' class names (the model's ``meta.names``).
        iou_type: ``"aabb"`` or ``"rotated"`` (see the module docstring).
        conf: operating threshold for precision / recall.
        name: the eval set's name, kept in the result.

    Returns:
        An :class:`EvalResult` with a :class:`ClassResult` for every evaluated class with regular ground truth.

    Raises:
        ValueError: ``iou_type`` is unknown, ``images`` and ``predictions`` differ in length, or a class is
            neither one of the predictions' class names nor in the labels.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    if len(images) != len(predictions):
        raise ValueError(f"got {len(images)} images but {len(predictions)} prediction sets")
    model_names = tuple(dict.fromkeys(n for d in predictions for n in d.class_names))
    present = {a.cls for im in images for a in im.annotations} - {IGNORE}
    if classes is None:
        classes = [c for c in model_names if c in present] + sorted(present - set(model_names))
    unknown = [c for c in classes if c not in model_names and c not in present]
    if unknown:
        raise ValueError(
            f"classes {unknown!r} are neither classes of the model {list(model_names)} nor in the labels"
        )

    sizes = list(SIZE_RANGES)
    n_thr = len(IOU_THRESHOLDS)
    t50 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.5)))
    t75 = int(np.argmin(np.abs(IOU_THRESHOLDS - 0.75)))
    # per class and size: pooled scores, TP / FP flags (non-ignored detections only), regular GT count
    pool: dict[tuple[str, str], dict[str, Any]] = {
        (c, s): {"scores": [], "tp": [], "fp": [], "n_gt": 0} for c in classes for s in sizes
    }
    n_ignored = dict.fromkeys(classes, 0)
    n_det = dict.fromkeys(classes, 0)
    for image, dets in zip(images, predictions, strict=True):
        names = np.asarray(dets.class_names, dtype=object)
        det_cls = names[dets.class_ids] if len(dets) else np.zeros(0, dtype=object)
        for c in classes:
            d = dets[np.flatnonzero(det_cls == c)]
            d = d[np.argsort(-d.scores, kind="mergesort")]
            truth = _truth_of(image, c)
            n_det[c] += len(d)
            n_ignored[c] += int(truth.region.sum())
            iou, dt_area, gt_area = _pairwise(d, truth, iou_type)
            for s in sizes:
                lo, hi = SIZE_RANGES[s]
                outside = (gt_area < lo) | (gt_area >= hi)
                gt_ignore = truth.region | outside
                matched, dt_ignore = match_detections(iou, gt_ignore, truth.region)
                dt_out = (dt_area < lo) | (dt_area >= hi)
                dt_ignore |= ~matched & dt_out[None, :]
                keep = ~dt_ignore  # (T, D)
                acc = pool[(c, s)]
                acc["n_gt"] += int((~gt_ignore).sum())
                # a detection ignored at one threshold may count at another: keep per-threshold flags,
                # pooled over all detections (ignored ones contribute neither TP nor FP).
                acc["scores"].append(d.scores.astype(np.float64))
                acc["tp"].append(matched & keep)
                acc["fp"].append(~matched & keep)

    results: dict[str, ClassResult] = {}
    extra_fp: dict[str, int] = {}
    for c in classes:
        ap50: dict[str, float] = {}
        ap: dict[str, float] = {}
        n_gt: dict[str, int] = {}
        curve = (np.zeros(len(RECALL_POINTS)), np.zeros(len(RECALL_POINTS)))
        ap75 = math.nan
        tp_conf = fp_conf = 0
        for s in sizes:
            acc = pool[(c, s)]
            scores = np.concatenate(acc["scores"]) if acc["scores"] else np.zeros(0)
            tp = np.concatenate(acc["tp"], axis=1) if acc["tp"] else np.zeros((n_thr, 0), bool)
            fp = np.concatenate(acc["fp"], axis=1) if acc["fp"] else np.zeros((n_thr, 0), bool)
            n_gt[s] = acc["n_gt"]
            if s == "all":
                at_conf = scores >= conf
                tp_conf = int(tp[t50, at_conf].sum())
                fp_conf = int(fp[t50, at_conf].sum())
            if acc["n_gt"] == 0:
                ap50[s] = ap[s] = math.nan
                continue
            precision, score_at = precision_recall_curve(scores, tp, fp, acc["n_gt"])
            ap50[s] = float(precision[t50].mean())
            ap[s] = float(precision.mean())
            if s == "all":
                ap75 = float(precision[t75].mean())
                curve = (precision[t50], score_at[t50])
        if n_gt["all"] == 0:
            extra_fp[c] = fp_conf
            continue
        results[c] = ClassResult(
            name=c,
            n_gt=n_gt,
            n_ignored=n_ignored[c],
            ap50=ap50,
            ap=ap,
            ap75=ap75,
            precision=tp_conf / (tp_conf + fp_conf) if tp_conf + fp_conf else math.nan,
            recall=tp_conf / n_gt["all"],
            tp=tp_conf,
            fp=fp_conf,
            n_det=n_det[c],
            pr_precision=curve[0],
            pr_scores=curve[1],
        )
    return EvalResult(
        name=name, classes=results, n_images=len(images), iou_type=iou_type, conf=conf, extra_fp=extra_fp
    )


# --------------------------------------------------------------------------------------------------------------
# Running a detector


class _Predicts(Protocol):
    def predict(self, source: Any, *, tile: Any = ..., gsd: float | None = ...) -> Detections: ...


def evaluate(
    detector: _Predicts,
    images: Sequence[LabeledImage],
    *,
    tile: TileConfig | None = None,
    iou_type: str = "aabb",
    classes: Sequence[str] | None = None,
    conf: float = 0.25,
    name: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Run ``detector.predict`` on every labelled image and score the detections.

    This is the same tiled path as ``detector predict`` (``Detector.predict(image_path, tile=tile,
    gsd=image.gsd)``), so the numbers describe what users get. Load the detector at a low confidence
    (``Detector.load(path, conf=0.001)``) so the precision/recall curve reaches high recall; ``conf`` is the
    operating threshold at which precision and recall are reported.

    Args:
        detector: a :class:`detector.pipeline.Detector` (anything with that ``predict`` signature).
        images: labelled images, e.g. from :func:`detector.labels.read_dataset`.
        tile: tiling of the predictions (``None``: the model's defaults).
        iou_type: ``"aabb"`` or ``"rotated"``.
        classes: classes to evaluate (default: the classes present in the labels).
        conf: operating threshold for precision / recall.
        name: the eval set's name.
        progress: called with ``(images done, images total)`` after each image.

    Returns:
        The :class:`EvalResult`; ``meta`` holds the prediction time.
    """
    det_conf = getattr(getattr(detector, "predictor", None), "conf", None)
    if isinstance(det_conf, (int, float)) and det_conf > min(conf, 0.01):
        logger.warning(
            "the detector runs at conf=%s: the precision/recall curve stops there and AP is underestimated; "
            "load it with conf=0.001 for evaluation",
            det_conf,
        )
    predictions: list[Detections] = []
    t0 = time.perf_counter()
    for i, image in enumerate(images):
        predictions.append(detector.predict(image.image, tile=tile, gsd=image.gsd))
        if progress is not None:
            progress(i + 1, len(images))
    seconds = time.perf_counter() - t0
    result = evaluate_detections(
        images, predictions, classes=classes, iou_type=iou_type, conf=conf, name=name
    )
    result.meta["predict_seconds"] = round(seconds, 2)
    result.meta["seconds_per_image"] = round(seconds / max(len(images), 1), 3)
    return result


# --------------------------------------------------------------------------------------------------------------
# Reports


def _fmt(x: float | None, nd: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _delta(a: float, b: float) -> str:
    if math.isnan(a) or math.isnan(b):
        return "-"
    return f"{b - a:+.3f}"


def markdown_table(results: Sequence[EvalResult]) -> str:
    """One row per eval set and class (plus a mean row per set with several classes).

    Columns: AP50, AP50:95, AP50 per size (small / medium / large), precision and recall at the operating
    threshold, regular ground-truth count.
    """
    lines = [
        "| eval set | class | #GT | AP50 | AP50:95 | AP50 small | AP50 medium | AP50 large | P@conf | R@conf |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for c in r.classes.values():
            lines.append(
                f"| {r.name} | {c.name} | {c.n_gt['all']} | {_fmt(c.ap50['all'])} | {_fmt(c.ap['all'])} | "
                f"{_fmt(c.ap50['small'])} | {_fmt(c.ap50['medium'])} | {_fmt(c.ap50['large'])} | "
                f"{_fmt(c.precision)} | {_fmt(c.recall)} |"
            )
        if len(r.classes) > 1:
            n = sum(c.n_gt["all"] for c in r.classes.values())
            lines.append(f"| {r.name} | **mean** | {n} | {_fmt(r.map50)} | {_fmt(r.map)} | | | | | |")
        if not r.classes:
            lines.append(f"| {r.name} | (no ground truth of the evaluated classes) | 0 | - | - | | | | | |")
    return "\n".join(lines)


def comparison_table(baseline: Sequence[EvalResult], other: Sequence[EvalResult]) -> str:
    """Side-by-side AP50, AP50:95 and recall at the operating threshold of two models, with deltas (B - A).

    Rows are matched by eval set and class; a row missing on one side shows ``-``.
    """
    lines = [
        "| eval set | class | #GT | AP50 A | AP50 B | Δ | AP50:95 A | AP50:95 B | Δ | R@conf A | R@conf B | Δ "
        "| P@conf A | P@conf B | Δ |",
        "|---|---|---:|" + "---:|" * 12,
    ]
    b_by = {r.name: r for r in other}
    nan = math.nan

    def values(c: ClassResult | None) -> tuple[float, ...]:
        return (c.ap50["all"], c.ap["all"], c.recall, c.precision) if c else (nan,) * 4

    for a in baseline:
        b = b_by.get(a.name)
        b_classes = b.classes if b else {}
        names = list(a.classes) + [c for c in b_classes if c not in a.classes]
        rows: list[tuple[str, int, tuple[float, ...], tuple[float, ...]]] = []
        for cname in names:
            ca, cb = a.classes.get(cname), b_classes.get(cname)
            n_gt = ca.n_gt["all"] if ca else cb.n_gt["all"] if cb else 0
            rows.append((cname, n_gt, values(ca), values(cb)))
        if len(a.classes) > 1 and b is not None:
            total = sum(r[1] for r in rows)
            rows.append(("**mean**", total, (a.map50, a.map, nan, nan), (b.map50, b.map, nan, nan)))
        for cname, n, va, vb in rows:
            cells = []
            for x, y in zip(va, vb, strict=True):
                cells += [_fmt(x), _fmt(y), _delta(x, y)]
            lines.append(f"| {a.name} | {cname} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(
    path: str | Path,
    runs: Sequence[tuple[str, Sequence[EvalResult]]],
    *,
    command: str | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write the report: the command, one table per model and, with two or more models, comparison tables.

    Args:
        path: the ``.md`` file to write.
        runs: ``(model label, results per eval set)`` for each model, the first one being the baseline.
        command: the exact command that produced the numbers (put in the header).
        notes: extra lines under the header (conditions: tiling, IoU type, thresholds, limits).
    """
    out = ["# Evaluation", ""]
    if command:
        out += ["Command:", "", "```", command, "```", ""]
    out += [f"- {n}" for n in notes]
    if notes:
        out.append("")
    for label, results in runs:
        out += [f"## {label}", "", markdown_table(results), ""]
        extra = [
            f"{r.name}: {', '.join(f'{k} {v}' for k, v in r.extra_fp.items())}" for r in results if r.extra_fp
        ]
        if extra:
            out += ["False positives at the operating threshold of classes the set has no labels of:", ""]
            out += [f"- {e}" for e in extra] + [""]
    base_label, base = runs[0] if runs else ("", [])
    for label, results in runs[1:]:
        out += [f"## {label} (B) vs {base_label} (A)", "", comparison_table(base, results), ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out))
    return path


def write_json(
    path: str | Path, runs: Sequence[tuple[str, Sequence[EvalResult]]], *, command: str | None = None
) -> Path:
    """Write every number (per class, size and threshold, PR curves) as JSON: ``{"command", "models": [...]}``."""
    doc = {
        "command": command,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "models": [{"model": label, "sets": [r.to_dict() for r in results]} for label, results in runs],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, allow_nan=False))
    return path


def plot_pr_curves(path: str | Path, curves: Sequence[tuple[str, EvalResult]]) -> Path | None:
    """Draw the precision/recall curves (IoU 0.50) of one eval set, one line per model and class.

    The operating point (precision, recall at ``conf``) is marked on each line. Needs matplotlib (shipped with
    the ``train`` extra); without it this logs a warning and returns ``None``.

    Args:
        path: the ``.png`` file to write.
        curves: ``(model label, result)`` pairs, all of the same eval set.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed: skipping the PR curve %s (pip install matplotlib)", path)
        return None
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    for i, (label, result) in enumerate(curves):
        for j, c in enumerate(result.classes.values()):
            color = f"C{j}"
            ax.plot(
                RECALL_POINTS,
                c.pr_precision,
                styles[i % len(styles)],
                color=color,
                label=f"{label} {c.name} AP50 {_fmt(c.ap50['all'])}",
            )
            if not math.isnan(c.precision):
                ax.plot([c.recall], [c.precision], "o", color=color)
    title = curves[0][1].name if curves else ""
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=f"{title} (IoU 0.50)")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="lower left")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------------------------------------------
# The eval sets and the command


def load_eval_config(path: str | Path | None = None) -> dict[str, Any]:
    """Read ``configs/eval.yaml`` (or ``path``): defaults and the eval sets.

    Raises:
        ConfigError: the file is missing, is not YAML, is not a mapping, has no ``sets`` mapping, or a set is
            not a mapping (the message names the file).
    """
    import yaml

    p = Path(path) if path is not None else DEFAULT_CONFIG
    if not p.is_file():
        raise ConfigError(f"eval config {p} not found")
    try:
        cfg = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: cannot read the eval config ({e})") from e
    if not isinstance(cfg, dict):
        raise ConfigError(
            f"{p}: an eval config must be a YAML mapping with a `sets:` key, got {type(cfg).__name__}"
        )
    sets = cfg.get("sets")
    if not isinstance(sets, dict) or not sets:
        raise ConfigError(f"{p}: expected a `sets:` mapping of eval set name -> dataset spec")
    bad = [name for name, spec in sets.items() if not isinstance(spec, dict)]
    if bad:
        raise ConfigError(
            f"{p}: eval set {bad[0]!r} must be a mapping (a dataset spec), got {sets[bad[0]]!r}"
        )
    for key in ("conf", "conf_eval", "overlap"):
        value = cfg.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"{p}: `{key}` must be a number in [0, 1], got {value!r}")
    if not isinstance(cfg.get("data_root", ""), str):
        raise ConfigError(f"{p}: `data_root` must be a folder name, got {cfg['data_root']!r}")
    for where, section in [("", cfg), *((f"eval set {n!r}: ", spec) for n, spec in sets.items())]:
        if section.get("iou_type", "aabb") not in IOU_TYPES:
            raise ConfigError(
                f"{p}: {where}`iou_type` must be one of {IOU_TYPES}, got {section['iou_type']!r}"
            )
        classes = section.get("classes", [])
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise ConfigError(f"{p}: {where}`classes` must be a list of class names, got {classes!r}")
    return cfg


def load_eval_set(
    name: str, data_root: str | Path, *, config: dict[str, Any] | None = None, limit: int | None = None
) -> tuple[list[LabeledImage], dict[str, Any]]:
    """Read one eval set of the config with :func:`detector.labels.read_dataset`.

    Args:
        name: a key of the config's ``sets``.
        data_root: folder the sets' ``path`` entries are relative to.
        config: the parsed config (default :func:`load_eval_config`).
        limit: keep at most this many images, spread evenly over the sorted set (deterministic).

    Returns:
        ``(images, spec)``: the labelled images and the set's spec (with ``classes``, ``iou_type`` ...).

    Raises:
        ConfigError: the set is not in the config, or its folder does not exist under ``data_root``.
        LabelError: from the label reader (naming the file and line).
    """
    from detector.labels import read_dataset

    cfg = config if config is not None else load_eval_config()
    if name not in cfg["sets"]:
        raise ConfigError(
            f"eval set {name!r} is not in the eval config; known sets: {', '.join(cfg['sets'])}"
        )
    spec = dict(cfg["sets"][name])
    target = Path(data_root) / str(spec.get("path", ""))
    if not target.exists():
        raise ConfigError(
            f"eval set {name!r}: {target} not found (set the data root, e.g. --data ../shared/data)"
        )
    ds_spec = {k: v for k, v in spec.items() if k not in _EVAL_KEYS}
    images = sorted(read_dataset(ds_spec, root=data_root), key=lambda im: str(im.image))
    return spread_evenly(images, limit), spec


def spread_evenly(items: Sequence[T], limit: int | None) -> list[T]:
    """At most ``limit`` of ``items`` (at least one), spread evenly over them in order; all of them when
    ``limit`` is ``None``."""
    if limit is None or limit >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, max(limit, 1)).round().astype(int)
    return [items[i] for i in np.unique(idx)]


def run(
    weights: Sequence[str | Path | None],
    sets: Sequence[str] | None = None,
    data_root: str | Path | None = None,
    out_dir: str | Path = "out/eval",
    conf: float | None = None,
    tile: int | None = None,
    overlap: float | None = None,
    limit: int | None = None,
    *,
    zoom: float = 1.0,
    iou_type: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    runtime: str = "onnxruntime",
    config: str | Path | None = None,
    command: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate one or more models on the eval sets and write ``eval.md``, ``eval.json`` and PR-curve PNGs.

    With two or more models the first is the baseline: the markdown gets a side-by-side table per other model
    with deltas (B - A).

    Args:
        weights: model files (``.onnx`` or ``.pt``); ``None`` entries mean the default model.
        sets: eval set names from the config (default: all of them).
        data_root: folder holding the sets (default: ``$DETECTOR_SHARED_DATA``, else the config's
            ``data_root``, relative to the config file's folder).
        out_dir: where the reports go.
        conf: operating threshold for precision / recall (default: the config's ``conf``).
        tile, overlap: tiling (``None``: the model's tile size, the config's overlap).
        zoom: magnification on top of any GSD resampling (:attr:`~detector.tiling.TileConfig.zoom`).
        limit: at most this many images per set (evenly spread), for quick runs.
        iou_type: ``"aabb"`` or ``"rotated"`` (default: per set, from the config).
        device: ``"cpu"`` or ``"cuda"``.
        threads: CPU threads of the model (default: the backend's).
        runtime: what runs ``.onnx`` models: ``"onnxruntime"`` or ``"openvino"``.
        config: the eval config (default ``configs/eval.yaml``).
        command: the command line to record in the reports (default: this process's ``sys.argv``).
        progress: called with ``(label, images done, images total)``.

    Returns:
        ``{"markdown": path, "json": path, "plots": [paths], "results": {model label: [EvalResult, ...]}}``.
    """
    from detector.pipeline import Detector
    from detector.tiling import TileConfig

    cfg = load_eval_config(config)
    cfg_path = Path(config) if config is not None else DEFAULT_CONFIG
    if data_root is None:
        env = os.environ.get("DETECTOR_SHARED_DATA")
        # a relative data_root in the config is relative to the config file's folder
        data_root = (
            Path(env) if env else cfg_path.resolve().parent / cfg.get("data_root", "../../shared/data")
        )
    data_root = Path(data_root).resolve()
    conf = float(cfg.get("conf", 0.25) if conf is None else conf)
    conf_eval = float(cfg.get("conf_eval", 0.001))
    overlap = float(cfg.get("overlap", 0.2) if overlap is None else overlap)
    set_names = list(sets) if sets else list(cfg["sets"])
    tile_cfg = TileConfig(tile=tile, overlap=overlap, zoom=zoom)
    if command is None:
        command = " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    data = {n: load_eval_set(n, data_root, config=cfg, limit=limit) for n in set_names}
    runs: list[tuple[str, list[EvalResult]]] = []
    for w in weights:
        det = Detector.load(w, device=device, conf=min(conf_eval, conf), threads=threads, runtime=runtime)
        label = det.meta.name or (Path(w).stem if w is not None else "default")
        while label in {lbl for lbl, _ in runs}:
            label += "'"
        results = []
        for n in set_names:
            images, spec = data[n]
            cb = (lambda i, k, _n=f"{label} {n}": progress(_n, i, k)) if progress else None
            r = evaluate(
                det,
                images,
                tile=tile_cfg,
                iou_type=iou_type or spec.get("iou_type", cfg.get("iou_type", "aabb")),
                classes=spec.get("classes"),
                conf=conf,
                name=n,
                progress=cb,
            )
            r.meta.update(
                model=label,
                weights=str(w) if w is not None else None,
                tile=tile,
                overlap=overlap,
                zoom=zoom,
                conf_eval=conf_eval,
                limit=limit,
                data_root=str(data_root),
            )
            logger.info("%s on %s: mAP50 %s, mAP50:95 %s", label, n, _fmt(r.map50), _fmt(r.map))
            results.append(r)
        runs.append((label, results))

    kinds = sorted({r.iou_type for _, results in runs for r in results})
    boxes = (
        kinds[0]
        if len(kinds) == 1
        else ", ".join(f"{r.name} {r.iou_type}" for r in (runs[0][1] if runs else []))
    )
    notes = [
        f"data root `{data_root}`; images per set: "
        + ", ".join(f"{n} {len(data[n][0])}" for n in set_names)
        + (f" (at most {limit} per set, evenly spread)" if limit else ""),
        f"operating threshold conf={conf} (P, R at IoU 0.50, all sizes); curves from detections at conf>={conf_eval}",
        f"tiling: tile={tile or 'model imgsz'}, overlap={overlap}, zoom={zoom}, device={device}; boxes compared "
        f"as {boxes} "
        "(aabb: enclosing axis-aligned boxes); COCO 101-point AP, no per-image detection cap; sizes by GT box "
        "area in image pixels (small < 32², medium < 96², large)",
    ]
    for label, results in runs:
        secs = ", ".join(f"{r.name} {r.meta.get('seconds_per_image', '?')}" for r in results)
        notes.append(f"{label}: seconds per image (prediction) {secs}")
    md = write_markdown(out / "eval.md", runs, command=command, notes=notes)
    js = write_json(out / "eval.json", runs, command=command)
    plots = []
    for i, n in enumerate(set_names):
        safe = n.replace("/", "_")
        p = plot_pr_curves(out / f"pr_{safe}.png", [(label, results[i]) for label, results in runs])
        if p is not None:
            plots.append(p)
    return {"markdown": md, "json": js, "plots": plots, "results": {label: res for label, res in runs}}
