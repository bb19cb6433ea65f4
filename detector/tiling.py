"""The tile grid: which windows of a scene the model sees, and at what scale (pure functions).

Windows are ``rasterio.windows.Window`` objects in **scene pixels** of the full-resolution raster. Each window
is read with ``out_shape=(size, size)`` (``size`` is the model's input size), so one tile pixel covers
``scale`` scene pixels: ``scene = window offset + tile * scale``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from rasterio.windows import Window

from detector.model import STRIDE

logger = logging.getLogger(__name__)

#: Resample only when the scene GSD and the model's training GSD differ by more than this fraction.
RESAMPLE_TOLERANCE = 0.10
#: Never zoom a scene by more than this factor in either direction.
MAX_ZOOM = 4.0


@dataclass(frozen=True)
class TileConfig:
    """How a scene is cut into tiles.

    Attributes:
        tile: tile size in model input pixels, a multiple of 32 (the models' stride); ``None`` uses the
            model's input size (``meta.imgsz``). Models exported before dynamic tile sizes accept only
            their ``imgsz``.
        overlap: overlap between neighbouring tiles: a fraction of the tile below 1, pixels from 1 up.
        batch: tiles per model call.
        resample: resample the scene to the model's training GSD when both are known and differ by more
            than 10 %.
    """

    tile: int | None = None
    overlap: float = 0.2
    batch: int = 8
    resample: bool = True

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
        if int(self.batch) != self.batch or self.batch < 1:
            raise ValueError(f"TileConfig.batch must be a positive integer, got {self.batch!r}")

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
        size: side of every tile in model input pixels (the ``out_shape`` of each read).
        scale: scene pixels per tile pixel (1.0 when the scene is not resampled).
    """

    windows: list[Window]
    size: int
    scale: float


def tile_grid(width: int, height: int, tile: int, overlap_px: int) -> list[Window]:
    """Square windows covering a ``width`` x ``height`` scene, in row-major order.

    Tiles step by ``tile - overlap_px``; the last tile of a row or column is shifted back to end at the scene
    edge, so every tile is full. Along an axis shorter than the tile there is one tile starting at 0 that
    passes the edge (the read pads it).
    """
    if tile < 1:
        raise ValueError(f"tile must be a positive number of pixels, got {tile!r}")
    if not 0 <= overlap_px < tile:
        raise ValueError(f"overlap_px must be in [0, {tile}) for a {tile} px tile, got {overlap_px!r}")
    if width < 1 or height < 1:
        raise ValueError(f"scene size must be positive, got {width}x{height}")
    cols = _offsets(width, tile, tile - overlap_px)
    rows = _offsets(height, tile, tile - overlap_px)
    return [Window(c, r, tile, tile) for r in rows for c in cols]


def _offsets(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    n = math.ceil((size - tile) / stride) + 1
    return [min(i * stride, size - tile) for i in range(n)]


def plan_tiles(
    width: int,
    height: int,
    config: TileConfig,
    imgsz: int,
    scene_gsd: float | None = None,
    model_gsd: float | None = None,
) -> TilePlan:
    """The tile grid of a scene, resampled to the model's GSD when asked and both GSDs are known.

    Args:
        width, height: scene size in pixels.
        config: tile size, overlap and resampling switch.
        imgsz: the model's input size (the tile size when ``config.tile`` is None).
        scene_gsd, model_gsd: metres per pixel of the scene and of the model's training data.
    """
    size = int(config.tile or imgsz)
    overlap = config.overlap_px(size)
    scale = 1.0
    if config.resample and scene_gsd and model_gsd:
        ratio = model_gsd / scene_gsd
        if abs(ratio - 1.0) > RESAMPLE_TOLERANCE:
            scale = ratio
            if not 1 / MAX_ZOOM <= ratio <= MAX_ZOOM:
                scale = min(max(ratio, 1 / MAX_ZOOM), MAX_ZOOM)
                logger.warning(
                    "scene GSD %.3g m differs from the model's %.3g m by %.3gx; resampling only %.3gx",
                    scene_gsd,
                    model_gsd,
                    ratio,
                    scale,
                )
    if scale == 1.0:
        return TilePlan(tile_grid(width, height, size, overlap), size, 1.0)
    window = max(1, int(round(size * scale)))
    window_overlap = min(int(round(overlap * scale)), window - 1)
    return TilePlan(tile_grid(width, height, window, window_overlap), size, window / size)
