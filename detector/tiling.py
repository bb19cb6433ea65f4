"""The tile grid: which windows of a scene the model sees, and at what scale (pure functions).

Windows are ``rasterio.windows.Window`` objects in **scene pixels** of the full-resolution raster. Each window
is read with ``out_shape=(size, size)`` (``size`` is the tile side in model input pixels), so one tile pixel
covers ``scale`` scene pixels: ``scene = window offset + tile * scale``.

Resolution: a model knows the range of ground sample distances it was trained for (``ModelMeta.gsd_range``,
metres per pixel). A scene inside the range runs at its own resolution; a finer scene is resampled to the
range's fine end, a coarser one to its coarse end (:func:`resample_scale`, at most :data:`MAX_ZOOM` either
way); a scene far coarser than the range (:func:`check_resolution`) is refused unless forced, since its
"objects" would be larger than anything the model has seen. A scene whose GSD is unknown runs as it is.

Grid: a model with a fixed input size runs tiles of exactly that size, stepping by ``tile - overlap``. A model
that runs any multiple of 32 gets a balanced grid (:func:`balanced_tile`): the tile may grow up to
``TileConfig.grow`` times its nominal size when the scene then needs fewer model pixels, and the tiles are
spread evenly, each overlap at least the configured one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from rasterio.windows import Window

from detector.errors import ResolutionError
from detector.model import STRIDE

logger = logging.getLogger(__name__)

#: A model that knows only one training GSD (``ModelMeta.gsd``) runs scenes within this fraction of it as
#: they are: its range is ``gsd / (1 + t)`` to ``gsd * (1 + t)``.
RESAMPLE_TOLERANCE = 0.10
#: Never zoom a scene by more than this factor in either direction.
MAX_ZOOM = 4.0
#: A scene whose GSD is coarser than the model's coarsest training GSD times this is refused (unless forced).
RESOLUTION_FACTOR = 2.0
#: The largest :attr:`TileConfig.grow` (tiles far larger than the training size see objects in a context the
#: model never saw in one piece; 1.25 is what was measured).
MAX_GROW = 2.0


@dataclass(frozen=True)
class TileConfig:
    """How a scene is cut into tiles.

    Attributes:
        tile: tile size in model input pixels, a multiple of 32 (the models' stride); ``None`` uses the
            model's input size (``meta.imgsz``). Models exported before dynamic tile sizes accept only
            their ``imgsz``.
        overlap: overlap between neighbouring tiles: a fraction of the tile below 1, pixels from 1 up.
        batch: tiles per model call; ``None`` (the default) lets the model's backend choose
            (``Predictor.preferred_batch``: 1 on the CPU, 8 on CUDA; see
            :func:`detector.backends.base.preferred_batch`).
        resample: resample a scene whose GSD is known into the model's training GSD range (see the module
            docstring).
        fit: for models that run non-square tiles, fit the tile to a scene shorter than it along one axis (a
            strip, a small chip; see :func:`plan_tiles`) instead of padding most of it.
        coarse: also run the whole scene once, downscaled to one tile, and merge what it finds with the
            tiled result (for objects larger than a tile; see :func:`coarse_plan`).
        grow: for models that run square tiles of any multiple of 32 (dynamic input), tiles may grow up to
            ``grow`` times ``tile`` when that needs fewer model pixels for the scene (a balanced grid, see
            :func:`balanced_tile`); 1.0 keeps ``tile``. Models with a fixed input size always run ``tile``.
        zoom: magnify the scene by this factor on top of any GSD resampling (objects look ``zoom`` times
            larger to the model, at ``zoom ** 2`` times the model pixels; below 1 shrinks). Small objects
            gain: 1.5 measured (2026-12-02, the shipped detect model, ``detector eval --zoom 1.5``) AP50
            gdit-airport/test aircraft 0.916 -> 0.946, hrplanes/test 0.981 -> 0.985, isaid-512/test small
            vehicles 0.521 -> 0.612 and large vehicles 0.363 -> 0.430; but helicopters as rotor discs
            (isaid-512/test-disc) 0.888 -> 0.727 (more false helicopters at the same recall), and nothing on
            the 0.12-0.13 m aerial scenes (dota/demo -0.004 / -0.002, KIT +0.008). So 1.0 stays the default
            (``detector change`` zooms scenes of 0.3 m/px or coarser: :func:`detector.change.change_zoom`).
    """

    tile: int | None = None
    overlap: float = 0.2
    batch: int | None = None
    resample: bool = True
    fit: bool = True
    coarse: bool = False
    grow: float = 1.25
    zoom: float = 1.0

    def __post_init__(self) -> None:
        if self.tile is not None and (int(self.tile) != self.tile or self.tile < 1):
            raise ValueError(f"TileConfig.tile must be a positive integer or None, got {self.tile!r}")
        if self.tile is not None and self.tile % STRIDE:
            lo = max(STRIDE, int(self.tile) // STRIDE * STRIDE)
            raise ValueError(
                f"TileConfig.tile must be a multiple of {STRIDE} (the model's stride), got {self.tile!r}; "
                f"try {lo} or {lo + STRIDE}"
            )
        if not self.overlap >= 0:
            raise ValueError(
                f"TileConfig.overlap must be >= 0 (fraction below 1, else pixels), got {self.overlap!r}"
            )
        if self.batch is not None and (int(self.batch) != self.batch or self.batch < 1):
            raise ValueError(f"TileConfig.batch must be a positive integer or None, got {self.batch!r}")
        if not (1.0 <= self.grow <= MAX_GROW):
            raise ValueError(f"TileConfig.grow must be between 1.0 and {MAX_GROW}, got {self.grow!r}")
        if not (1 / MAX_ZOOM <= self.zoom <= MAX_ZOOM):
            raise ValueError(
                f"TileConfig.zoom must be between {1 / MAX_ZOOM} and {MAX_ZOOM}, got {self.zoom!r}"
            )

    def overlap_px(self, tile: int) -> int:
        """The overlap in pixels for tiles of ``tile`` pixels."""
        px = int(round(self.overlap * tile)) if self.overlap < 1 else int(round(self.overlap))
        if px >= tile:
            raise ValueError(
                f"TileConfig.overlap of {self.overlap!r} gives {px} px, not less than the {tile} px tile"
            )
        return px


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one scene.

    Attributes:
        windows: windows in scene pixels, row-major order.
        size: side of every tile in model input pixels (the ``out_shape`` of each read), or the long side of
            non-square tiles; larger than the nominal tile in a balanced grid (:func:`balanced_tile`).
        scale: scene pixels per tile pixel (1.0 when the scene is not resampled).
        shape: ``(rows, cols)`` of non-square tiles in model input pixels (fitted to a strip or a small
            scene, see :func:`plan_tiles`); ``None`` for square ``size`` x ``size`` tiles.
    """

    windows: list[Window]
    size: int
    scale: float
    shape: tuple[int, int] | None = None

    @property
    def out_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of every tile in model input pixels."""
        return self.shape or (self.size, self.size)


def tile_grid(
    width: int,
    height: int,
    tile: int,
    overlap_px: int,
    *,
    tile_rows: int | None = None,
    spread: bool = False,
) -> list[Window]:
    """Square windows covering a ``width`` x ``height`` scene, in row-major order.

    Tiles step by ``tile - overlap_px``; the last tile of a row or column is shifted back to end at the scene
    edge, so every tile is full. Along an axis shorter than the tile there is one tile starting at 0 that
    passes the edge (the read pads it). ``tile_rows`` makes the windows ``tile`` wide and ``tile_rows`` high
    (the overlap is then at most ``tile_rows - 1`` between rows). ``spread``: the same number of tiles per
    axis, spaced evenly from one edge to the other (steps differ by at most 1 px, every overlap is at least
    ``overlap_px``) instead of one short last step.
    """
    rows_px = tile if tile_rows is None else int(tile_rows)
    if tile < 1 or rows_px < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile!r} x {tile_rows!r}")
    if not 0 <= overlap_px < tile:
        raise ValueError(f"overlap_px must be in [0, {tile}) for a {tile} px tile, got {overlap_px!r}")
    if width < 1 or height < 1:
        raise ValueError(f"scene size must be positive, got {width}x{height}")
    cols = _offsets(width, tile, tile - overlap_px, spread)
    rows = _offsets(height, rows_px, rows_px - min(overlap_px, rows_px - 1), spread)
    return [Window(c, r, tile, rows_px) for r in rows for c in cols]


def tiles_along(extent: int, tile: int, overlap_px: int) -> int:
    """Tiles of ``tile`` px overlapping by at least ``overlap_px`` that cover ``extent`` px: the smallest
    ``n`` with ``n * tile - (n - 1) * overlap_px >= extent`` (1 when the extent fits one tile)."""
    if extent <= tile:
        return 1
    return math.ceil((extent - tile) / (tile - overlap_px)) + 1


def _offsets(size: int, tile: int, stride: int, spread: bool = False) -> list[int]:
    n = tiles_along(size, tile, tile - stride)
    if n == 1:
        return [0]
    if spread:  # integer steps of floor or ceil((size - tile) / (n - 1)), never above ``stride``
        return [i * (size - tile) // (n - 1) for i in range(n)]
    return [min(i * stride, size - tile) for i in range(n)]


def model_gsd_range(meta: Any) -> tuple[float, float] | None:
    """The GSD range ``(finest, coarsest)`` in m/px a model was trained for, or ``None`` when unknown.

    ``meta.gsd_range`` when the model file carries one; else a narrow range around ``meta.gsd`` (see
    :data:`RESAMPLE_TOLERANCE`); else ``None``.
    """
    rng = getattr(meta, "gsd_range", None)
    if rng:
        lo, hi = (float(v) for v in rng)
        return (lo, hi)
    gsd = getattr(meta, "gsd", None)
    return point_range(float(gsd)) if gsd else None


def point_range(gsd: float) -> tuple[float, float]:
    """The range of a model that knows one training GSD: within :data:`RESAMPLE_TOLERANCE` of it."""
    return (gsd / (1 + RESAMPLE_TOLERANCE), gsd * (1 + RESAMPLE_TOLERANCE))


def _check_range(gsd_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in gsd_range)
    if not 0 < lo <= hi or not math.isfinite(hi):
        raise ValueError(f"a GSD range must be 0 < finest <= coarsest (m/px), got {gsd_range!r}")
    return lo, hi


def format_gsd(gsd: float) -> str:
    """``300`` -> ``"300"``, ``0.125`` -> ``"0.125"``, ``1234.5`` -> ``"1234"`` (for messages)."""
    return f"{gsd:.3g}" if gsd < 1000 else f"{gsd:.0f}"


def check_resolution(
    scene_gsd: float | None,
    gsd_range: tuple[float, float] | None,
    *,
    factor: float = RESOLUTION_FACTOR,
    force: bool = False,
    source: str = "",
) -> None:
    """Refuse a scene far coarser than the model's training range.

    Args:
        scene_gsd: the scene's metres per pixel (``None``: unknown, always accepted).
        gsd_range: the model's ``(finest, coarsest)`` training GSD (``None``: unknown, always accepted).
        factor: refuse scenes coarser than ``coarsest * factor``; ``None``-like ``0`` or ``inf`` never refuses.
        force: only log a warning instead of refusing.
        source: the scene's name, for the message.

    Raises:
        ResolutionError: ``scene_gsd > coarsest * factor`` and not ``force``; one line naming the scene's GSD
            and the model's range.
    """
    if not scene_gsd or not gsd_range or not factor or not math.isfinite(factor):
        return
    lo, hi = _check_range(gsd_range)
    if scene_gsd <= hi * factor:
        return
    what = (
        f"scene GSD {format_gsd(scene_gsd)} m/px is far coarser than the model's range "
        f"{format_gsd(lo)}-{format_gsd(hi)} m/px"
    )
    if force:
        logger.warning("%s: %s; running anyway (forced)", source or "scene", what)
        return
    raise ResolutionError(f"{source + ': ' if source else ''}{what}; pass --force-resolution to run anyway")


def resample_scale(
    scene_gsd: float | None, gsd_range: tuple[float, float] | None, model_gsd: float | None = None
) -> float:
    """Scene pixels per tile pixel that bring ``scene_gsd`` into ``gsd_range`` (1.0 when inside or unknown).

    A finer scene is shrunk to the range's fine end (scale > 1), a coarser one enlarged to its coarse end
    (scale < 1); never by more than :data:`MAX_ZOOM` (with a warning). A model with a single training GSD
    (``model_gsd``, no range) gets scenes more than :data:`RESAMPLE_TOLERANCE` off resampled to that GSD.
    """
    if not scene_gsd or not (gsd_range or model_gsd):
        return 1.0
    if gsd_range:
        lo, hi = _check_range(gsd_range)
        target = min(max(scene_gsd, lo), hi)
    else:
        lo = hi = float(model_gsd)  # type: ignore[arg-type]
        target = hi if abs(hi / scene_gsd - 1.0) > RESAMPLE_TOLERANCE else scene_gsd
    if target == scene_gsd:
        return 1.0
    ratio = target / scene_gsd
    scale = min(max(ratio, 1 / MAX_ZOOM), MAX_ZOOM)
    if scale != ratio:
        logger.warning(
            "scene GSD %s m is outside the model's range %s-%s m by %.3gx; resampling only %.3gx",
            format_gsd(scene_gsd),
            format_gsd(lo),
            format_gsd(hi),
            ratio if ratio > 1 else 1 / ratio,
            scale if scale > 1 else 1 / scale,
        )
    return scale


def fitted_size(extent: float, size: int, min_size: int = STRIDE) -> int:
    """The tile side along an axis where the scene is ``extent`` tile pixels long: ``size``, or, when the
    scene is shorter than that, the extent rounded up to a multiple of 32 (at least ``min_size``).

    A strip of 1764 x 430 px then runs on 1024 x 448 px tiles instead of 1024 px squares that are 58 %
    padding (what Ultralytics' rectangular letterbox does for one image).
    """
    if extent >= size:
        return size
    fitted = max(STRIDE, math.ceil(extent / STRIDE) * STRIDE)
    min_size = math.ceil(max(min_size, STRIDE) / STRIDE) * STRIDE
    return min(size, max(fitted, min_size))


def _scene_window(tile: int, overlap_px: int, scale: float) -> tuple[int, int]:
    """The window side and overlap in scene pixels of ``tile`` px tiles overlapping by ``overlap_px`` tile px,
    at ``scale`` scene px per tile px."""
    if scale == 1.0:
        return tile, overlap_px
    window = max(1, int(round(tile * scale)))
    return window, min(int(round(overlap_px * scale)), window - 1)


def balanced_tile(
    width: int, height: int, size: int, overlap_px: int, scale: float = 1.0, grow: float = 1.25
) -> int:
    """The square tile side that runs a scene in the fewest model pixels: a balanced grid.

    Candidates are the multiples of 32 from ``size`` up to ``grow * size``. Each covers the scene with the
    fewest tiles per axis that overlap by at least ``overlap_px`` (:func:`tiles_along`); the one with the
    smallest ``rows * cols * tile**2`` wins, the smaller tile on a tie. A 2560 px square at 640 px and 128 px
    overlap needs 5 x 5 tiles of 640 (10.2 MP) but 4 x 4 of 736 (8.7 MP): 2560 = 4 x 640 leaves no room for
    an overlap. A scene whose axes need no fewer tiles keeps ``size``.

    Args:
        width, height: scene size in scene pixels.
        size: the nominal tile (the model's input size), a multiple of 32.
        overlap_px: the least overlap in tile pixels.
        scale: scene pixels per tile pixel.
        grow: the largest tile as a multiple of ``size`` (rounded down to a multiple of 32).
    """
    if size % STRIDE or grow <= 1.0:
        return size
    cap = max(size, int(size * grow + 1e-9) // STRIDE * STRIDE)
    best_pixels, best = math.inf, size
    for tile in range(size, cap + 1, STRIDE):
        window, window_overlap = _scene_window(tile, overlap_px, scale)
        n = tiles_along(width, window, window_overlap) * tiles_along(height, window, window_overlap)
        if n * tile * tile < best_pixels:
            best_pixels, best = n * tile * tile, tile
    return best


def plan_tiles(
    width: int,
    height: int,
    config: TileConfig,
    imgsz: int,
    scene_gsd: float | None = None,
    gsd_range: tuple[float, float] | None = None,
    *,
    model_gsd: float | None = None,
    fit: bool = False,
    min_size: int = STRIDE,
    any_size: bool = False,
) -> TilePlan:
    """The tile grid of a scene, resampled into the model's GSD range when asked and both are known.

    Args:
        width, height: scene size in pixels.
        config: tile size, overlap, resampling switch and zoom.
        imgsz: the model's input size (the tile size when ``config.tile`` is None).
        scene_gsd: metres per pixel of the scene (``None``: unknown, no resampling).
        gsd_range: ``(finest, coarsest)`` metres per pixel of the model's training data.
        model_gsd: a single training GSD, for models without a range (see :func:`resample_scale`).
        fit: the model runs non-square tiles (any multiple of 32 on each side): along an axis where the
            scene is shorter than the tile (a strip, a small chip), the tile is cut down to the scene
            (:func:`fitted_size`) instead of padded, unless ``config.fit`` is off. The other axis keeps the
            full tile, so no object is cut more often than with square tiles.
        min_size: the smallest tile side the model accepts (for ``fit``).
        any_size: the model runs square tiles of any multiple of 32 (a dynamic input size; implied by
            ``fit``). A scene that runs on square tiles then gets the balanced grid of
            :func:`balanced_tile` when ``config.grow > 1``: tiles up to ``grow`` times the nominal size,
            at least the configured overlap, spread evenly (``tile_grid(spread=True)``). A model with a
            fixed input size never gets another tile than its own.
    """
    size = int(config.tile or imgsz)
    resample = (resample_scale(scene_gsd, gsd_range, model_gsd) if config.resample else 1.0) / config.zoom
    overlap = config.overlap_px(size)
    window, window_overlap = _scene_window(size, overlap, resample)
    scale = window / size
    rows_px = cols_px = size
    if fit and config.fit:
        cols_px = fitted_size(width / scale, size, min_size)
        rows_px = fitted_size(height / scale, size, min_size)
    if rows_px == cols_px == size:
        if (fit or any_size) and config.grow > 1.0:
            size = balanced_tile(width, height, size, overlap, resample, config.grow)
            window, window_overlap = _scene_window(size, overlap, resample)
            windows = tile_grid(width, height, window, window_overlap, spread=True)
            return TilePlan(windows, size, window / size)
        return TilePlan(tile_grid(width, height, window, window_overlap), size, scale)
    # one tile along each fitted axis: its window covers the scene's extent there
    win_w = window if cols_px == size else max(1, int(round(cols_px * scale)))
    win_h = window if rows_px == size else max(1, int(round(rows_px * scale)))
    windows = tile_grid(width, height, win_w, min(window_overlap, win_w - 1), tile_rows=win_h)
    return TilePlan(windows, max(rows_px, cols_px), scale, shape=(rows_px, cols_px))


def coarse_plan(width: int, height: int, size: int, scale: float = 1.0) -> TilePlan | None:
    """One tile holding the whole scene, downscaled: a square window from ``(0, 0)`` as wide as the scene's
    long side, read at ``size`` x ``size`` (the part past the scene edge is padding).

    Objects larger than a tile, which the tiles see only in pieces, are whole there (SAHI's "standard
    prediction"). ``None`` when the scene already fits one tile of the tiled plan (``scale`` scene pixels
    per tile pixel), so the coarse tile would add nothing.
    """
    side = max(int(width), int(height))
    coarse = side / size
    if coarse <= scale * (1 + RESAMPLE_TOLERANCE):
        return None
    return TilePlan([Window(0, 0, side, side)], size, coarse)
