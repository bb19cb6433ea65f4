"""Fit how far a rotated model's aircraft boxes reach beyond the cross of fuselage and wings (``cross_fill``).

A rotated detection's ``xyxy`` is the object's own axis-aligned box (:func:`detector.geometry.object_boxes`): for
an aircraft the box of the cross its rectangle's two centre lines draw. A real aircraft is wider than two lines
(swept wings, tailplane, engines, and a label's margin), so the box of a diagonal aircraft comes out too small:
on ``gdit-airport/test`` the first rotated models' boxes of aircraft at 30-45 degrees were 0.79-0.83 of the label
per side, while those along the image axes were right. ``cross_fill`` moves each side of the cross's box that share
of the way towards the rectangle's enclosing box.

This module measures it on **training** images (never an eval set): run the model, match its aircraft to the
labels (Hungarian on box IoU >= ``min_iou`` with the plain cross), and for each matched pair and axis where the
rectangle's enclosing box is at least ``min_gap`` px wider than the cross, solve
``label side = cross side + fill * (enclosing side - cross side)``; the median over those is the fit. ``--write``
stores it in the ONNX file's metadata (``extra["object_box"]``), which the pipeline reads.

    python -m training.boxfit MODEL.onnx --data ../shared/data --limit 120 [--write]
    python -m training.boxfit MODEL.onnx --angles gdit-airport/test --limit 10     # the diagnosis, per angle

``--vehicles`` fits ``rect_fill`` (a rotated vehicle's box between its ellipse and its rectangle) the same way.
``--helicopters`` fits ``disc_scale`` for a **detect** model trained on fuselage labels: matched to iSAID's
fuselage labels, each helicopter box's longer side against the side of the label's rotor disc (the DOTA
convention, :func:`detector.labels.types.rotor_disc`); the pipeline then draws the disc
(:func:`detector.geometry.fuselage_discs`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from detector.errors import DetectorError
from detector.geometry import CROSS_CLASSES, DISC_CLASSES, box_iou_xyxy, fuselage_discs, object_boxes
from detector.labels import LabeledImage, read_dataset
from detector.labels.types import rotor_disc
from training.angles import iou_pairs
from training.helicopters import isaid_spec

logger = logging.getLogger(__name__)

VEHICLE_CLASSES = ("small-vehicle", "large-vehicle")

#: Training sources with axis-aligned aircraft labels (the sources of ``configs/data/cpu-obb.yaml``)
SOURCES: dict[str, dict[str, Any]] = {
    "gdit-airport/train": {"format": "dota", "name": "gdit-airport", "path": "gdit-airport/train"},
    "hrplanes/train": {
        "format": "coco",
        "name": "hrplanes",
        "path": "hrplanes/train/_annotations.coco.json",
    },
}
#: Training sources with vehicle labels for ``--vehicles`` (iSAID's traced outlines, KIT's boxes)
VEHICLE_SOURCES: dict[str, dict[str, Any]] = {
    "isaid-512/train": isaid_spec("isaid-512/train"),
    "kit-aerial-cars/MOS74-93": {
        "format": "yolo",
        "name": "kit-aerial-cars",
        "path": "kit-aerial-cars/MOS74-93",
        "names": "kit-aerial-cars/aerial.names",
        "gsd": 0.13,
    },
}

#: Training sources with fuselage-only helicopter labels for ``--helicopters``
HELICOPTER_SOURCES: dict[str, dict[str, Any]] = {"isaid-512/train": isaid_spec("isaid-512/train")}


def fill_samples(
    label_boxes: np.ndarray, xywhr: np.ndarray, *, min_iou: float = 0.3, min_gap: float = 2.0
) -> np.ndarray:
    """The per-axis ``cross_fill`` that would make each matched detection's box side equal its label's.

    Args:
        label_boxes: ``(N, 4)`` axis-aligned aircraft labels of one image.
        xywhr: ``(M, 5)`` the model's rotated aircraft detections in the same pixels.
        min_iou: a detection matches a label when the plain cross box's IoU reaches this.
        min_gap: only axes where the enclosing box is this many pixels wider than the cross count (near angle 0
            both are the same and the fill is undefined).

    Returns:
        ``(K,)`` samples (not clipped: a loose label gives values above 1, a tight one below 0).
    """
    xywhr = np.asarray(xywhr, dtype=np.float64).reshape(-1, 5)
    cross = object_boxes(xywhr, np.full(len(xywhr), "cross"))
    rect = object_boxes(xywhr, np.full(len(xywhr), "rect"))
    return _axis_fills(label_boxes, cross, rect, match=cross, min_iou=min_iou, min_gap=min_gap)


def rect_fill_samples(
    label_boxes: np.ndarray, xywhr: np.ndarray, *, min_iou: float = 0.3, min_gap: float = 1.5
) -> np.ndarray:
    """The per-axis ``rect_fill`` that would make each matched vehicle detection's box side equal its label's:
    ``label side = ellipse side + fill * (rectangle side - ellipse side)`` (:func:`fill_samples` for vehicles;
    matched on the rectangle's enclosing box)."""
    xywhr = np.asarray(xywhr, dtype=np.float64).reshape(-1, 5)
    rect = object_boxes(xywhr, np.full(len(xywhr), "rect"))
    ell = object_boxes(xywhr, np.full(len(xywhr), "rect"), rect_fill=0.0)
    return _axis_fills(label_boxes, ell, rect, match=rect, min_iou=min_iou, min_gap=min_gap)


def _axis_fills(
    label_boxes: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    *,
    match: np.ndarray,
    min_iou: float,
    min_gap: float,
) -> np.ndarray:
    """Per-axis ``f`` with ``label side = low side + f * (high side - low side)``, for each label matched to a
    detection (Hungarian on IoU >= ``min_iou`` with the detections' ``match`` boxes) on the axes where ``high``
    is at least ``min_gap`` px wider than ``low``: the samples of both fills."""
    label_boxes = np.asarray(label_boxes, dtype=np.float64).reshape(-1, 4)
    if not len(label_boxes) or not len(match):
        return np.zeros(0)
    out = []
    for i, j in iou_pairs(box_iou_xyxy(label_boxes, match), min_iou):
        for ax in (0, 1):
            lab = label_boxes[i, ax + 2] - label_boxes[i, ax]
            lo, hi = low[j, ax + 2] - low[j, ax], high[j, ax + 2] - high[j, ax]
            if hi - lo >= min_gap:
                out.append((lab - lo) / (hi - lo))
    return np.asarray(out, dtype=np.float64)


def fit(
    detector: Any, images: Sequence[LabeledImage], *, min_iou: float = 0.3, min_gap: float = 2.0
) -> dict[str, Any]:
    """Run ``detector`` (a :class:`detector.pipeline.Detector` of a rotated model, object boxes off) over labelled
    images and fit ``cross_fill``: the median of :func:`fill_samples`, clipped to [0, 1]."""
    samples = []
    objects = 0
    for _, boxes, dets in _labelled(detector, images, CROSS_CLASSES, "cross_fill"):
        objects += len(boxes)
        samples.append(fill_samples(boxes, dets.xywhr, min_iou=min_iou, min_gap=min_gap))
    s = np.concatenate(samples) if samples else np.zeros(0)
    if not len(s):
        raise DetectorError("no diagonal aircraft matched: cannot fit cross_fill")
    return _report("cross_fill", s, objects, len(images))


def _report(key: str, samples: np.ndarray, objects: int, images: int, *, clip: bool = True) -> dict[str, Any]:
    """A fit's report: the median of the samples (clipped to [0, 1] for a fill) as ``key``, and what it came
    from."""
    q = np.percentile(samples, [25, 50, 75])
    return {
        key: round(float(np.clip(q[1], 0.0, 1.0) if clip else q[1]), 3),
        "samples": int(len(samples)),
        "objects": objects,
        "images": images,
        "p25": round(float(q[0]), 3),
        "p75": round(float(q[2]), 3),
    }


def fit_vehicles(
    detector: Any, images: Sequence[LabeledImage], *, min_iou: float = 0.3, min_gap: float = 1.5
) -> dict[str, Any]:
    """:func:`fit` for vehicles: ``rect_fill``, the median of :func:`rect_fill_samples` over ``images``, clipped
    to [0, 1]; with the median per source (``LabeledImage.dataset``)."""
    by_source: dict[str, list[np.ndarray]] = {}
    objects = 0
    for img, boxes, dets in _labelled(detector, images, VEHICLE_CLASSES, "rect_fill"):
        objects += len(boxes)
        by_source.setdefault(img.dataset, []).append(
            rect_fill_samples(boxes, dets.xywhr, min_iou=min_iou, min_gap=min_gap)
        )
    per = {k: np.concatenate(v) for k, v in by_source.items()}
    s = np.concatenate(list(per.values())) if per else np.zeros(0)
    if not len(s):
        raise DetectorError("no diagonal vehicle matched: cannot fit rect_fill")
    return {
        **_report("rect_fill", s, objects, len(images)),
        "per_source": {
            k: {"samples": int(len(v)), "median": round(float(np.median(v)), 3)}
            for k, v in per.items()
            if len(v)
        },
    }


def disc_samples(
    fuselage_boxes: np.ndarray, disc_boxes: np.ndarray, xyxy: np.ndarray, *, min_iou: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each helicopter box ``xyxy`` ``(M, 4)`` matched to a fuselage label (Hungarian on IoU >= ``min_iou``):
    the label's rotor-disc box side over the detection's longer side (the ``disc_scale`` that would make them
    equal) ``(K,)``, then the matched detections' boxes and their disc labels' boxes ``(K, 4)`` in the same
    order (for the fit's hit rate).

    ``fuselage_boxes`` and ``disc_boxes`` ``(N, 4)`` are the same labels, as drawn and as rotor discs.
    """
    fuselage_boxes = np.asarray(fuselage_boxes, dtype=np.float64).reshape(-1, 4)
    disc_boxes = np.asarray(disc_boxes, dtype=np.float64).reshape(-1, 4)
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if not len(fuselage_boxes) or not len(xyxy):
        return np.zeros(0), np.zeros((0, 4)), np.zeros((0, 4))
    pairs = iou_pairs(box_iou_xyxy(fuselage_boxes, xyxy), min_iou)
    ratios = [
        np.max(disc_boxes[i, 2:] - disc_boxes[i, :2]) / max(np.max(xyxy[j, 2:] - xyxy[j, :2]), 1e-9)
        for i, j in pairs
    ]
    return (
        np.asarray(ratios, dtype=np.float64),
        xyxy[[j for _, j in pairs]].reshape(-1, 4),
        disc_boxes[[i for i, _ in pairs]].reshape(-1, 4),
    )


#: Measures of a helicopter box that a rotor disc's side could be a multiple of, compared in :func:`fit_discs`'s
#: report; :func:`detector.geometry.fuselage_discs` uses the first (it scored best on iSAID train).
DISC_BASES: dict[str, Any] = {
    "longer side": lambda wh: wh.max(axis=1),
    "diagonal": lambda wh: np.hypot(wh[:, 0], wh[:, 1]),
    "width + height": lambda wh: wh.sum(axis=1),
    "sqrt area": lambda wh: np.sqrt(wh.prod(axis=1)),
}


def disc_rules(dets: np.ndarray, discs: np.ndarray) -> dict[str, dict[str, float]]:
    """For each of :data:`DISC_BASES`: the median scale that makes a square of ``scale`` x that measure of each
    matched box ``dets`` ``(K, 4)`` as wide as its disc label ``discs`` ``(K, 4)``, and with it the squares'
    median IoU with the labels and their share at IoU >= 0.5."""
    wh = np.maximum(dets[:, 2:] - dets[:, :2], 1e-9)
    centre = (dets[:, :2] + dets[:, 2:]) / 2
    side = np.max(discs[:, 2:] - discs[:, :2], axis=1)
    out = {}
    for name, measure in DISC_BASES.items():
        base = measure(wh)
        scale = float(np.median(side / base))
        half = scale * base[:, None] / 2
        iou = np.diag(box_iou_xyxy(np.concatenate([centre - half, centre + half], axis=1), discs))
        out[name] = {
            "scale": round(scale, 3),
            "median_iou": round(float(np.median(iou)), 3),
            "iou50": round(float(np.mean(iou >= 0.5)), 3),
        }
    return out


def fit_discs(detector: Any, images: Sequence[LabeledImage], *, min_iou: float = 0.3) -> dict[str, Any]:
    """Run ``detector`` (a :class:`detector.pipeline.Detector` of a **detect** model, its own ``disc_scale``
    off) over images with fuselage helicopter labels and fit ``disc_scale``: the median of
    :func:`disc_samples`, with the share of matched helicopters whose disc box then overlaps the disc label at
    IoU >= 0.5, before and after, and the other box measures compared (:func:`disc_rules`).

    Raises:
        DetectorError: the model is rotated (it draws discs itself), or no helicopter matched.
    """
    if detector.meta.task == "obb":
        raise DetectorError("disc_scale is for detect models: a rotated model draws the rotor disc itself")
    ratios, dets, discs = [], [], []
    objects = 0
    for img in images:
        anns = [a for a in img.annotations if a.cls in DISC_CLASSES]
        if not anns:
            continue
        objects += len(anns)
        disc = np.array([np.r_[(d := rotor_disc(a.polygon)).min(axis=0), d.max(axis=0)] for a in anns])
        found = detector.predict(str(img.image))
        found = found[np.isin(found.class_name, list(DISC_CLASSES))]
        r, d, g = disc_samples(np.array([a.xyxy for a in anns]), disc, found.xyxy, min_iou=min_iou)
        ratios.append(r)
        dets.append(d)
        discs.append(g)
    s = np.concatenate(ratios) if ratios else np.zeros(0)
    if not len(s):
        raise DetectorError("no helicopter matched a label: cannot fit disc_scale")
    d, g = np.concatenate(dets), np.concatenate(discs)
    report = _report("disc_scale", s, objects, len(images), clip=False)
    after = fuselage_discs(d, report["disc_scale"])
    hits = [float(np.mean(np.diag(box_iou_xyxy(b, g)) >= 0.5)) for b in (d, after)]
    return {
        **report,
        "disc_iou50_before": round(hits[0], 3),
        "disc_iou50_after": round(hits[1], 3),
        "rules": disc_rules(d, g),
    }


#: buckets of the predicted angle from the image axes (degrees) for :func:`angle_ratios`
ANGLE_BUCKETS = ((0.0, 15.0), (15.0, 30.0), (30.0, 45.01))


def angle_ratios(
    label_boxes: np.ndarray, xyxy: np.ndarray, xywhr: np.ndarray, *, min_iou: float = 0.2
) -> list[tuple[float, float, float]]:
    """``(angle from the image axes in degrees, width ratio, height ratio)`` of each detection box ``xyxy``
    matched to a label (Hungarian on IoU >= ``min_iou``): the diagnosis behind ``cross_fill`` (diagonal aircraft
    whose boxes come out small)."""
    label_boxes = np.asarray(label_boxes, dtype=np.float64).reshape(-1, 4)
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if not len(label_boxes) or not len(xyxy):
        return []
    ang = np.degrees(np.asarray(xywhr, dtype=np.float64).reshape(-1, 5)[:, 4]) % 90
    ang = np.minimum(ang, 90 - ang)
    out = []
    for i, j in iou_pairs(box_iou_xyxy(xyxy, label_boxes), min_iou):
        size_d, size_l = xyxy[i, 2:] - xyxy[i, :2], label_boxes[j, 2:] - label_boxes[j, :2]
        out.append((float(ang[i]), float(size_d[0] / size_l[0]), float(size_d[1] / size_l[1])))
    return out


def angle_table(detector: Any, images: Sequence[LabeledImage]) -> list[dict[str, Any]]:
    """Median width / height ratio of ``detector``'s aircraft boxes to their labels per predicted-angle bucket
    (:data:`ANGLE_BUCKETS`), over ``images``: any labelled set, eval sets included (a diagnosis, not a fit)."""
    rows: list[tuple[float, float, float]] = []
    for _, boxes, dets in _labelled(detector, images, CROSS_CLASSES, "cross_fill"):
        keep = dets.scores >= 0.25
        rows += angle_ratios(boxes, dets.xyxy[keep], dets.xywhr[keep])
    a = np.array(rows).reshape(-1, 3)
    table = []
    for lo, hi in ANGLE_BUCKETS:
        s = a[(a[:, 0] >= lo) & (a[:, 0] < hi)]
        table.append(
            {
                "degrees": f"{lo:.0f}-{min(hi, 45.0):.0f}",
                "matched": len(s),
                "width_ratio": round(float(np.median(s[:, 1])), 3) if len(s) else None,
                "height_ratio": round(float(np.median(s[:, 2])), 3) if len(s) else None,
            }
        )
    return table


def _labelled(
    detector: Any, images: Sequence[LabeledImage], classes: Iterable[str], fit_name: str
) -> Iterator[tuple[LabeledImage, np.ndarray, Any]]:
    """``(image, label boxes (N, 4), the detector's detections)`` of ``classes`` for each image with labels of
    them (images without any are not run).

    Raises:
        DetectorError: the detector's model is not rotated (OBB).
    """
    classes = list(classes)
    for img in images:
        boxes = np.array([a.xyxy for a in img.annotations if a.cls in classes]).reshape(-1, 4)
        if not len(boxes):
            continue
        dets = detector.predict(str(img.image))
        if dets.xywhr is None:
            raise DetectorError(f"{fit_name} needs a rotated (OBB) model, got task {detector.meta.task!r}")
        yield img, boxes, dets[np.isin(dets.class_name, classes)]


#: the value and report keys of ``extra["object_box"]`` that the vehicle and helicopter fits own
_OWN_KEYS = {"vehicles": ("rect_fill", "rect_fit"), "helicopters": ("disc_scale", "disc_fit")}


def merged_fits(old: dict[str, Any] | None, report: dict[str, Any], *, kind: str) -> dict[str, Any]:
    """The model file's ``extra["object_box"]`` after a fit of ``kind`` (``aircraft``, ``vehicles`` or
    ``helicopters``): one key holds every fit, and each run replaces its own (the aircraft report at the top
    level, the others as their value + report, ``rect_fill`` + ``rect_fit``, ``disc_scale`` + ``disc_fit``) and
    keeps the others'."""
    old = dict(old or {})
    if kind in _OWN_KEYS:
        value, fit_key = _OWN_KEYS[kind]
        return {**old, value: report[value], fit_key: report}
    if kind != "aircraft":
        raise ValueError(f"kind must be aircraft, vehicles or helicopters, got {kind!r}")
    others = {k for keys in _OWN_KEYS.values() for k in keys}
    return {**report, **{k: v for k, v in old.items() if k in others}}


def main(argv: list[str] | None = None) -> int:
    """``python -m training.boxfit``: see the module docstring."""
    p = argparse.ArgumentParser(prog="python -m training.boxfit", description=__doc__.splitlines()[0])
    p.add_argument("model", help="a rotated (OBB) .onnx model (a detect one for --helicopters)")
    p.add_argument("--data", default="../shared/data", help="data root of the training sources")
    p.add_argument(
        "--source",
        action="append",
        choices=sorted({**SOURCES, **VEHICLE_SOURCES, **HELICOPTER_SOURCES}),
        help="default: all of them",
    )
    p.add_argument(
        "--vehicles",
        action="store_true",
        help="fit rect_fill on the vehicle sources instead of cross_fill on the aircraft ones",
    )
    p.add_argument(
        "--helicopters",
        action="store_true",
        help="fit disc_scale (a detect model's fuselage boxes -> rotor discs) on the helicopter sources",
    )
    p.add_argument("--limit", type=int, default=120, help="images per source, spread evenly (default 120)")
    p.add_argument("--min-iou", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--write", action="store_true", help="store the fit in the model file's metadata")
    p.add_argument(
        "--angles",
        metavar="EVAL_SET",
        help="instead of fitting: the box-to-label size ratio per predicted angle on this eval set (a diagnosis; "
        "the model's own object boxes, its cross_fill included)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from detector.pipeline import Detector

    try:
        if args.angles:
            from detector.evaluate import load_eval_set

            imgs, _ = load_eval_set(args.angles, args.data, limit=args.limit)
            det = Detector.load(args.model, conf=0.25, threads=args.threads, sizes=False)
            print(
                json.dumps(
                    {"set": args.angles, "images": len(imgs), "buckets": angle_table(det, imgs)}, indent=2
                )
            )
            return 0
        if args.vehicles and args.helicopters:
            p.error("--vehicles and --helicopters are two fits: run them one after the other")
        kind = "vehicles" if args.vehicles else "helicopters" if args.helicopters else "aircraft"
        det = Detector.load(args.model, conf=0.25, threads=args.threads, sizes=False, object_boxes=False)
        table = {"aircraft": SOURCES, "vehicles": VEHICLE_SOURCES, "helicopters": HELICOPTER_SOURCES}[kind]
        names = args.source or sorted(table)
        unknown = [n for n in names if n not in table]
        if unknown:
            p.error(f"--source {unknown[0]} is not a {kind} source")
        images: list[LabeledImage] = []
        for name in names:
            imgs = sorted(read_dataset(table[name], root=args.data), key=lambda im: str(im.image))
            if args.limit and args.limit < len(imgs):
                idx = np.unique(np.linspace(0, len(imgs) - 1, args.limit).round().astype(int))
                imgs = [imgs[i] for i in idx]
            images += imgs
        fitter = {"aircraft": fit, "vehicles": fit_vehicles, "helicopters": fit_discs}[kind]
        report = fitter(det, images, min_iou=args.min_iou)
        report["sources"] = names
        report["command"] = "python -m training.boxfit " + " ".join(
            argv if argv is not None else sys.argv[1:]
        )
        print(json.dumps(report, indent=2))
        if args.write:
            from detector.model import read_meta
            from training.metadata import set_extra

            box = merged_fits(read_meta(args.model).extra.get("object_box"), report, kind=kind)
            set_extra(args.model, "object_box", box)
            key = {"aircraft": "cross_fill", "vehicles": "rect_fill", "helicopters": "disc_scale"}[kind]
            print(f"{args.model}: extra.object_box.{key} = {report[key]}")
    except DetectorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
