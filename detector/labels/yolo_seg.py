"""YOLO segmentation labels: ``class x1 y1 x2 y2 ...`` (a polygon, normalised to the image size).

Each polygon becomes its minimum-area rotated rectangle; the polygon itself (pixels, ``(K, 2)``) is kept in
``attrs["outline"]``, because its axis-aligned box is tighter than the rectangle's for a rotated object. Exact
``(0, 0)`` points are conversion debris (iSAID exports hold them) and are dropped first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.labels.types import MIN_WIDTH_PX, LabeledImage, LineErrors, OnError, min_area_rect, rect_width
from detector.labels.yolo import Names, _normalised, read_yolo_folder
from detector.taxonomy import Taxonomy


def _parse_seg(
    tokens: list[str], lineno: int, errs: LineErrors, w: int, h: int
) -> tuple[np.ndarray, bool, np.ndarray] | None:
    if len(tokens) < 6 or len(tokens) % 2:
        errs(lineno, f"a polygon needs an even number (>= 6) of coordinates, got {len(tokens)}")
        return None
    vals = _normalised(tokens, lineno, errs, None)
    if vals is None:
        return None
    pts = vals.reshape(-1, 2)
    pts = pts[~(pts == 0).all(axis=1)]  # stray (0, 0) points
    if len(np.unique(pts, axis=0)) < 3:
        errs(
            lineno,
            f"polygon has fewer than 3 distinct points once (0,0) points are dropped: {' '.join(tokens)!r}",
        )
        return None
    outline = pts * np.array([w, h], dtype=np.float64)
    rect = min_area_rect(outline)
    if rect_width(rect) < MIN_WIDTH_PX:  # a diagonal line too: its axis-aligned box would be an empty label
        errs(lineno, f"polygon has no area (all points on a line): {' '.join(tokens)!r}")
        return None
    return rect, True, outline


def read_yolo_seg(
    images: str | Path,
    *,
    labels: str | Path | None = None,
    names: Names,
    dataset: str = "yolo-seg",
    taxonomy: Taxonomy | None = None,
    gsd: float | None = None,
    group: str | None = None,
    group_pattern: str | None = None,
    on_error: OnError = "raise",
) -> list[LabeledImage]:
    """Read YOLO segmentation polygons as rotated boxes; arguments as :func:`~detector.labels.read_yolo`.

    Raises:
        LabelError: naming the file and line of a malformed polygon (with ``on_error="raise"``).
    """
    return read_yolo_folder(
        images,
        labels,
        names,
        _parse_seg,
        dataset=dataset,
        taxonomy=taxonomy,
        gsd=gsd,
        group=group,
        group_pattern=group_pattern,
        on_error=on_error,
    )
