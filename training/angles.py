"""Rotated labels for sources that only have axis-aligned boxes (HRPlanes, KIT), derived from a rotated model.

An axis-aligned label does not say which way an aircraft points; training an OBB model on angle-0 boxes would
teach it that every aircraft points north. Instead (issue 7, "derive their angles"):

1. run a rotated (OBB) model over the source image (by default the DOTA start, ``yolov8n-obb``);
2. for every label box, take the rotated detection of a compatible class whose *silhouette box* matches the
   label best. The silhouette box is the axis-aligned box the object itself would have inside the rotated
   rectangle: for vehicles the rectangle's enclosing box; for aircraft and helicopters the box of the cross
   drawn by fuselage and wings (a rotated rectangle's corners are empty for an aircraft, so its enclosing box
   is up to ~4x the tight label at 45 degrees, and comparing to it would reject exactly the diagonal aircraft);
3. keep the match when that IoU is ``>= min_iou`` (0.8): the label becomes the model's rotated rectangle,
   centred on the label box and scaled so that its silhouette box has the label's area;
4. otherwise the object is **unresolved**: its box is painted over with the padding gray in the chips (an
   ignore region), never taught as angle 0 and never taught as background.

``measure`` scores the rule on a source that has rotated labels (GDIT's quadrilaterals, DOTA): it hides the
angles, derives them from the enclosing boxes, and compares with the truth (the model card's numbers).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from detector import geometry
from detector.geometry import box_iou_xyxy, object_boxes, polygon_overlaps, xywhr_to_corners
from detector.labels.types import LabeledImage, box_polygon, min_area_rect

logger = logging.getLogger(__name__)

#: classes drawn as a cross inside their rotated rectangle: the aircraft of :mod:`detector.geometry`, and
#: helicopters (fuselage and blades) when matching a label
CROSS_CLASSES = geometry.CROSS_CLASSES | geometry.DISC_CLASSES
#: class groups a label may take its angle from
GROUPS = (
    {"aircraft", "helicopter", "transport-aircraft", "small-aircraft"},
    {"small-vehicle", "large-vehicle"},
)
UNRESOLVED = "unresolved"  # Annotation.attrs key: True when no angle could be derived (an ignore region)


@dataclass
class AngleStats:
    """What the derivation did on one source."""

    objects: int = 0
    derived: int = 0
    unresolved: int = 0

    def to_dict(self) -> dict[str, Any]:
        share = self.derived / self.objects if self.objects else 0.0
        return {
            "objects": self.objects,
            "derived": self.derived,
            "unresolved": self.unresolved,
            "share": share,
        }


def silhouette_boxes(xywhr: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """Axis-aligned boxes ``(N, 4)`` of objects inside rotated rectangles ``(N, 5)``: the rectangle's enclosing
    box, or (``cross`` true) the box of the cross of its two centre lines (an aircraft's fuselage and wings);
    :func:`detector.geometry.object_boxes`, the rule the pipeline applies to its own rotated detections."""
    return object_boxes(xywhr, np.where(np.asarray(cross, dtype=bool).reshape(-1), "cross", "rect"))


def _compatible(label_cls: str, det_cls: str) -> bool:
    return any(label_cls in g and det_cls in g for g in GROUPS)


def iou_pairs(iou: np.ndarray, min_iou: float) -> list[tuple[int, int]]:
    """One-to-one ``(row, column)`` pairs of an IoU matrix: the Hungarian assignment that maximises the total
    IoU, keeping the pairs whose IoU reaches ``min_iou``."""
    rows, cols = linear_sum_assignment(-iou)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if iou[i, j] >= min_iou]


def assign_angles(
    boxes: np.ndarray,
    classes: Sequence[str],
    det_xywhr: np.ndarray,
    det_classes: Sequence[str],
    *,
    min_iou: float = 0.8,
) -> tuple[np.ndarray, np.ndarray]:
    """Rotated rectangles for label ``boxes`` ``(N, 4)`` from rotated detections ``(M, 5)``.

    Returns ``(xywhr (N, 5), ok (N,))``: for each label the derived rectangle (centred on the label box, its
    sides scaled so that its silhouette box has the label's area) and whether one was found; labels without
    a match of silhouette IoU ``>= min_iou`` get ``ok=False`` (their row is the angle-0 box, not to be used).
    One detection serves at most one label (Hungarian assignment on IoU).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    det_xywhr = np.asarray(det_xywhr, dtype=np.float64).reshape(-1, 5)
    n = len(boxes)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = boxes[:, 2:] - boxes[:, :2]
    out = np.column_stack([centre, size, np.zeros(n)])
    ok = np.zeros(n, dtype=bool)
    if n == 0 or len(det_xywhr) == 0:
        return out, ok
    cross_l = np.array([c in CROSS_CLASSES for c in classes])
    cross_d = np.array([c in CROSS_CLASSES for c in det_classes])
    sil = silhouette_boxes(det_xywhr, cross_d)
    iou = box_iou_xyxy(boxes, sil)
    compat = np.array([[_compatible(lc, dc) for dc in det_classes] for lc in classes])
    iou = np.where(compat, iou, 0.0)
    for i, j in iou_pairs(iou, min_iou):
        cx, cy, w, h, r = det_xywhr[j]
        # scale the rectangle so that its silhouette (under the label's class model) has the label's area
        sb = silhouette_boxes(np.array([[cx, cy, w, h, r]]), np.array([cross_l[i]]))[0]
        area_s = float(np.prod(sb[2:] - sb[:2]))
        k = np.sqrt(float(np.prod(size[i])) / area_s) if area_s > 0 else 1.0
        out[i] = (centre[i, 0], centre[i, 1], w * k, h * k, r)
        ok[i] = True
    return out, ok


def axis_aligned(rect: np.ndarray) -> bool:
    """Whether a label rectangle ``(4, 2)`` has horizontal and vertical sides (GDIT writes its axis-aligned
    boxes as DOTA quadrilaterals, so the reader's ``rotated`` flag cannot tell)."""
    edges = np.diff(np.vstack([rect, rect[:1]]), axis=0)
    return bool((np.abs(edges).min(axis=1) <= 1e-6 * max(1.0, float(np.abs(rect).max()))).all())


def derive_image(
    img: LabeledImage, detector: Any, classes: Sequence[str], *, min_iou: float = 0.8
) -> tuple[LabeledImage, AngleStats]:
    """``img`` with rotated labels derived by ``detector`` (a :class:`detector.pipeline.Detector` of an OBB
    model); unresolved objects keep their box and get ``attrs["unresolved"] = True``."""
    stats = AngleStats()
    idx = [i for i, a in enumerate(img.annotations) if a.cls in classes and axis_aligned(a.polygon)]
    if not idx:
        return img, stats
    dets = detector.predict(str(img.image))
    if dets.xywhr is None:
        raise ValueError(f"angle derivation needs a rotated (OBB) model, got {detector.meta.task!r}")
    names = [dets.class_names[c] for c in dets.class_ids]
    boxes = np.array([img.annotations[i].xyxy for i in idx])
    xywhr, ok = assign_angles(
        boxes, [img.annotations[i].cls for i in idx], dets.xywhr, names, min_iou=min_iou
    )
    anns = list(img.annotations)
    for k, i in enumerate(idx):
        a = anns[i]
        stats.objects += 1
        if ok[k]:
            stats.derived += 1
            rect = xywhr_to_corners(xywhr[k : k + 1])[0]
            attrs = {key: v for key, v in a.attrs.items() if key != "outline"}
            anns[i] = replace(a, polygon=rect, rotated=True, attrs={**attrs, "angle_from": "model"})
        else:
            stats.unresolved += 1
            anns[i] = replace(a, attrs={**a.attrs, UNRESOLVED: True})
    return replace(img, annotations=anns), stats


def load_detector(model: str | Path, *, conf: float = 0.05, threads: int | None = None) -> Any:
    """The rotated model used for derivation, with the product's tiling and no size rules or cross-class
    merge (each detection's own geometry is wanted)."""
    from detector.pipeline import Detector

    det = Detector.load(
        model, conf=conf, threads=threads, sizes=False, cross_class_iou=None, resolution_factor=None
    )
    if det.meta.task != "obb":
        raise ValueError(
            f"{model}: angle derivation needs a rotated (OBB) model, this one is {det.meta.task!r}"
        )
    return det


def derive(
    images: Iterable[LabeledImage], spec: dict[str, Any], classes: Sequence[str], *, root: Path | None = None
) -> tuple[list[LabeledImage], AngleStats]:
    """Derive angles for every image of a source (``spec`` is the source's ``derive_angles`` mapping:
    ``model`` (path), ``min_iou`` (0.8), ``conf`` (0.05))."""
    model = Path(spec.get("model", "weights/pretrained/yolov8n-obb.onnx"))
    detector = load_detector(model, conf=float(spec.get("conf", 0.05)))
    min_iou = float(spec.get("min_iou", 0.8))
    total = AngleStats()
    out = []
    for img in images:
        new, st = derive_image(img, detector, classes, min_iou=min_iou)
        out.append(new)
        total.objects += st.objects
        total.derived += st.derived
        total.unresolved += st.unresolved
    return out, total


# ------------------------------------------------------------------------------------------- measurement


def _rect_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two rectangles ``(4, 2)`` (:func:`detector.geometry.polygon_overlaps`)."""
    return float(polygon_overlaps(a[None], b[None])[0][0, 0])


def measure(
    images: Sequence[LabeledImage], detector: Any, classes: Sequence[str], *, min_iou: float = 0.8
) -> dict[str, Any]:
    """Hide the angles of rotated labels, derive them from their enclosing boxes, compare with the truth.

    Returns per class: objects, derived share, median rotated IoU of the derived rectangle with the true one,
    and the same for the angle-0 box (what training on axis-aligned labels would teach).
    """
    per: dict[str, dict[str, list[float]]] = {}
    for img in images:
        anns = [a for a in img.annotations if a.cls in classes and a.rotated]
        if not anns:
            continue
        hidden = [replace(a, polygon=box_polygon(*a.xyxy), rotated=False, attrs={}) for a in anns]
        derived, _ = derive_image(replace(img, annotations=hidden), detector, classes, min_iou=min_iou)
        for a, d in zip(anns, derived.annotations, strict=True):
            rec = per.setdefault(a.cls, {"ok": [], "iou_derived": [], "iou_box": []})
            truth = min_area_rect(a.polygon)
            ok = not d.attrs.get(UNRESOLVED, False)
            rec["iou_box"].append(_rect_iou(truth, box_polygon(*a.xyxy)))
            rec["iou_derived"].append(_rect_iou(truth, d.polygon) if ok else np.nan)
            rec["ok"].append(float(ok))
    report: dict[str, Any] = {}
    for cls, rec in sorted(per.items()):
        pairs = [(b, d) for b, d, ok in zip(rec["iou_box"], rec["iou_derived"], rec["ok"], strict=True) if ok]
        report[cls] = {
            "objects": len(rec["ok"]),
            "derived_share": float(np.mean(rec["ok"])),
            "median_iou_derived": float(np.median([d for _, d in pairs])) if pairs else None,
            "median_iou_box_same_objects": float(np.median([b for b, _ in pairs])) if pairs else None,
            "median_iou_box_all": float(np.median(rec["iou_box"])),
        }
    return report


def cross_box(rect: np.ndarray) -> np.ndarray:
    """The aircraft box ``(4,)`` a rotated model's rectangle ``(4, 2)`` stands for: the box of its centre lines
    (:func:`detector.geometry.object_boxes`, ``"cross"``)."""
    from detector.labels.types import rect_axes

    c, length, width, axis = rect_axes(rect)
    xywhr = np.array([[c[0], c[1], length, width, np.arctan2(axis[1], axis[0])]])
    return object_boxes(xywhr, np.array(["cross"]))[0]


def axis_check(images: Sequence[LabeledImage], classes: Sequence[str] = ("aircraft",)) -> dict[str, Any]:
    """How well each rectangle convention of polygon-traced aircraft gives back the aircraft's own box.

    A rotated model's aircraft rectangle is read as the box of its centre lines
    (:func:`detector.geometry.object_boxes`, ``"cross"``), so a label convention whose rectangles do not give
    the outline's box that way caps the model's AP50 on enclosing boxes whatever it learns. For every
    aircraft with an outline: IoU of the outline's box with the object box of its minimum-area rectangle and
    of its symmetry-axis rectangle (:func:`detector.labels.types.aircraft_axis_rect`); medians and the shares
    below 0.5 (all, and objects not cut by the image edge).
    """
    from detector.labels.types import aircraft_axis_rect

    rows = []
    for img in images:
        for a in img.annotations:
            if a.cls not in classes or a.attrs.get("outline") is None:
                continue
            out = a.outline
            truth = np.r_[out.min(axis=0), out.max(axis=0)][None]
            w, h = img.width or np.inf, img.height or np.inf  # unknown size: only the top/left edge counts
            cut = bool(out.min() <= 1 or out[:, 0].max() >= w - 1 or out[:, 1].max() >= h - 1)
            iou_min = box_iou_xyxy(truth, cross_box(min_area_rect(out))[None])[0, 0]
            iou_axis = box_iou_xyxy(truth, cross_box(aircraft_axis_rect(out)[0])[None])[0, 0]
            rows.append((iou_min, iou_axis, cut))
    if not rows:
        return {"objects": 0}
    arr = np.array(rows, dtype=np.float64)
    whole = arr[:, 2] == 0
    report: dict[str, Any] = {"objects": len(arr), "cut_by_edge": int((~whole).sum())}
    for k, name in ((0, "min_area"), (1, "axis")):
        report[name] = {
            "median_iou": round(float(np.median(arr[:, k])), 3),
            "share_below_0.5": round(float((arr[:, k] < 0.5).mean()), 3),
            "share_below_0.5_whole": round(float((arr[whole, k] < 0.5).mean()), 3) if whole.any() else None,
        }
    return report


def main(argv: list[str] | None = None) -> int:
    from detector.labels import read_dataset
    from detector.taxonomy import load_taxonomy

    p = argparse.ArgumentParser(
        prog="python -m training.angles",
        description="Measure the angle derivation on a source with rotated labels (angles hidden, then derived).",
    )
    p.add_argument("--data", default="../shared/data", help="data root")
    p.add_argument("--model", default="weights/pretrained/yolov8n-obb.onnx")
    p.add_argument("--min-iou", type=float, default=0.8)
    p.add_argument("--limit", type=int, default=None, help="at most this many images per source")
    p.add_argument(
        "--set",
        action="append",
        default=None,
        help="an eval set of configs/eval.yaml with rotated labels (default: isaid-512/test and dota/demo)",
    )
    p.add_argument("-o", "--out", default=None, help="write the report as JSON here")
    p.add_argument(
        "--axis-check",
        action="store_true",
        help="no model: compare the min-area and symmetry-axis rectangles of polygon-traced aircraft (axis_check)",
    )
    args = p.parse_args(argv)
    taxonomy = load_taxonomy()
    classes = taxonomy.classes
    import yaml

    from detector.resources import config_path

    sets = yaml.safe_load(config_path("eval.yaml").read_text())["sets"]
    detector = None if args.axis_check else load_detector(args.model)
    report = {}
    for name in args.set or ["isaid-512/test", "dota/demo"]:
        spec = {
            k: v
            for k, v in sets[name].items()
            if k not in ("description", "classes", "iou_type", "aircraft_box")  # the raw polygons
        }
        imgs = read_dataset(spec, root=Path(args.data), taxonomy=taxonomy)[: args.limit]
        if detector is None:
            report[name] = axis_check(imgs)
        else:
            report[name] = measure(imgs, detector, classes, min_iou=args.min_iou)
        print(name, json.dumps(report[name], indent=1), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
