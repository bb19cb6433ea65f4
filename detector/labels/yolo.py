"""YOLO boxes (``class cx cy w h``, normalised to the image size) and what the YOLO readers share:
class-name files, the image/label pairing and the per-line loop."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detector.labels.types import (
    Annotation,
    LabeledImage,
    LabelError,
    LineErrors,
    OnError,
    box_polygon,
    check_pattern,
    group_of,
    image_size,
    list_images,
    map_class,
)
from detector.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

#: Normalised coordinates further than this outside ``[0, 1]`` are a malformed line, not a truncated object.
NORM_SLACK = 0.5

Names = Sequence[str] | dict[int, str] | str | Path

#: ``(tokens after the class id, line number, errors, width, height)`` -> ``(polygon (4, 2), rotated)``, or
#: ``(polygon, rotated, outline (K, 2))`` for polygon labels, or ``None`` for a line reported to ``errors``.
ParseGeometry = Callable[[list[str], int, LineErrors, int, int], "tuple[Any, ...] | None"]


def load_names(names: Names) -> dict[int, str]:
    """Class id -> name from a list, a dict, a ``*.names`` file (one per line) or a YAML file with ``names``.

    Raises:
        LabelError: the file is missing or holds no names.
    """
    if isinstance(names, dict):
        try:
            return {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError) as e:
            raise LabelError(
                f"class names: the keys of a dict must be integer class ids, got {names!r}"
            ) from e
    if isinstance(names, (str, Path)) and (Path(names).suffix in (".names", ".txt", ".yaml", ".yml")):
        p = Path(names)
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise LabelError(f"{p}: cannot read class names ({e})") from e
        if p.suffix in (".yaml", ".yml"):
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise LabelError(f"{p}: not valid YAML ({e})") from e
            if not isinstance(data, dict) or "names" not in data:
                raise LabelError(f"{p}: expected a mapping with a `names` key")
            if not isinstance(data["names"], (list, dict)):
                raise LabelError(f"{p}: `names` must be a list or a mapping of id -> name")
            try:
                return load_names(data["names"])
            except LabelError as e:
                raise LabelError(f"{p}: {e}") from e
        out = {i: n.strip() for i, n in enumerate(line for line in text.splitlines() if line.strip())}
        if not out:
            raise LabelError(f"{p}: no class names")
        return out
    if not isinstance(names, (list, tuple)):
        raise LabelError(f"class names must be a list, a dict or a .names/.yaml file, got {names!r}")
    return {i: str(n) for i, n in enumerate(names)}


def _normalised(tokens: list[str], lineno: int, errs: LineErrors, expect: int | None) -> np.ndarray | None:
    if expect is not None and len(tokens) != expect:
        errs(lineno, f"expected {expect + 1} fields (class id and {expect} numbers), got {len(tokens) + 1}")
        return None
    try:
        vals = np.asarray([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        errs(lineno, f"coordinates are not numbers: {' '.join(tokens)!r}")
        return None
    if not np.isfinite(vals).all():
        errs(lineno, "non-finite coordinates")
        return None
    if (vals < -NORM_SLACK).any() or (vals > 1 + NORM_SLACK).any():
        errs(lineno, f"coordinates are not normalised to [0, 1]: {' '.join(tokens)!r}")
        return None
    return vals


def _parse_box(
    tokens: list[str], lineno: int, errs: LineErrors, w: int, h: int
) -> tuple[np.ndarray, bool] | None:
    vals = _normalised(tokens, lineno, errs, 4)
    if vals is None:
        return None
    cx, cy, bw, bh = vals
    if bw <= 0 or bh <= 0:
        errs(lineno, f"box width and height must be positive, got {bw} x {bh}")
        return None
    return box_polygon((cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h), False


def read_yolo_folder(
    images: str | Path,
    labels: str | Path | None,
    names: Names,
    parse: ParseGeometry,
    *,
    dataset: str,
    taxonomy: Taxonomy | None,
    gsd: float | None,
    group: str | None,
    group_pattern: str | None,
    on_error: OnError,
) -> list[LabeledImage]:
    """The loop every YOLO-style reader shares: pair images with ``labels/<stem>.txt``, parse each line.

    An image without a label file has no objects (the YOLO convention). ``group="folder"`` uses the image
    folder's name as the scene id of every image (a video sequence folder), ``group="file"`` the full file stem
    (each image its own scene, for exports whose names say nothing about the scene); another string is used
    as is.
    """
    img_dir = Path(images)
    lbl_dir = Path(labels) if labels is not None else img_dir
    id_to_name = load_names(names)
    check_pattern(group_pattern, lbl_dir)
    skipped_files = LineErrors(lbl_dir, on_error)  # images skipped whole: reported with the first image
    out: list[LabeledImage] = []
    for img in list_images(img_dir):
        lbl = lbl_dir / f"{img.stem}.txt"
        try:
            w, h = image_size(img)
            lines = lbl.read_text().splitlines() if lbl.is_file() else []
        except LabelError as e:
            skipped_files.report(str(e))
            continue
        except (OSError, UnicodeDecodeError) as e:
            skipped_files.report(f"{lbl}: cannot read the label file ({e})")
            continue
        errs = LineErrors(lbl, on_error)
        anns: list[Annotation] = []
        for lineno, raw in enumerate(lines, start=1):
            tokens = raw.split()
            if not tokens:
                continue
            try:
                cid = int(tokens[0])
            except ValueError:
                errs(lineno, f"class id must be an integer, got {tokens[0]!r}")
                continue
            if cid not in id_to_name:
                errs(lineno, f"class id {cid} is not among the {len(id_to_name)} class names {id_to_name}")
                continue
            geom = parse(tokens[1:], lineno, errs, w, h)
            if geom is None:
                continue
            poly, rotated = geom[0], geom[1]
            source = id_to_name[cid]
            attrs: dict[str, Any] = {"source_cls": source, "dataset": dataset, "class_id": cid}
            if len(geom) > 2:
                attrs["outline"] = geom[2]
            anns.append(
                Annotation(
                    image=img,
                    cls=map_class(taxonomy, dataset, source),
                    source_cls=source,
                    polygon=poly,
                    rotated=rotated,
                    attrs=attrs,
                )
            )
        if group == "folder":
            gid = img_dir.name
        elif group == "file":
            gid = img.stem
        elif group is not None:
            gid = group
        else:
            gid = group_of(img.name, group_pattern)
        out.append(LabeledImage(img, w, h, gsd, anns, gid, dataset, errs.skipped))
    if out and skipped_files.skipped:
        out[0].skipped[:0] = skipped_files.skipped
    return out


def read_yolo(
    images: str | Path,
    *,
    labels: str | Path | None = None,
    names: Names,
    dataset: str = "yolo",
    taxonomy: Taxonomy | None = None,
    gsd: float | None = None,
    group: str | None = None,
    group_pattern: str | None = None,
    on_error: OnError = "raise",
) -> list[LabeledImage]:
    """Read YOLO box labels: one ``class cx cy w h`` line per object, normalised to the image size.

    Args:
        images: the image folder.
        labels: the label folder (default: the image folder; ``<stem>.txt`` per image).
        names: class names (list, dict, ``*.names`` file or YAML with ``names``).
        dataset: dataset name for the taxonomy lookup.
        taxonomy: maps names to ours; ``None`` keeps the source names.
        gsd: ground sample distance in m/px of every image, if known.
        group: scene id of every image (``"folder"``: the image folder's name; ``"file"``: the full file stem);
            default: the file stem without its Roboflow suffix.
        group_pattern: regular expression giving the scene id from the file stem.
        on_error: ``"raise"`` on a malformed line, or ``"skip"`` it with a warning (an image whose header or
            label file does not read is skipped whole, listed in the first image's ``skipped``).

    Raises:
        LabelError: naming the file and line of a malformed label (with ``on_error="raise"``).
    """
    return read_yolo_folder(
        images,
        labels,
        names,
        _parse_box,
        dataset=dataset,
        taxonomy=taxonomy,
        gsd=gsd,
        group=group,
        group_pattern=group_pattern,
        on_error=on_error,
    )
