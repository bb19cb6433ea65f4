"""CSV of polygons: a header ``image_id,geometry,class`` and one object per row, ``geometry`` a closed WKT
``POLYGON`` in image pixels (e.g. ``"POLYGON ((10 10, 30 10, 30 20, 10 20, 10 10))"``)."""

from __future__ import annotations

import csv
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
    check_pattern,
    find_image,
    group_of,
    has_area,
    image_size,
    map_class,
    min_area_rect,
)
from detector.taxonomy import Taxonomy

REQUIRED_COLUMNS = ("image_id", "geometry", "class")


def _polygon(wkt: str) -> tuple[np.ndarray, bool, np.ndarray]:
    """WKT polygon -> ``(corners (4, 2), rotated, outline (K, 2))``; raises ``ValueError`` with the reason."""
    import shapely

    try:
        geom = shapely.from_wkt(wkt)
    except shapely.errors.GEOSException as e:
        raise ValueError(f"not valid WKT ({e})") from e
    if geom is None or geom.geom_type != "Polygon" or geom.is_empty:
        raise ValueError(f"expected a POLYGON, got {geom.geom_type if geom is not None else 'nothing'}")
    pts = np.asarray(geom.exterior.coords, dtype=np.float64)[:-1]
    if len(np.unique(pts, axis=0)) < 3 or geom.area <= 0 or not has_area(pts):
        raise ValueError("polygon has no area (all points on a line)")
    x1, y1 = pts.min(axis=0)
    x2, y2 = pts.max(axis=0)
    if np.isclose(geom.area, (x2 - x1) * (y2 - y1)):  # an axis-aligned rectangle
        return box_polygon(x1, y1, x2, y2), False, pts
    return min_area_rect(pts), True, pts


def read_csv_polygons(
    path: str | Path,
    *,
    images: str | Path | None = None,
    dataset: str = "csv",
    taxonomy: Taxonomy | None = None,
    gsd: float | None = None,
    group_pattern: str | None = None,
    on_error: OnError = "raise",
) -> list[LabeledImage]:
    """Read a CSV of WKT polygons (one row per object). Non-rectangular polygons become minimum-area rectangles;
    the polygon itself is kept in ``attrs["outline"]`` (pixels, ``(K, 2)``).

    ``image_id`` is an image file name in ``images`` (default: the CSV's folder), with or without its
    suffix. Only images named in the CSV are returned.

    Raises:
        LabelError: the header lacks a column, an image is missing, or a row is malformed (naming the line).
    """
    path = Path(path)
    img_dir = Path(images) if images is not None else path.parent
    errs = LineErrors(path, on_error)
    check_pattern(group_pattern, path)
    rows: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise LabelError(
                    f"{path}: missing column(s) {missing}; the header must hold {list(REQUIRED_COLUMNS)}"
                )
            for row in reader:
                lineno = reader.line_num
                img_id, wkt, cls = (row.get(c) for c in REQUIRED_COLUMNS)
                if not img_id or not wkt or not cls:
                    errs(lineno, f"empty image_id, geometry or class: {row!r}")
                    continue
                rows[img_id.strip()].append((lineno, wkt, cls.strip()))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LabelError(f"{path}: cannot read CSV ({e})") from e
    orphan = list(errs.skipped)

    out: list[LabeledImage] = []
    for img_id in sorted(rows):
        img = img_dir / img_id if Path(img_id).suffix else find_image(img_dir, img_id)
        if img is None or not img.is_file():
            errs(rows[img_id][0][0], f"image {img_id!r} not found in {img_dir}")
            orphan.append(errs.skipped[-1])
            continue
        try:
            w, h = image_size(img)
        except LabelError as e:
            errs.report(f"{path}:{rows[img_id][0][0]}: {e}")
            orphan.append(errs.skipped[-1])
            continue
        first = len(errs.skipped)
        anns: list[Annotation] = []
        for lineno, wkt, source in rows[img_id]:
            try:
                poly, rotated, outline = _polygon(wkt)
            except ValueError as e:
                errs(lineno, f"geometry {wkt[:60]!r}: {e}")
                continue
            anns.append(
                Annotation(
                    image=img,
                    cls=map_class(taxonomy, dataset, source),
                    source_cls=source,
                    polygon=poly,
                    rotated=rotated,
                    attrs={"source_cls": source, "dataset": dataset, "outline": outline},
                )
            )
        out.append(
            LabeledImage(
                img, w, h, gsd, anns, group_of(img.name, group_pattern), dataset, errs.skipped[first:]
            )
        )
    if out and orphan:
        out[0].skipped[:0] = orphan
    return out
