"""How well lengths are measured, and whether the transport / small split holds (detector/sizes.py).

Three checks, each a table in ``OUT/size_check.md`` (and ``OUT/size_check.json``):

1. **Labels** (no model): the median relative error of the length an axis-aligned box gives, against the
   length of the label's rotated footprint, per class. On the DOTA demo scenes (OBB labels, ``gsd`` header)
   the truth is the long side of the labelled rotated box in metres. On the iSAID test tiles (polygon
   outlines, no GSD: errors are ratios, so none is needed) the truth is the outline's largest extent (its
   maximum Feret diameter, i.e. max(length, span) of an aircraft), read against the outline's tight box and
   against the box diagonal / sqrt(2). This separates the box effect from the model.
2. **Model**: the model runs through :class:`detector.pipeline.Detector` on the same images (DOTA demo at the
   header's GSD, so ``length_m`` is in metres); detections are matched one-to-one to labels of the same class
   (IoU >= 0.5, Hungarian assignment on the box IoU) and the median relative error of ``length_m`` (iSAID: the
   long side in pixels) against the truth above is reported per class.
3. **Table**: every aircraft type of ``configs/aircraft-sizes.yaml`` at 0.5 m GSD, drawn as each of the
   iSAID test aircraft outlines (real shapes and headings) scaled to the type's larger dimension, and as a
   thin cross (fuselage and wing 1/8 as wide as long: the worst case for a tight box) at 36 headings. Its
   tight axis-aligned box (what a detect model draws) goes through :func:`detector.sizes.split_aircraft`; the
   calls are compared with the type's category, and with its size over the clearly large (>= 35 m) and
   clearly small (<= 18 m) types.

Usage (about a minute on 2 CPU cores)::

    python scripts/size_check.py -o out/size_check            # the default model (weights/detector.onnx)
    python scripts/size_check.py --weights weights/pretrained/yolo26n-obb.onnx --no-model

``--data`` is the shared data root (default: ``$DETECTOR_SHARED_DATA``, else ``../shared/data``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the repository's package first
    sys.path.insert(0, str(ROOT))

from detector.detections import Detections  # noqa: E402
from detector.geometry import box_iou_xyxy  # noqa: E402
from detector.labels import LabeledImage  # noqa: E402
from detector.sizes import LENGTH, SizeRules, load_size_rules, split_aircraft  # noqa: E402
from detector.writers import atomic_path  # noqa: E402

logger = logging.getLogger("size_check")

#: Labelled sets measured: DOTA demo (rotated boxes, GSD in the headers), iSAID test (outlines, no GSD) and its
#: helicopters as rotor discs (the convention the shipped model's helicopter boxes follow: ``disc_scale``).
SETS = ("dota/demo", "isaid-512/test", "isaid-512/test-disc")
#: A label whose tight box comes closer than this many pixels to the image edge is cut: left out.
EDGE_PX = 1.0
MATCH_IOU = 0.5
TABLE_GSD = 0.5
CLEARLY_LARGE_M = 35.0
CLEARLY_SMALL_M = 18.0


def _long_side(rect: np.ndarray) -> float:
    """Long side of a 4-corner rectangle ``(4, 2)``."""
    return float(max(np.linalg.norm(rect[1] - rect[0]), np.linalg.norm(rect[2] - rect[1])))


def max_extent(points: np.ndarray) -> float:
    """The largest distance between two points of an outline ``(K, 2)`` (its maximum Feret diameter)."""
    pts = np.asarray(points, dtype=np.float64)
    return float(np.linalg.norm(pts[:, None] - pts[None], axis=-1).max()) if len(pts) > 1 else 0.0


def truth_rows(image: LabeledImage, classes: Sequence[str]) -> list[dict[str, Any]]:
    """One row per usable label of ``classes``: class, tight box (px), truth and box lengths.

    Truth: the rotated label's long side (``outline`` absent) or the outline's :func:`max_extent`; metres
    when the image has a GSD, else pixels. Difficult labels and labels cut by the image edge are left out.
    """
    rows = []
    width, height = image.width or math.inf, image.height or math.inf
    scale = image.gsd or 1.0
    for a in image.annotations:
        if a.cls not in classes or a.difficult:
            continue
        x0, y0, x1, y1 = a.xyxy
        if x0 < EDGE_PX or y0 < EDGE_PX or x1 > width - EDGE_PX or y1 > height - EDGE_PX:
            continue
        outline = a.attrs.get("outline")
        truth = max_extent(a.outline) if outline is not None else _long_side(a.polygon)
        bw, bh = x1 - x0, y1 - y0
        rows.append(
            {
                "cls": a.cls,
                "xyxy": np.array([x0, y0, x1, y1]),
                "truth": truth * scale,
                "box": max(bw, bh) * scale,
                "diag": math.hypot(bw, bh) / math.sqrt(2) * scale,
            }
        )
    return rows


def match(dets_xyxy: np.ndarray, truth_xyxy: np.ndarray, iou: float = MATCH_IOU) -> list[tuple[int, int]]:
    """One-to-one ``(detection, label)`` pairs of box IoU >= ``iou`` maximising the total IoU."""
    from scipy.optimize import linear_sum_assignment

    if len(dets_xyxy) == 0 or len(truth_xyxy) == 0:
        return []
    overlap = box_iou_xyxy(dets_xyxy, truth_xyxy)
    rows, cols = linear_sum_assignment(-overlap)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if overlap[r, c] >= iou]


def _stats(errors: Sequence[float]) -> dict[str, Any]:
    e = np.asarray(errors, dtype=np.float64)
    if len(e) == 0:
        return {"n": 0, "median": None, "median_abs": None, "p10": None, "p90": None}
    return {
        "n": len(e),
        "median": round(float(np.median(e)), 4),
        "median_abs": round(float(np.median(np.abs(e))), 4),
        "p10": round(float(np.percentile(e, 10)), 4),
        "p90": round(float(np.percentile(e, 90)), 4),
    }


def label_errors(images: Sequence[LabeledImage], classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per class: relative error of the tight box's long side and of its diagonal / sqrt(2) against the truth."""
    out: dict[str, dict[str, Any]] = {}
    rows = [r for im in images for r in truth_rows(im, classes)]
    for cls in classes:
        mine = [r for r in rows if r["cls"] == cls and r["truth"] > 0]
        if mine:
            out[cls] = {
                "box": _stats([r["box"] / r["truth"] - 1 for r in mine]),
                "diag_sqrt2": _stats([r["diag"] / r["truth"] - 1 for r in mine]),
            }
    return out


def _parent_class(dets: Detections, rules: SizeRules | None) -> np.ndarray:
    names = dets.class_name
    if rules is not None:
        names = np.where(np.isin(names, rules.derived), rules.parent, names)
    return names


def model_errors(
    detector: Any, images: Sequence[LabeledImage], classes: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per class: relative error of the matched detections' length (``length_m``; pixels without a GSD)."""
    errors: dict[str, list[float]] = {c: [] for c in classes}
    for im in images:
        dets = detector.predict(str(im.image), gsd=im.gsd)
        rows = truth_rows(im, classes)
        length = (
            np.asarray(dets.data[LENGTH], dtype=np.float64)
            if im.gsd is not None and LENGTH in dets.data
            else np.maximum(dets.xyxy[:, 2] - dets.xyxy[:, 0], dets.xyxy[:, 3] - dets.xyxy[:, 1])
            if dets.xywhr is None
            else np.maximum(dets.xywhr[:, 2], dets.xywhr[:, 3])
        )
        det_cls = _parent_class(dets, getattr(detector, "sizes", None))
        for cls in classes:
            d = np.flatnonzero(det_cls == cls)
            t = [r for r in rows if r["cls"] == cls]
            if not len(d) or not t:
                continue
            pairs = match(dets.xyxy[d], np.stack([r["xyxy"] for r in t]))
            errors[cls] += [float(length[d[i]] / t[j]["truth"] - 1) for i, j in pairs if t[j]["truth"] > 0]
    return {c: _stats(e) for c, e in errors.items() if e}


def cross_box(length: float, span: float, heading: float, gsd: float) -> np.ndarray:
    """The tight axis-aligned box (scene pixels, ``(4,)``) of a cross-shaped aircraft: a fuselage
    ``length`` x ``length / 8`` and a wing ``span`` x ``span / 8`` (metres), turned by ``heading`` radians."""
    f, w = length / 2, span / 2
    pts = np.array(
        [
            [-f, -f / 8],
            [f, -f / 8],
            [f, f / 8],
            [-f, f / 8],
            [-w / 8, -w],
            [w / 8, -w],
            [w / 8, w],
            [-w / 8, w],
        ]
    )
    c, s = math.cos(heading), math.sin(heading)
    pts = pts @ np.array([[c, s], [-s, c]]) / gsd
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)]) + 1000.0


def unit_shapes(images: Sequence[LabeledImage], cls: str = "aircraft") -> list[np.ndarray]:
    """The outlines of ``cls`` (uncut, not difficult) scaled to a largest extent of 1, centred: real shapes
    and headings of aircraft to draw the reference types with."""
    shapes = []
    for im in images:
        width, height = im.width or math.inf, im.height or math.inf
        for a in im.annotations:
            if a.cls != cls or a.difficult or a.attrs.get("outline") is None:
                continue
            x0, y0, x1, y1 = a.xyxy
            if x0 < EDGE_PX or y0 < EDGE_PX or x1 > width - EDGE_PX or y1 > height - EDGE_PX:
                continue
            size = max_extent(a.outline)
            if size > 0:
                shapes.append((a.outline - a.outline.mean(axis=0)) / size)
    return shapes


def table_check(
    rules: SizeRules, shapes: Sequence[np.ndarray] | None = None, gsd: float = TABLE_GSD, headings: int = 36
) -> dict[str, Any]:
    """Every aircraft type of the reference table drawn many times, its tight axis-aligned box through
    :func:`split_aircraft`.

    Drawn as ``shapes`` (unit outlines, :func:`unit_shapes`) scaled to the type's larger dimension, or, without
    shapes, as a cross (:func:`cross_box`) at ``headings`` headings. Returns per type the share called
    ``large``; the agreement of the calls with the category over the transport and small types; and the
    agreement with the size over the clearly large (>= 35 m: transport) and clearly small (<= 18 m: small)
    types of every category but helicopters (which are not split)."""
    per_type = {}
    calls: dict[str, list[bool]] = {"category": [], "size": []}
    angles = np.linspace(0, math.pi, headings, endpoint=False)
    for t in rules.types:
        if t.category == "helicopter":
            per_type[t.name] = {"category": t.category, "larger_m": t.larger_m, "called_large": None}
            continue
        if shapes:
            pts = [s * (t.larger_m / gsd) for s in shapes]
            boxes = np.stack([np.concatenate([p.min(axis=0), p.max(axis=0)]) + 1000.0 for p in pts])
        else:
            boxes = np.stack([cross_box(t.length_m, t.span_m, a, gsd) for a in angles])
        dets = Detections(
            xyxy=boxes,
            scores=np.ones(len(boxes), np.float32),
            class_ids=np.zeros(len(boxes), np.int64),
            class_names=(rules.parent,),
            gsd=gsd,
        )
        large = split_aircraft(dets, rules).class_name == rules.large
        per_type[t.name] = {
            "category": t.category,
            "larger_m": t.larger_m,
            "called_large": round(float(large.mean()), 3),
        }
        if t.category in ("transport", "small"):
            calls["category"] += (large if t.category == "transport" else ~large).tolist()
        if t.larger_m >= CLEARLY_LARGE_M:
            calls["size"] += large.tolist()
        elif t.larger_m <= CLEARLY_SMALL_M:
            calls["size"] += (~large).tolist()
    return {
        "gsd": gsd,
        "drawn_as": f"{len(shapes)} iSAID aircraft outlines" if shapes else f"crosses at {headings} headings",
        "threshold_m": rules.threshold_m,
        "types": per_type,
        "agreement_category": round(float(np.mean(calls["category"])), 4) if calls["category"] else None,
        "agreement_clear": round(float(np.mean(calls["size"])), 4) if calls["size"] else None,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f} %"


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    lines = [
        "# Length measurement and the transport / small split",
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    lines += [
        "## Labels and model: median relative length error per class",
        "",
        "Truth: DOTA demo, the rotated label's long side in metres (header GSD); iSAID, the outline's largest "
        "extent (ratio, no GSD needed). `box`: the label's tight axis-aligned box; `diag/sqrt2`: its diagonal "
        "/ sqrt(2); `model`: matched detections (IoU >= 0.5). p10 / p90 in brackets.",
        "",
        "| set | class | labels | box | diag/sqrt2 | matched | model | model median abs |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in report["sets"].items():
        for cls, lab in s["labels"].items():
            mod = s.get("model", {}).get(
                cls, {"n": 0, "median": None, "median_abs": None, "p10": None, "p90": None}
            )
            b, d = lab["box"], lab["diag_sqrt2"]
            lines.append(
                f"| {name} | {cls} | {b['n']} | {_pct(b['median'])} [{_pct(b['p10'])}, {_pct(b['p90'])}] | "
                f"{_pct(d['median'])} | {mod['n']} | {_pct(mod['median'])} [{_pct(mod['p10'])}, "
                f"{_pct(mod['p90'])}] | {_abs(mod['median_abs'])} |"
            )
    for t in report["tables"]:
        lines += [
            "",
            f"## Reference table at {t['gsd']} m GSD drawn as {t['drawn_as']}, threshold {t['threshold_m']} m "
            "(tight axis-aligned box)",
            "",
            f"Calls that agree with the category (transport and small types): {_share(t['agreement_category'])}; "
            f"with the size, over clearly large (>= {CLEARLY_LARGE_M:g} m: transport) or clearly small "
            f"(<= {CLEARLY_SMALL_M:g} m: small) types: {_share(t['agreement_clear'])}.",
            "",
            "| type | category | larger dimension (m) | called transport |",
            "|---|---|---:|---:|",
        ]
        for name, row in t["types"].items():
            lines.append(
                f"| {name} | {row['category']} | {row['larger_m']:.1f} | {_share(row.get('called_large'))} |"
            )
    return "\n".join(lines) + "\n"


def _abs(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="model file (default: the shipped model)")
    parser.add_argument(
        "--data", default=None, help="shared data root (default: $DETECTOR_SHARED_DATA or ../shared/data)"
    )
    parser.add_argument("-o", "--out", default="out/size_check", help="output folder")
    parser.add_argument("--no-model", action="store_true", help="only the label and table checks")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images per set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from detector.evaluate import load_eval_set

    data = Path(args.data or os.environ.get("DETECTOR_SHARED_DATA") or ROOT.parent / "shared" / "data")
    rules = load_size_rules()
    detector = None
    if not args.no_model:
        from detector.pipeline import Detector

        detector = Detector.load(args.weights)
    report: dict[str, Any] = {
        "command": " ".join(["python scripts/size_check.py", *(argv if argv is not None else sys.argv[1:])]),
        "model": None if detector is None else detector.meta.name,
        "sets": {},
    }
    for name in SETS:
        images, spec = load_eval_set(name, data, limit=args.limit)
        classes = [
            c for c in spec.get("classes", []) if any(a.cls == c for im in images for a in im.annotations)
        ]
        entry: dict[str, Any] = {"images": len(images), "labels": label_errors(images, classes)}
        if detector is not None:
            entry["model"] = model_errors(detector, images, classes)
        report["sets"][name] = entry
    isaid, _ = load_eval_set("isaid-512/test", data)
    report["tables"] = [table_check(rules, unit_shapes(isaid)), table_check(rules)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    with atomic_path(out / "size_check.md") as tmp:
        Path(tmp).write_text(text)
    with atomic_path(out / "size_check.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
