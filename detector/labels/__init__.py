"""Readers for the label formats users arrive with, all returning :class:`LabeledImage` lists.

One reader per format: :func:`read_coco`, :func:`read_dota`, :func:`read_yolo`, :func:`read_yolo_obb`,
:func:`read_yolo_seg`, :func:`read_csv_polygons`; :func:`read_dataset` picks one from a small spec::

    format: yolo_seg            # coco | dota | yolo | yolo_obb | yolo_seg | csv
    name: isaid                 # dataset name: the taxonomy key
    path: isaid-512/train/images  # coco/csv: the label file; dota: the root; yolo*: the image folder
    labels: isaid-512/train/labels  # optional, per format
    names: [small-vehicle, large-vehicle, ...]  # yolo*: list, dict, or a .names / .yaml file
    gsd: 0.13                   # optional, m/px
    group: folder               # optional scene id: "folder" (the image folder) or a fixed string
    group_pattern: '^([A-Z]+)_\\d+$'  # optional regex on the file stem giving the scene id
    taxonomy: configs/taxonomy.yaml  # default: the package's table; null keeps source class names
    on_error: raise             # or skip
    include: isaid-scenes.json#test-unseen  # optional: keep only the images (file names) this list names
    helicopter_box: rotor_disc  # optional: turn fuselage-only helicopter labels (iSAID) into rotor discs (DOTA's)
    aircraft_box: axis          # optional: box aircraft outlines along their axis of symmetry, not by min-area

``include`` names a text file (one image file name per line, ``#`` comments) or a JSON file holding a list of
names, with ``#key`` selecting a list inside a JSON object. A relative path resolves against the root, else the
package's ``configs/`` folder. Every listed name must be an image of the set (a stale list is an error).

Relative paths resolve against ``root`` (argument or spec key), else the spec file's folder.
See :mod:`detector.labels.types` for the coordinate contract.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detector.labels.coco import read_coco
from detector.labels.csv_polygons import read_csv_polygons
from detector.labels.dota import read_dota
from detector.labels.types import Annotation, LabeledImage, LabelError, group_of, roboflow_stem
from detector.labels.yolo import load_names, read_yolo
from detector.labels.yolo_obb import read_yolo_obb
from detector.labels.yolo_seg import read_yolo_seg
from detector.taxonomy import Taxonomy, load_taxonomy

__all__ = [
    "FORMATS",
    "Annotation",
    "LabelError",
    "LabeledImage",
    "group_of",
    "load_names",
    "read_coco",
    "read_csv_polygons",
    "read_dataset",
    "read_dota",
    "read_yolo",
    "read_yolo_obb",
    "read_yolo_seg",
    "roboflow_stem",
]

FORMATS = ("coco", "dota", "yolo", "yolo_obb", "yolo_seg", "csv")
_SPEC_KEYS = {
    "format",
    "name",
    "path",
    "images",
    "labels",
    "names",
    "gsd",
    "group",
    "group_pattern",
    "taxonomy",
    "on_error",
    "root",
    "use_segmentation",
    "include",
    "helicopter_box",
    "aircraft_box",
}
_DEFAULT = object()


def read_dataset(
    spec: dict[str, Any] | str | Path,
    *,
    root: str | Path | None = None,
    taxonomy: Taxonomy | None | object = _DEFAULT,
) -> list[LabeledImage]:
    """Read a dataset described by a spec (a dict, or the path of a small YAML file; keys above).

    Args:
        spec: the dataset description.
        root: folder that relative paths in the spec resolve against (overrides the spec's ``root``).
        taxonomy: a loaded taxonomy to use instead of the spec's ``taxonomy`` entry (``None``: no mapping).

    Raises:
        LabelError: the spec is incomplete or names an unknown format; errors of the reader itself.
    """
    where = "dataset spec"
    base: Path | None = None
    if isinstance(spec, (str, Path)):
        where = str(spec)
        try:
            loaded = yaml.safe_load(Path(spec).read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise LabelError(f"{spec}: cannot read the dataset spec ({e})") from e
        base = Path(spec).resolve().parent
        spec = loaded
    if not isinstance(spec, dict):
        raise LabelError(f"{where}: a dataset spec must be a mapping, got {type(spec).__name__}")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise LabelError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_SPEC_KEYS)}")
    fmt = str(spec.get("format", "")).replace("-", "_").lower()
    if fmt not in FORMATS:
        raise LabelError(f"{where}: format must be one of {FORMATS}, got {spec.get('format')!r}")
    if "path" not in spec:
        raise LabelError(f"{where}: `path` is required")
    for key in ("path", "images", "labels", "root", "taxonomy", "group", "group_pattern", "include"):
        if spec.get(key) is not None and not isinstance(spec[key], (str, Path)):
            raise LabelError(f"{where}: `{key}` must be a string, got {spec[key]!r}")
    on_error = spec.get("on_error", "raise")
    if on_error not in ("raise", "skip"):
        raise LabelError(f"{where}: on_error must be 'raise' or 'skip', got {on_error!r}")
    gsd = _gsd(spec.get("gsd"), where)
    if root is not None:
        base = Path(root)
    elif spec.get("root") is not None:
        base = Path(spec["root"]) if base is None else base / spec["root"]

    def resolve(p: Any) -> Path | None:
        if p is None:
            return None
        p = Path(p).expanduser()
        return p if p.is_absolute() or base is None else base / p

    if taxonomy is _DEFAULT:
        tax_entry = spec.get("taxonomy", _DEFAULT)
        tax: Taxonomy | None
        if tax_entry is _DEFAULT:
            tax = load_taxonomy()
        elif tax_entry is None:
            tax = None
        else:
            tax = load_taxonomy(tax_entry if Path(tax_entry).is_absolute() else Path(tax_entry))
    else:
        tax = taxonomy  # type: ignore[assignment]
    keep = _include(spec["include"], resolve, where) if spec.get("include") is not None else None
    relabel = []  # checked before the (slow) read, applied after it
    for key, (value, rule) in _BOX_RULES.items():
        if spec.get(key) is not None:
            if spec[key] != value:
                raise LabelError(f"{where}: {key} must be {value}, got {spec[key]!r}")
            relabel.append(rule)
    images = _read(spec, fmt, tax, gsd, on_error, resolve, where)
    for rule in relabel:
        images = [rule(im) for im in images]
    if keep is None:
        return images
    missing = sorted(keep - {im.image.name for im in images})
    if missing:
        raise LabelError(
            f"{where}: {len(missing)} image(s) named by include {spec['include']!r} are not in the set, "
            f"e.g. {missing[0]!r}"
        )
    return [im for im in images if im.image.name in keep]


def _rotor_discs(img: LabeledImage) -> LabeledImage:
    """``img`` with every helicopter label as its rotor disc (:func:`~detector.labels.types.rotor_disc`)."""
    from dataclasses import replace

    from detector.labels.types import rotor_disc

    def disc(a: Annotation) -> Annotation:
        square = rotor_disc(a.polygon)
        centre, side = square.mean(axis=0), float(np.linalg.norm(square[1] - square[0]))
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        circle = centre + side / 2 * np.stack(
            [np.cos(t), np.sin(t)], axis=1
        )  # the outline is the disc itself
        return replace(a, polygon=square, rotated=True, attrs={**a.attrs, "outline": circle})

    return replace(img, annotations=[disc(a) if a.cls == "helicopter" else a for a in img.annotations])


def _aircraft_axes(img: LabeledImage) -> LabeledImage:
    """``img`` with every aircraft traced as an outline (a polygon label) boxed along its axis of symmetry
    (:func:`~detector.labels.types.aircraft_axis_rect`) instead of its minimum-area rectangle."""
    from dataclasses import replace

    from detector.geometry import CROSS_CLASSES
    from detector.labels.types import aircraft_axis_rect

    def axis(a: Annotation) -> Annotation:
        if a.cls not in CROSS_CLASSES or a.attrs.get("outline") is None:
            return a
        rect, symmetry = aircraft_axis_rect(a.outline)
        return replace(a, polygon=rect, rotated=True, attrs={**a.attrs, "axis_symmetry": round(symmetry, 3)})

    return replace(img, annotations=[axis(a) for a in img.annotations])


#: Spec keys that redraw one class's labels: key -> (its one accepted value, the per-image rule).
_BOX_RULES: dict[str, tuple[str, Callable[[LabeledImage], LabeledImage]]] = {
    "helicopter_box": ("rotor_disc", _rotor_discs),
    "aircraft_box": ("axis", _aircraft_axes),
}


def _read(
    spec: dict[str, Any],
    fmt: str,
    tax: Taxonomy | None,
    gsd: float | None,
    on_error: str,
    resolve: Any,
    where: str,
) -> list[LabeledImage]:
    """The reader of ``fmt`` over the spec's paths."""
    name = str(spec.get("name") or fmt)
    common: dict[str, Any] = {
        "dataset": name,
        "taxonomy": tax,
        "gsd": gsd,
        "on_error": on_error,
        "group_pattern": spec.get("group_pattern"),
    }
    path = Path(resolve(spec["path"]) or ".")
    if fmt == "coco":
        return read_coco(
            path,
            images=resolve(spec.get("images")),
            use_segmentation=bool(spec.get("use_segmentation")),
            **common,
        )
    if fmt == "csv":
        return read_csv_polygons(path, images=resolve(spec.get("images")), **common)
    if fmt == "dota":
        if spec.get("group_pattern") is None:
            common.pop("group_pattern")  # the reader's default: the DOTA P-number
        return read_dota(
            path, images=resolve(spec.get("images")), labels=resolve(spec.get("labels")), **common
        )
    if "names" not in spec:
        raise LabelError(f"{where}: `names` is required for format {fmt!r}")
    names = spec["names"]
    if isinstance(names, str):
        names = resolve(names)
    reader = {"yolo": read_yolo, "yolo_obb": read_yolo_obb, "yolo_seg": read_yolo_seg}[fmt]
    return reader(path, labels=resolve(spec.get("labels")), names=names, group=spec.get("group"), **common)


def _include(entry: str, resolve: Any, where: str) -> set[str]:
    """The image file names an ``include`` entry (``file`` or ``file.json#key``) lists."""
    import json

    from detector.resources import config_path

    file, _, key = str(entry).partition("#")
    path = Path(resolve(file))
    if not path.is_file() and not Path(file).is_absolute():
        path = config_path(file)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(f"{where}: cannot read the include list {path} ({e})") from e
    if path.suffix.lower() != ".json":
        if key:
            raise LabelError(f"{where}: include {entry!r}: '#{key}' selects a list in a JSON file only")
        return {ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")}
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelError(f"{path}: include list is not JSON ({e})") from e
    if key:
        if not isinstance(doc, dict) or key not in doc:
            raise LabelError(f"{path}: include {entry!r}: no key {key!r} in the JSON object")
        doc = doc[key]
    if not isinstance(doc, list) or not all(isinstance(n, str) for n in doc):
        raise LabelError(f"{path}: include {entry!r} must be a list of image file names")
    return set(doc)


def _gsd(value: Any, where: str) -> float | None:
    """The spec's ``gsd`` in m/px (``None`` when absent)."""
    if value is None:
        return None
    try:
        gsd = float(value)
    except (TypeError, ValueError):
        gsd = math.nan
    if isinstance(value, bool) or not 0 < gsd < math.inf:
        raise LabelError(f"{where}: gsd must be a positive number of metres per pixel, got {value!r}")
    return gsd
