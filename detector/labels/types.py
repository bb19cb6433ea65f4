"""The label types every reader returns, and the helpers the readers share.

Data contract:

* ``Annotation.polygon`` is a ``(4, 2)`` float64 array of **image pixel** corners ``(x, y)`` of the full
  image the label belongs to (``x`` the column, ``y`` the row, ``(0, 0)`` the top-left corner of the top-left
  pixel). For an axis-aligned box the corners are ``x1,y1 / x2,y1 / x2,y2 / x1,y2`` and ``rotated`` is
  ``False``; for a rotated box (DOTA, YOLO-OBB, or a polygon reduced to its minimum-area rectangle) the corners
  are in the source's order and ``rotated`` is ``True``.
* ``Annotation.cls`` is our class (one of the taxonomy's ``classes``), ``"ignore"`` when the
  taxonomy drops the source class, or the source class itself when the reader ran without a taxonomy.
  ``source_cls`` is always the publisher's label; ``attrs["source_cls"]`` repeats it next to anything finer.
  Polygon labels keep their full outline in ``attrs["outline"]`` (``(K, 2)`` image pixels): its axis-aligned
  box is the tight one (the rectangle's is larger for a rotated object).
* ``LabeledImage.group`` is the source scene / video sequence the image comes from: two images of one group
  must never sit in two splits.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from detector.errors import LabelError, RasterError  # noqa: F401  (LabelError: re-exported)
from detector.taxonomy import Taxonomy

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]

#: Image suffixes the readers look for (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")

_ROBOFLOW = re.compile(r"_(jpe?g|png|tiff?|bmp|webp)\.rf\.[0-9a-f]+$", re.IGNORECASE)

#: A footprint whose minimum-area rectangle is narrower than this (pixels) has no area: its points lie on a
#: line (or are one point), and it would become a box as long as the line with nothing inside.
MIN_WIDTH_PX = 1e-3


@dataclass
class Annotation:
    """One labelled object (see the module docstring for the coordinate contract)."""

    image: Path
    cls: str
    source_cls: str
    polygon: np.ndarray
    rotated: bool = False
    difficult: bool = False
    truncated: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        poly = np.asarray(self.polygon, dtype=np.float64)
        if poly.shape != (4, 2):
            raise ValueError(f"Annotation.polygon must have shape (4, 2), got {poly.shape} for {self.image}")
        if not np.isfinite(poly).all():
            raise ValueError(f"Annotation.polygon holds non-finite values for {self.image}: {poly.tolist()}")
        self.polygon = poly

    @property
    def outline(self) -> np.ndarray:
        """The object's footprint in image pixels: ``attrs["outline"]`` when the label was a polygon, else
        ``polygon``."""
        out = self.attrs.get("outline")
        return self.polygon if out is None else np.asarray(out, dtype=np.float64).reshape(-1, 2)

    @property
    def xyxy(self) -> np.ndarray:
        """The tight axis-aligned box of the footprint (:attr:`outline`), ``(4,)`` float64."""
        pts = self.outline
        return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


@dataclass
class LabeledImage:
    """One image and its labels.

    Attributes:
        image: path of the image file.
        width, height: image size in pixels (from the label file or the image header), ``None`` if unknown.
        gsd: ground sample distance in metres per pixel, ``None`` if unknown.
        annotations: the objects, ignored classes included (``cls == "ignore"``).
        group: source scene / video sequence id (never split across train and val).
        dataset: the dataset name the taxonomy was looked up with.
        skipped: one message per malformed label line skipped under ``on_error="skip"``.
    """

    image: Path
    width: int | None
    height: int | None
    gsd: float | None
    annotations: list[Annotation]
    group: str
    dataset: str = ""
    skipped: list[str] = field(default_factory=list)


def roboflow_stem(name: str | Path) -> str:
    """The file stem without Roboflow's ``_jpg.rf.<hash>`` export suffix (``"GBG_016_jpg.rf.ab12"`` -> ``"GBG_016"``)."""
    stem = Path(name).stem if Path(name).suffix.lower() in IMAGE_SUFFIXES + (".txt",) else Path(name).name
    return _ROBOFLOW.sub("", stem)


def group_of(name: str | Path, pattern: str | None = None) -> str:
    """Source scene id of an image file name.

    The Roboflow suffix is stripped first; with ``pattern`` (a regular expression searched in that stem)
    the first capture group (or the whole match) is the scene id, else the stem itself is.
    """
    stem = roboflow_stem(name)
    if pattern:
        m = re.search(pattern, stem)
        if m:
            return m.group(1) if m.groups() and m.group(1) is not None else m.group(0)
    return stem


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image from its header, without decoding the pixels.

    Images larger than PIL's decompression-bomb guard (whole DOTA scenes can be) are measured with rasterio.

    Raises:
        LabelError: the file is missing or not an image.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError:
        pass
    except (OSError, SyntaxError, ValueError, ImportError) as e:
        # UnidentifiedImageError is an OSError; ImportError: Ultralytics, once imported, patches Image.open to
        # look for a HEIF plugin when PIL cannot identify a file
        raise LabelError(f"{path}: cannot read the image header ({e})") from e
    from detector.raster import open_dataset  # rasterio: only for such large images

    try:
        with open_dataset(path) as ds:
            return int(ds.width), int(ds.height)
    except RasterError as e:  # it names the file
        raise LabelError(str(e)) from e


def find_image(directory: Path, stem: str) -> Path | None:
    """The image file ``directory/stem.<image suffix>``, or ``None``."""
    for suf in IMAGE_SUFFIXES:
        for s in (suf, suf.upper()):
            p = directory / f"{stem}{s}"
            if p.is_file():
                return p
    return None


def list_images(directory: Path) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name."""
    if not directory.is_dir():
        raise LabelError(f"{directory}: image folder not found")
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def map_class(taxonomy: Taxonomy | None, dataset: str, source_cls: str) -> str:
    """Our class for a source class (or the source class itself without a taxonomy)."""
    if taxonomy is None:
        return source_cls
    return taxonomy.map(dataset, source_cls)


def box_polygon(x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """Corners of an axis-aligned box, clockwise on screen from the top-left."""
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def check_pattern(pattern: str | None, where: str | Path) -> None:
    """Raise a :class:`LabelError` naming ``where`` when ``pattern`` is not a valid regular expression."""
    if pattern is None:
        return
    try:
        re.compile(pattern)
    except (re.error, TypeError) as e:
        raise LabelError(f"{where}: group_pattern {pattern!r} is not a regular expression ({e})") from e


def has_area(points: np.ndarray) -> bool:
    """False when the points span no area: all on one line or at one point (see :data:`MIN_WIDTH_PX`).

    The test is the width of the minimum-area rectangle, so a diagonal line is caught as well as a horizontal
    one, and a self-intersecting outline (a bow tie) with a real extent is not.
    """
    return rect_width(min_area_rect(points)) >= MIN_WIDTH_PX


def rect_width(rect: np.ndarray) -> float:
    """The shorter side of a rectangle ``(4, 2)`` (corners in order), in its units."""
    return float(min(np.linalg.norm(rect[1] - rect[0]), np.linalg.norm(rect[2] - rect[1])))


def min_area_rect(points: np.ndarray) -> np.ndarray:
    """The minimum-area rotated rectangle ``(4, 2)`` enclosing ``points`` ``(K, 2)`` (shapely).

    Degenerate inputs (all points on a line or one point) give a zero-width rectangle along that line.
    """
    import shapely

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    rect = shapely.minimum_rotated_rectangle(shapely.multipoints(pts))
    if rect.geom_type == "Polygon":
        coords = np.asarray(rect.exterior.coords, dtype=np.float64)[:4]
    elif rect.geom_type == "LineString":
        a, b = np.asarray(rect.coords, dtype=np.float64)[[0, -1]]
        coords = np.stack([a, b, b, a])
    else:  # a point
        coords = np.repeat(pts[:1], 4, axis=0)
    return coords


#: Resolution of the mask on which :func:`aircraft_axis_rect` looks for the symmetry axis (pixels, long side).
AXIS_MASK_PX = 64


def aircraft_axis_rect(outline: np.ndarray, *, step_deg: float = 1.0) -> tuple[np.ndarray, float]:
    """The rectangle ``(4, 2)`` of an aircraft outline ``(K, 2)`` aligned with its axis of symmetry, and how
    symmetric the outline is about that axis (0-1).

    An aircraft is mirror-symmetric about its fuselage. The minimum-area rectangle of its outline often is
    not aligned with it (a cross of fuselage and swept wings fits a tilted rectangle as tightly), and then the
    box of the rectangle's centre lines, which is what a rotated model's rectangle is read as
    (:func:`detector.geometry.object_boxes`), misses the aircraft: measured on ``isaid-512/test``, 28 % of
    the aircraft not cut by the tile edge get an IoU below 0.5 with their own outline's box from the
    minimum-area rectangle, 0.8 % from this one (``training/angles.py --axis-check``).

    The outline is filled into a mask of :data:`AXIS_MASK_PX` on its long side; the axis is the line through
    the mask's centroid, every ``step_deg`` degrees, that maps most of the mask onto itself when mirrored.
    The rectangle is the outline's extent along that axis and across it. Which of the two sides is the
    fuselage is not decided (the rectangle is the same either way).
    """
    import shapely

    pts = np.asarray(outline, dtype=np.float64).reshape(-1, 2)
    lo = pts.min(axis=0)
    span = float((pts.max(axis=0) - lo).max())
    if not span > 0:
        raise ValueError(f"an aircraft outline needs an extent, got {pts.tolist()}")
    k = (AXIS_MASK_PX - 1) / span
    gy, gx = np.mgrid[0 : AXIS_MASK_PX + 2, 0 : AXIS_MASK_PX + 2]
    polygon = shapely.make_valid(shapely.Polygon((pts - lo) * k + 1)).buffer(0.5)  # cells it touches
    mask = shapely.contains_xy(polygon, gx.ravel(), gy.ravel()).reshape(gx.shape)
    if not mask.any():  # thinner than a mask cell: the minimum-area rectangle is the answer
        return min_area_rect(pts), 0.0
    ys, xs = np.nonzero(mask)
    cells = np.stack([xs, ys], axis=1).astype(np.float64)
    centre = cells.mean(axis=0)
    q = cells - centre
    theta = np.deg2rad(np.arange(0.0, 180.0, step_deg))
    c2, s2 = np.cos(2 * theta)[:, None], np.sin(2 * theta)[:, None]
    mx = np.round(q[:, 0] * c2 + q[:, 1] * s2 + centre[0]).astype(np.int64)  # mirrored, one row per angle
    my = np.round(q[:, 0] * s2 - q[:, 1] * c2 + centre[1]).astype(np.int64)
    inside = (mx >= 0) & (my >= 0) & (mx < mask.shape[1]) & (my < mask.shape[0])
    hit = np.zeros(inside.shape, dtype=bool)
    hit[inside] = mask[my[inside], mx[inside]]
    score = hit.mean(axis=1)
    best = int(np.argmax(score))
    u = np.array([np.cos(theta[best]), np.sin(theta[best])])
    v = np.array([-u[1], u[0]])
    a, b = pts @ u, pts @ v
    a0, a1, b0, b1 = a.min(), a.max(), b.min(), b.max()
    rect = np.array([u * a0 + v * b0, u * a1 + v * b0, u * a1 + v * b1, u * a0 + v * b1])
    return rect, float(score[best])


#: Rotor diameter / fuselage length of real helicopters (Mi-8 1.17, Mi-24 0.99, Ka-52 1.07, UH-60 1.07, UH-1
#: 1.14, AH-64 0.97, Bell 206 1.07; median 1.07): a fuselage-only label becomes a rotor disc of this x its length.
ROTOR_K = 1.1
#: A helicopter rectangle this elongated (length / width) is a fuselage-only label (iSAID), not a rotor disc.
FUSELAGE_ASPECT = 2.0


def rect_axes(rect: np.ndarray) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Centre, length, width and the unit long axis of a ``(4, 2)`` rectangle given by its corners in order."""
    rect = np.asarray(rect, dtype=np.float64)
    e1, e2 = rect[1] - rect[0], rect[2] - rect[1]
    n1, n2 = float(np.hypot(*e1)), float(np.hypot(*e2))
    axis, length, width = (e1 / max(n1, 1e-9), n1, n2) if n1 >= n2 else (e2 / max(n2, 1e-9), n2, n1)
    return rect.mean(axis=0), length, width, axis


def square(centre: np.ndarray, side: float, axis: np.ndarray) -> np.ndarray:
    """The ``(4, 2)`` corners of a square of ``side`` centred on ``centre``, one side along ``axis``."""
    u = np.asarray(axis, dtype=np.float64) * side / 2
    v = np.array([-u[1], u[0]])
    c = np.asarray(centre, dtype=np.float64)
    return np.array([c - u - v, c + u - v, c + u + v, c - u + v])


def rotor_disc(rect: np.ndarray, k: float = ROTOR_K, fuselage_aspect: float = FUSELAGE_ASPECT) -> np.ndarray:
    """The rotor-disc box of a helicopter label (the DOTA convention), ``(4, 2)`` corners in pixels.

    A fuselage-only label (aspect >= ``fuselage_aspect``) becomes a square of side ``k`` x its length, centred
    on it and aligned with it; a disc-like label becomes a square of side its length.
    """
    centre, length, width, axis = rect_axes(rect)
    if not length > 0:
        raise ValueError(
            f"a helicopter rectangle needs a positive length, got corners {np.asarray(rect).tolist()}"
        )
    side = k * length if length >= fuselage_aspect * max(width, 1e-9) else length
    return square(centre, side, axis)


class LineErrors:
    """Raise or collect malformed-line errors for one label file, as ``on_error`` asks."""

    def __init__(self, path: Path, on_error: OnError) -> None:
        if on_error not in ("raise", "skip"):
            raise LabelError(f"{path}: on_error must be 'raise' or 'skip', got {on_error!r}")
        self.path = path
        self.on_error = on_error
        self.skipped: list[str] = []

    def __call__(self, lineno: int | None, problem: str) -> None:
        """A problem of line ``lineno`` of the file (``None``: of a record, or of the file itself)."""
        where = f"{self.path}:{lineno}" if lineno is not None else str(self.path)
        self.report(f"{where}: {problem}")

    def report(self, message: str) -> None:
        """Raise ``message`` (which names the file) as a :class:`LabelError`, or log it and count it."""
        if self.on_error == "raise":
            raise LabelError(message)
        logger.warning("skipped %s", message)
        self.skipped.append(message)
