"""COCO detection JSON (``images`` / ``annotations`` / ``categories``; ``bbox`` is ``[x, y, w, h]`` in pixels)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from detector.labels.types import (
    Annotation,
    LabeledImage,
    LabelError,
    LineErrors,
    OnError,
    box_polygon,
    check_pattern,
    group_of,
    has_area,
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
        on_error: ``"raise"`` a :class:`LabelError` on a malformed record (an annotation, an image, a
            category), or ``"skip"`` it with a warning; skipped records are listed in ``LabeledImage.skipped``
            (those of no image with the first image).

    Raises:
        LabelError: the file is not COCO JSON (or a top-level key is not a list), or a record is malformed
            (with ``on_error="raise"``); the message names the file and the record.
    """
    path = Path(path)
    img_dir = Path(images) if images is not None else path.parent
    errs = LineErrors(path, on_error)
    check_pattern(group_pattern, path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LabelError(f"{path}: cannot read COCO JSON ({e})") from e
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise LabelError(f"{path}: not a COCO detection file (needs `images` and `annotations`)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key, []), list):
            raise LabelError(f"{path}: `{key}` must be a list, got {_json_type(data[key])}")

    cats: dict[int, str] = {}
    for i, c in enumerate(data.get("categories", [])):
        try:
            cats[_integer(c["id"])] = str(c["name"])
        except (KeyError, TypeError, ValueError):
            errs(None, f"category #{i} needs an integer `id` and a `name`: {_short(c)}")

    by_image: dict[int, list[dict]] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        try:
            by_image[_integer(ann["image_id"])].append(ann)
        except (KeyError, TypeError, ValueError):
            errs(None, f"annotation #{i} has no valid image_id: {_short(ann)}")
    unattached = list(errs.skipped)  # skipped records of no image: reported with the first image

    out: list[LabeledImage] = []
    for i, rec in enumerate(data["images"]):
        try:
            img_id, fname = _integer(rec["id"]), rec["file_name"]
            if not isinstance(fname, str) or not fname:
                raise ValueError("file_name")
        except (KeyError, TypeError, ValueError):
            errs(None, f"image #{i} needs an integer `id` and a `file_name`: {_short(rec)}")
            unattached.append(errs.skipped[-1])
            continue
        try:
            width, height = (_size(rec.get(k)) for k in ("width", "height"))
        except ValueError:
            errs(
                None,
                f"image {fname!r}: width and height must be positive integers, got "
                f"{rec.get('width')!r} x {rec.get('height')!r}",
            )
            unattached.append(errs.skipped[-1])
            continue
        img_path = img_dir / fname
        anns: list[Annotation] = []
        first_skip = len(errs.skipped)
        for ann in by_image.get(img_id, []):
            where = f"annotation id {ann.get('id', '?')}"
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
                cat = _integer(ann["category_id"])
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
            if use_segmentation and isinstance(seg, list) and seg and isinstance(seg[0], list):
                pts = _polygon(seg[0])
                if pts is None:
                    errs(
                        None,
                        f"{where}: segmentation is not a polygon of 3 or more (x, y) points: {_short(seg)}",
                    )
                    continue
                if not has_area(pts):
                    errs(None, f"{where}: segmentation polygon has no area (all points on a line)")
                    continue
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
    if out and unattached:
        out[0].skipped[:0] = unattached
    return out


def _integer(value: Any) -> int:
    """An integer id or size: an ``int``, an integral ``float`` or a string of digits (else ``ValueError`` or
    ``TypeError``)."""
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


def _size(value: Any) -> int | None:
    """An image width/height: ``None`` when absent (or 0, as some exporters write), else a positive integer."""
    if value is None or value == 0:
        return None
    try:
        size = _integer(value)
    except (TypeError, OverflowError) as e:
        raise ValueError(str(e)) from e
    if size < 0:
        raise ValueError(f"negative: {value!r}")
    return size


def _polygon(coords: list[Any]) -> np.ndarray | None:
    """``[x1, y1, x2, y2, ...]`` -> ``(K, 2)`` points, ``None`` when it is not 3 or more finite points."""
    try:
        pts = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if pts.ndim != 1 or len(pts) < 6 or len(pts) % 2 or not np.isfinite(pts).all():
        return None
    return pts.reshape(-1, 2)


def _json_type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: Any, limit: int = 120) -> str:
    """``repr`` of a JSON record, cut to one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
