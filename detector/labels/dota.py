"""DOTA text labels: optional ``imagesource:`` / ``gsd:`` header lines, then one object per line,
``x1 y1 x2 y2 x3 y3 x4 y4 class difficulty`` in image pixels (difficulty ``1`` = difficult, may be absent)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from detector.labels.types import (
    Annotation,
    LabeledImage,
    LabelError,
    LineErrors,
    OnError,
    check_pattern,
    group_of,
    has_area,
    image_size,
    list_images,
    map_class,
)
from detector.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

#: The DOTA scene id (``P0003`` of ``P0003__1024__0___824``).
DOTA_GROUP_PATTERN = r"^(P\d+)"


def parse_dota_file(
    path: Path,
    image: Path,
    *,
    dataset: str,
    taxonomy: Taxonomy | None,
    on_error: OnError = "raise",
) -> tuple[list[Annotation], float | None, list[str]]:
    """Parse one DOTA label file -> ``(annotations, gsd from the header or None, skipped-line messages)``."""
    errs = LineErrors(path, on_error)
    anns: list[Annotation] = []
    gsd: float | None = None
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(f"{path}: cannot read ({e})") from e
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        low = line.lower()
        if low.startswith("imagesource:"):
            continue
        if low.startswith("gsd:"):
            value = line.split(":", 1)[1].strip()
            try:
                gsd = float(value)
            except ValueError:
                gsd = None  # DOTA writes "gsd:null" for unknown resolution
            if gsd is not None and not (np.isfinite(gsd) and gsd > 0):
                gsd = None
            continue
        parts = line.split()
        if len(parts) not in (9, 10):
            errs(
                lineno, f"expected 8 coordinates, a class and a difficulty, got {len(parts)} fields: {line!r}"
            )
            continue
        try:
            coords = np.asarray([float(v) for v in parts[:8]], dtype=np.float64).reshape(4, 2)
        except ValueError:
            errs(lineno, f"coordinates are not numbers: {line!r}")
            continue
        if not np.isfinite(coords).all():
            errs(lineno, f"non-finite coordinates: {line!r}")
            continue
        if not has_area(coords):
            errs(lineno, f"polygon has no area (its 4 points are on a line): {line!r}")
            continue
        difficult = False
        if len(parts) == 10:
            if parts[9] not in ("0", "1", "2"):
                errs(lineno, f"difficulty must be 0 or 1, got {parts[9]!r}")
                continue
            difficult = parts[9] != "0"
        source = parts[8]
        anns.append(
            Annotation(
                image=image,
                cls=map_class(taxonomy, dataset, source),
                source_cls=source,
                polygon=coords,
                rotated=True,
                difficult=difficult,
                attrs={"source_cls": source, "dataset": dataset},
            )
        )
    return anns, gsd, errs.skipped


def read_dota(
    root: str | Path,
    *,
    images: str | Path | None = None,
    labels: str | Path | None = None,
    dataset: str = "dota",
    taxonomy: Taxonomy | None = None,
    gsd: float | None = None,
    group_pattern: str | None = DOTA_GROUP_PATTERN,
    on_error: OnError = "raise",
) -> list[LabeledImage]:
    """Read a DOTA-style folder (``root/images`` and ``root/labelTxt`` by default).

    Every image is returned; an image without a label file is an unlabelled negative (logged). The header's
    ``gsd`` wins over the ``gsd`` argument.

    With ``on_error="skip"`` a malformed line, a label file without its image and an image whose header does
    not read are skipped with a warning and listed in ``LabeledImage.skipped`` (whole files with the first
    image).

    Raises:
        LabelError: a folder is missing, or (with ``on_error="raise"``) a label file has no image, an image
            does not read, or a line is malformed (a polygon of 4 points on a line among them); the message
            names the file and line.
    """
    root = Path(root)
    img_dir = Path(images) if images is not None else root / "images"
    lbl_dir = Path(labels) if labels is not None else root / "labelTxt"
    if not lbl_dir.is_dir():
        raise LabelError(f"{lbl_dir}: DOTA label folder not found")
    check_pattern(group_pattern, lbl_dir)
    # files skipped whole: a label without its image, an image that does not read
    errs = LineErrors(lbl_dir, on_error)
    imgs = {p.stem: p for p in list_images(img_dir)}
    out: list[LabeledImage] = []
    for lbl in sorted(lbl_dir.glob("*.txt")):
        img = imgs.pop(lbl.stem, None)
        if img is None:
            errs.report(f"{lbl}: no image named {lbl.stem}.* in {img_dir}")
            continue
        try:
            w, h = image_size(img)
        except LabelError as e:
            errs.report(str(e))
            continue
        anns, head_gsd, skipped = parse_dota_file(
            lbl, img, dataset=dataset, taxonomy=taxonomy, on_error=on_error
        )
        out.append(
            LabeledImage(
                image=img,
                width=w,
                height=h,
                gsd=head_gsd if head_gsd is not None else gsd,
                annotations=anns,
                group=group_of(img.name, group_pattern),
                dataset=dataset,
                skipped=skipped,
            )
        )
    for _, img in sorted(imgs.items()):
        logger.info("%s has no label file in %s: read as an image without objects", img, lbl_dir)
        try:
            w, h = image_size(img)
        except LabelError as e:
            errs.report(str(e))
            continue
        out.append(LabeledImage(img, w, h, gsd, [], group_of(img.name, group_pattern), dataset))
    out.sort(key=lambda li: li.image.name)
    if out and errs.skipped:
        out[0].skipped[:0] = errs.skipped  # files skipped whole are reported with the first image
    return out
