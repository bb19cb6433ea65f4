"""Found or badly boxed? Recall at several IoU thresholds and the size of the boxes against the labels.

An AP50 gap between two models on an eval set can be detection (the object is never found) or localisation
(it is found, but its box misses the label's by more than IoU 0.5). For every labelled object of the classes
asked for, this takes the best-overlapping detection of the same class group (the pipeline's own, at
``--conf``) and reports recall at IoU 0.1 / 0.3 / 0.5 / 0.7 and the median size ratio of the matched boxes
(square root of box area over label area, over matches with IoU > 0.1).

    python scripts/loc_check.py weights/detector.onnx build/obb3/stage1-fill.onnx --set isaid-512/test \
        --cls aircraft --limit 80 --conf 0.001

Same sets and labels as ``detector eval`` (configs/eval.yaml); boxes are compared as enclosing axis-aligned
boxes, as its ``aabb`` AP is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.evaluate import load_eval_set  # noqa: E402
from detector.geometry import box_iou_xyxy  # noqa: E402
from detector.pipeline import Detector  # noqa: E402

THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
#: a label of one of these classes is matched by a detection of any class of its group
GROUPS = (
    {"aircraft", "transport-aircraft", "small-aircraft"},
    {"helicopter"},
    {"small-vehicle"},
    {"large-vehicle"},
)


def best_ious(
    model: str, images: list, classes: set[str], conf: float, threads: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per label: the best IoU with a detection of its group; and the size ratio of that detection."""
    det = Detector.load(model, conf=conf, threads=threads)
    ious, ratios = [], []
    for image in images:
        labels = [a for a in image.annotations if a.cls in classes]
        if not labels:
            continue
        dets = det.predict(str(image.image), gsd=image.gsd)  # as detector.evaluate.evaluate
        names = np.array(dets.class_names)[dets.class_ids] if len(dets) else np.zeros(0, str)
        for group in GROUPS:
            gt = np.array([a.xyxy for a in labels if a.cls in group]).reshape(-1, 4)
            if not len(gt):
                continue
            boxes = dets.xyxy[np.isin(names, list(group))]
            if not len(boxes):
                ious += [0.0] * len(gt)
                continue
            m = box_iou_xyxy(gt, boxes)
            j = m.argmax(axis=1)
            best = m[np.arange(len(gt)), j]
            ious += best.tolist()
            hit = best > 0.1
            area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
            ratios += np.sqrt(area(boxes[j[hit]]) / np.maximum(area(gt[hit]), 1e-9)).tolist()
    return np.asarray(ious), np.asarray(ratios)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="model files (.onnx)")
    p.add_argument("--set", required=True, help="eval set name from configs/eval.yaml")
    p.add_argument("--cls", default="aircraft", help="comma-separated classes of the labels to check")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="data root")
    p.add_argument("--limit", type=int, default=None, help="at most this many images, evenly spread")
    p.add_argument("--conf", type=float, default=0.001, help="score threshold of the detections")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    images, _ = load_eval_set(a.set, a.data, limit=a.limit)
    classes = set(a.cls.split(","))
    head = " | ".join(f"R@{t}" for t in THRESHOLDS)
    print(
        f"{a.set}, {a.cls}, {len(images)} images, conf {a.conf}\n\n| model | labels | {head} | size ratio (IQR) |"
    )
    print("|---|---:|" + "---:|" * len(THRESHOLDS) + "---|")
    for model in a.models:
        ious, ratios = best_ious(model, images, classes, a.conf, a.threads)
        recall = " | ".join(f"{(ious >= t).mean():.3f}" for t in THRESHOLDS) if len(ious) else "-"
        q = np.percentile(ratios, [50, 25, 75]) if len(ratios) else [np.nan] * 3
        print(f"| {model} | {len(ious)} | {recall} | {q[0]:.3f} ({q[1]:.2f}-{q[2]:.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
