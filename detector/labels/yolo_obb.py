"""YOLO-OBB labels (Ultralytics): ``class x1 y1 x2 y2 x3 y3 x4 y4``, corners normalised to the image size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from detector.labels.types import LabeledImage, LineErrors, OnError, has_area
from detector.labels.yolo import Names, _normalised, read_yolo_folder
from detector.taxonomy import Taxonomy


def _parse_obb(
    tokens: list[str], lineno: int, errs: LineErrors, w: int, h: int
) -> tuple[np.ndarray, bool] | None:
    vals = _normalised(tokens, lineno, errs, 8)
    if vals is None:
        return None
    corners = vals.reshape(4, 2) * np.array([w, h], dtype=np.float64)
    if not has_area(corners):
        errs(lineno, f"box has no area (its 4 corners are on a line): {' '.join(tokens)!r}")
        return None
    return corners, True


def read_yolo_obb(
    images: str | Path,
    *,
    labels: str | Path | None = None,
    names: Names,
    dataset: str = "yolo-obb",
    taxonomy: Taxonomy | None = None,
    gsd: float | None = None,
    group: str | None = None,
    group_pattern: str | None = None,
    on_error: OnError = "raise",
) -> list[LabeledImage]:
    """Read YOLO-OBB labels (4 normalised corners per object); arguments as :func:`~detector.labels.read_yolo`.

    Raises:
        LabelError: naming the file and line of a malformed label (with ``on_error="raise"``).
    """
    return read_yolo_folder(
        images,
        labels,
        names,
        _parse_obb,
        dataset=dataset,
        taxonomy=taxonomy,
        gsd=gsd,
        group=group,
        group_pattern=group_pattern,
        on_error=on_error,
    )
