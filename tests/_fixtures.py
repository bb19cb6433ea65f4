"""Generated test inputs anyone can import: GeoTIFF writers, painted objects and a fake predictor.

``BrightObjectPredictor`` satisfies the :class:`~detector.backends.base.Predictor` protocol without a
network: it "detects" connected bright blobs in each tile (white -> aircraft, yellow -> small-vehicle), so a
test can paint objects at known scene pixels and check where the pipeline puts them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from scipy import ndimage

from detector.backends.base import ModelMeta
from detector.detections import Detections
from detector.taxonomy import default_classes

TAXONOMY = default_classes()  # our classes in id order (configs/taxonomy.yaml)
WHITE = (255, 255, 255)
YELLOW = (255, 255, 0)
UTM33 = CRS.from_epsg(32633)


def make_meta(imgsz: int = 256, task: str = "detect", gsd: float | None = None) -> ModelMeta:
    """Model metadata for a fake model whose raw classes are our taxonomy."""
    return ModelMeta(
        raw_names=TAXONOMY,
        class_map=dict(enumerate(TAXONOMY)),
        imgsz=imgsz,
        task=task,
        gsd=gsd,
        name=f"fake-{task}",
    )


def write_geotiff(
    path: Path,
    bands: np.ndarray,
    *,
    transform: Affine | None = None,
    crs: CRS | None = UTM33,
    nodata: float | None = None,
    tiled: bool = True,
    colorinterp: list[ColorInterp] | None = None,
    **profile: object,
) -> Path:
    """Write ``bands`` ``(count, rows, cols)`` as a GeoTIFF (tiled 256 by default)."""
    count, rows, cols = bands.shape
    kwargs: dict = dict(
        driver="GTiff", width=cols, height=rows, count=count, dtype=bands.dtype.name, crs=crs, nodata=nodata
    )
    kwargs["transform"] = transform if transform is not None else Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0)
    if tiled:
        kwargs.update(tiled=True, blockxsize=256, blockysize=256)
    kwargs.update(profile)
    with rasterio.open(path, "w", **kwargs) as dst:
        dst.write(bands)
        if colorinterp is not None:
            dst.colorinterp = colorinterp
        elif count == 3:
            dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return path


def paint_box(image: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: tuple[int, ...] = WHITE) -> None:
    """Fill pixel columns ``x0:x1`` and rows ``y0:y1`` of a ``(count, rows, cols)`` image."""
    for band, value in enumerate(color[: image.shape[0]]):
        image[band, y0:y1, x0:x1] = value


def paint_rotated(
    image: np.ndarray, cx: float, cy: float, w: float, h: float, r: float, color: tuple[int, ...] = WHITE
) -> None:
    """Fill the pixels whose centres lie in a rotated rectangle (Ultralytics xywhr convention)."""
    half = 0.5 * np.hypot(w, h) + 1
    rows = np.arange(max(0, int(cy - half)), min(image.shape[1], int(cy + half) + 1))
    cols = np.arange(max(0, int(cx - half)), min(image.shape[2], int(cx + half) + 1))
    yy, xx = np.meshgrid(rows + 0.5, cols + 0.5, indexing="ij")
    du, dv = xx - cx, yy - cy
    u = du * np.cos(r) + dv * np.sin(r)
    v = -du * np.sin(r) + dv * np.cos(r)
    inside = (np.abs(u) <= w / 2) & (np.abs(v) <= h / 2)
    for band, value in enumerate(color[: image.shape[0]]):
        patch = image[band, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        patch[inside] = value


class BrightObjectPredictor:
    """A deterministic fake model: every bright blob (any channel > 127) of a tile is one detection.

    White blobs are ``aircraft``, yellow ones (blue channel dark) ``small-vehicle``. With ``task="obb"`` the
    boxes are rotated (principal axes of the blob). Records ``calls`` and ``tiles`` for the tests.
    """

    def __init__(self, imgsz: int = 256, task: str = "detect", gsd: float | None = None, min_pixels: int = 4):
        self.meta = make_meta(imgsz, task, gsd)
        self.min_pixels = min_pixels
        self.calls = 0
        self.tiles = 0

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        if (
            tiles.dtype != np.uint8
            or tiles.ndim != 4
            or tiles.shape[1:] != (self.meta.imgsz, self.meta.imgsz, 3)
        ):
            raise ValueError(f"bad tile batch {tiles.dtype} {tiles.shape}")
        self.calls += 1
        self.tiles += len(tiles)
        return [self._detect(t) for t in tiles]

    def _detect(self, tile: np.ndarray) -> Detections:
        labels, n = ndimage.label(tile.max(axis=-1) > 127, structure=np.ones((3, 3)))
        xyxy, xywhr, cls = [], [], []
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            rows, cols = np.nonzero(labels[sl] == k)
            if len(rows) < self.min_pixels:
                continue
            rows, cols = rows + sl[0].start, cols + sl[1].start
            blue = tile[rows, cols, 2].mean()
            cls.append(TAXONOMY.index("aircraft" if blue > 127 else "small-vehicle"))
            xyxy.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
            xywhr.append(_principal_box(cols + 0.5, rows + 0.5))
        task_obb = self.meta.task == "obb"
        if not cls:
            return Detections.empty(TAXONOMY, rotated=task_obb)
        boxes = np.array(xywhr, float)
        if task_obb:
            from detector.geometry import corners_to_xyxy, xywhr_to_corners

            xyxy = corners_to_xyxy(xywhr_to_corners(boxes))
        return Detections(
            xyxy=np.array(xyxy, float),
            scores=np.full(len(cls), 0.9, np.float32),
            class_ids=np.array(cls),
            class_names=TAXONOMY,
            xywhr=boxes if task_obb else None,
        )


def _principal_box(x: np.ndarray, y: np.ndarray) -> list[float]:
    """The rectangle along the principal axes of a set of pixel centres, ``[cx, cy, w, h, r]``."""
    pts = np.stack([x, y], axis=1)
    mean = pts.mean(axis=0)
    cov = np.cov((pts - mean).T) if len(pts) > 1 else np.eye(2)
    _, vecs = np.linalg.eigh(cov)
    u = vecs[:, 1]  # major axis
    r = float(np.arctan2(u[1], u[0])) % np.pi
    u = np.array([np.cos(r), np.sin(r)])
    v = np.array([-np.sin(r), np.cos(r)])
    pu, pv = (pts - mean) @ u, (pts - mean) @ v
    # a pixel centre is half a pixel inside the object's edge, whatever the direction
    pad_u = 0.5 * (abs(u[0]) + abs(u[1]))
    pad_v = 0.5 * (abs(v[0]) + abs(v[1]))
    cu, cv = (pu.max() + pu.min()) / 2, (pv.max() + pv.min()) / 2
    centre = mean + cu * u + cv * v
    return [
        float(centre[0]),
        float(centre[1]),
        float(pu.max() - pu.min() + 2 * pad_u),
        float(pv.max() - pv.min() + 2 * pad_v),
        r,
    ]
