"""Dataset builder: labelled scenes in their native formats -> square training chips in the Ultralytics layout.

``build("configs/data/cpu.yaml")`` (or ``detector data build configs/data/cpu.yaml``) reads every source with
:func:`detector.labels.read_dataset`, and then, in this order:

1. drops duplicate images (Roboflow exports hold several copies of one source image: same name stem before
   ``_jpg.rf.<hash>``, or same decoded pixels with ``dedup: pixels``), keeping the copy of the earliest source;
2. assigns splits (the source's own ``split``, or ``auto``: whole groups to val with a seeded ratio) and checks
   that no group (source scene / video sequence) sits in two splits (``leakage: drop`` removes the non-train
   copies, ``error`` stops, ``report`` only reports);
3. plans chips on a grid (``chip`` px, at least ``overlap`` px shared by neighbours, the last chip flush with the
   image edge, padding with black where an image is smaller than a chip), per scale factor of the source
   (``scales: [1.0, 0.4]`` resamples an aerial source to a coarser GSD); an object is kept in a chip when at
   least ``min_visible`` of its area is inside, clipped to the chip and marked truncated when cut;
4. selects chips per source (``max_chips``: every chip holding a ``keep_classes`` object first, then chips in
   turn across images, each image's chips ordered to cover its objects whole before repeating them) and adds
   empty chips so that they make up ``empty_share`` of the source's chips (seeded);
5. writes ``images/{train,val}``, ``labels/{train,val}`` (``cls cx cy w h`` normalised, the axis-aligned box of
   the clipped footprint; with ``task: obb`` ``cls x1 y1 ... x4 y4``), ``data.yaml``, ``summary.json`` and
   finally a ``READY`` marker.

Everything is deterministic for a given config (seeded per source, sorted inputs, single process).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detector.errors import BuildError, DetectorError, RasterError  # noqa: F401  (BuildError: re-exported)
from detector.labels import LabeledImage, LabelError, read_dataset, roboflow_stem
from detector.taxonomy import IGNORE, Taxonomy, load_taxonomy
from training.angles import UNRESOLVED

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")


@dataclass
class SourceConfig:
    """One labelled source of a build.

    Attributes:
        name: unique name of the source in the build (chip file names start with it).
        dataset: the :func:`~detector.labels.read_dataset` spec (paths relative to the build's ``data_root``).
        split: ``"train"``, ``"val"``, or ``"auto"`` (whole groups go to val with probability ``val_fraction``).
        val_fraction: share of groups sent to val with ``split: auto``.
        scales: resampling factors applied to every image (``0.4`` turns 0.13 m into ~0.33 m per pixel).
        max_chips: at most this many chips with objects from the source (``None``: all of them).
        keep_classes: chips holding one of these classes are always kept, whatever ``max_chips`` says.
        empty_share: share of empty chips among the source's chips (``None``: the build's ``empty_share``).
        derive_angles: for a source with axis-aligned boxes and ``task: obb``: derive rotated labels from a
            rotated model (:mod:`training.angles`; keys ``model``, ``min_iou``, ``conf``); objects without a
            confident angle are painted over with the padding gray (ignore regions). ``None``: off.
        root: folder this source's paths resolve against instead of the build's ``data_root`` (relative to the
            working directory), for data the project generates itself (e.g. ``datasets/heli-extra``).
    """

    name: str
    dataset: dict[str, Any]
    split: str = "train"
    val_fraction: float = 0.2
    scales: list[float] = field(default_factory=lambda: [1.0])
    max_chips: int | None = None
    keep_classes: list[str] = field(default_factory=list)
    empty_share: float | None = None
    derive_angles: dict[str, Any] | None = None
    root: str | None = None

    def __post_init__(self) -> None:
        if self.derive_angles is not None and not isinstance(self.derive_angles, dict):
            raise BuildError(f"source {self.name!r}: derive_angles must be a mapping (model, min_iou, conf)")
        if self.split not in (*SPLITS, "auto"):
            raise BuildError(f"source {self.name!r}: split must be train, val or auto, got {self.split!r}")
        if not 0 <= self.val_fraction <= 1:
            raise BuildError(
                f"source {self.name!r}: val_fraction must be in [0, 1], got {self.val_fraction!r}"
            )
        if not isinstance(self.scales, list) or not isinstance(self.keep_classes, list):
            raise BuildError(f"source {self.name!r}: scales and keep_classes must be lists (e.g. [1.0, 0.5])")
        self.scales = [float(s) for s in self.scales]
        if not self.scales or any(not 0 < s <= 4 for s in self.scales):
            raise BuildError(f"source {self.name!r}: scales must be factors in (0, 4], got {self.scales!r}")
        if self.max_chips is not None and self.max_chips < 0:
            raise BuildError(f"source {self.name!r}: max_chips must be >= 0, got {self.max_chips!r}")
        if self.empty_share is not None and not 0 <= self.empty_share < 1:
            raise BuildError(f"source {self.name!r}: empty_share must be in [0, 1), got {self.empty_share!r}")


@dataclass
class BuildConfig:
    """A dataset build (mirrors ``configs/data/*.yaml``).

    Attributes:
        name: build name.
        out: output folder (relative to the working directory).
        sources: the labelled sources.
        data_root: folder the sources' paths are relative to (env ``DETECTOR_SHARED_DATA`` overrides it).
        taxonomy: the class table (``None``: the shipped ``configs/taxonomy.yaml``); its ``classes`` are the
            dataset's class names, in id order.
        seed: seed of every random choice.
        task: ``"detect"`` (axis-aligned labels) or ``"obb"`` (rotated labels).
        chip: chip side in pixels.
        overlap: minimum overlap of neighbouring chips in pixels.
        min_visible: an object is kept in a chip when at least this share of its area is inside.
        min_size: and when its clipped box is at least this many pixels on each side.
        empty_share: share of empty chips among each source's chips.
        dedup: ``"stem"`` (Roboflow name stem), ``"pixels"`` (MD5 of the decoded pixels) or ``"none"``.
        leakage: ``"drop"`` (remove non-train images of groups that are in train), ``"error"`` or ``"report"``.
        image_format: ``"jpg"`` or ``"png"``.
        jpeg_quality: JPEG quality of written chips.
    """

    name: str
    out: str
    sources: list[SourceConfig]
    data_root: str = "../shared/data"
    taxonomy: str | None = None
    seed: int = 0
    task: str = "detect"
    chip: int = 320
    overlap: int = 48
    min_visible: float = 0.5
    min_size: float = 2.0
    empty_share: float = 0.1
    dedup: str = "stem"
    leakage: str = "drop"
    image_format: str = "jpg"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.task not in ("detect", "obb"):
            raise BuildError(f"task must be 'detect' or 'obb', got {self.task!r}")
        if self.chip < 32:
            raise BuildError(f"chip must be >= 32 px, got {self.chip!r}")
        if not 0 <= self.overlap < self.chip:
            raise BuildError(f"overlap must be in [0, chip), got {self.overlap!r}")
        if not 0 < self.min_visible <= 1:
            raise BuildError(f"min_visible must be in (0, 1], got {self.min_visible!r}")
        if not 0 <= self.empty_share < 1:
            raise BuildError(f"empty_share must be in [0, 1), got {self.empty_share!r}")
        if self.dedup not in ("stem", "pixels", "none"):
            raise BuildError(f"dedup must be stem, pixels or none, got {self.dedup!r}")
        if self.leakage not in ("drop", "error", "report"):
            raise BuildError(f"leakage must be drop, error or report, got {self.leakage!r}")
        if self.image_format not in ("jpg", "png"):
            raise BuildError(f"image_format must be jpg or png, got {self.image_format!r}")
        names = [s.name for s in self.sources]
        if not names:
            raise BuildError("a build needs at least one source")
        dup = sorted(n for n, c in Counter(names).items() if c > 1)
        if dup:
            raise BuildError(f"source names must be unique, repeated: {dup}")
        classes = self.classes
        for s in self.sources:
            bad = [c for c in s.keep_classes if c not in classes]
            if bad:
                raise BuildError(
                    f"source {s.name!r}: keep_classes {bad} are not classes of {self.class_table.path}: "
                    f"{list(classes)}"
                )

    @property
    def class_table(self) -> Taxonomy:
        """The loaded :attr:`taxonomy` (the shipped one is read once per process)."""
        return load_taxonomy(self.taxonomy)

    @property
    def classes(self) -> tuple[str, ...]:
        """The dataset's class names in class-id order (the taxonomy's classes a model outputs)."""
        return self.class_table.classes

    @classmethod
    def from_yaml(cls, path: str | Path) -> BuildConfig:
        """Load and validate a build config; errors name the file and the bad key."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise BuildError(f"{path}: cannot read the build config ({e})") from e
        if not isinstance(data, dict):
            raise BuildError(f"{path}: a build config must be a mapping")
        try:
            return cls.from_dict(data)
        except (BuildError, TypeError) as e:
            raise BuildError(f"{path}: {e}") from e

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildConfig:
        """Build from a parsed mapping (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise BuildError(f"unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        missing = [k for k in ("name", "out") if k not in data]
        if missing:
            raise BuildError(f"missing key(s) {missing}")
        if not isinstance(data.get("sources") or [], list):
            raise BuildError(f"`sources` must be a list of sources, got {type(data['sources']).__name__}")
        src_known = {f.name for f in fields(SourceConfig)}
        sources = []
        for i, s in enumerate(data.get("sources") or []):
            if not isinstance(s, dict):
                raise BuildError(f"source #{i} must be a mapping with `name` and `dataset`, got {s!r}")
            bad = set(s) - src_known
            if bad:
                raise BuildError(
                    f"source #{i} ({s.get('name', '?')}): unknown key(s) {sorted(bad)}; known: {sorted(src_known)}"
                )
            if "name" not in s or not isinstance(s.get("dataset"), dict):
                raise BuildError(
                    f"source #{i} ({s.get('name', '?')}): needs a `name` and a `dataset` mapping"
                )
            try:
                sources.append(SourceConfig(**s))
            except DetectorError:
                raise
            except (TypeError, ValueError) as e:  # a value of the wrong type, e.g. scales: [fast]
                raise BuildError(f"source #{i} ({s['name']}): bad value ({e})") from e
        try:
            return cls(**{**data, "sources": sources})
        except DetectorError:  # BuildError, TaxonomyError (also ValueErrors): already clear
            raise
        except (TypeError, ValueError) as e:  # a value of the wrong type, e.g. chip: large
            raise BuildError(f"bad value ({e})") from e


# ----------------------------------------------------------------------------------------------- planning


def chip_starts(length: int, chip: int, overlap: int) -> list[int]:
    """Start offsets of chips along one axis: the fewest chips of side ``chip`` that cover ``length`` with at
    least ``overlap`` px shared by neighbours, spread evenly, the first at 0 and the last flush with the end.

    A length not larger than one chip gives ``[0]`` (the chip is padded).
    """
    if length <= chip:
        return [0]
    n = math.ceil((length - overlap) / (chip - overlap))
    n = max(n, 2)
    return [round(i * (length - chip) / (n - 1)) for i in range(n)]


@dataclass
class ChipObject:
    """An object inside a chip, in chip pixels."""

    cls_id: int
    polygon: np.ndarray  # (4, 2): the (clipped) footprint as a rectangle, chip pixels
    xyxy: np.ndarray  # (4,): axis-aligned box of the clipped footprint
    truncated: bool
    ann_index: int  # index of the annotation in its image


@dataclass
class Chip:
    """A planned chip: a window of one (resampled) image and the objects kept in it."""

    source: str
    split: str
    image: LabeledImage
    scale: float
    x0: int
    y0: int
    objects: list[ChipObject]
    paint: list[np.ndarray] = field(default_factory=list)  # boxes (chip pixels) painted gray: ignore regions

    @property
    def whole(self) -> set[int]:
        """Indices of the annotations entirely inside the chip."""
        return {o.ann_index for o in self.objects if not o.truncated}


@dataclass
class _SourceStats:
    split: str = ""
    images_read: int = 0
    images_used: int = 0
    duplicates_dropped: int = 0
    leakage_dropped: int = 0
    label_lines_skipped: int = 0
    ignored_objects: dict[str, int] = field(default_factory=dict)
    chips_with_objects: int = 0
    chips_with_objects_kept: int = 0
    priority_chips: int = 0
    empty_chips: int = 0
    empty_chips_kept: int = 0
    cut_below_min_visible: int = 0
    too_small: int = 0
    angles: dict[str, Any] = field(default_factory=dict)
    painted_objects: int = 0


def _clip_object(
    poly: np.ndarray, box: tuple[float, float, float, float], min_visible: float
) -> tuple[float, np.ndarray | None]:
    """Visible share of the footprint ``poly`` ``(K, 2)`` inside ``box``, and the clipped footprint (``None``
    when less than ``min_visible`` is inside)."""
    import shapely

    x1, y1, x2, y2 = box
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    if lo[0] >= x1 and lo[1] >= y1 and hi[0] <= x2 and hi[1] <= y2:
        return 1.0, poly
    p = shapely.Polygon(poly)
    if not p.is_valid:
        # self-intersecting outlines (10% of iSAID's vehicles and planes): repairing them (buffer(0),
        # make_valid) drops up to most of the area, so the footprint is the hull of the annotator's points
        p = p.convex_hull
    area = p.area
    if area <= 0:  # degenerate footprint: judge on its enclosing box
        bw, bh = hi - lo
        iw = max(0.0, min(hi[0], x2) - max(lo[0], x1))
        ih = max(0.0, min(hi[1], y2) - max(lo[1], y1))
        frac = (iw * ih) / (bw * bh) if bw > 0 and bh > 0 else 0.0
        clipped = np.clip(poly, [x1, y1], [x2, y2])
        return frac, clipped
    inter = p.intersection(shapely.box(x1, y1, x2, y2))
    frac = inter.area / area
    if frac < min_visible or inter.is_empty:
        return frac, None
    if inter.geom_type != "Polygon":  # a concave outline cut into pieces: keep the hull of the visible parts
        inter = inter.convex_hull
    return frac, np.asarray(inter.exterior.coords, dtype=np.float64)[:-1]


def plan_image(
    src: SourceConfig,
    split: str,
    img: LabeledImage,
    scale: float,
    cfg: BuildConfig,
    stats: _SourceStats,
) -> list[Chip]:
    """Every chip of one image at one scale, with the objects kept in each (no pixels are read)."""
    from detector.labels.types import min_area_rect

    if img.width is None or img.height is None:
        raise BuildError(f"{img.image}: image size unknown")
    w, h = round(img.width * scale), round(img.height * scale)
    classes = cfg.classes
    ids = [i for i, a in enumerate(img.annotations) if a.cls in classes and not a.attrs.get(UNRESOLVED)]
    unresolved = np.array(
        [a.xyxy * scale for a in img.annotations if a.cls in classes and a.attrs.get(UNRESOLVED)]
    ).reshape(-1, 4)
    rects = [img.annotations[i].polygon * scale for i in ids]
    outlines = [img.annotations[i].outline * scale for i in ids]
    lo = np.array([o.min(axis=0) for o in outlines]).reshape(-1, 2)
    hi = np.array([o.max(axis=0) for o in outlines]).reshape(-1, 2)
    chips = []
    size = cfg.chip
    for y0 in chip_starts(h, size, cfg.overlap):
        for x0 in chip_starts(w, size, cfg.overlap):
            box = (float(x0), float(y0), float(x0 + min(size, w)), float(y0 + min(size, h)))
            hit = np.nonzero(
                (lo[:, 0] < box[2]) & (hi[:, 0] > box[0]) & (lo[:, 1] < box[3]) & (hi[:, 1] > box[1])
            )[0]
            objs = []
            shift = np.array([x0, y0], dtype=np.float64)
            for k in hit:
                frac, pts = _clip_object(outlines[k], box, cfg.min_visible)
                if pts is None or frac < cfg.min_visible:
                    stats.cut_below_min_visible += 1
                    continue
                pts = pts - shift
                xyxy = np.concatenate([pts.min(axis=0), pts.max(axis=0)])
                if (xyxy[2:] - xyxy[:2] < cfg.min_size).any():
                    stats.too_small += 1
                    continue
                truncated = frac < 1.0 - 1e-9
                if cfg.task == "obb":
                    rect = min_area_rect(pts) if truncated else rects[k] - shift
                else:
                    rect = np.array(
                        [[xyxy[0], xyxy[1]], [xyxy[2], xyxy[1]], [xyxy[2], xyxy[3]], [xyxy[0], xyxy[3]]]
                    )
                ann = img.annotations[ids[k]]
                objs.append(
                    ChipObject(classes.index(ann.cls), rect, xyxy, truncated or ann.truncated, ids[k])
                )
            paint = [
                np.clip(b - [x0, y0, x0, y0], 0, size)
                for b in unresolved
                if b[0] < box[2] and b[2] > box[0] and b[1] < box[3] and b[3] > box[1]
            ]
            stats.painted_objects += len(paint)
            chips.append(Chip(src.name, split, img, scale, x0, y0, objs, paint))
    return chips


def _cover_order(chips: list[Chip], rng: random.Random) -> list[Chip]:
    """Order one image's chips so that the first ones hold its objects whole (greedy set cover), then the rest."""
    keyed = [(rng.random(), c) for c in chips]
    keyed.sort(key=lambda t: t[0])
    pending = [c for _, c in keyed]
    uncovered: set[int] = set().union(*(c.whole for c in chips)) if chips else set()
    order: list[Chip] = []
    while pending and uncovered:
        best = max(range(len(pending)), key=lambda i: (len(pending[i].whole & uncovered), -i))
        if not pending[best].whole & uncovered:
            break
        c = pending.pop(best)
        uncovered -= c.whole
        order.append(c)
    return order + pending


def select_chips(
    src: SourceConfig,
    chips: list[Chip],
    empty_share: float,
    rng: random.Random,
    stats: _SourceStats,
    classes: Sequence[str] | None = None,
) -> list[Chip]:
    """Pick the chips of one source: priority chips, then round-robin over images, then the empty share.

    ``classes`` are the build's class names in id order (default: the shipped taxonomy's).
    """
    classes = tuple(classes) if classes is not None else load_taxonomy().classes
    full = [c for c in chips if c.objects]
    empty = [c for c in chips if not c.objects]
    stats.chips_with_objects += len(full)
    stats.empty_chips += len(empty)
    if src.max_chips is None or len(full) <= src.max_chips:
        chosen = list(full)
    else:
        keep_ids = {classes.index(k) for k in src.keep_classes}
        priority = [c for c in full if any(o.cls_id in keep_ids for o in c.objects)]
        stats.priority_chips += len(priority)
        if len(priority) > src.max_chips:
            logger.warning(
                "source %s: %d chips hold %s, more than max_chips=%d; all are kept",
                src.name,
                len(priority),
                src.keep_classes,
                src.max_chips,
            )
        taken = {id(c) for c in priority}
        by_unit: dict[tuple[str, float], list[Chip]] = defaultdict(list)
        for c in full:
            if id(c) not in taken:
                by_unit[(str(c.image.image), c.scale)].append(c)
        queues = [_cover_order(by_unit[k], rng) for k in sorted(by_unit)]
        rng.shuffle(queues)
        chosen = list(priority)
        depth = 0
        while len(chosen) < src.max_chips and any(depth < len(q) for q in queues):
            for q in queues:
                if depth < len(q) and len(chosen) < src.max_chips:
                    chosen.append(q[depth])
            depth += 1
    stats.chips_with_objects_kept += len(chosen)
    n_empty = min(len(empty), round(empty_share / (1 - empty_share) * len(chosen))) if empty_share > 0 else 0
    chosen += rng.sample(empty, n_empty)
    stats.empty_chips_kept += n_empty
    return chosen


# ------------------------------------------------------------------------------------------------ summary


@dataclass
class Summary:
    """What a build wrote, and what it skipped and why (saved as ``summary.json``)."""

    name: str
    out: str
    task: str
    chip: int
    overlap: int
    seed: int
    splits: dict[str, dict[str, Any]]
    sources: dict[str, dict[str, Any]]
    leakage: dict[str, Any]
    build_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """A short human-readable report."""
        lines = [
            f"dataset {self.name} -> {self.out} ({self.task}, {self.chip} px chips, overlap {self.overlap} px)"
        ]
        for split, s in self.splits.items():
            inst = ", ".join(f"{k} {v}" for k, v in s["instances"].items())
            lines.append(
                f"  {split}: {s['chips']} chips ({s['empty_chips']} empty) from {s['images']} images; "
                f"instances: {inst}; truncated {s['truncated']}"
            )
        for name, s in self.sources.items():
            lines.append(
                f"  {name} [{s['split']}]: {s['images_used']}/{s['images_read']} images "
                f"(dup -{s['duplicates_dropped']}, leak -{s['leakage_dropped']}), chips {s['chips_with_objects_kept']}"
                f"/{s['chips_with_objects']} with objects + {s['empty_chips_kept']}/{s['empty_chips']} empty; "
                f"cut<min_visible {s['cut_below_min_visible']}, too small {s['too_small']}, "
                f"bad label lines {s['label_lines_skipped']}, ignored {s['ignored_objects']}"
            )
        lk = self.leakage
        lines.append(
            f"  leakage ({lk['policy']}): {len(lk['shared_groups'])} groups were in two splits, "
            f"{lk['images_dropped']} images dropped; groups now shared: {len(lk['remaining'])}"
        )
        lines.append(f"  built in {self.build_seconds:.1f} s")
        return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- build


def _data_root(cfg: BuildConfig) -> Path:
    env = os.environ.get("DETECTOR_SHARED_DATA")
    return Path(env) if env else Path(cfg.data_root)


def _split_of(src: SourceConfig, group_key: str, seed: int) -> str:
    if src.split != "auto":
        return src.split
    u = zlib.crc32(f"{seed}:{group_key}".encode()) / 2**32
    return "val" if u < src.val_fraction else "train"


def _thumbnail(path: Path) -> np.ndarray:
    """A 32x32 grey thumbnail, zero mean and unit variance (for content comparison)."""
    from PIL import Image

    t = np.asarray(_decode(path, "L").resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    return (t - t.mean()) / (t.std() + 1e-6)


def _decode(path: str | Path, mode: str) -> Any:
    """The pixels of an image file as a PIL image of ``mode``.

    Raises:
        RasterError: the file does not decode (truncated, corrupt), naming it.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert(mode)
    except (OSError, SyntaxError, ValueError, ImportError, Image.DecompressionBombError) as e:
        # ImportError: Ultralytics' patched Image.open, when PIL cannot identify the file, wants a HEIF plugin
        raise RasterError(f"{path}: cannot decode the image, it may be truncated or corrupt ({e})") from e


def same_content(a: np.ndarray, b: np.ndarray, threshold: float = 0.9) -> bool:
    """Two thumbnails show the same image, up to a flip / 90-degree turn and a brightness or contrast change
    (what Roboflow's augmented copies are): correlation above ``threshold`` for one of the 8 orientations."""
    for k in range(4):
        r = np.rot90(a, k)
        for v in (r, r[:, ::-1]):
            if float((v * b).mean()) > threshold:
                return True
    return False


def _find_duplicate(
    img: LabeledImage, mode: str, seen: dict[str, list[tuple[str, np.ndarray | None]]]
) -> str | None:
    """The path of an earlier copy of ``img``, or ``None`` (then ``img`` is recorded in ``seen``).

    ``stem``: same dataset and Roboflow name stem *and* the same content (names alone are not unique: iSAID's
    export reuses ``tile_000087`` for different tiles). ``pixels``: identical decoded pixels.
    """
    from PIL import Image

    if mode == "pixels":
        with Image.open(img.image) as im:
            key = hashlib.md5(np.asarray(im.convert("RGB")).tobytes()).hexdigest()
        if seen.get(key):
            return seen[key][0][0]
        seen[key].append((str(img.image), None))
        return None
    key = f"{img.dataset}:{roboflow_stem(img.image.name)}"
    thumb: np.ndarray | None = None
    for path, other in seen.get(key, []):
        thumb = _thumbnail(img.image) if thumb is None else thumb
        if other is None:
            other = _thumbnail(Path(path))
        if same_content(thumb, other):
            return path
    seen[key].append((str(img.image), thumb))
    return None


def _check_out(out: Path) -> None:
    if (
        out.exists()
        and any(out.iterdir())
        and not (out / "summary.json").exists()
        and not (out / "data.yaml").exists()
    ):
        raise BuildError(
            f"{out} exists and is not a dataset written by this builder; refusing to overwrite it"
        )


def _prepare_staging(out: Path) -> Path:
    """An empty ``<out>.building`` folder to write into; it replaces ``out`` only once the build is complete."""
    stage = out.with_name(out.name + ".building")
    if stage.exists():
        shutil.rmtree(stage)
    for split in SPLITS:
        (stage / "images" / split).mkdir(parents=True)
        (stage / "labels" / split).mkdir(parents=True)
    return stage


@contextlib.contextmanager
def _removed_on_error(stage: Path) -> Iterator[None]:
    """Remove the staging folder when the block fails (or is interrupted): no ``<out>.building`` is left."""
    try:
        yield
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _publish(stage: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        try:
            stage.rename(out)
        except OSError:
            old.rename(out)  # the previous dataset stays in place
            raise
        shutil.rmtree(old)
    else:
        stage.rename(out)


def _render(
    chips: list[Chip], cfg: BuildConfig, out: Path, progress: Callable[[int, int], None] | None
) -> None:
    """Decode each image once, resample once per scale, cut and write its chips and label files."""
    from PIL import Image

    by_image: dict[str, list[Chip]] = defaultdict(list)
    for c in chips:
        by_image[str(c.image.image)].append(c)
    used_names: set[str] = set()
    done = 0
    size = cfg.chip
    for path in sorted(by_image):
        group = sorted(by_image[path], key=lambda c: (c.scale, c.y0, c.x0))
        base = _decode(path, "RGB")
        scaled: dict[float, np.ndarray] = {}
        for c in group:
            if c.scale not in scaled:
                if c.scale == 1.0:
                    scaled[c.scale] = np.asarray(base)
                else:
                    w, h = round(base.width * c.scale), round(base.height * c.scale)
                    scaled[c.scale] = np.asarray(
                        base.resize((w, h), Image.Resampling.LANCZOS, reducing_gap=3.0)
                    )
            arr = scaled[c.scale]
            tile = np.zeros((size, size, 3), dtype=np.uint8)
            crop = arr[c.y0 : c.y0 + size, c.x0 : c.x0 + size]
            tile[: crop.shape[0], : crop.shape[1]] = crop
            # an object without a confident angle: neither taught as angle 0 nor as background
            for b in c.paint:
                x1, y1 = np.floor(b[:2]).astype(int) - 2
                x2, y2 = np.ceil(b[2:]).astype(int) + 2
                tile[max(y1, 0) : y2, max(x1, 0) : x2] = 114
            stem = (
                f"{c.source}__{roboflow_stem(c.image.image.name)}__s{round(c.scale * 100):03d}_{c.x0}_{c.y0}"
            )
            if stem in used_names:
                stem += "_" + hashlib.md5(path.encode()).hexdigest()[:8]
            used_names.add(stem)
            img_path = out / "images" / c.split / f"{stem}.{cfg.image_format}"
            if cfg.image_format == "jpg":
                Image.fromarray(tile).save(img_path, quality=cfg.jpeg_quality)
            else:
                Image.fromarray(tile).save(img_path)
            rows = []
            for o in c.objects:
                if cfg.task == "detect":
                    x1, y1, x2, y2 = np.clip(o.xyxy / size, 0, 1)
                    rows.append(
                        f"{o.cls_id} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}"
                    )
                else:
                    pts = np.clip(o.polygon / size, 0, 1).reshape(-1)
                    rows.append(f"{o.cls_id} " + " ".join(f"{v:.6f}" for v in pts))
            (out / "labels" / c.split / f"{stem}.txt").write_text("".join(r + "\n" for r in rows))
            done += 1
            if progress:
                progress(done, len(chips))


def build(
    config: str | Path | BuildConfig,
    *,
    out: str | Path | None = None,
    data_root: str | Path | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Build a chip dataset from a config file (see the module docstring); returns its :class:`Summary`.

    Args:
        config: a ``configs/data/*.yaml`` path or a :class:`BuildConfig`.
        out: output folder instead of the config's ``out``.
        data_root: data folder instead of the config's ``data_root`` (and of ``DETECTOR_SHARED_DATA``).
        dry_run: plan and count only; nothing is written (the summary says what a build would write).
        progress: called with ``(chips written, chips total)`` while writing.

    Raises:
        BuildError: invalid config, or a rule broken by the data (e.g. leakage with ``leakage: error``).
        LabelError, TaxonomyError: from the label readers (they name the file and line, or the class).
        RasterError: an image does not decode (truncated, corrupt), naming it.

    A failed or interrupted build leaves no ``<out>.building`` folder, and an earlier dataset at ``out``
    stays as it was.
    """
    t0 = time.perf_counter()
    cfg = config if isinstance(config, BuildConfig) else BuildConfig.from_yaml(config)
    taxonomy = cfg.class_table
    classes = taxonomy.classes
    root = Path(data_root) if data_root is not None else _data_root(cfg)
    if not root.is_dir():
        raise BuildError(f"data root {root} not found (set data_root in the config or DETECTOR_SHARED_DATA)")
    out = Path(out if out is not None else cfg.out)
    _check_out(out)
    stats = {s.name: _SourceStats(split=s.split) for s in cfg.sources}

    # 1. read + dedup (train sources first, so that a duplicate is dropped from val, never from train)
    order = sorted(cfg.sources, key=lambda s: (s.split != "train", cfg.sources.index(s)))
    seen: dict[str, list[tuple[str, np.ndarray | None]]] = defaultdict(list)
    images: dict[str, list[tuple[LabeledImage, str]]] = {}
    for src in order:
        st = stats[src.name]
        try:
            src_root = root if src.root is None else Path(src.root)
            imgs = read_dataset(src.dataset, root=src_root, taxonomy=taxonomy)
        except LabelError as e:
            raise LabelError(f"source {src.name!r}: {e}") from e
        st.images_read = len(imgs)
        kept = []
        for img in imgs:
            st.label_lines_skipped += len(img.skipped)
            if cfg.dedup != "none":
                dup_of = _find_duplicate(img, cfg.dedup, seen)
                if dup_of is not None:
                    st.duplicates_dropped += 1
                    logger.debug("%s duplicates %s: dropped", img.image, dup_of)
                    continue
            group_key = f"{img.dataset}:{img.group}"
            kept.append((img, _split_of(src, group_key, cfg.seed)))
        images[src.name] = kept

    # 2. leakage: a group may sit in one split only
    group_splits: dict[str, set[str]] = defaultdict(set)
    for kept in images.values():
        for img, split in kept:
            group_splits[f"{img.dataset}:{img.group}"].add(split)
    shared = sorted(g for g, s in group_splits.items() if len(s) > 1)
    if shared and cfg.leakage == "error":
        raise BuildError(
            f"{len(shared)} groups sit in two splits (e.g. {shared[:5]}); fix the splits or use leakage: drop"
        )
    dropped_leak = 0
    if shared and cfg.leakage == "drop":
        shared_set = set(shared)
        for name, kept in images.items():
            keep = [
                (img, sp)
                for img, sp in kept
                if not (sp != "train" and f"{img.dataset}:{img.group}" in shared_set)
            ]
            stats[name].leakage_dropped = len(kept) - len(keep)
            dropped_leak += len(kept) - len(keep)
            images[name] = keep
    remaining: dict[str, set[str]] = defaultdict(set)
    for kept in images.values():
        for img, split in kept:
            remaining[f"{img.dataset}:{img.group}"].add(split)
    still_shared = sorted(g for g, s in remaining.items() if len(s) > 1)

    # 3 + 4. plan and select chips per source
    selected: list[Chip] = []
    for src in cfg.sources:
        st = stats[src.name]
        rng = random.Random(zlib.crc32(f"{cfg.seed}:{src.name}".encode()))
        # angles for the images that survived dedup and leakage only
        if src.derive_angles is not None and cfg.task == "obb":
            from training.angles import derive

            kept = images[src.name]
            derived, angle_stats = derive([img for img, _ in kept], src.derive_angles, classes)
            images[src.name] = [(img, sp) for img, (_, sp) in zip(derived, kept, strict=True)]
            st.angles = angle_stats.to_dict()
            logger.info("source %s: angles %s", src.name, st.angles)
        st.images_used = len(images[src.name])
        ignored: Counter[str] = Counter()
        by_split: dict[str, list[Chip]] = defaultdict(list)
        for img, split in images[src.name]:
            ignored.update(a.source_cls for a in img.annotations if a.cls == IGNORE)
            for scale in src.scales:
                by_split[split].extend(plan_image(src, split, img, scale, cfg, st))
        st.ignored_objects = dict(sorted(ignored.items()))
        share = cfg.empty_share if src.empty_share is None else src.empty_share
        for split in sorted(by_split):
            selected += select_chips(src, by_split[split], share, rng, st, classes)

    # 5. write
    final = out
    if not dry_run:
        out = _prepare_staging(final)
        with _removed_on_error(out):
            _render(selected, cfg, out, progress)
    splits: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        cs = [c for c in selected if c.split == split]
        inst = Counter(classes[o.cls_id] for c in cs for o in c.objects)
        splits[split] = {
            "chips": len(cs),
            "empty_chips": sum(1 for c in cs if not c.objects),
            "images": len({str(c.image.image) for c in cs}),
            "instances": {k: inst.get(k, 0) for k in classes},
            "truncated": sum(o.truncated for c in cs for o in c.objects),
        }
    data_yaml = {
        "path": str(final.resolve()),
        "train": "images/train",
        "val": "images/val",
        "names": dict(enumerate(classes)),
        # the class table the names come from: training derives its head remap from its `dota_v1` table
        "taxonomy": str(taxonomy.path.resolve()) if taxonomy.path else None,
    }
    summary = Summary(
        name=cfg.name,
        out=str(final),
        task=cfg.task,
        chip=cfg.chip,
        overlap=cfg.overlap,
        seed=cfg.seed,
        splits=splits,
        sources={k: asdict(v) for k, v in stats.items()},
        leakage={
            "policy": cfg.leakage,
            "shared_groups": shared,
            "images_dropped": dropped_leak,
            "remaining": still_shared,
        },
        build_seconds=round(time.perf_counter() - t0, 1),
    )
    if dry_run:
        logger.info("dry run, nothing written:\n%s", summary.format())
        return summary
    with _removed_on_error(out):
        (out / "data.yaml").write_text(yaml.safe_dump(data_yaml, sort_keys=False))
        (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2))
        built = time.strftime("%Y-%m-%d %H:%M:%S")
        (out / "READY").write_text(f"built {built} in {summary.build_seconds} s\n")
        _publish(out, final)
    logger.info("%s", summary.format())
    return summary


def main(argv: list[str] | None = None) -> int:
    """``python -m training.chips CONFIG [--out DIR]``: build and print the summary."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.chips", description="Build a chip dataset.")
    parser.add_argument("config", help="configs/data/NAME.yaml")
    parser.add_argument("--out", default=None, help="output folder instead of the config's `out`")
    parser.add_argument("--dry-run", action="store_true", help="plan and count only, write nothing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(build(args.config, out=args.out, dry_run=args.dry_run).format())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
