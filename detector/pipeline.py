"""The :class:`Detector`: a scene in, :class:`~detector.detections.Detections` in scene pixels out.

The whole flow, top to bottom in :meth:`Detector.predict`:

    open the scene (band choice, one stretch per scene, nodata, GSD)       detector.raster
      -> tile grid, resampled to the model's GSD                           detector.tiling
      -> read tiles window by window, batch them (skip all-nodata tiles)   a background thread reads ahead
      -> predictor.predict_batch -> detections in tile pixels              detector.backends
      -> drop detections lying mostly on nodata, move to scene pixels, flag those cut by an inner tile edge
      -> merge across seams                                                detector.merge
      -> keep the requested classes, attach CRS / transform / GSD / source

Memory stays flat whatever the scene size: at most two batches of tiles are held, plus the detections.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import rasterio
import rasterio.env
from rasterio.windows import Window

from detector.backends.base import ModelMeta, Predictor
from detector.detections import Detections
from detector.geometry import corners
from detector.merge import merge_detections
from detector.raster import Scene, open_scene
from detector.tiling import TileConfig, TilePlan, plan_tiles

logger = logging.getLogger(__name__)

#: A detection within this many tile pixels of an inner tile edge counts as cut by it.
EDGE_MARGIN = 3.0
#: Detections whose footprint is less than this fraction valid (not nodata) are dropped.
MIN_VALID_FRACTION = 0.5
#: GDAL block cache (MB) while a scene is read, unless the caller set GDAL_CACHEMAX: tiles are read row by
#: row, so a few rows of blocks is all the cache can reuse; GDAL's default (5 % of RAM) only grows memory.
GDAL_CACHE_MB = 256

T = TypeVar("T")


class Detector:
    """Tiled, georeferenced detection with any :class:`~detector.backends.base.Predictor`.

    Args:
        predictor: the model (ONNX, PyTorch, or anything with ``meta`` and ``predict_batch``).
        merge_iou: IoU above which same-class detections from overlapping tiles are duplicates.
        merge_ios: intersection over the smaller footprint above which a detection cut by a tile edge is a
            piece of the other one.
        prefetch: read the next batch of tiles in a background thread while the model runs.
    """

    def __init__(
        self, predictor: Predictor, *, merge_iou: float = 0.5, merge_ios: float = 0.8, prefetch: bool = True
    ) -> None:
        self.predictor = predictor
        self.merge_iou = merge_iou
        self.merge_ios = merge_ios
        self.prefetch = prefetch

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        device: str = "cpu",
        conf: float = 0.25,
        iou: float = 0.6,
        threads: int | None = None,
    ) -> Detector:
        """A detector for a model file (``.onnx`` or ``.pt``); ``None`` loads the default model.

        ``conf`` and ``iou`` are the model's score threshold and its within-tile NMS threshold.
        """
        from detector.model import load_predictor

        return cls(load_predictor(path, device=device, conf=conf, iou=iou, threads=threads))

    @property
    def meta(self) -> ModelMeta:
        """The model's metadata (classes, input size, training GSD)."""
        return self.predictor.meta

    def predict(
        self,
        source: str | Path | np.ndarray,
        *,
        tile: TileConfig | None = None,
        classes: list[str] | None = None,
        bands: tuple[int, ...] | None = None,
        gsd: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Detections:
        """Detect objects in a scene.

        Args:
            source: a raster file GDAL reads, or an image array ``(rows, cols, channels)`` (RGB).
            tile: tiling (size, overlap, batch, resampling); default :class:`TileConfig()`.
            classes: keep only these class names (default: all).
            bands: 1-based band indexes read as red, green, blue (or one band for gray).
            gsd: scene ground sample distance in metres per pixel, overriding the georeferencing.
            progress: called as ``progress(done_tiles, total_tiles)`` after every batch.

        Returns:
            Detections in scene pixels with ``crs``, ``transform`` (full-resolution scene), ``gsd`` and
            ``source`` filled in; ``meta`` holds the scene size and tiling.

        Raises:
            RasterError: the source cannot be read (the message names it).
            ValueError: an unknown class name.
        """
        config = tile or TileConfig()
        wanted = self._class_ids(classes)
        meta = self.meta
        with _gdal_cache(), _open(source, bands, gsd) as scene:
            plan = plan_tiles(scene.width, scene.height, config, meta.imgsz, scene.gsd, meta.gsd)
            total = len(plan.windows)
            logger.info(
                "%s: %dx%d px, %d tiles of %d px (scale %.3g scene px per tile px)",
                scene.path,
                scene.width,
                scene.height,
                total,
                plan.size,
                plan.scale,
            )
            parts: list[Detections] = []
            cut_flags: list[np.ndarray] = []
            tile_bounds: list[np.ndarray] = []
            ran = 0
            if progress:
                progress(0, total)
            batches = _batches(scene, plan, config.batch)
            with contextlib.closing(_read_ahead(batches) if self.prefetch else batches) as stream:
                for batch in stream:
                    if batch.tiles:
                        results = self.predictor.predict_batch(np.stack(batch.tiles))
                        if len(results) != len(batch.tiles):
                            raise RuntimeError(
                                f"{type(self.predictor).__name__}.predict_batch returned {len(results)} results "
                                f"for {len(batch.tiles)} tiles"
                            )
                        for window, valid, dets in zip(batch.windows, batch.valid, results, strict=True):
                            dets = _drop_nodata(dets, valid)
                            cut_flags.append(
                                _cut_by_inner_edge(dets, window, plan, scene.width, scene.height)
                            )
                            parts.append(_to_scene(dets, window, plan.scale))
                            tile_bounds.append(np.tile(_bounds(window), (len(dets), 1)))
                        ran += len(batch.tiles)
                    if progress:
                        progress(batch.done, total)

            found = (
                Detections.concatenate(parts) if parts else Detections.empty(meta.names, meta.task == "obb")
            )
            merged = merge_detections(
                found,
                iou=self.merge_iou,
                ios=self.merge_ios,
                tile_edges=np.concatenate(cut_flags) if cut_flags else None,
                windows=np.concatenate(tile_bounds) if tile_bounds else None,
            )
            if wanted is not None:
                merged = merged[np.isin(merged.class_ids, wanted)]
            logger.info(
                "%s: %d detections (%d before merging), %d of %d tiles run",
                scene.path,
                len(merged),
                len(found),
                ran,
                total,
            )
            return replace(
                merged,
                crs=scene.crs,
                transform=scene.transform,
                gsd=scene.gsd,
                source=None if isinstance(source, np.ndarray) else str(source),
                meta={
                    "width": scene.width,
                    "height": scene.height,
                    "tile": plan.size,
                    "scale": plan.scale,
                    "tiles": total,
                    "tiles_run": ran,
                    "model": meta.name,
                },
            )

    def _class_ids(self, classes: list[str] | None) -> np.ndarray | None:
        if classes is None:
            return None
        names = self.meta.names
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise ValueError(f"unknown class {unknown[0]!r}; the model knows {', '.join(names)}")
        return np.array([names.index(c) for c in classes], np.int64)


def _gdal_cache() -> contextlib.AbstractContextManager:
    """A bounded GDAL block cache for this call, unless the caller configured one (environment or rasterio.Env)."""
    configured = "GDAL_CACHEMAX" in os.environ or (
        rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()
    )
    return (
        contextlib.nullcontext() if configured else rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB * 2**20)
    )  # rasterio takes bytes


def _open(source: str | Path | np.ndarray, bands: tuple[int, ...] | None, gsd: float | None) -> Scene:
    if isinstance(source, np.ndarray):
        return Scene.from_array(source, gsd=gsd, bands=bands)
    return open_scene(source, bands=bands, gsd=gsd)


@dataclass
class _Batch:
    """Tiles that hold valid pixels, ready for one model call; ``done`` counts every tile read so far."""

    windows: list[Window] = field(default_factory=list)
    tiles: list[np.ndarray] = field(default_factory=list)
    valid: list[np.ndarray] = field(default_factory=list)
    done: int = 0


def _batches(scene: Scene, plan: TilePlan, size: int) -> Generator[_Batch, None, None]:
    """Read the plan's tiles in order, skipping those without valid pixels, ``size`` tiles per batch."""
    batch = _Batch()
    for k, window in enumerate(plan.windows):
        rgb, valid = scene.read(window, out_shape=(plan.size, plan.size))
        if valid.any():
            batch.windows.append(window)
            batch.tiles.append(rgb)
            batch.valid.append(valid)
        if len(batch.tiles) == size:
            batch.done = k + 1
            yield batch
            batch = _Batch()
    batch.done = len(plan.windows)
    yield batch


def _read_ahead(items: Iterator[T]) -> Generator[T, None, None]:
    """Produce the next item in a background thread while the caller works on the current one.

    Only the worker thread touches ``items`` (one call at a time), so a raster dataset is never read from two
    threads at once. Closing this generator waits for the pending read before returning.
    """
    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector-read") as pool:
        future = pool.submit(next, items, done)
        while (item := future.result()) is not done:
            future = pool.submit(next, items, done)
            yield item  # type: ignore[misc]


def _drop_nodata(dets: Detections, valid: np.ndarray) -> Detections:
    """Drop detections (tile pixels) whose footprint is mostly outside the valid pixels of the tile."""
    if len(dets) == 0 or valid.all():
        return dets
    # 5 x 5 sample points spread over each (possibly rotated) footprint
    c = corners(dets)
    t = (np.arange(5) + 0.5) / 5
    s, u = np.meshgrid(t, t, indexing="ij")
    side1, side2 = c[:, 1] - c[:, 0], c[:, 3] - c[:, 0]
    points = (
        c[:, None, None, 0]
        + s[None, ..., None] * side1[:, None, None]
        + u[None, ..., None] * side2[:, None, None]
    )
    col = np.floor(points[..., 0]).astype(np.int64)
    row = np.floor(points[..., 1]).astype(np.int64)
    inside = (col >= 0) & (col < valid.shape[1]) & (row >= 0) & (row < valid.shape[0])
    ok = np.zeros(col.shape, bool)
    ok[inside] = valid[row[inside], col[inside]]
    fraction = ok.reshape(len(dets), -1).mean(axis=1)
    return dets[fraction >= MIN_VALID_FRACTION]


def _cut_by_inner_edge(
    dets: Detections, window: Window, plan: TilePlan, width: int, height: int
) -> np.ndarray:
    """True where a detection (tile pixels) touches a tile edge that is not the scene edge."""
    x0, y0, x1, y1 = dets.xyxy.T
    hi = plan.size - EDGE_MARGIN
    return (
        ((window.col_off > 0) & (x0 <= EDGE_MARGIN))
        | ((window.row_off > 0) & (y0 <= EDGE_MARGIN))
        | ((window.col_off + window.width < width) & (x1 >= hi))
        | ((window.row_off + window.height < height) & (y1 >= hi))
    )


def _bounds(window: Window) -> np.ndarray:
    return np.array(
        [window.col_off, window.row_off, window.col_off + window.width, window.row_off + window.height], float
    )


def _to_scene(dets: Detections, window: Window, scale: float) -> Detections:
    """Tile pixels -> scene pixels: ``scene = window offset + tile * scale``."""
    offset = np.array([window.col_off, window.row_off])
    xyxy = dets.xyxy * scale + np.tile(offset, 2)
    xywhr = None
    if dets.xywhr is not None:
        xywhr = dets.xywhr.copy()
        xywhr[:, :2] = xywhr[:, :2] * scale + offset
        xywhr[:, 2:4] *= scale
    return replace(dets, xyxy=xyxy, xywhr=xywhr)
