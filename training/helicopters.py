"""Helicopter training data for a short second stage (issue 7, point 4): rotor-disc labels, copy-paste, negatives.

``python -m training.helicopters --data ../shared/data --out datasets/heli-extra`` writes three YOLO-OBB
subsets (``cls x1 y1 x2 y2 x3 y3 x4 y4``, corners normalised, class ids in ``configs/taxonomy.yaml``'s
``classes`` order, labels under the taxonomy key ``heli-extra``), all made from ``isaid-512/train`` only:

* ``paste/``: tiles with planes or vehicles but no helicopter, with iSAID helicopter instances pasted on
  (Ghiasi et al. 2021, "Simple Copy-Paste"): polygon mask with a feathered edge, scale 0.8-1.25, any rotation,
  brightness and contrast matched to the background around the paste, never over an existing label.
* ``negatives/``: tiles without helicopters on which the shipped model (``weights/detector.onnx``) makes a
  helicopter call >= 0.25, copied as they are with their real labels ("this is not a helicopter").
* ``isaid-train/``: every ``isaid-512/train`` tile as it is, its helicopters relabelled to the rotor disc, so
  that a replay of iSAID teaches the same box convention as the rest (the stage-1 source taught the fuselage).

The box convention (measured on ``isaid-512/train``, class id 6, 526 helicopter polygons): iSAID traces the
fuselage and tail boom, not the rotor blades. The polygons' minimum-area rectangles are 62 x 17 px at the
median (10th-90th percentile: length 42-90 px, width 10-31 px), aspect 3.7 (1.9-5.4), and the polygon fills
53 % of its rectangle. At ~0.3-0.5 m/px a 62 px length is 19-31 m, a fuselage (Mi-8: 18.2 m fuselage,
21.3 m rotor); a rotor-disc box would have an aspect near 1 (the disc plus the tail boom: 1.0-1.2). Crops
confirm it: the blades (thin dark lines across the rows of parked helicopters) lie outside the polygons; about
one polygon in ten (aspect < 2) follows the blades or a folded rotor. DOTA labels enclose the rotor disc, so
:func:`rotor_disc` turns a fuselage label into a square of side ``ROTOR_K`` x the fuselage length, centred on
the fuselage and aligned with it (rotor diameter / fuselage length: Mi-8 1.17, Mi-24 0.99, Ka-52 1.07,
UH-60 1.07, UH-1 1.14, AH-64 0.97, Bell 206 1.07; median 1.07, and the disc's centre sits ahead of the
fuselage's, so a slightly larger square keeps the whole disc), and a label that already follows the rotor
(aspect < ``FUSELAGE_ASPECT``) into a square of side its length.

Only ``isaid-512/train`` is read: a path under a ``valid`` or ``test`` folder is refused, so that nothing built
here can leak into an evaluation.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import BuildError
from detector.labels import Annotation, LabeledImage, read_dataset
from detector.labels.types import FUSELAGE_ASPECT, ROTOR_K, rect_axes, rotor_disc, square  # noqa: F401
from detector.taxonomy import load_taxonomy

logger = logging.getLogger(__name__)

#: The taxonomy key of the labels written here (our class names, see ``configs/taxonomy.yaml``).
DATASET = "heli-extra"
#: The iSAID tiles' class ids, as ``configs/data/cpu-obb.yaml`` reads them.
ISAID_NAMES = [
    "small-vehicle", "large-vehicle", "baseball-diamond", "bridge", "basketball-court", "roundabout",
    "helicopter", "plane", "storage-tank", "ship", "harbor", "swimming-pool", "soccer-ball-field",
    "tennis-court", "ground-track-field",
]  # fmt: skip
_HELI = "helicopter"


#: Helicopter-free training tiles never used as hard negatives, by tile id (the start of the file stem): looked
#: at by eye after a scan.
DROPPED_NEGATIVES = {
    "tile_000652": "holds unlabelled fighter aircraft (Davis-Monthan): the model's calls there are not all false",
}


def isaid_spec(split_dir: str = "isaid-512/train") -> dict[str, Any]:
    """The ``read_dataset`` spec of an iSAID tile folder, exactly as ``configs/data/cpu-obb.yaml`` has it
    (aircraft boxed along their axis of symmetry: ``aircraft_box: axis``)."""
    return {
        "aircraft_box": "axis",
        "format": "yolo_seg",
        "name": "isaid",
        "path": f"{split_dir}/images",
        "labels": f"{split_dir}/labels",
        "on_error": "skip",
        "group": "file",
        "names": ISAID_NAMES,
    }


def check_train_path(path: str | Path) -> None:
    """Refuse a path inside a ``valid``/``val``/``test`` folder (this generator only ever reads training data).

    Raises:
        BuildError: naming the path.
    """
    parts = {p.lower() for p in Path(path).parts}
    bad = parts & {"valid", "val", "validation", "test", "testing"}
    if bad:
        raise BuildError(
            f"{path}: training/helicopters.py only reads training tiles, and this path is in a "
            f"{sorted(bad)[0]!r} folder (copy-paste or negatives from it would leak into an evaluation)"
        )


# --------------------------------------------------------------------------------------------- geometry


def polygon_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A ``uint8`` mask (0/1) of a polygon in image pixels (``(0, 0)`` the top-left corner of the top-left
    pixel, as labels are), ``shape`` = ``(rows, cols)``: the pixels whose centres it covers."""
    import cv2

    mask = np.zeros(shape, dtype=np.uint8)
    cv2.fillPoly(mask, [np.round((np.asarray(points) - 0.5) * 8).astype(np.int32)], 1, shift=3)
    return mask


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two ``(K, 2)`` polygons intersect (shapely; touching counts as overlap)."""
    import shapely

    return bool(shapely.intersects(shapely.Polygon(a), shapely.Polygon(b)))


# ---------------------------------------------------------------------------------------------- labels


def label_rect(ann: Annotation) -> np.ndarray:
    """The box written for one annotation: the rotor disc for a helicopter, the rectangle as read otherwise."""
    return rotor_disc(ann.polygon) if ann.cls == _HELI else ann.polygon


def yolo_obb_lines(boxes: list[tuple[int, np.ndarray]], width: int, height: int) -> list[str]:
    """YOLO-OBB label lines (``cls x1 y1 .. x4 y4``, corners clipped to the image and normalised)."""
    lines = []
    size = np.array([width, height], dtype=np.float64)
    for cls_id, rect in boxes:
        pts = np.clip(np.asarray(rect, dtype=np.float64) / size, 0.0, 1.0)
        if np.ptp(pts[:, 0]) * width < 1 or np.ptp(pts[:, 1]) * height < 1:
            continue  # clipped to a sliver at the tile edge
        lines.append(f"{cls_id} " + " ".join(f"{v:.6f}" for v in pts.reshape(-1)))
    return lines


def image_boxes(img: LabeledImage, classes: tuple[str, ...]) -> list[tuple[int, np.ndarray]]:
    """The labels of an image as ``(class id, corners)``, helicopters as rotor discs, ignored classes dropped."""
    return [(classes.index(a.cls), label_rect(a)) for a in img.annotations if a.cls in classes]


def _write(out: Path, name: str, image: np.ndarray | Path, lines: list[str]) -> None:
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    if isinstance(image, Path):
        shutil.copyfile(image, out / "images" / f"{name}{image.suffix.lower()}")
    else:
        from PIL import Image

        Image.fromarray(image).save(out / "images" / f"{name}.jpg", quality=95)
    (out / "labels" / f"{name}.txt").write_text("".join(line + "\n" for line in lines))


# -------------------------------------------------------------------------------------------- copy-paste


@dataclass
class Instance:
    """One helicopter cut from a training tile: RGB patch, its polygon mask, and its label in patch pixels."""

    patch: np.ndarray  # (rows, cols, 3) uint8
    mask: np.ndarray  # (rows, cols) float32 in [0, 1], feathered
    outline: np.ndarray  # (K, 2) polygon in patch pixels
    rect: np.ndarray  # (4, 2) minimum-area rectangle in patch pixels (the fuselage label)
    source: str
    ring: tuple[np.ndarray, np.ndarray]  # per-channel mean, std of the background around the instance


def _ring_stats(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the pixels of ``rgb`` where ``mask`` is set (all pixels if none are)."""
    pix = rgb[mask > 0].reshape(-1, 3).astype(np.float64)
    if len(pix) < 16:
        pix = rgb.reshape(-1, 3).astype(np.float64)
    return pix.mean(axis=0), pix.std(axis=0) + 1.0


def cut_instances(
    img: LabeledImage, rgb: np.ndarray, *, margin: int = 6, feather: float = 1.2, min_length: float = 12.0
) -> list[Instance]:
    """The whole (untruncated) helicopter instances of a tile, each cut with its polygon mask.

    A helicopter whose outline comes within 2 px of the tile edge, or narrower than 4 px, is cut off by the
    tiling and skipped. The mask is the polygon dilated by 1 px with a Gaussian edge (``feather`` px).
    """
    import cv2

    rows, cols = rgb.shape[:2]
    out = []
    for ann in img.annotations:
        if ann.cls != _HELI:
            continue
        outline = ann.outline
        _, length, width, _ = rect_axes(ann.polygon)
        lo, hi = outline.min(axis=0), outline.max(axis=0)
        if lo.min() < 2 or hi[0] > cols - 2 or hi[1] > rows - 2 or width < 4 or length < min_length:
            continue
        x0, y0 = (np.floor(lo) - margin).astype(int)
        x1, y1 = (np.ceil(hi) + margin).astype(int)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, cols), min(y1, rows)
        patch = rgb[y0:y1, x0:x1].copy()
        local = outline - [x0, y0]
        hard = cv2.dilate(polygon_mask(local, patch.shape[:2]), np.ones((3, 3), np.uint8))
        soft = cv2.GaussianBlur(hard.astype(np.float32), (0, 0), feather)
        soft = np.maximum(soft, hard * 0.5)  # keep the core opaque-ish, the rim smooth
        soft = np.clip(soft * 1.6, 0, 1)
        ring = cv2.dilate(hard, np.ones((7, 7), np.uint8)) - hard
        out.append(
            Instance(patch, soft, local, ann.polygon - [x0, y0], img.image.name, _ring_stats(patch, ring))
        )
    return out


def paste(
    background: np.ndarray,
    inst: Instance,
    centre: tuple[float, float],
    angle_deg: float,
    scale: float,
    *,
    match: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste an instance onto ``background`` (in place) rotated by ``angle_deg`` about its centre and scaled.

    Brightness and contrast are matched per channel: the instance's surroundings in its own tile and the
    background around the target are mapped onto each other (gain clipped to 0.7-1.4).

    Returns:
        The pasted fuselage rectangle ``(4, 2)``, its outline ``(K, 2)`` (both in background pixels) and the
        alpha mask actually blended ``(rows, cols)`` of the background.
    """
    import cv2

    rows, cols = background.shape[:2]
    c_src = inst.rect.mean(axis=0)
    m = cv2.getRotationMatrix2D((float(c_src[0]), float(c_src[1])), angle_deg, scale)
    m[:, 2] += np.asarray(centre, dtype=np.float64) - c_src
    warp = dict(dsize=(cols, rows), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    patch = cv2.warpAffine(inst.patch, m, **warp).astype(np.float64)
    alpha = cv2.warpAffine(inst.mask, m, **warp).astype(np.float64)

    def tf(p: np.ndarray) -> np.ndarray:  # cv2 puts pixel centres on integers, labels on +0.5
        return (p - 0.5) @ m[:, :2].T + m[:, 2] + 0.5

    rect, outline = tf(inst.rect), tf(inst.outline)
    alpha *= polygon_mask(rotor_disc(rect), alpha.shape)  # the feathered rim never leaves the label
    if match:
        hard = (alpha > 0.05).astype(np.uint8)
        ring = cv2.dilate(hard, np.ones((15, 15), np.uint8)) - hard
        mu_d, sd_d = _ring_stats(background, ring)
        mu_s, sd_s = inst.ring
        gain = np.clip(sd_d / sd_s, 0.7, 1.4)
        patch = (patch - mu_s) * gain + mu_d
    a = alpha[..., None]
    blended = background.astype(np.float64) * (1 - a) + np.clip(patch, 0, 255) * a
    background[:] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return rect, outline, alpha


def _place(
    inst: Instance,
    scale: float,
    angle: float,
    occupied: list[np.ndarray],
    size: tuple[int, int],
    rng: random.Random,
    *,
    gap: float = 3.0,
    tries: int = 40,
    nodata: np.ndarray | None = None,
) -> tuple[float, float] | None:
    """A centre where the instance's rotor disc lies inside the tile, clear of every ``occupied`` box and of
    the ``nodata`` pixels (a boolean ``(rows, cols)`` mask: black padding)."""
    rows, cols = size
    c_src = inst.rect.mean(axis=0)
    t = math.radians(angle)
    rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]]) * scale  # cv2's convention
    disc0 = (rotor_disc(inst.rect) - c_src) @ rot.T
    body0 = (inst.outline - c_src) @ rot.T
    _, side, _, axis = rect_axes(disc0)
    grown = square(np.zeros(2), side + 2 * gap, axis)
    lo = np.minimum(disc0.min(axis=0), body0.min(axis=0))
    hi = np.maximum(disc0.max(axis=0), body0.max(axis=0))
    if (hi - lo)[0] >= cols - 4 or (hi - lo)[1] >= rows - 4:
        return None
    for _ in range(tries):
        cx = rng.uniform(-lo[0] + 2, cols - hi[0] - 2)
        cy = rng.uniform(-lo[1] + 2, rows - hi[1] - 2)
        cand = grown + [cx, cy]
        if any(boxes_overlap(cand, o) for o in occupied):
            continue
        if nodata is not None:  # the black padding of an edge tile is no ground to park on
            x0, y0 = np.clip(np.floor(cand.min(axis=0)).astype(int), 0, None)
            x1, y1 = np.ceil(cand.max(axis=0)).astype(int)
            if nodata[y0:y1, x0:x1].mean() > 0.02:
                continue
        return cx, cy
    return None


def make_paste_image(
    bg: LabeledImage,
    bg_rgb: np.ndarray,
    instances: list[Instance],
    classes: tuple[str, ...],
    rng: random.Random,
    *,
    n_paste: int = 3,
    scale_range: tuple[float, float] = (0.8, 1.25),
) -> tuple[np.ndarray, list[tuple[int, np.ndarray]], list[str]]:
    """One copy-paste image: ``bg_rgb`` with up to ``n_paste`` helicopters, its labels, the instances' sources.

    Every existing label (ignored classes included: a ship is still in the way) is an occupied area; a paste
    is placed only where its rotor disc, grown by 3 px, is clear of all of them and of the earlier pastes.
    """
    image = bg_rgb.copy()
    boxes = image_boxes(bg, classes)
    occupied = [np.asarray(a.polygon, dtype=np.float64) for a in bg.annotations]
    sources = []
    heli = classes.index(_HELI)
    nodata = bg_rgb.max(axis=2) == 0
    for _ in range(n_paste):
        inst = instances[rng.randrange(len(instances))]
        scale, angle = rng.uniform(*scale_range), rng.uniform(0.0, 360.0)
        centre = _place(inst, scale, angle, occupied, image.shape[:2], rng, nodata=nodata)
        if centre is None:
            continue
        rect, _, _ = paste(image, inst, centre, angle, scale)
        disc = rotor_disc(rect)
        boxes.append((heli, disc))
        occupied.append(disc)
        sources.append(inst.source)
    return image, boxes, sources


# ------------------------------------------------------------------------------------------ hard negatives


def mine_negatives(
    tiles: list[LabeledImage],
    model: str | Path,
    *,
    conf: float = 0.25,
    threads: int | None = 2,
    cache: str | Path | None = None,
) -> dict[str, list[float]]:
    """The helicopter scores >= ``conf`` the model gives on each tile, by image path (every tile is a key).

    ``cache``: a JSON-lines file (``{"image": path, "scores": [...]}`` per tile, scores >= ``conf``) that is
    read first and appended to as tiles are scanned, so an interrupted scan resumes where it stopped. It must
    come from the same model and a ``conf`` no higher than this one.
    """
    done: dict[str, list[float]] = {}
    if cache is not None and Path(cache).exists():
        for lineno, line in enumerate(Path(cache).read_text().splitlines(), 1):
            try:
                row = json.loads(line)
                done[str(row["image"])] = [float(v) for v in row["scores"]]
            except (ValueError, KeyError, TypeError) as e:
                raise BuildError(f"{cache}:{lineno}: not a negatives cache line ({e}): {line[:80]!r}") from e
    todo = [t for t in tiles if str(t.image) not in done]
    if todo:
        from detector.pipeline import Detector

        det = Detector.load(model, conf=conf, threads=threads)
        if _HELI not in det.class_names:
            raise BuildError(f"{model}: the model has no {_HELI!r} class (it knows {list(det.class_names)})")
        fh = open(cache, "a") if cache is not None else None  # noqa: SIM115  (appended tile by tile)
        try:
            for i, img in enumerate(todo):
                d = det.predict(str(img.image), classes=[_HELI])
                done[str(img.image)] = [round(float(v), 4) for v in d.scores if v >= conf]
                if fh is not None:
                    fh.write(json.dumps({"image": str(img.image), "scores": done[str(img.image)]}) + "\n")
                    fh.flush()
                if (i + 1) % 20 == 0:
                    logger.info("negatives: %d/%d tiles to scan done", i + 1, len(todo))
        finally:
            if fh is not None:
                fh.close()
    return {str(t.image): [v for v in done[str(t.image)] if v >= conf] for t in tiles}


# ------------------------------------------------------------------------------------------------ build


def _rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def convention_stats(tiles: list[LabeledImage]) -> dict[str, Any]:
    """Length, width, aspect and fill percentiles of the helicopter rectangles (pixels), see the docstring."""
    import cv2

    rows = []
    for img in tiles:
        for a in img.annotations:
            if a.cls == _HELI:
                _, length, width, _ = rect_axes(a.polygon)
                area = abs(cv2.contourArea(a.outline.astype(np.float32)))
                rows.append((length, width, length / max(width, 1e-9), area / max(length * width, 1e-9)))
    if not rows:
        return {"instances": 0}
    arr = np.array(rows)
    q = [10, 50, 90]
    return {
        "instances": len(rows),
        "percentiles": q,
        **{
            k: np.percentile(arr[:, i], q).round(2).tolist()
            for i, k in enumerate(["length_px", "width_px", "aspect", "fill"])
        },
        "fuselage_like_share": round(float((arr[:, 2] >= FUSELAGE_ASPECT).mean()), 3),
    }


def generate(
    data: str | Path,
    out: str | Path,
    *,
    n_paste_images: int = 320,
    model: str | Path | None = "weights/detector.onnx",
    seed: int = 7,
    conf: float = 0.25,
    taxonomy: str | Path | None = None,
    train_dir: str = "isaid-512/train",
    limit: int | None = None,
    scan: int | None = None,
    cache: str | Path | None = None,
    only_negatives: bool = False,
) -> dict[str, Any]:
    """Write the dataset (see the module docstring) and return its report (also written as ``report.json``).

    Args:
        data: the shared data root (``../shared/data``).
        out: output folder; replaced if it exists.
        n_paste_images: copy-paste images to write.
        model: the model whose helicopter calls are mined (``None``: no negatives).
        seed: the one seed everything random follows.
        conf: score from which a helicopter call makes a tile a hard negative.
        taxonomy: class table (default: the package's ``configs/taxonomy.yaml``).
        train_dir: the iSAID training folder, relative to ``data``; a ``valid``/``test`` path is refused.
        limit: read only this many tiles (quick checks).
        scan: scan only the first ``scan`` helicopter-free tiles of a seeded order (``None``: all of them).
        cache: the model's scores per tile, kept between runs (see :func:`mine_negatives`).
        only_negatives: keep an earlier run's ``paste`` and ``isaid-train`` and redo ``negatives`` only (the
            result is the same as a full run with these arguments: those subsets do not depend on the model).

    Raises:
        BuildError: a validation or test path, no helicopters to paste, no backgrounds, or a model without a
            helicopter class.
    """
    check_train_path(train_dir)
    data, out = Path(data), Path(out)
    check_train_path(data / train_dir)
    tax = load_taxonomy(taxonomy)
    classes = tax.classes
    tiles = read_dataset(isaid_spec(train_dir), root=data, taxonomy=tax)
    tiles.sort(key=lambda t: t.image.name)
    if limit is not None:
        tiles = tiles[:limit]
    rng = random.Random(seed)
    if only_negatives:  # the paste and isaid-train subsets of an earlier run stay as they are
        if not (out / "paste" / "labels").is_dir() or not (out / "isaid-train" / "labels").is_dir():
            raise BuildError(f"{out}: no paste/ and isaid-train/ of an earlier run to add negatives to")
        if (out / "report.json").exists():
            report = json.loads((out / "report.json").read_text())
        else:  # the earlier run was stopped while mining: count what it wrote
            heli = str(classes.index(_HELI))
            paste_labels = sorted((out / "paste" / "labels").glob("*.txt"))
            report = {
                "source": str(data / train_dir),
                "seed": seed,
                "rotor_disc": {"k": ROTOR_K, "fuselage_aspect": FUSELAGE_ASPECT},
                "convention": convention_stats(tiles),
                "isaid_train_images": len(list((out / "isaid-train" / "labels").glob("*.txt"))),
                "paste": {
                    "images": len(paste_labels),
                    "helicopters_pasted": sum(
                        line.split()[0] == heli for f in paste_labels for line in f.read_text().splitlines()
                    ),
                },
            }
        shutil.rmtree(out / "negatives", ignore_errors=True)
        no_heli = [t for t in tiles if not any(a.cls == _HELI for a in t.annotations)]
    else:
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        report, no_heli = _paste_and_copy(tiles, out, classes, rng, n_paste_images, data / train_dir, seed)
    if model is not None:
        _negatives(tiles, no_heli, out, classes, report, model, conf, seed, scan, cache)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return report


def _paste_and_copy(
    tiles: list[LabeledImage],
    out: Path,
    classes: tuple[str, ...],
    rng: random.Random,
    n_paste_images: int,
    source: Path,
    seed: int,
) -> tuple[dict[str, Any], list[LabeledImage]]:
    """Write the ``isaid-train`` and ``paste`` subsets; the report so far and the helicopter-free tiles."""
    report: dict[str, Any] = {
        "source": str(source),
        "seed": seed,
        "rotor_disc": {"k": ROTOR_K, "fuselage_aspect": FUSELAGE_ASPECT},
        "convention": convention_stats(tiles),
    }

    # isaid-train: every training tile, helicopters as rotor discs
    for img in tiles:
        _write(
            out / "isaid-train",
            img.image.stem,
            img.image,
            yolo_obb_lines(image_boxes(img, classes), img.width, img.height),
        )
    report["isaid_train_images"] = len(tiles)

    has_heli = [t for t in tiles if any(a.cls == _HELI for a in t.annotations)]
    no_heli = [t for t in tiles if not any(a.cls == _HELI for a in t.annotations)]

    # copy-paste
    instances = [inst for t in has_heli for inst in cut_instances(t, _rgb(t.image))]
    if not instances:
        raise BuildError(f"{source}: no whole helicopter instance to paste")
    planes = [t for t in no_heli if any(a.cls == "aircraft" for a in t.annotations)]
    plane_ids = {id(t) for t in planes}
    vehicles = [
        t for t in no_heli if id(t) not in plane_ids and any(a.cls.endswith("vehicle") for a in t.annotations)
    ]
    if not planes and not vehicles:
        raise BuildError(f"{source}: no tile with planes or vehicles and no helicopter to paste onto")
    # airports first: two thirds of the pastes go onto tiles with planes, the rest onto tiles with vehicles
    pool = (
        (planes * math.ceil(2 * n_paste_images / 3 / max(len(planes), 1)))[: 2 * n_paste_images // 3]
        if planes
        else []
    )
    pool += (vehicles * n_paste_images)[: n_paste_images - len(pool)] if vehicles else []
    pool += (planes * n_paste_images)[: n_paste_images - len(pool)] if planes else []
    rng.shuffle(pool)
    pasted, used = 0, Counter()
    for i, bg in enumerate(pool):
        image, boxes, sources = make_paste_image(
            bg, _rgb(bg.image), instances, classes, rng, n_paste=rng.randint(2, 4)
        )
        if not sources:
            continue
        pasted += len(sources)
        used.update(sources)
        _write(
            out / "paste",
            f"paste_{i:04d}_{bg.image.stem[:11]}",
            image,
            yolo_obb_lines(boxes, image.shape[1], image.shape[0]),
        )
    report["paste"] = {
        "images": len(list((out / "paste" / "labels").glob("*.txt"))) if (out / "paste").exists() else 0,
        "helicopters_pasted": pasted,
        "instances_available": len(instances),
        "instances_used": len(used),
        "source_tiles_with_helicopters": len(has_heli),
        "backgrounds": {"with_planes": len(planes), "with_vehicles_only": len(vehicles)},
    }

    return report, no_heli


def _negatives(
    tiles: list[LabeledImage],
    no_heli: list[LabeledImage],
    out: Path,
    classes: tuple[str, ...],
    report: dict[str, Any],
    model: str | Path,
    conf: float,
    seed: int,
    scan: int | None,
    cache: str | Path | None,
) -> None:
    """Write the ``negatives`` subset (tiles with a helicopter call) and its entry in ``report``."""
    order = sorted(no_heli, key=lambda t: t.image.name)
    random.Random(seed + 1).shuffle(order)  # a scan cut short still covers every kind of tile
    scanned = order if scan is None else order[:scan]
    scores = mine_negatives(scanned, model, conf=conf, cache=cache)
    calls = {
        k: v
        for k, v in scores.items()
        if v and not any(Path(k).name.startswith(t) for t in DROPPED_NEGATIVES)
    }
    for sub in ("images", "labels"):  # present even when empty: the build config reads it
        (out / "negatives" / sub).mkdir(parents=True, exist_ok=True)
    (out / "negative_calls.json").write_text(json.dumps(calls, indent=0, sort_keys=True))
    for path, _ in sorted(calls.items()):
        img = next(t for t in no_heli if str(t.image) == path)
        _write(
            out / "negatives",
            f"neg_{img.image.stem}",
            img.image,
            yolo_obb_lines(image_boxes(img, classes), img.width, img.height),
        )
    n_calls = sum(len(v) for v in calls.values())
    report["negatives"] = {
        "model": str(model),
        "conf": conf,
        "tiles_scanned": len(scanned),
        "helicopter_free_tiles": len(no_heli),
        "tiles_with_call": len(calls),
        "helicopter_calls": n_calls,
        "dropped": DROPPED_NEGATIVES,
        "score_percentiles_10_50_90": np.percentile(sum(calls.values(), []), [10, 50, 90]).round(3).tolist()
        if calls
        else [],
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m training.helicopters --data ../shared/data --out datasets/heli-extra``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.helicopters", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", default="../shared/data", help="the shared data root")
    parser.add_argument("--out", default="datasets/heli-extra", help="output folder (replaced)")
    parser.add_argument("--paste-images", type=int, default=320, help="copy-paste images to write")
    parser.add_argument(
        "--model", default="weights/detector.onnx", help="model whose helicopter calls are mined"
    )
    parser.add_argument("--no-negatives", action="store_true", help="skip mining hard negatives")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--train-dir", default="isaid-512/train", help="iSAID training folder under --data")
    parser.add_argument("--limit", type=int, default=None, help="read only this many tiles (quick checks)")
    parser.add_argument("--only-negatives", action="store_true", help="redo the negatives subset only")
    parser.add_argument("--scan", type=int, default=None, help="scan only this many helicopter-free tiles")
    parser.add_argument(
        "--cache", default=None, help="JSON-lines file of the model's scores per tile (resumes a scan)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("detector").setLevel(logging.ERROR)  # a line per tile and per stray iSAID point
    report = generate(
        args.data,
        args.out,
        n_paste_images=args.paste_images,
        model=None if args.no_negatives else args.model,
        seed=args.seed,
        conf=args.conf,
        train_dir=args.train_dir,
        limit=args.limit,
        scan=args.scan,
        cache=args.cache,
        only_negatives=args.only_negatives,
    )
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
