"""Benchmark ``detector change`` on pairs of real-pixel scenes with known changes; write its BENCHMARKS.md section.

How a pair is made from one labelled scene (date A, its own pixels):

* **Date A** is the scene as a GeoTIFF on a synthetic UTM grid (EPSG:32633) at the scene's GSD: the DOTA demo
  header's (0.115-0.132 m), or a stated 0.5 m for the airport test images (GDIT, HRPlanes), which carry none.
* **Date B** starts from A's pixels. Removed objects (``--remove`` per pair, labelled, well inside the common
  area, not touching another object nor an unlabelled detection) are covered with a feathered patch of
  nearby background of the same scene (a patch that holds no labelled object and none of the model's
  detections on A at the low threshold, each grown by 1 m: an unlabelled container or truck brought over a
  departure is scored in B as the object staying). Date A goes through the model once per scene, before
  its pairs' B are built. Arrived objects (``--paste``) are labelled objects cut from *other* scenes of the
  same set (resampled to this scene's GSD), pasted at random empty places (no labelled object, no
  detection on A) by
  gradient-domain (Poisson) blending (``--paste poisson``, ``cv2.seamlessClone`` NORMAL_CLONE: the crop,
  object and margin, keeps its gradients and takes its low frequencies from this scene's ground at its
  border, so the object stands on this scene's ground with its own contrast and no square of the donor's
  ground shows). What remains of the donor: the texture of its ground in the margin, pieces of neighbours
  parked within the margin, its shadow's direction; a bright object on darker donor ground can saturate.
  ``--paste poisson-mixed`` (MIXED_CLONE: the stronger gradient of crop or scene, with the scene flattened
  under the object's footprint so the object keeps its own) also swaps the margin's texture for this
  scene's. ``--paste box`` (the crop with a feathered margin) carries a square of the donor's ground, an
  artefact no real pair has; ``--paste matte`` (object-shaped alpha narrowed to the pixels that differ from
  the donor's ground, radiometry matched) fades small objects into the ground. Arrival recall measured
  2026-12-01 (same code and model, loaded 2-CPU machine), DOTA / airports: box 0.86 (31/36) / 0.80
  (118/148), poisson 0.81 (29/36) / 0.82 (122/148), poisson-mixed 0.78 (28/36) / 0.81 (120/148), matte 0.58
  / 0.76 (earlier run); stayed flagged 1/573 / 8/513 for each. ``poisson`` is the default: as good in total
  (151 vs 149 of 184) and no artefact; the misses are small objects (cars of 4-6 m, aircraft mostly of
  6-11 m) the model does not detect in B at all. Moved objects (``--move``) are cut from their place
  (covered as above) and pasted 12-25 m away the same way. Pasted objects keep at least ``--move-radius`` from the removed ones
  and from each other's origins, because a departure next to a similar arrival is, by definition, a move.
* B's radiometry changes (per-band gain 0.8-1.2, gamma 0.8-1.25, offset +-10, noise sigma 3), its extent is
  a crop of A offset by 8 % of the scene (partial overlap), odd pairs also get a nodata hole (15 % of the
  scene) and, for DOTA, a coarser GSD (x1.25). Donors are objects not cut by their image's edge and not touching
  another object (so a paste is one whole object). Its georeferencing is then **misregistered**: every pixel is
  placed ``e`` metres off (a random direction; ``|e|`` cycles through ``--shifts``, 0-10 m; the airport pairs
  use 3.6 m).
* Ground truth per labelled object, in A's frame: ``departed`` (removed), ``arrived`` (pasted), ``moved``,
  ``stayed`` (inside the common area by at least 3 m), ``not-covered`` (outside it); objects within 3 m of its
  edge are not scored.

Both dates go through the real path: ``Detector.predict`` (the shipped model, ``conf`` = the low threshold)
and :func:`detector.change.compare` with ``--high/--mid/--low/--clear`` (default: the CLI's) and default
tolerances otherwise; the valid areas come from the GeoTIFFs' masks. Each
labelled object is matched to the nearest change record within ``max(3 m, half its length)``.

Reported per class: recall of departed / arrived / moved over all labelled changes, and over those the model
detects at the mid threshold in the date where they exist (the change logic's own recall); stayed objects
given a change status (over the stayed objects with a record); spurious changes (departed/arrived records
near no labelled change); the misregistration error. Every figure pools the pairs of several seeds
(``--seeds``, default 0, 1, 2: each seed draws other removals, pastes, places and shifts from the same
scenes), because one seed's 12 DOTA pairs hold only about 20 departures and 36 arrivals, and the seed alone
moved DOTA arrival recall from 0.75 to 0.92 (2026-12-02); the section also gives each seed's own figures.
The BENCHMARKS.md section between
``<!-- change-bench:start -->`` and ``<!-- change-bench:end -->`` is replaced (appended when absent); the rest
of the file is left as it is. A quicklook and the summary table of one DOTA pair go to ``docs/``.

Usage::

    python scripts/change_bench.py --data ../shared/data --out BENCHMARKS.md
    python scripts/change_bench.py --quick          # fewer pairs, writes build/change-bench/ only
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

START, END = "<!-- change-bench:start -->", "<!-- change-bench:end -->"
CRS_EPSG = 32633
ORIGIN = (500000.0, 4000000.0)
EDGE_M = 3.0
AIRPORT_GSD = 0.5
AIRPORT_SHIFT_M = 3.6
SCORED = ("departed", "arrived", "moved", "stayed")

log = logging.getLogger("change_bench")


# ----------------------------------------------------------------------------------------------------------
# scenes and labels
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Obj:
    cls: str
    poly: np.ndarray  # (4, 2) pixels of its scene

    @property
    def box(self) -> np.ndarray:
        return np.concatenate([self.poly.min(0), self.poly.max(0)])

    @property
    def centre(self) -> np.ndarray:
        return self.poly.mean(0)


@dataclass
class Source:
    name: str
    image: np.ndarray  # (rows, cols, 3) uint8
    gsd: float
    objects: list[Obj]
    group: str  # which set it belongs to (pastes come from the same set)


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_sources(data: Path, set_name: str, limit: int) -> list[Source]:
    """Labelled scenes of one set: ``dota`` (demo), ``gdit`` or ``hrplanes`` (test splits)."""
    from detector.labels import read_coco, read_dota
    from detector.taxonomy import default_taxonomy

    tax = default_taxonomy()
    if set_name == "dota":
        images = read_dota(data / "dota" / "demo", dataset="dota", taxonomy=tax, on_error="skip")
    elif set_name == "gdit":
        images = read_dota(
            data / "gdit-airport" / "test", dataset="gdit-airport", taxonomy=tax, on_error="skip"
        )
    elif set_name == "hrplanes":
        images = read_coco(
            data / "hrplanes" / "test" / "_annotations.coco.json", dataset="hrplanes", taxonomy=tax
        )
    else:
        raise ValueError(f"unknown set {set_name!r}")
    out = []
    for li in sorted(images, key=lambda x: str(x.image))[:limit]:
        objs = [
            Obj(a.cls, np.asarray(a.polygon, float))
            for a in li.annotations
            if a.cls != "ignore" and not a.difficult
        ]
        ignored = [a for a in li.annotations if a.cls == "ignore" or a.difficult]
        if not objs:
            continue
        if set_name == "dota" and li.gsd is None:
            log.warning("%s: no gsd header, left out", li.image)
            continue
        src = Source(li.image.name, _load_image(li.image), float(li.gsd or AIRPORT_GSD), objs, set_name)
        src.ignored = [np.asarray(a.polygon, float) for a in ignored]  # type: ignore[attr-defined]
        out.append(src)
    return out


# ----------------------------------------------------------------------------------------------------------
# building a pair
# ----------------------------------------------------------------------------------------------------------


def _feather(h: int, w: int, margin: int) -> np.ndarray:
    """Alpha ``(h, w)``: 1 inside, ramping to 0 over ``margin`` pixels at the border."""
    y = np.minimum(np.arange(h), np.arange(h)[::-1]) + 1
    x = np.minimum(np.arange(w), np.arange(w)[::-1]) + 1
    ramp = np.minimum(y[:, None], x[None, :]).astype(np.float32)
    return np.clip(ramp / max(margin, 1), 0, 1)


def _object_alpha(shape: tuple[int, int], poly: np.ndarray, grow: float, feather: float) -> np.ndarray:
    """Alpha ``shape``: 1 on the object's polygon grown by ``grow`` pixels, ramping to 0 over ``feather``
    pixels outside it (the object and a thin rim of its own ground, not the rectangle it was cut from)."""
    from scipy import ndimage

    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    inside = np.ones((h, w), bool)
    ring = np.asarray(poly, float)
    ring = ring if _signed_area(ring) > 0 else ring[::-1]
    for k in range(len(ring)):  # a convex polygon: inside every edge's half-plane (pixel centres)
        (x0, y0), (x1, y1) = ring[k], ring[(k + 1) % len(ring)]
        inside &= (x1 - x0) * (yy + 0.5 - y0) - (y1 - y0) * (xx + 0.5 - x0) >= 0
    dist = ndimage.distance_transform_edt(~inside)
    return np.clip(1 - (dist - grow) / max(feather, 1.0), 0, 1).astype(np.float32)


def _matte(patch: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``alpha`` narrowed to what differs from the donor's own ground inside a box label.

    A box (or an OBB around an aircraft's cross) holds a good deal of the donor's ground; pasted as it is,
    that ground is a square of other tarmac around the object, an edge no real pair has. The ground's
    colour is the median of the rim just outside the label; pixels far from it (the object, its shadow)
    keep their alpha, pixels like it ramp to 0, so the receiving scene's ground shows there. The mask of
    the object is closed and filled (an object is one piece) and softened by a pixel.
    """
    from scipy import ndimage

    rim = (alpha < 0.05) & ndimage.binary_dilation(alpha >= 0.05, iterations=3)
    if rim.sum() < 8:
        return alpha
    px = patch.astype(np.float32)
    ground = np.median(px[rim], axis=0)
    dist = np.linalg.norm(px - ground, axis=-1)
    spread = max(float(np.median(dist[rim])) * 1.4826, 4.0)
    obj = np.clip((dist - spread) / (1.5 * spread), 0, 1)
    solid = ndimage.binary_fill_holes(ndimage.binary_closing(obj > 0.5, iterations=2))
    obj = np.maximum(obj, solid.astype(np.float32))
    obj = ndimage.gaussian_filter(obj, 1.0)
    return (alpha * obj).astype(np.float32)


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def _match_radiometry(patch: np.ndarray, donor: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``patch`` (cut from ``donor``) as the ``target`` scene's sensor would show it: each band's mean and
    spread moved from the donor scene's to the target scene's (whole-scene statistics, so the object keeps
    its contrast with its ground)."""
    out = patch.astype(np.float32)
    for c in range(3):
        d, t = donor[..., c].astype(np.float32), target[..., c].astype(np.float32)
        out[..., c] = (out[..., c] - d.mean()) * (t.std() / max(float(d.std()), 1.0)) + t.mean()
    return np.clip(out, 0, 255).round().astype(np.uint8)


def _blend(
    dst: np.ndarray, patch: np.ndarray, x0: int, y0: int, margin: int, alpha: np.ndarray | None = None
) -> None:
    h, w = patch.shape[:2]
    alpha = (_feather(h, w, margin) if alpha is None else alpha)[..., None]
    region = dst[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    dst[y0 : y0 + h, x0 : x0 + w] = (alpha * patch + (1 - alpha) * region).round().astype(np.uint8)


POISSON_MIN_PX = 12  # below this crop side OpenCV's solver leaves the patch out (it erodes the mask)


def _poisson(
    dst: np.ndarray, patch: np.ndarray, poly: np.ndarray, x0: int, y0: int, *, mixed: bool = False
) -> bool:
    """Paste ``patch`` at ``(x0, y0)`` of ``dst`` (in place) by gradient-domain (Poisson) blending.

    The crop keeps its gradients and takes its low frequencies from ``dst``'s ground at its border
    (``cv2.seamlessClone``; the mask is the crop less a 1-pixel border, OpenCV erodes it a little more), so
    no square of the donor's tarmac shows. ``mixed``: MIXED_CLONE, each pixel takes the stronger gradient of
    the crop or of ``dst``, so this scene's ground texture replaces the donor's flat ground around the
    object; inside the object's footprint (``poly``, crop pixels, grown by a pixel) ``dst`` is flattened
    first, so there the object's own gradients always win and it is not made see-through. Returns False
    (``dst`` untouched) when the crop is too small for OpenCV's solver.
    """
    import cv2

    h, w = patch.shape[:2]
    if min(h, w) < POISSON_MIN_PX:
        return False
    region = np.ascontiguousarray(dst[y0 : y0 + h, x0 : x0 + w])
    guide = region
    if mixed:
        foot = _object_alpha((h, w), poly, grow=1.0, feather=1.0) > 0.5
        inner = np.zeros((h, w), bool)
        inner[4 : h - 4, 4 : w - 4] = True  # inside what OpenCV solves for, whatever its erosion
        foot &= inner
        sigma = max(2.0, 0.25 * min(h, w))
        flat = cv2.GaussianBlur(region, (0, 0), sigma)
        guide = region.copy()
        guide[foot] = flat[foot]
    b = 1
    mask = np.zeros((h, w), np.uint8)
    mask[b : h - b, b : w - b] = 255
    # OpenCV centres the mask's bounding rectangle on ``p``: this p puts the crop back at (0, 0)
    p = (b + (w - 2 * b) // 2, b + (h - 2 * b) // 2)
    flag = cv2.MIXED_CLONE if mixed else cv2.NORMAL_CLONE
    # copies: OpenCV 5.0 writes into the mask it is given
    out = cv2.seamlessClone(np.ascontiguousarray(patch), guide.copy(), mask.copy(), p, flag)
    if np.array_equal(out, guide):
        return False
    dst[y0 : y0 + h, x0 : x0 + w] = out
    return True


def _overlaps(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    return any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes)


def _grow(box: np.ndarray, m: float) -> np.ndarray:
    return box + np.array([-m, -m, m, m])


SEEN_MARGIN_M = 1.0  # the margin around a detection of date A that a cover patch or a paste keeps off


def seen_boxes(seen: np.ndarray | None, gsd: float) -> list[np.ndarray]:
    """The model's detections on date A (``xyxy``, A pixels) as occupied ground: each box grown by
    ``SEEN_MARGIN_M`` (at least 2 pixels), since a detection's box is only roughly where the object is."""
    if seen is None:
        return []
    m = max(2.0, SEEN_MARGIN_M / gsd)
    return [_grow(b, m) for b in np.asarray(seen, float).reshape(-1, 4)]


def unlabelled(seen: np.ndarray | None, labelled: list[np.ndarray]) -> np.ndarray:
    """The detections (``xyxy``) that are of no labelled box: those whose overlap with every label covers
    less than half of the smaller of the two boxes (a detection of a labelled object, even a loose one,
    covers most of it or most of the label)."""
    if seen is None or not len(seen):
        return np.zeros((0, 4))
    d = np.asarray(seen, float).reshape(-1, 4)
    if not labelled:
        return d
    lab = np.asarray(labelled, float).reshape(-1, 4)
    lo = np.maximum(d[:, None, :2], lab[None, :, :2])
    hi = np.minimum(d[:, None, 2:], lab[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=-1)
    area_d = np.prod(d[:, 2:] - d[:, :2], axis=1)
    area_l = np.prod(lab[:, 2:] - lab[:, :2], axis=1)
    smaller = np.maximum(np.minimum(area_d[:, None], area_l[None, :]), 1e-9)
    return d[~(inter / smaller >= 0.5).any(axis=1)]


def _cover(
    img: np.ndarray, box: np.ndarray, occupied: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray | None:
    """Cover ``box`` (pixels, with a margin already) with nearby background holding nothing of
    ``occupied`` (labelled objects and the model's detections on date A); returns the box the patch was
    taken from, or ``None`` when no such patch was found (``img`` untouched)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, img.shape[1]), min(y1, img.shape[0])
    w, h = x1 - x0, y1 - y0
    if w < 4 or h < 4:
        return None
    for radius in (1.2, 1.6, 2.2, 3.0, 4.0):
        for _ in range(40):
            ang = rng.uniform(0, 2 * math.pi)
            sx = int(x0 + math.cos(ang) * radius * max(w, h))
            sy = int(y0 + math.sin(ang) * radius * max(w, h))
            if sx < 0 or sy < 0 or sx + w > img.shape[1] or sy + h > img.shape[0]:
                continue
            src = np.array([sx, sy, sx + w, sy + h], float)
            if _overlaps(_grow(src, 2), occupied):
                continue
            _blend(img, img[sy : sy + h, sx : sx + w].copy(), x0, y0, margin=max(2, min(w, h) // 5))
            return src
    return None


def _crop(src: Source, obj: Obj, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """An object's crop with a margin, resampled by ``scale``; returns (patch, object polygon in the patch)."""
    from PIL import Image

    box = obj.box
    m = max(3.0, 0.2 * max(box[2] - box[0], box[3] - box[1]))
    x0, y0 = int(max(0, box[0] - m)), int(max(0, box[1] - m))
    x1, y1 = int(min(src.image.shape[1], box[2] + m)), int(min(src.image.shape[0], box[3] + m))
    patch = src.image[y0:y1, x0:x1]
    poly = obj.poly - [x0, y0]
    if abs(scale - 1) > 1e-3:
        size = (max(2, round(patch.shape[1] * scale)), max(2, round(patch.shape[0] * scale)))
        patch = np.asarray(Image.fromarray(patch).resize(size, Image.LANCZOS))
        poly = poly * scale
    return patch, poly


def _whole_and_alone(src: Source, obj: Obj) -> bool:
    """A donor object is pasted only when it is not cut by its image edge and touches no other object."""
    box = obj.box
    rows, cols = src.image.shape[:2]
    if box[0] < 2 or box[1] < 2 or box[2] > cols - 2 or box[3] > rows - 2:
        return False
    return not _overlaps(_grow(box, 2), [o.box for o in src.objects if o is not obj])


@dataclass
class Pair:
    name: str
    a_path: Path
    b_path: Path
    gsd_a: float
    gsd_b: float
    shift: np.ndarray  # true misregistration of B (east, north), metres
    truth: list[dict] = field(default_factory=list)  # {cls, status, xy (A CRS), length}
    common_px: object = None  # shapely, A pixels
    covers: list[np.ndarray] = field(default_factory=list)  # boxes (A pixels) cover patches came from
    pastes: list[np.ndarray] = field(default_factory=list)  # boxes (A pixels) of the pasted crops


def _to_crs(px: np.ndarray, gsd: float) -> np.ndarray:
    px = np.asarray(px, float)
    return np.stack([ORIGIN[0] + px[..., 0] * gsd, ORIGIN[1] - px[..., 1] * gsd], -1)


def build_pair(
    src: Source,
    donors: list[Source],
    out: Path,
    k: int,
    *,
    shift_m: float,
    n_remove: int,
    n_paste: int,
    n_move: int,
    move_radius_m: float,
    coarser: bool,
    hole: bool,
    rng: np.random.Generator,
    paste: str = "poisson",
    crops: Path | None = None,
    seen: np.ndarray | None = None,
    a_path: Path | None = None,
) -> Pair:
    """Date B of one pair (and date A, unless ``a_path`` already holds it: see :func:`write_date_a`).

    ``seen``: the model's detections on date A (``xyxy``, A pixels, at the low threshold). Cover patches and
    pastes keep off them as they keep off labelled objects (:func:`seen_boxes`), so that a cover does not
    bring an unlabelled object (a container, a truck) over a departure and a paste does not land on one;
    those that are of no labelled object (:func:`unlabelled`) also keep a removed object from being chosen
    next to them. Without ``seen`` only the labels count as occupied.
    """
    import shapely
    from affine import Affine
    from PIL import Image

    img = src.image.copy()
    rows, cols = img.shape[:2]
    g = src.gsd
    # B's extent in A pixels, and a nodata hole
    ox, oy = int(0.08 * cols * rng.choice([-1, 1])), int(0.08 * rows * rng.choice([-1, 1]))
    ratio = 1.25 if coarser else 1.0
    b_ext = shapely.box(max(ox, 0), max(oy, 0), min(cols, cols + ox), min(rows, rows + oy))
    common = shapely.box(0, 0, cols, rows).intersection(b_ext)
    hole_box = None
    if hole:
        hw, hh = 0.35 * cols, 0.4 * rows
        hx, hy = rng.uniform(0.1, 0.9 - 0.35) * cols, rng.uniform(0.1, 0.9 - 0.4) * rows
        hole_box = shapely.box(hx, hy, hx + hw, hy + hh)
        common = common.difference(hole_box)
    edge_px = EDGE_M / g
    inner = common.buffer(-edge_px)
    inner_deep = common.buffer(-(edge_px + 5 / g))

    objs = list(src.objects)
    polys = [shapely.Polygon(o.poly) for o in objs]
    boxes = [o.box for o in objs] + [
        np.concatenate([p.min(0), p.max(0)]) for p in getattr(src, "ignored", [])
    ]
    seen_grown = seen_boxes(seen, g)
    occupied = boxes + seen_grown
    lonely = boxes + seen_boxes(unlabelled(seen, boxes), g)
    status = []
    for p in polys:
        if inner.covers(p):
            status.append("stayed")
        elif not common.intersects(p):
            status.append("not-covered")
        else:
            status.append("edge")

    def isolated(i: int) -> bool:
        grown = _grow(objs[i].box, 2 + 0.15 * max(objs[i].box[2:] - objs[i].box[:2]))
        return not _overlaps(grown, [b for j, b in enumerate(lonely) if j != i])

    candidates = [
        i for i, s in enumerate(status) if s == "stayed" and inner_deep.covers(polys[i]) and isolated(i)
    ]
    rng.shuffle(candidates)
    removed: list[int] = []
    moved: list[int] = []
    covers: list[np.ndarray] = []
    for i in candidates:
        if len(removed) >= n_remove and len(moved) >= n_move:
            break
        box = objs[i].box
        margin = 2 + 0.15 * max(box[2] - box[0], box[3] - box[1])
        took = _cover(img, _grow(box, margin), occupied, rng)
        if took is None:
            continue
        covers.append(took)
        if len(moved) < n_move and len(removed) >= n_remove // 2:
            moved.append(i)
        else:
            removed.append(i)
    truth: list[dict] = []
    origins = [objs[i].centre for i in removed + moved]
    placed: list[np.ndarray] = []
    pasted: list[tuple] = []  # (x0, y0, w, h, donor crop) of each paste, for --crops

    def place(patch: np.ndarray, poly: np.ndarray, near: np.ndarray | None) -> np.ndarray | None:
        h, w = patch.shape[:2]
        for _ in range(300):
            if near is None:
                x0, y0 = rng.uniform(0, cols - w), rng.uniform(0, rows - h)
            else:
                d, ang = rng.uniform(12, 25) / g, rng.uniform(0, 2 * math.pi)
                x0, y0 = near[0] + d * math.cos(ang) - w / 2, near[1] + d * math.sin(ang) - h / 2
            if x0 < 0 or y0 < 0 or x0 + w > cols or y0 + h > rows:
                continue
            box = np.array([x0, y0, x0 + w, y0 + h])
            obj_poly = poly + [int(x0), int(y0)]
            if not inner_deep.covers(shapely.Polygon(obj_poly)):
                continue
            if _overlaps(_grow(box, 2), occupied + placed):
                continue
            c = obj_poly.mean(0)
            far = [o for o in origins if near is None or not np.allclose(o, near)]
            if any(np.hypot(*(c - o)) * g < move_radius_m for o in far):
                continue
            if paste == "matte":
                size = float(np.max(np.ptp(poly, axis=0)))
                grow, feather = max(1.0, 0.06 * size), max(2.0, 0.08 * size)
                alpha = _matte(patch, _object_alpha((h, w), poly, grow=grow, feather=feather))
                _blend(img, patch, int(x0), int(y0), margin=0, alpha=alpha)
            elif paste in ("poisson", "poisson-mixed") and _poisson(
                img, patch, poly, int(x0), int(y0), mixed=paste == "poisson-mixed"
            ):
                pass
            else:  # box, or a crop too small for the Poisson solver
                if paste != "box":
                    log.info("%s: %dx%d crop pasted as a box", src.name, w, h)
                _blend(img, patch, int(x0), int(y0), margin=max(2, min(w, h) // 6))
            placed.append(box)
            pasted.append((int(x0), int(y0), w, h, patch))
            return obj_poly
        return None

    for i in moved:
        patch, poly = _crop(src, objs[i], 1.0)
        dst = place(patch, poly, objs[i].centre)
        if dst is None:  # no room nearby: it simply departed
            removed.append(i)
            continue
        status[i] = "moved"
        truth.append({"cls": objs[i].cls, "status": "moved", "poly": objs[i].poly, "to": dst})
    for i in removed:
        status[i] = "departed"
    pool = [(d, o) for d in donors if d is not src for o in d.objects if _whole_and_alone(d, o)]
    tries = 0
    arrived = 0
    while arrived < n_paste and pool and tries < 20:
        tries += 1
        d, o = pool[int(rng.integers(len(pool)))]
        patch, poly = _crop(d, o, d.gsd / g)
        if paste == "matte":
            patch = _match_radiometry(patch, d.image, src.image)
        dst = place(patch, poly, None)
        if dst is not None:
            truth.append({"cls": o.cls, "status": "arrived", "poly": dst})
            arrived += 1
    for i, s in enumerate(status):
        if s != "moved":
            truth.append({"cls": objs[i].cls, "status": s, "poly": objs[i].poly})

    if crops is not None:
        _write_crops(crops, f"{Path(src.name).stem[:40]}_{k}", img, pasted)
    # radiometry of B
    f = img.astype(np.float32) / 255.0
    gain = rng.uniform(0.8, 1.2, 3)
    gamma = rng.uniform(0.8, 1.25)
    offset = rng.uniform(-10, 10, 3)
    f = np.clip(f, 0, 1) ** gamma * gain * 255 + offset + rng.normal(0, 3, f.shape)
    b_img = np.clip(f, 1, 255).astype(np.uint8)
    # B's extent (crop), GSD and nodata hole
    x0, y0 = max(ox, 0), max(oy, 0)
    crop = b_img[y0 : min(rows, rows + oy), x0 : min(cols, cols + ox)].copy()
    if hole_box is not None:
        hx0, hy0, hx1, hy1 = (int(v) for v in hole_box.bounds)
        crop[max(0, hy0 - y0) : max(0, hy1 - y0), max(0, hx0 - x0) : max(0, hx1 - x0)] = 0
    if coarser:
        size = (round(crop.shape[1] / ratio), round(crop.shape[0] / ratio))
        crop = np.array(Image.fromarray(crop).resize(size, Image.BILINEAR if hole else Image.LANCZOS))
        if hole_box is not None:  # keep the hole's nodata exact after resampling
            hx0, hy0, hx1, hy1 = hole_box.bounds
            r0, r1 = int((hy0 - y0) / ratio) - 1, int(math.ceil((hy1 - y0) / ratio)) + 1
            c0, c1 = int((hx0 - x0) / ratio) - 1, int(math.ceil((hx1 - x0) / ratio)) + 1
            crop[max(0, r0) : max(0, r1), max(0, c0) : max(0, c1)] = 0
    ang = rng.uniform(0, 2 * math.pi)
    e = np.array([math.cos(ang), math.sin(ang)]) * shift_m
    ta = Affine(g, 0, ORIGIN[0], 0, -g, ORIGIN[1])
    tb = Affine(g * ratio, 0, ORIGIN[0] + x0 * g + e[0], 0, -g * ratio, ORIGIN[1] - y0 * g + e[1])
    stem = f"{Path(src.name).stem[:40]}_{k}"
    b_path = out / f"{stem}_B.tif"
    todo = [(b_path, crop, tb, 0)]
    if a_path is None:
        a_path = out / f"{stem}_A.tif"
        todo.insert(0, (a_path, src.image, ta, None))
    for path, data, t, nodata in todo:
        _write_tif(path, data, t, nodata)
    for t in truth:
        t["xy"] = _to_crs(t["poly"].mean(0), g)
        t["length"] = float(np.max(np.ptp(t["poly"], axis=0))) * g
        if "to" in t:
            t["xy_to"] = _to_crs(t["to"].mean(0), g)
    return Pair(stem, a_path, b_path, g, g * ratio, e, truth, common, covers, placed)


def write_date_a(src: Source, out: Path, k: int) -> Path:
    """Date A of ``src`` (its own pixels on the synthetic grid), the same for every pair made from it."""
    from affine import Affine

    path = out / f"{Path(src.name).stem[:40]}_{k}_A.tif"
    _write_tif(path, src.image, Affine(src.gsd, 0, ORIGIN[0], 0, -src.gsd, ORIGIN[1]), None)
    return path


def _write_tif(path: Path, data: np.ndarray, t: object, nodata: float | None) -> None:
    import rasterio
    from rasterio.crs import CRS

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=3,
        dtype="uint8",
        crs=CRS.from_epsg(CRS_EPSG),
        transform=t,
        nodata=nodata,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    ) as dst:
        dst.write(np.moveaxis(data, -1, 0))


def _write_crops(folder: Path, stem: str, img: np.ndarray, pasted: list[tuple]) -> None:
    """For looking at pastes by eye: per paste, the donor crop (left) and the paste in B with as much of
    B's ground again on each side (right, before B's radiometry change), scaled to at least 160 px."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = img.shape[:2]
    for n, (x0, y0, w, h, patch) in enumerate(pasted):
        cx0, cy0 = max(0, x0 - w), max(0, y0 - h)
        ctx = img[cy0 : min(rows, y0 + 2 * h), cx0 : min(cols, x0 + 2 * w)]
        canvas = np.full((max(ctx.shape[0], h), w + 4 + ctx.shape[1], 3), 255, np.uint8)
        canvas[:h, :w] = patch
        canvas[: ctx.shape[0], w + 4 :] = ctx
        scale = max(1, math.ceil(160 / max(h, 1)))
        im = Image.fromarray(canvas)
        im.resize((im.width * scale, im.height * scale), Image.NEAREST).save(folder / f"{stem}_{n}.png")


# ----------------------------------------------------------------------------------------------------------
# scoring
# ----------------------------------------------------------------------------------------------------------


def score_pair(pair: Pair, changes: object, found_at: float) -> list[dict]:
    """One row per labelled object: its true status, the status of its record (or ``None``), detected?"""
    cols = changes.columns  # type: ignore[attr-defined]
    rec_xy = np.stack([cols["x"], cols["y"]], 1) if len(cols["x"]) else np.zeros((0, 2))
    st = cols["status"]
    pixel = cols.get("pixel_change", np.full(len(st), np.nan))  # the pixel check's ratio (nan: not looked at)
    used = np.zeros(len(st), bool)
    rows = []
    for t in sorted(pair.truth, key=lambda t: SCORED.index(t["status"]) if t["status"] in SCORED else 9):
        if t["status"] == "edge":
            continue
        tol = max(3.0, 0.5 * t["length"])
        hit = None
        if len(rec_xy):
            d = np.hypot(*(rec_xy - t["xy"]).T)
            d[used] = np.inf
            j = int(np.argmin(d))
            if d[j] <= tol:
                hit = j
        if hit is not None:
            used[hit] = True
        got = None if hit is None else str(st[hit])
        found = got is not None and (
            (t["status"] != "arrived" and np.nan_to_num(cols["score_before"][hit]) >= found_at)
            or (t["status"] == "arrived" and np.nan_to_num(cols["score_after"][hit]) >= found_at)
        )
        rows.append(
            {
                "pair": pair.name,
                "cls": t["cls"],
                "truth": t["status"],
                "got": got,
                "found": found,
                "length_m": round(t["length"], 2),
                "score_a": None if hit is None else _score(cols["score_before"][hit]),
                "score_b": None if hit is None else _score(cols["score_after"][hit]),
                "pixel": None if hit is None else _score(pixel[hit]),
            }
        )
    # records of a change that no labelled change explains
    for j in np.nonzero(~used)[0]:
        if st[j] in ("departed", "arrived", "moved"):
            rows.append(
                {
                    "pair": pair.name,
                    "cls": str(cols["class"][j]),
                    "truth": None,
                    "got": str(st[j]),
                    "found": True,
                    "score_a": _score(cols["score_before"][j]),
                    "score_b": _score(cols["score_after"][j]),
                    "pixel": _score(pixel[j]),
                }
            )
    return rows


def _score(v: object) -> float | None:
    v = float(v)  # type: ignore[arg-type]
    return None if math.isnan(v) else round(v, 3)


def aggregate(rows: list[dict], classes: list[str]) -> list[dict]:
    out = []
    for c in [*classes, "all"]:
        sel = [r for r in rows if c == "all" or r["cls"] == c]

        def rec(status: str, found_only: bool, sel: list[dict] = sel) -> tuple[int, int]:
            pool = [r for r in sel if r["truth"] == status and (r["found"] or not found_only)]
            return sum(r["got"] == status for r in pool), len(pool)

        stayed = [r for r in sel if r["truth"] == "stayed" and r["got"] is not None]
        flagged = sum(r["got"] in ("departed", "arrived", "moved") for r in stayed)
        nc = [r for r in sel if r["truth"] == "not-covered" and r["got"] is not None]
        out.append(
            {
                "class": c,
                "departed": rec("departed", False),
                "departed_found": rec("departed", True),
                "arrived": rec("arrived", False),
                "arrived_found": rec("arrived", True),
                "moved": rec("moved", False),
                "stayed_flagged": (flagged, len(stayed)),
                "not_covered_as_departed": (sum(r["got"] == "departed" for r in nc), len(nc)),
                "spurious": sum(1 for r in sel if r["truth"] is None),
            }
        )
    return out


def _frac(pair: tuple[int, int]) -> str:
    k, n = pair
    return "-" if n == 0 else f"{k / n:.2f} ({k}/{n})"


# ----------------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------------


def run_set(
    name: str,
    sources: list[Source],
    detector: object,
    work: Path,
    *,
    shifts: list[float],
    variants: int,
    counts: tuple[int, int, int],
    cfg: object,
    allow_gsd_change: bool,
    paste: str,
    seed: int,
    keep: list,
    crops: Path | None = None,
    zoom: float | str | None = "auto",
    dates_a: dict[str, object] | None = None,
) -> tuple[list[dict], list[dict]]:
    from detector import change as ch

    rows: list[dict] = []
    pairs_info: list[dict] = []
    rng = np.random.default_rng(seed)
    move_radius = cfg.move_radius_m  # type: ignore[attr-defined]
    k = 0
    for src in sources:
        # date A is the same for every pair of this scene (every seed's too): written and run through the model
        # once, before any B is built, so that B's covers and pastes keep off what the model sees on A
        key = f"{name}/{src.name}"
        a = None if dates_a is None else dates_a.get(key)
        if a is None:
            a = ch.load_date(write_date_a(src, work, k), detector, zoom=zoom)
            if dates_a is not None:
                dates_a[key] = a
        for v in range(variants):
            shift = shifts[k % len(shifts)]
            pair = build_pair(
                src,
                sources,
                work,
                k,
                shift_m=shift,
                n_remove=counts[0],
                n_paste=counts[1],
                n_move=counts[2],
                move_radius_m=move_radius,
                coarser=allow_gsd_change and v % 2 == 1,
                hole=v % 2 == 1,
                rng=rng,
                paste=paste,
                crops=None if crops is None else crops / name,
                seen=a.dets.xyxy,
                a_path=Path(a.path),
            )
            k += 1
            b = ch.load_date(pair.b_path, detector, zoom=zoom)
            changes = ch.compare(
                a.dets,
                b.dets,
                config=cfg,
                before_area=a.area,
                after_area=b.area,
                before_scene=a.scene,
                after_scene=b.scene,
            )
            rows += score_pair(pair, changes, cfg.mid)  # type: ignore[attr-defined]
            err = float(np.hypot(*(np.asarray(changes.shift_m) - pair.shift)))
            pairs_info.append(
                {
                    "set": name,
                    "pair": pair.name,
                    "gsd_a": pair.gsd_a,
                    "gsd_b": pair.gsd_b,
                    "shift_true_m": float(np.hypot(*pair.shift)),
                    "shift_error_m": err,
                    "records": len(changes),
                    "shift_method": changes.meta["shift_method"],
                    "phase_strength": changes.meta["phase_strength"],
                }
            )
            if name == "dota" and shift > 0:  # the README pair: the one showing most kinds of change
                kinds = sum(
                    int((changes.status == s).any()) for s in ("departed", "arrived", "moved", "not-covered")
                )
                if not keep or kinds > keep[0][0]:
                    keep[:] = [(kinds, pair, a, b, changes)]
    return rows, pairs_info


def _pixel_flags(results: dict) -> str:
    """The pixel check's thresholds as `detector change` flags."""
    return f"`--pixel-ratio {results.get('pixel_ratio')} --pixel-same {results.get('pixel_same')}`"


def _section(results: dict) -> str:
    lines = [START, "## Change between dates (`detector change`)", ""]
    seeds = ", ".join(str(k) for k in results["seeds"])
    from detector.change import CHANGE_ZOOM, CHANGE_ZOOM_GSD_M

    zoom = (
        f", `detector change`'s zoom ({CHANGE_ZOOM} from {CHANGE_ZOOM_GSD_M} m/px on)"
        if results.get("zoom") is None
        else f", `--zoom {results['zoom']}`"
    )
    lines.append(
        f"Generated by `scripts/change_bench.py --data ../shared/data --out BENCHMARKS.md` on {results['when']} "
        f"(took {results['seconds']:.0f} s; load average {results['load_before']:.2f} before, "
        f"{results['load_after']:.2f} after, on {results['cpus']} CPUs). Model `{results['model']}`, predict "
        f"at conf {results['low']}, compare with `--high {results['high']} --mid {results['mid']} --low "
        f"{results['low']} --clear {results['clear']}`, default tolerances, `--move-radius "
        f"{results['move_radius']}`, {_pixel_flags(results)}{zoom}. Pairs of {len(results['seeds'])} seeds ({seeds}), pooled; the "
        f"thresholds were chosen on the pairs of seed {results['seeds'][0]}, so the other seeds' pairs are "
        "new to them, except for one rule (changed pixels outweigh the other date's weak detections, "
        "2026-12-03), found by reading the misses of all three seeds. "
        "Rerun the script rather than editing by hand."
    )
    lines.append("")
    lines.append(
        "Each pair is one labelled scene (date A) and a copy of it (date B) with objects removed (covered with "
        "nearby background of the same scene holding no labelled object and no detection of the model on "
        "date A), objects pasted in from other scenes of the set "
        f"(`--paste {results['paste']}`), one or two "
        "objects moved 12-25 m, changed radiometry, an offset extent (partial overlap), a nodata hole in every "
        "other pair and a **misregistered** georeferencing; see the script's docstring. Recall counts a "
        "labelled change whose record has that status; *of found* counts only the changes the model detects "
        "at the mid threshold in the date where the object exists (the change logic's own recall; before "
        "2026-12-01 this column counted detections at the high threshold). *Stayed "
        "flagged*: stayed objects that got departed/arrived/moved. *Spurious*: change records near no "
        "labelled change (unlabelled objects, false detections)."
    )
    for key, title in (
        (
            "dota",
            "DOTA demo scenes P0003-P0005 (vehicles; the P1478 chip has no GSD header), 0.115-0.132 m, B at 1x or 1.25x the GSD",
        ),
        (
            "airport",
            f"Held-out airports (GDIT + HRPlanes test), synthetic {AIRPORT_GSD} m, {AIRPORT_SHIFT_M} m misregistration",
        ),
    ):
        if key not in results["sets"]:
            continue
        s = results["sets"][key]
        lines += ["", f"### {title}", ""]
        lines.append(
            f"{s['pairs']} pairs; misregistration {s['shift_range']} m, estimated to within "
            f"{s['shift_err_median']:.2f} m (median; worst {s['shift_err_max']:.2f} m)."
        )
        if len(s.get("by_seed", [])) > 1:  # how much one seed's pairs move the figures
            lines.append("")
            lines.append(
                "Per seed, all classes: "
                + "; ".join(
                    f"seed {r['seed']} ({r['pairs']} pairs): departed {_frac(r['departed'])}, arrived "
                    f"{_frac(r['arrived'])}, stayed flagged {_frac(r['stayed_flagged'])}"
                    for r in s["by_seed"]
                )
                + "."
            )
        lines += [
            "",
            "| class | departed recall | of found | arrived recall | of found | moved recall | stayed flagged | "
            "not-covered called departed | spurious |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in s["table"]:
            lines.append(
                f"| {r['class']} | {_frac(r['departed'])} | {_frac(r['departed_found'])} | {_frac(r['arrived'])} | "
                f"{_frac(r['arrived_found'])} | {_frac(r['moved'])} | {_frac(r['stayed_flagged'])} | "
                f"{_frac(r['not_covered_as_departed'])} | {r['spurious']} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    from detector.writers import atomic_path

    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        new = head + section + tail
    else:
        new = text.rstrip("\n") + ("\n\n" if text else "") + section + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(new, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    from detector import change as ch

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=None, help="BENCHMARKS.md to update (default: none)")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "change-bench")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the README quicklook goes")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--shifts", default="0,2.5,5,7.5,10", help="misregistrations of the DOTA pairs (m)")
    ap.add_argument("--variants", type=int, default=4, help="pairs per DOTA scene")
    ap.add_argument("--airports", type=int, default=40, help="airport images per set (GDIT, HRPlanes)")
    defaults = ch.ChangeConfig()
    ap.add_argument("--high", type=float, default=defaults.high, help="as `detector change --high`")
    ap.add_argument("--mid", type=float, default=defaults.mid, help="as `detector change --mid`")
    ap.add_argument(
        "--low", type=float, default=defaults.low, help="as `detector change --low` (predict conf)"
    )
    ap.add_argument("--clear", type=float, default=defaults.clear_m, help="as `detector change --clear`")
    ap.add_argument("--move-radius", type=float, default=defaults.move_radius_m)
    ap.add_argument(
        "--pixel-ratio",
        type=float,
        default=defaults.pixel_ratio,
        help="as `detector change --pixel-ratio`",
    )
    ap.add_argument(
        "--pixel-same", type=float, default=defaults.pixel_same, help="as `detector change --pixel-same`"
    )
    ap.add_argument(
        "--seeds",
        default="0,1,2",
        help="one set of pairs per seed, pooled (default: %(default)s; the thresholds were chosen on the "
        "first seed's)",
    )
    ap.add_argument(
        "--paste",
        choices=["box", "matte", "poisson", "poisson-mixed"],
        default="poisson",
        help="poisson: gradient-domain blending of the object's crop (default); poisson-mixed: the same with "
        "mixed gradients around the object; box: the crop with a feathered margin (a square of the donor's "
        "ground); matte: object-shaped alpha, radiometry matched (measured: fades small objects)",
    )
    ap.add_argument(
        "--zoom",
        type=float,
        default=None,
        help="as `detector change --zoom` (default: as detector change, 1.25 from 0.3 m/px on, else 1)",
    )
    ap.add_argument("--crops", type=Path, default=None, help="write each paste as a PNG here, to look at")
    ap.add_argument("--quick", action="store_true", help="few pairs; never writes BENCHMARKS.md or docs/")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "1")

    from detector import georef
    from detector.pipeline import Detector

    if not args.data.is_dir():
        print(f"error: {args.data}: data folder not found", file=sys.stderr)
        return 1
    try:
        cfg = ch.ChangeConfig(
            high=args.high,
            mid=args.mid,
            low=args.low,
            clear_m=args.clear,
            move_radius_m=args.move_radius,
            pixel_ratio=args.pixel_ratio,
            pixel_same=args.pixel_same,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    move_radius = cfg.move_radius_m
    t0 = time.time()
    load0 = os.getloadavg()[0]
    detector = Detector.load(args.weights, conf=cfg.low)
    args.work.mkdir(parents=True, exist_ok=True)
    shifts = [float(s) for s in args.shifts.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.quick:
        seeds = seeds[:1]
    n_air = 4 if args.quick else args.airports
    variants = 1 if args.quick else args.variants
    results: dict = {"sets": {}, "seeds": seeds}
    keep: list = []
    all_pairs: list[dict] = []
    pooled: dict[str, tuple[list, list]] = {"dota": ([], []), "airport": ([], [])}
    by_seed: dict[str, list[dict]] = {"dota": [], "airport": []}
    sources = {
        n: load_sources(args.data, n, 10 if n == "dota" else n_air) for n in ("dota", "gdit", "hrplanes")
    }
    dates_a: dict[str, object] = {}  # date A depends on the scene only, not on the seed: predicted once
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        for seed in seeds:
            got = run_seed(
                args,
                detector,
                cfg,
                Path(tmp),
                sources,
                dates_a,
                seed=seed,
                shifts=shifts,
                variants=variants,
                keep=keep if seed == seeds[0] else [],
            )
            # the README pair, before the next seed's dates B take the same file names
            if seed == seeds[0] and keep and not args.quick:
                _, pair, a, b, changes = keep[0]
                args.docs.mkdir(parents=True, exist_ok=True)
                ch.write_quicklook(
                    changes,
                    args.docs / "change-quicklook.jpg",
                    before_scene=a.scene,
                    after_scene=b.scene,
                    max_size=560,
                )
                table = ch.format_table(ch.summary(changes))
                (args.docs / "change-summary.txt").write_text(
                    f"{pair.name}: A vs B, true shift {np.hypot(*pair.shift):.1f} m, estimated "
                    f"({changes.shift_m[0]:+.2f}, {changes.shift_m[1]:+.2f}) m\n{table}\n",
                    encoding="utf-8",
                )
            for key, (rows, info) in got.items():
                for r in rows:
                    r["seed"] = seed
                for i in info:
                    i["seed"] = seed
                pooled[key][0].extend(rows)
                pooled[key][1].extend(info)
                all_pairs += info
                by_seed[key].append({"seed": seed, "pairs": len(info), **aggregate(rows, [])[-1]})
    for key, classes in (("dota", ["small-vehicle", "large-vehicle"]), ("airport", ["aircraft"])):
        results["sets"][key] = {**_set_result(*pooled[key], classes), "by_seed": by_seed[key]}
    results.update(
        when=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        seconds=time.time() - t0,
        load_before=load0,
        load_after=os.getloadavg()[0],
        cpus=os.cpu_count(),
        model=detector.meta.name or "default",
        high=cfg.high,
        mid=cfg.mid,
        low=cfg.low,
        clear=cfg.clear_m,
        paste=args.paste,
        move_radius=move_radius,
        pixel_ratio=cfg.pixel_ratio,
        pixel_same=cfg.pixel_same,
        zoom=args.zoom,
        machine=platform.platform(),
        pairs=all_pairs,
    )
    (args.work / "change_bench.json").write_text(json.dumps(results, indent=1, default=_jsonable) + "\n")
    section = _section(results)
    print(section)
    if args.out and not args.quick:
        write_section(args.out, section)
        print(f"wrote the change-bench section of {args.out}", file=sys.stderr)
    del georef
    return 0


def run_seed(
    args: argparse.Namespace,
    detector: object,
    cfg: object,
    work: Path,
    sources: dict[str, list[Source]],
    dates_a: dict[str, object],
    *,
    seed: int,
    shifts: list[float],
    variants: int,
    keep: list,
) -> dict[str, tuple[list[dict], list[dict]]]:
    """The DOTA pairs and the airport pairs of one seed: ``{set: (rows, pairs_info)}``; ``sources`` by set name,
    ``dates_a`` the dates A already predicted (:func:`run_set` adds to it)."""
    crops = None if args.crops is None else args.crops / f"seed-{seed}"
    zoom = "auto" if args.zoom is None else args.zoom  # as `detector change`
    same = {"cfg": cfg, "paste": args.paste, "crops": crops, "zoom": zoom, "dates_a": dates_a}  # both sets
    out = {
        "dota": run_set(
            "dota",
            sources["dota"],
            detector,
            work,
            shifts=shifts,
            variants=variants,
            counts=(3, 3, 1),
            allow_gsd_change=True,
            seed=seed,
            keep=keep,
            **same,
        )
    }
    air_rows: list[dict] = []
    air_info: list[dict] = []
    for set_name in ("gdit", "hrplanes"):
        r, i = run_set(
            "airport",
            sources[set_name],
            detector,
            work,
            shifts=[AIRPORT_SHIFT_M],
            variants=1,
            counts=(2, 2, 1),
            allow_gsd_change=False,
            seed=seed + 1,
            keep=[],
            **same,
        )
        air_rows += r
        air_info += i
    out["airport"] = (air_rows, air_info)
    return out


def _set_result(rows: list[dict], info: list[dict], classes: list[str]) -> dict:
    errs = [p["shift_error_m"] for p in info]
    shifts = [p["shift_true_m"] for p in info]
    return {
        "pairs": len(info),
        "shift_range": f"{min(shifts):.1f}-{max(shifts):.1f}",
        "shift_err_median": float(np.median(errs)) if errs else float("nan"),
        "shift_err_max": float(np.max(errs)) if errs else float("nan"),
        "table": aggregate(rows, classes),
        "changes": [r for r in rows if r["truth"] in ("departed", "arrived", "moved")],  # to look into misses
        # change records no labelled change explains, and stayed objects given a change
        "false_changes": [
            r for r in rows if r["truth"] in (None, "stayed") and r["got"] in ("departed", "arrived", "moved")
        ],
    }


def _jsonable(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


if __name__ == "__main__":
    raise SystemExit(main())
