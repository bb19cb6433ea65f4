"""COCO detection JSON (``images`` / ``annotations`` / ``categories``; ``bbox`` is ``[x, y, w, h]`` in pixels)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from detector.labels.types import (
    Annotation,
    LabeledImage,
    LabelError,
    LineErrors,
    OnError,
    box_polygon,
    group_of,
    map_class,
    min_area_rect,
)
from detector.taxonomy import Taxonomy


def read_coco(
    path: str | Path,
    *,
    images: str | Path | None = None,
    dataset: str = "coco",
    taxonomy: Taxonomy | None = None,
    gsd: float | None = None,
    group_pattern: str | None = None,
    use_segmentation: bool = False,
    on_error: OnError = "raise",
) -> list[LabeledImage]:
    """Read a COCO detection file.

    Every image listed in the file is returned, unlabelled ones included (they are true negatives).

    Args:
        path: the ``*.json`` file.
        images: folder of the images (default: the JSON file's folder).
        dataset: dataset name for the taxonomy lookup and ``LabeledImage.dataset``.
        taxonomy: maps category names to ours; ``None`` keeps the category names.
        gsd: ground sample distance of every image in m/px, if known.
        group_pattern: regular expression giving the scene id from the file stem (see
            :func:`~detector.labels.types.group_of`).
        use_segmentation: reduce a polygon ``segmentation`` to its minimum-area rotated rectangle when present
            (else the ``bbox`` is used).
        on_error: ``"raise"`` a :class:`LabelError` on a malformed annotation, or ``"skip"`` it with a warning.

    Raises:
        LabelError: the file is not COCO JSON, or an annotation is malformed (with ``on_error="raise"``).
    """
    path = Path(path)
    img_dir = Path(images) if images is not None else path.parent
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LabelError(f"{path}: cannot read COCO JSON ({e})") from e
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise LabelError(f"{path}: not a COCO detection file (needs `images` and `annotations`)")
    cats = {int(c["id"]): str(c["name"]) for c in data.get("categories", [])}
    errs = LineErrors(path, on_error)

    by_image: dict[int, list[dict]] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        try:
            by_image[int(ann["image_id"])].append(ann)
        except (KeyError, TypeError, ValueError):
            errs(None, f"annotation #{i} has no valid image_id: {ann!r}")
    orphan_skips = list(errs.skipped)

    out: list[LabeledImage] = []
    for rec in data["images"]:
        try:
            img_id, fname = int(rec["id"]), str(rec["file_name"])
        except (KeyError, TypeError, ValueError) as e:
            raise LabelError(f"{path}: image record without id/file_name: {rec!r}") from e
        img_path = img_dir / fname
        width = int(rec["width"]) if rec.get("width") else None
        height = int(rec["height"]) if rec.get("height") else None
        anns: list[Annotation] = []
        first_skip = len(errs.skipped)
        for ann in by_image.get(img_id, []):
            where = f"annotation id {ann.get('id', '?')}"
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
                cat = int(ann["category_id"])
            except (KeyError, TypeError, ValueError):
                errs(None, f"{where}: malformed bbox/category_id {ann.get('bbox')!r}")
                continue
            if cat not in cats:
                errs(None, f"{where}: category_id {cat} is not among the categories {sorted(cats)}")
                continue
            if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
                errs(None, f"{where}: degenerate bbox {ann['bbox']!r}")
                continue
            source = cats[cat]
            poly, rotated = box_polygon(x, y, x + w, y + h), False
            seg = ann.get("segmentation")
            if (
                use_segmentation
                and isinstance(seg, list)
                and seg
                and isinstance(seg[0], list)
                and len(seg[0]) >= 6
            ):
                pts = np.asarray(seg[0], dtype=np.float64).reshape(-1, 2)
                poly, rotated = min_area_rect(pts), True
            anns.append(
                Annotation(
                    image=img_path,
                    cls=map_class(taxonomy, dataset, source),
                    source_cls=source,
                    polygon=poly,
                    rotated=rotated,
                    difficult=bool(ann.get("iscrowd", 0)),
                    attrs={"source_cls": source, "dataset": dataset, "category_id": cat},
                )
            )
        out.append(
            LabeledImage(
                image=img_path,
                width=width,
                height=height,
                gsd=gsd,
                annotations=anns,
                group=group_of(fname, group_pattern),
                dataset=dataset,
                skipped=errs.skipped[first_skip:],
            )
        )
    if out and orphan_skips:
        out[0].skipped[:0] = orphan_skips  # annotations without an image are reported with the first image
    return out
