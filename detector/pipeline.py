"""The :class:`Detector`: a scene in, :class:`~detector.detections.Detections` in scene pixels out.

The whole flow, top to bottom in :meth:`Detector.predict`:

    open the scene (band choice, one stretch per scene, nodata, GSD)       detector.raster
      -> refuse a scene far coarser than the model's GSD range (unless forced)  detector.tiling
      -> tile grid, resampled into the model's GSD range                   detector.tiling
      -> read tiles window by window, batch them (skip all-nodata tiles)   a background thread reads ahead;
         tiles per call: TileConfig.batch, else the backend's own (1 on the CPU, 8 on CUDA)
      -> predictor.predict_batch -> detections in tile pixels              detector.backends
      -> drop detections lying mostly on nodata, move to scene pixels, flag those cut by an inner tile edge
      -> (optional) one downscaled whole-scene tile for objects larger than a tile
      -> merge across seams, then one label per object (cross-class rule)  detector.merge
      -> length_m / span_m, aircraft split into transport / small by size   detector.sizes
      -> keep the requested classes, attach CRS / transform / GSD / source

Memory stays flat whatever the scene size: at most two batches of tiles are held, plus the detections.

``predict`` is :meth:`Detector.predict_tiles` (every tile) then :meth:`Detector.merge_tiles`;
``detector.distributed`` runs blocks of tiles of a huge scene on several workers and merges them once, in tile
order, with the same two methods, so both paths give the same detections.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import rasterio
import rasterio.env
from rasterio.io import DatasetReaderBase
from rasterio.windows import Window

from detector.backends.base import ModelMeta, Predictor, preferred_batch
from detector.detections import Detections
from detector.errors import DetectorError, ModelError, RasterError
from detector.geometry import (
    clip_boxes,
    corners,
    model_cross_fill,
    model_disc_scale,
    model_rect_fill,
    with_discs,
    with_object_boxes,
)
from detector.merge import merge_cross_class, merge_detections
from detector.model import min_tile
from detector.raster import Scene, SceneSource, open_scene
from detector.sizes import SizeRules, apply_sizes, derived_names, load_size_rules
from detector.tiling import (
    RESOLUTION_FACTOR,
    TileConfig,
    TilePlan,
    check_resolution,
    coarse_plan,
    model_gsd_range,
    plan_tiles,
)

logger = logging.getLogger(__name__)

#: A detection within this many tile pixels of an inner tile edge counts as cut by it.
EDGE_MARGIN = 3.0
#: The coarse pass (``TileConfig(coarse=True)``) keeps the detections whose long side is more than this many
#: tile overlaps (scene pixels). 0 keeps all of them, as SAHI's whole-image pass does: measured on the KIT
#: MunichStreet02 strips with yolo26n-obb, all of them gave +0.011 mAP50 and only those larger than the
#: overlap (1.0) nothing; on the DOTA demo scenes all of them cost 0.003 (scripts/sahi_compare.py).
COARSE_MIN_OVERLAPS = 0.0
#: Detections whose footprint is less than this fraction valid (not nodata) are dropped.
MIN_VALID_FRACTION = 0.5
#: GDAL block cache while a scene is read, unless the caller set GDAL_CACHEMAX: tiles are read row by row, so the
#: cache only needs the rows of blocks under one row of tiles (:func:`_cache_bytes`), within these bounds (MB).
#: GDAL's default (5 % of RAM) and any fixed size only grow memory with the scene (generated 10k px GeoTIFF, all
#: 225 tiles read: peak RSS 376 MB with a 256 MB cache, 153 MB with 32 MB, the same 2.6 s).
GDAL_CACHE_MB = 256
GDAL_CACHE_MIN_MB = 16

T = TypeVar("T")


@dataclass(frozen=True)
class TileParts:
    """Detections of some tiles of one scene before the seam merge (:meth:`Detector.predict_tiles`); it pickles.

    A Dask worker sends one back per block of tiles of a split scene; :meth:`Detector.merge_tiles` joins the
    blocks in tile order. Coordinates are scene pixels, as in :class:`~detector.detections.Detections`.

    Attributes:
        source: the scene's file name (``"<array>"`` for an in-memory image).
        width, height: scene size in pixels (columns, rows).
        crs, transform, gsd: the scene's georeferencing (see :class:`~detector.raster.Scene`).
        tile: tile side in model pixels; ``scale``: scene pixels per tile pixel.
        tiles: tiles in the scene's whole plan; ``tiles_run``: tiles of this part that went through the model
            (tiles without valid pixels are skipped).
        found: the detections of this part's tiles in tile order, ``None`` when no tile was run.
        cut: bool ``(N,)``, True where a detection touches an inner edge of its tile.
        windows: float ``(N, 4)``, ``(x0, y0, x1, y1)`` of the tile each detection came from.
    """

    source: str
    width: int
    height: int
    crs: Any
    transform: Any
    gsd: float | None
    tile: int
    scale: float
    tiles: int
    tiles_run: int
    found: Detections | None
    cut: np.ndarray
    windows: np.ndarray


class Detector:
    """Tiled, georeferenced detection with any :class:`~detector.backends.base.Predictor`.

    Args:
        predictor: the model (ONNX, PyTorch, or anything with ``meta`` and ``predict_batch``).
        merge_iou: IoU above which same-class detections from overlapping tiles are duplicates.
        merge_ios: intersection over the smaller footprint above which a detection cut by a tile edge is a
            piece of the other one.
        prefetch: read the next batch of tiles in a background thread while the model runs.
        sizes: after merging, add ``length_m`` / ``span_m`` and split aircraft into ``transport-aircraft`` and
            ``small-aircraft`` by size (:mod:`detector.sizes`): ``True`` with the shipped rules
            (``configs/aircraft-sizes.yaml``), a :class:`~detector.sizes.SizeRules`, or ``False`` (off).
        object_boxes: for rotated detections, ``xyxy`` is the object's own axis-aligned box
            (:func:`detector.geometry.object_boxes`: a cross for aircraft, widened by the model file's
            ``cross_fill`` when it has one, a disc for helicopters, the rectangle for vehicles, narrowed
            towards its inscribed ellipse by the file's ``rect_fill`` when it has one) instead of the
            rectangle's enclosing box; the footprint stays rotated. For a detect model whose file carries a
            ``disc_scale``, a helicopter's fuselage box becomes its rotor disc's
            (:func:`detector.geometry.fuselage_discs`).
    """

    def __init__(
        self,
        predictor: Predictor,
        *,
        merge_iou: float = 0.5,
        merge_ios: float = 0.8,
        prefetch: bool = True,
        cross_class_iou: float | None = 0.8,
        resolution_factor: float | None = RESOLUTION_FACTOR,
        sizes: SizeRules | bool = True,
        object_boxes: bool = True,
    ) -> None:
        if cross_class_iou is not None and not 0 <= cross_class_iou <= 1:
            raise ValueError(f"cross_class_iou must be in [0, 1] (0 or None: off), got {cross_class_iou!r}")
        if resolution_factor is not None and not resolution_factor >= 0:
            raise ValueError(
                f"resolution_factor must be >= 0 (0 or None: never refuse), got {resolution_factor!r}"
            )
        self.predictor = predictor
        self.merge_iou = merge_iou
        self.merge_ios = merge_ios
        self.prefetch = prefetch
        self.cross_class_iou = cross_class_iou
        self.resolution_factor = resolution_factor
        self.sizes = load_size_rules() if sizes is True else (sizes or None)
        self.object_boxes = object_boxes
        try:
            self.cross_fill = model_cross_fill(predictor.meta)
            self.rect_fill = model_rect_fill(predictor.meta)
            self.disc_scale = model_disc_scale(predictor.meta)
        except ValueError as e:
            raise ModelError(f"{getattr(predictor, 'path', 'the model')}: {e}") from e

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        *,
        device: str = "cpu",
        conf: float = 0.25,
        iou: float = 0.6,
        threads: int | None = None,
        runtime: str = "onnxruntime",
        streams: int | None = None,
        **options: Any,
    ) -> Detector:
        """A detector for a model file (``.onnx`` or ``.pt``); ``None`` loads the default model.

        ``conf`` and ``iou`` are the model's score threshold and its within-tile NMS threshold; ``runtime``
        runs ``.onnx`` files with ``"onnxruntime"`` or ``"openvino"``, ``streams`` tiles at once on the CPU (see
        :func:`detector.model.load_predictor`).
        ``options`` go to the constructor (``cross_class_iou``, ``resolution_factor``, ``merge_iou``, ...).
        """
        from detector.model import load_predictor

        predictor = load_predictor(
            path, device=device, conf=conf, iou=iou, threads=threads, runtime=runtime, streams=streams
        )
        return cls(predictor, **options)

    @property
    def meta(self) -> ModelMeta:
        """The model's metadata (classes, input size, training GSD)."""
        return self.predictor.meta

    @property
    def class_names(self) -> tuple[str, ...]:
        """The class names of the detections: the model's, then the classes derived from them by size
        (``transport-aircraft``, ``small-aircraft``; see :mod:`detector.sizes`) unless ``sizes`` is off."""
        names = tuple(self.meta.names)
        return names + derived_names(names, self.sizes)

    def predict(
        self,
        source: SceneSource,
        *,
        tile: TileConfig | None = None,
        classes: list[str] | None = None,
        bands: tuple[int, ...] | None = None,
        gsd: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        force: bool = False,
        with_scene: Callable[[Scene], object] | None = None,
    ) -> Detections:
        """Detect objects in a scene.

        Args:
            source: a raster file GDAL reads, an open rasterio dataset (its CRS, transform and nodata are
                kept; it stays open), a PIL image, or an image array: ``(rows, cols, channels)`` (band-last,
                RGB) or ``(channels, rows, cols)`` (band-first, as ``rasterio`` reads it) with 1 to 4 channels
                and more than 4 rows and columns; any other shape is a ``RasterError`` (the rule is
                :meth:`~detector.raster.Scene.from_array`'s).
            tile: tiling (size, overlap, batch, resampling); default :class:`TileConfig()` (tiles per model
                call: the backend's choice, :meth:`tiles_per_call`).
            classes: keep only these class names (default: all); ``aircraft`` keeps the classes split from it
                by size too (``transport-aircraft``, ``small-aircraft``), which can also be asked for alone.
            bands: 1-based band indexes read as red, green, blue (or one band for gray).
            gsd: scene ground sample distance in metres per pixel, overriding the georeferencing.
            progress: called as ``progress(done_tiles, total_tiles)`` after every batch.
            force: run a scene far coarser than the model's GSD range anyway (see ``resolution_factor``).
            with_scene: called with the open scene once its tiles are read, before it is closed (the batch
                reads its quicklook's view there, while a PNG or JPEG decoded whole is still in memory).

        Returns:
            Detections in scene pixels with ``crs``, ``transform`` (full-resolution scene), ``gsd`` and
            ``source`` filled in; ``meta`` holds the scene size and tiling, and ``size_known`` (False when
            the scene's GSD is unknown: no sizes in metres, no resampling, no resolution check).

        Raises:
            RasterError: the source cannot be read (the message names it).
            ResolutionError: the scene's GSD is far coarser than the model's range and ``force`` is off.
            ValueError: an unknown class name.
        """
        self._class_ids(classes)  # an unknown class fails before the scene is read
        parts = self.predict_tiles(
            source, tile=tile, bands=bands, gsd=gsd, progress=progress, force=force, with_scene=with_scene
        )
        merged = self.merge_tiles([parts], classes=classes)
        return merged if isinstance(source, (str, Path, DatasetReaderBase)) else replace(merged, source=None)

    def predict_many(
        self,
        sources: SceneSource | str | Path | Sequence[SceneSource | str | Path],
        *,
        on_error: str = "raise",
        **options: Any,
    ) -> Iterator[Detections]:
        """Detect objects in many scenes, one :class:`Detections` per scene, in order, lazily.

        Args:
            sources: what ``detector predict`` takes (files, folders searched for images, glob patterns),
                one or a list of them, and anything :meth:`predict` takes (arrays, PIL images, open rasterio
                datasets). Our own outputs (``*.quicklook.*``) are never read as scenes.
            on_error: ``"raise"`` (the first scene that fails raises, naming it) or ``"skip"`` (a failed
                scene is logged as one line and left out; the others go on).
            **options: keyword arguments of :meth:`predict` (``tile``, ``classes``, ``bands``, ``gsd``,
                ``force``), the same for every scene.

        Raises:
            RasterError: a path argument names nothing (with ``on_error="raise"``).
            DetectorError: a scene fails (with ``on_error="raise"``).
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        items = (
            [sources] if isinstance(sources, (str, Path)) or not isinstance(sources, Sequence) else sources
        )
        for item in items:
            if isinstance(item, (str, Path)):
                from detector.batch import expand_sources

                scenes, missing = expand_sources([str(item)])
                for arg, problem in missing:
                    if on_error == "raise":
                        raise RasterError(f"{arg}: {problem}")
                    logger.error("%s: %s", arg, problem)
                todo: list[Any] = list(scenes)
            else:
                todo = [item]
            for scene in todo:
                try:
                    yield self.predict(scene, **options)
                except DetectorError as e:
                    if on_error == "raise":
                        raise
                    logger.error("%s", " ".join(str(e).split()))

    def predict_tiles(
        self,
        source: SceneSource,
        tiles: Sequence[int] | None = None,
        *,
        tile: TileConfig | None = None,
        bands: tuple[int, ...] | None = None,
        gsd: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        force: bool = False,
        coarse: bool | None = None,
        with_scene: Callable[[Scene], object] | None = None,
    ) -> TileParts:
        """Run the model on some tiles of a scene: their detections in scene pixels, before the seam merge.

        :meth:`predict` runs every tile; a Dask worker runs one block of them (``detector.distributed``), and
        :meth:`merge_tiles` joins the blocks, in tile order, into exactly what :meth:`predict` returns.

        Args:
            source, tile, bands, gsd, force, with_scene: as for :meth:`predict`.
            tiles: indexes into the scene's :meth:`plan` windows, in increasing order (default: all of them).
            progress: called as ``progress(done_tiles, total_tiles)`` after every batch, counting these tiles.
            coarse: add the coarse pass of ``tile.coarse`` (default: when every tile is run). A split scene runs
                it once, as a last block of no tiles (``tiles=[]``, ``coarse=True``), so blocks merge as
                :meth:`predict` does.

        Raises:
            RasterError: the source cannot be read (the message names it).
            IndexError: a tile index outside the plan.
        """
        config = tile or TileConfig()
        own_cache = not _cache_configured()
        with _gdal_cache(GDAL_CACHE_MB * 2**20 if own_cache else None), _open(source, bands, gsd) as scene:
            plan = self.plan(scene, config, force=force)
            with _gdal_cache(_cache_bytes(scene, plan) if own_cache else None):
                parts = self._run_tiles(
                    scene, plan, tiles, batch=self.tiles_per_call(config), progress=progress
                )
                if config.coarse and (tiles is None if coarse is None else coarse):
                    parts = self._add_coarse(scene, plan, config, parts)
            if with_scene is not None:
                with_scene(scene)
            return parts

    def tiles_per_call(self, tile: TileConfig | None = None) -> int:
        """Tiles per model call for this tiling: ``tile.batch`` when set, else the predictor's
        ``preferred_batch`` (onnxruntime / OpenVINO / PyTorch on the CPU: 1, on CUDA: 8), else 8 for a
        predictor that does not say (:func:`detector.backends.base.preferred_batch`)."""
        return preferred_batch(self.predictor, (tile or TileConfig()).batch)

    def plan(self, scene: Scene, tile: TileConfig | None = None, *, force: bool = False) -> TilePlan:
        """The tile plan of an open scene for this model (the same for every process that opens the scene).

        Raises:
            ResolutionError: the scene's GSD is far coarser than the model's range and ``force`` is off.
        """
        config = tile or TileConfig()
        meta = self.meta
        gsd_range = model_gsd_range(meta)
        factor = self.resolution_factor or 0
        check_resolution(scene.gsd, gsd_range, factor=factor, force=force, source=scene.path)
        if scene.gsd is None:
            logger.info("%s: GSD unknown (no georeferencing, no --gsd): object sizes are unknown", scene.path)
        plan = plan_tiles(
            scene.width,
            scene.height,
            config,
            meta.imgsz,
            scene.gsd,
            meta.gsd_range,
            model_gsd=meta.gsd,
            fit=self._rect_tiles(),
            min_size=min_tile(meta),
            any_size=self._any_tile_size(),
        )
        logger.info(
            "%s: %dx%d px, %d tiles of %d px (scale %.3g scene px per tile px), %d per model call",
            scene.path,
            scene.width,
            scene.height,
            len(plan.windows),
            plan.size,
            plan.scale,
            self.tiles_per_call(config),
        )
        return plan

    def _run_tiles(
        self,
        scene: Scene,
        plan: TilePlan,
        tiles: Sequence[int] | None,
        *,
        batch: int,
        progress: Callable[[int, int], None] | None,
    ) -> TileParts:
        windows = plan.windows if tiles is None else [plan.windows[k] for k in tiles]
        total = len(windows)
        parts: list[Detections] = []
        cut_flags: list[np.ndarray] = []
        tile_bounds: list[np.ndarray] = []
        ran = 0
        if progress:
            progress(0, total)
        batches = _batches(scene, windows, plan.out_shape, batch)
        # e.g. OpenVINO compiles for the first batch's shape, while its tiles are read
        prepare = getattr(self.predictor, "prepare", None)
        first = (min(batch, total), *plan.out_shape, 3)
        get_ready = functools.partial(prepare, first) if prepare is not None and windows else None
        if self.prefetch:
            batches = _read_ahead(batches, meanwhile=get_ready)
        elif get_ready is not None:
            get_ready()
        with contextlib.closing(batches) as stream:
            for chunk in stream:
                if chunk.tiles:
                    results = self.predictor.predict_batch(chunk.stacked())
                    if len(results) != len(chunk.tiles):
                        raise RuntimeError(
                            f"{type(self.predictor).__name__}.predict_batch returned {len(results)} results "
                            f"for {len(chunk.tiles)} tiles"
                        )
                    for window, valid, dets in zip(chunk.windows, chunk.valid, results, strict=True):
                        dets = _drop_nodata(dets, valid)
                        cut_flags.append(_cut_by_inner_edge(dets, window, plan, scene.width, scene.height))
                        parts.append(_to_scene(dets, window, plan.scale))
                        tile_bounds.append(np.tile(_bounds(window), (len(dets), 1)))
                    ran += len(chunk.tiles)
                if progress:
                    progress(chunk.done, total)
        return TileParts(
            source=scene.path,
            width=scene.width,
            height=scene.height,
            crs=scene.crs,
            transform=scene.transform,
            gsd=scene.gsd,
            tile=plan.size,
            scale=plan.scale,
            tiles=len(plan.windows),
            tiles_run=ran,
            found=Detections.concatenate(parts) if parts else None,
            cut=np.concatenate(cut_flags) if cut_flags else np.zeros(0, bool),
            windows=np.concatenate(tile_bounds) if tile_bounds else np.zeros((0, 4)),
        )

    def merge_tiles(self, parts: Sequence[TileParts], *, classes: list[str] | None = None) -> Detections:
        """Merge the tile detections of one scene across the seams (blocks in tile order), then finish them.

        Args:
            parts: :meth:`predict_tiles` results of one scene whose tiles, taken in order, are the plan's tiles
                in order (one part for :meth:`predict`; one per block for a split scene).
            classes: keep only these class names (default: all).

        Returns:
            Detections as :meth:`predict` documents them.
        """
        if not parts:
            raise ValueError("merge_tiles needs the tile parts of one scene, got none")
        wanted = self._class_ids(classes)
        first = parts[0]
        other = [p.source for p in parts if (p.source, p.tiles) != (first.source, first.tiles)]
        if other:
            raise ValueError(f"merge_tiles got parts of {other[0]} with parts of {first.source}")
        meta = self.meta
        found_parts = [p.found for p in parts if p.found is not None]
        ran = sum(p.tiles_run for p in parts)
        found = (
            Detections.concatenate(found_parts)
            if found_parts
            else Detections.empty(meta.names, meta.task == "obb")
        )
        merged = merge_detections(
            found,
            iou=self.merge_iou,
            ios=self.merge_ios,
            tile_edges=np.concatenate([p.cut for p in parts]) if found_parts else None,
            windows=np.concatenate([p.windows for p in parts]) if found_parts else None,
        )
        if self.cross_class_iou:
            merged = merge_cross_class(merged, iou=self.cross_class_iou)
        if (
            self.object_boxes
        ):  # rotated aircraft / helicopters: xyxy is the cross's / disc's box, not the corners'
            merged = with_object_boxes(merged, self.cross_fill, self.rect_fill)
            if self.disc_scale is not None:  # a detect model's fuselage boxes -> rotor discs
                merged = with_discs(merged, self.disc_scale)
        merged = clip_boxes(merged, first.width, first.height)
        if self.sizes is not None:  # length_m / span_m; aircraft -> transport- / small-aircraft
            merged = apply_sizes(replace(merged, gsd=first.gsd, source=first.source), self.sizes)
        if wanted is not None:
            merged = merged[np.isin(merged.class_ids, wanted)]
        logger.info(
            "%s: %d detections (%d before merging), %d of %d tiles run",
            first.source,
            len(merged),
            len(found),
            ran,
            first.tiles,
        )
        return replace(
            merged,
            crs=first.crs,
            transform=first.transform,
            gsd=first.gsd,
            source=first.source,
            meta={
                "width": first.width,
                "height": first.height,
                "tile": first.tile,
                "scale": first.scale,
                "tiles": first.tiles,
                "tiles_run": ran,
                "model": meta.name,
                "size_known": first.gsd is not None,
                "gsd_range": model_gsd_range(meta),
            },
        )

    def _rect_tiles(self) -> bool:
        """Whether the predictor says it runs non-square tiles (``rect_tiles = True``): tiles are then fitted
        to strips and small scenes (:func:`~detector.tiling.plan_tiles`)."""
        return bool(getattr(self.predictor, "rect_tiles", False))

    def _any_tile_size(self) -> bool:
        """Whether the predictor runs square tiles of any multiple of 32: it says ``rect_tiles = True``, or it
        has a ``fixed_size`` attribute that is ``None`` (an ONNX / OpenVINO file exported with a dynamic
        input). Such a predictor gets the balanced grid of ``TileConfig.grow``; any other keeps its imgsz."""
        p = self.predictor
        return self._rect_tiles() or (hasattr(p, "fixed_size") and p.fixed_size is None)

    def _add_coarse(self, scene: Scene, plan: TilePlan, config: TileConfig, parts: TileParts) -> TileParts:
        """Run the whole scene as one downscaled tile (:func:`~detector.tiling.coarse_plan`) and add what it
        finds (larger than :data:`COARSE_MIN_OVERLAPS` tile overlaps) to the tiled detections, after them
        (tile order is kept); the seam merge then keeps one of each object."""
        size = int(config.tile or self.meta.imgsz)
        coarse = coarse_plan(scene.width, scene.height, size, plan.scale)
        if coarse is None or len(plan.windows) == 1:  # one tile already holds the scene at the tiled scale
            return parts
        extra = self._run_tiles(scene, coarse, None, batch=1, progress=None)
        if extra.found is None or len(extra.found) == 0:
            return replace(parts, tiles_run=parts.tiles_run + extra.tiles_run)
        sides = extra.found.xyxy[:, 2:] - extra.found.xyxy[:, :2]
        # the configured overlap of the nominal tile (a balanced grid's larger tiles keep it, not a fraction)
        big = sides.max(axis=1) > COARSE_MIN_OVERLAPS * config.overlap_px(size) * plan.scale
        found = extra.found[big]
        logger.info("%s: coarse pass at scale %.3g: %d detections kept", scene.path, coarse.scale, len(found))
        joined = [p for p in (parts.found, found) if p is not None]
        return replace(
            parts,
            tiles_run=parts.tiles_run + extra.tiles_run,
            found=Detections.concatenate(joined),
            cut=np.concatenate([parts.cut, np.zeros(len(found), bool)]),
            windows=np.concatenate([parts.windows, extra.windows[big]]),
        )

    def _class_ids(self, classes: list[str] | None) -> np.ndarray | None:
        if classes is None:
            return None
        names = self.class_names
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise ValueError(f"unknown class {unknown[0]!r}; the model knows {', '.join(names)}")
        keep = list(classes)
        if self.sizes is not None and self.sizes.parent in keep:  # aircraft: whatever their size
            keep += [c for c in self.sizes.derived if c in names]
        return np.array(sorted({names.index(c) for c in keep}), np.int64)


def _cache_configured() -> bool:
    """Whether the caller set GDAL's block cache (environment or rasterio.Env): then it is left alone."""
    return "GDAL_CACHEMAX" in os.environ or (
        rasterio.env.hasenv() and "GDAL_CACHEMAX" in rasterio.env.getenv()
    )


def _gdal_cache(nbytes: int | None) -> contextlib.AbstractContextManager:
    """GDAL's block cache bounded to ``nbytes`` inside the block (``None``: as it is)."""
    return contextlib.nullcontext() if nbytes is None else rasterio.Env(GDAL_CACHEMAX=int(nbytes))


def _cache_bytes(scene: Scene, plan: TilePlan) -> int:
    """Bytes of the rows of blocks that one row of tiles touches (at most ``(tile - 1) // block + 2`` of them),
    plus a tenth for masks: what the next row of tiles, which overlaps this one, finds cached; between
    :data:`GDAL_CACHE_MIN_MB` and :data:`GDAL_CACHE_MB`."""
    block_rows = scene.block_shape[0]
    tile_rows = math.ceil(plan.out_shape[0] * plan.scale)  # scene pixels under one tile
    rows = ((tile_rows - 1) // block_rows + 2) * block_rows
    row_bytes = scene.width * len(set(scene.bands)) * np.dtype(scene.dtype).itemsize
    need = int(1.1 * rows * row_bytes)
    return int(np.clip(need, GDAL_CACHE_MIN_MB * 2**20, GDAL_CACHE_MB * 2**20))  # rasterio takes bytes


def _open(source: SceneSource, bands: tuple[int, ...] | None, gsd: float | None) -> Scene:
    return open_scene(source, bands=bands, gsd=gsd)  # a file, a rasterio dataset, a PIL image or an array


@dataclass
class _Batch:
    """Tiles that hold valid pixels, ready for one model call; ``done`` counts every tile read so far."""

    windows: list[Window] = field(default_factory=list)
    tiles: list[np.ndarray] = field(default_factory=list)
    valid: list[np.ndarray] = field(default_factory=list)
    done: int = 0
    array: np.ndarray | None = None

    def stack(self) -> None:
        """Stack the tiles into one ``(B, rows, cols, 3)`` array now (in the read-ahead thread, off the model's
        path), keeping views of it as the tiles."""
        if self.tiles and self.array is None:
            self.array = np.stack(self.tiles)
            self.tiles = list(self.array)

    def stacked(self) -> np.ndarray:
        """The tiles as one ``(B, rows, cols, 3)`` array."""
        self.stack()
        return self.array  # type: ignore[return-value]


def _batches(
    scene: Scene, windows: Sequence[Window], tile: tuple[int, int], size: int
) -> Generator[_Batch, None, None]:
    """Read ``windows`` in order as tiles of ``tile`` (rows, cols) px, skipping those without valid pixels,
    ``size`` per batch."""
    batch = _Batch()
    for k, window in enumerate(windows):
        rgb, valid = scene.read(window, out_shape=tile)
        if valid.any():
            batch.windows.append(window)
            batch.tiles.append(rgb)
            batch.valid.append(valid)
        if len(batch.tiles) == size:
            batch.done = k + 1
            batch.stack()
            yield batch
            batch = _Batch()
    batch.done = len(windows)
    batch.stack()
    yield batch


def _read_ahead(
    items: Iterator[T], meanwhile: Callable[[], object] | None = None
) -> Generator[T, None, None]:
    """Produce the next item in a background thread while the caller works on the current one.

    Only the worker thread touches ``items`` (one call at a time), so a raster dataset is never read from two
    threads at once. ``meanwhile`` runs in the caller's thread while the first item is read. Closing this
    generator waits for the pending read before returning.
    """
    done = object()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="detector-read") as pool:
        future = pool.submit(next, items, done)
        if meanwhile is not None:
            meanwhile()
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
    rows, cols = plan.out_shape
    return (
        ((window.col_off > 0) & (x0 <= EDGE_MARGIN))
        | ((window.row_off > 0) & (y0 <= EDGE_MARGIN))
        | ((window.col_off + window.width < width) & (x1 >= cols - EDGE_MARGIN))
        | ((window.row_off + window.height < height) & (y1 >= rows - EDGE_MARGIN))
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
