"""Our tiled path against SAHI on the same weights and the same eval set, scored by the same AP code.

SAHI 0.12 (``get_sliced_prediction`` over Ultralytics, on the ``.pt``) and our pipeline (``Detector.predict``,
normally on the ``.onnx`` exported from that ``.pt``) run every image of an eval set of ``configs/eval.yaml``
at a low confidence; :func:`detector.evaluate.evaluate_detections` scores both, so the numbers differ only by
the path. Variants of our path switch one thing at a time (padding, fitted tiles, the coarse pass, the
cross-class rule) to show what each one is worth; SAHI runs with and without its whole-image pass.

Usage (about 3 minutes for the 20 KIT frames on 2 CPU cores)::

    python scripts/sahi_compare.py --pt weights/pretrained/yolo26n-obb.pt \\
        --onnx weights/pretrained/yolo26n-obb.onnx -s kit-aerial-cars/MunichStreet02 -o out/sahi_compare

Writes ``OUT/sahi_compare.md`` (a table: AP50 per class, mean AP50, AP50:95, seconds per image) and
``OUT/sahi_compare.json``. Needs the ``bench`` extra (sahi) and the ``train`` extra (torch, ultralytics).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the repository's package first
    sys.path.insert(0, str(ROOT))

from detector.detections import Detections  # noqa: E402
from detector.evaluate import EvalResult, evaluate_detections, load_eval_config, load_eval_set  # noqa: E402
from detector.labels import LabeledImage  # noqa: E402
from detector.writers import atomic_path  # noqa: E402

logger = logging.getLogger("sahi_compare")


@dataclass(frozen=True)
class OursVariant:
    """One configuration of our path: ``tile`` are :class:`~detector.tiling.TileConfig` fields, ``detector``
    :class:`~detector.pipeline.Detector` options; ``pad`` the padding gray (``None``: the package's);
    ``rect``: feed the ONNX model non-square tiles fitted to strips (:class:`RectTiles`); ``coarse_min``: keep
    the coarse-pass detections longer than this many tile overlaps (``None``: the package's default)."""

    label: str
    tile: dict[str, Any] = field(default_factory=dict)
    detector: dict[str, Any] = field(default_factory=dict)
    pad: int | None = None
    rect: bool = False
    coarse_min: float | None = None


#: What each variant switches, against the first (the defaults).
OURS_VARIANTS: tuple[OursVariant, ...] = (
    OursVariant("ours (defaults: gray padding, cross-class rule 0.8)"),
    OursVariant("ours, zero padding", pad=0),
    OursVariant("ours, no cross-class rule", detector={"cross_class_iou": None}),
    OursVariant(
        "ours, zero padding, no cross-class rule (the old path)", pad=0, detector={"cross_class_iou": None}
    ),
    OursVariant("ours + rectangular tiles fitted to the strip", rect=True),
    OursVariant("ours + coarse whole-image pass (TileConfig(coarse=True))", tile={"coarse": True}),
    OursVariant(
        "ours + coarse pass, only objects larger than the overlap", tile={"coarse": True}, coarse_min=1.0
    ),
)


class RectTiles:
    """An :class:`~detector.backends.onnx.OnnxPredictor` that also runs non-square tiles (each side a multiple
    of 32; the exported graphs have dynamic height and width). The package's ONNX predictor accepts only
    square tiles today, so it does not say ``rect_tiles``; this wrapper measures what fitted tiles would give.
    """

    rect_tiles = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.meta = inner.meta
        self.preferred_batch = getattr(inner, "preferred_batch", None)  # the wrapped session's tiles per call

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        from detector.backends.decode import decode_batch

        if len(tiles) == 0:
            return []
        if tiles.dtype != np.uint8 or tiles.ndim != 4 or tiles.shape[1] % 32 or tiles.shape[2] % 32:
            raise ValueError(f"tiles must be (B, H, W, 3) uint8 with H, W multiples of 32, got {tiles.shape}")
        x = np.ascontiguousarray(tiles.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1 / 255)
        out = self.inner.run(x)
        p = self.inner
        return decode_batch(out, self.meta, p.lut, conf=p.conf, iou=p.iou, max_det=p.max_det)


@contextlib.contextmanager
def _padding(value: int | None) -> Iterator[None]:
    """Temporarily read partial tiles with another padding gray (``detector.raster.PAD_VALUE``)."""
    import detector.raster as raster

    old = raster.PAD_VALUE
    if value is not None:
        raster.PAD_VALUE = value
    try:
        yield
    finally:
        raster.PAD_VALUE = old


@contextlib.contextmanager
def _coarse_min(value: float | None) -> Iterator[None]:
    """Temporarily change which coarse-pass detections are kept (``detector.pipeline.COARSE_MIN_OVERLAPS``)."""
    import detector.pipeline as pipeline

    old = pipeline.COARSE_MIN_OVERLAPS
    if value is not None:
        pipeline.COARSE_MIN_OVERLAPS = value
    try:
        yield
    finally:
        pipeline.COARSE_MIN_OVERLAPS = old


def run_ours(
    weights: Path, images: Sequence[LabeledImage], variant: OursVariant, tile: int | None, overlap: float
) -> tuple[list[Detections], float]:
    """Our ``Detector.predict`` on every image (as ``detector eval`` runs it); returns detections, seconds."""
    from detector.pipeline import Detector
    from detector.tiling import TileConfig

    detector = Detector.load(weights, conf=0.001, **variant.detector)
    if variant.rect:
        detector.predictor = RectTiles(detector.predictor)
    config = TileConfig(tile=tile, overlap=overlap, **variant.tile)
    out = []
    with _padding(variant.pad), _coarse_min(variant.coarse_min):
        t0 = time.perf_counter()
        for image in images:
            out.append(detector.predict(image.image, tile=config, gsd=image.gsd))
        seconds = time.perf_counter() - t0
    return out, seconds


def run_sahi(
    pt: Path, images: Sequence[LabeledImage], *, tile: int, overlap: float, standard_pred: bool
) -> tuple[list[Detections], float]:
    """SAHI ``get_sliced_prediction`` on every image, converted to our classes (as ``make bench`` does)."""
    from _bench_worker import sahi_to_arrays
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    from detector.backends.decode import default_class_map, default_names

    model = AutoDetectionModel.from_pretrained(
        model_type="ultralytics", model_path=str(pt), device="cpu", confidence_threshold=0.001
    )
    class_map = default_class_map(tuple(model.category_names), pt)
    names = default_names(class_map)
    out = []
    t0 = time.perf_counter()
    for image in images:
        result = get_sliced_prediction(
            str(image.image),
            model,
            slice_height=tile,
            slice_width=tile,
            overlap_height_ratio=overlap,
            overlap_width_ratio=overlap,
            perform_standard_pred=standard_pred,
            verbose=0,
        )
        xyxy, xywhr, scores, cls = sahi_to_arrays(result.object_prediction_list, class_map)
        out.append(Detections(xyxy=xyxy, scores=scores, class_ids=cls, class_names=names, xywhr=xywhr))
    return out, time.perf_counter() - t0


def _row(label: str, result: EvalResult, seconds: float, n_images: int) -> dict[str, Any]:
    return {
        "variant": label,
        "ap50": {c: r.ap50["all"] for c, r in result.classes.items()},
        "map50": result.map50,
        "map": result.map,
        "seconds_per_image": seconds / max(n_images, 1),
    }


def markdown(rows: Sequence[dict[str, Any]], set_name: str, n_images: int, command: str) -> str:
    """The comparison table (one row per variant)."""
    classes = list(dict.fromkeys(c for r in rows for c in r["ap50"]))
    head = ["variant", *[f"AP50 {c}" for c in classes], "mAP50", "mAP50:95", "s / image"]
    lines = [
        f"# Our path vs SAHI on {set_name} ({n_images} images)",
        "",
        f"`{command}`",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for r in rows:
        cells = [f"{r['ap50'].get(c, float('nan')):.3f}" for c in classes]
        lines.append(
            f"| {r['variant']} | {' | '.join(cells)} | {r['map50']:.3f} | {r['map']:.3f} | "
            f"{r['seconds_per_image']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pt", type=Path, required=True, help="Ultralytics .pt weights (SAHI's side)")
    parser.add_argument("--onnx", type=Path, help="our side's model (default: the .pt itself)")
    parser.add_argument("-s", "--set", default="kit-aerial-cars/MunichStreet02", help="eval set name")
    parser.add_argument("--data", type=Path, default=None, help="data root (default: the eval config's)")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/sahi_compare"))
    parser.add_argument("--tile", type=int, default=1024, help="slice / tile size (both sides)")
    parser.add_argument("--overlap", type=float, default=0.2, help="overlap ratio (both sides)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many images (quick runs)")
    parser.add_argument("--no-sahi", action="store_true", help="only our variants")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma list of our variant numbers to run (0 = defaults; default all)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logger.setLevel(logging.INFO)

    from detector.evaluate import DEFAULT_CONFIG

    cfg = load_eval_config()
    data_root = args.data or (DEFAULT_CONFIG.resolve().parent / cfg.get("data_root", "../../shared/data"))
    images, spec = load_eval_set(args.set, data_root, config=cfg, limit=args.limit)
    score = {"classes": spec.get("classes"), "iou_type": spec.get("iou_type", cfg.get("iou_type", "aabb"))}
    conf = float(cfg.get("conf", 0.25))
    command = " ".join(shlex.quote(a) for a in ["python", "scripts/sahi_compare.py", *(argv or sys.argv[1:])])

    rows = []
    wanted = (
        range(len(OURS_VARIANTS))
        if args.variants is None
        else [int(v) for v in args.variants.split(",") if v.strip()]
    )
    for k in wanted:
        variant = OURS_VARIANTS[k]
        dets, seconds = run_ours(args.onnx or args.pt, images, variant, args.tile, args.overlap)
        result = evaluate_detections(images, dets, conf=conf, name=args.set, **score)
        rows.append(_row(variant.label, result, seconds, len(images)))
        logger.info("%s: mAP50 %.3f", variant.label, result.map50)
    if not args.no_sahi:
        for standard in (True, False):
            label = f"SAHI 0.12{' + whole-image pass (its default)' if standard else ', slices only'}"
            dets, seconds = run_sahi(
                args.pt, images, tile=args.tile, overlap=args.overlap, standard_pred=standard
            )
            result = evaluate_detections(images, dets, conf=conf, name=args.set, **score)
            rows.append(_row(label, result, seconds, len(images)))
            logger.info("%s: mAP50 %.3f", label, result.map50)

    text = markdown(rows, args.set, len(images), command)
    with atomic_path(args.out / "sahi_compare.md") as tmp:
        tmp.write_text(text)
    with atomic_path(args.out / "sahi_compare.json") as tmp:
        tmp.write_text(json.dumps({"command": command, "set": args.set, "rows": rows}, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
