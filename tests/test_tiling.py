"""The tile grid and tile plan: tables of expected windows."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from detector.tiling import TileConfig, plan_tiles, tile_grid


def _grid(cols: list[int], rows: list[int], tile: int) -> list[Window]:
    return [Window(c, r, tile, tile) for r in rows for c in cols]


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap", "expected"),
    [
        # stride 192, the last tile shifted back to end at 1000
        (1000, 1000, 256, 64, _grid([0, 192, 384, 576, 744], [0, 192, 384, 576, 744], 256)),
        # exact fit: no shifted tile
        (448, 256, 256, 64, _grid([0, 192], [0], 256)),
        # no overlap
        (512, 512, 256, 0, _grid([0, 256], [0, 256], 256)),
        # one axis exactly the tile, the other slightly longer
        (256, 300, 256, 32, _grid([0], [0, 44], 256)),
        # smaller than the tile: one padded tile
        (100, 50, 256, 0, [Window(0, 0, 256, 256)]),
        # narrow strip: padded across, tiled down (row-major order)
        (100, 600, 256, 56, _grid([0], [0, 200, 344], 256)),
        # 1 px longer than the tile
        (641, 640, 640, 128, _grid([0, 1], [0], 640)),
    ],
)
def test_tile_grid_table(width: int, height: int, tile: int, overlap: int, expected: list[Window]) -> None:
    assert tile_grid(width, height, tile, overlap) == expected


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap"), [(1000, 700, 256, 51), (5000, 333, 640, 128), (97, 1031, 32, 31)]
)
def test_tile_grid_covers_scene_with_full_tiles(width: int, height: int, tile: int, overlap: int) -> None:
    windows = tile_grid(width, height, tile, overlap)
    covered = np.zeros((height, width), bool)
    for w in windows:
        assert w.width == tile and w.height == tile
        if width >= tile:
            assert 0 <= w.col_off and w.col_off + tile <= width
        if height >= tile:
            assert 0 <= w.row_off and w.row_off + tile <= height
        covered[w.row_off : w.row_off + tile, w.col_off : w.col_off + tile] = True
    assert covered.all()
    # neighbours overlap by at least the requested overlap
    cols = sorted({w.col_off for w in windows})
    assert all(b - a <= tile - overlap for a, b in zip(cols, cols[1:], strict=False))
    # row-major
    assert windows == sorted(windows, key=lambda w: (w.row_off, w.col_off))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((100, 100, 0, 0), "tile"),
        ((100, 100, 64, 64), "overlap_px"),
        ((100, 100, 64, -1), "overlap_px"),
        ((0, 100, 64, 0), "size"),
    ],
)
def test_tile_grid_rejects_bad_values(args: tuple[int, int, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tile_grid(*args)


@pytest.mark.parametrize(
    ("overlap", "tile", "px"), [(0.2, 640, 128), (0.25, 256, 64), (0, 256, 0), (100, 640, 100), (1, 256, 1)]
)
def test_overlap_fraction_or_pixels(overlap: float, tile: int, px: int) -> None:
    assert TileConfig(overlap=overlap).overlap_px(tile) == px


@pytest.mark.parametrize(
    "kwargs", [{"tile": 0}, {"tile": 12.5}, {"overlap": -0.1}, {"batch": 0}, {"overlap": float("nan")}]
)
def test_tile_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="TileConfig"):
        TileConfig(**kwargs)


@pytest.mark.parametrize(
    ("tile", "hint"), [(500, "try 480 or 512"), (16, "try 32 or 64"), (1000, "try 992 or 1024")]
)
def test_tile_must_be_a_multiple_of_the_stride(tile: int, hint: str) -> None:
    with pytest.raises(ValueError, match=rf"TileConfig.tile must be a multiple of 32 .* got {tile}; {hint}"):
        TileConfig(tile=tile)
    assert TileConfig(tile=tile // 32 * 32 + 32).tile % 32 == 0


def test_overlap_not_smaller_than_tile_is_an_error() -> None:
    with pytest.raises(ValueError, match="256 px tile"):
        TileConfig(overlap=300).overlap_px(256)


@pytest.mark.parametrize(
    ("config", "scene_gsd", "model_gsd", "size", "scale", "first"),
    [
        (TileConfig(overlap=0.25), None, 0.5, 256, 1.0, Window(0, 0, 256, 256)),  # scene GSD unknown
        (TileConfig(overlap=0.25), 0.5, None, 256, 1.0, Window(0, 0, 256, 256)),  # model GSD unknown
        (TileConfig(overlap=0.25), 0.5, 0.53, 256, 1.0, Window(0, 0, 256, 256)),  # within 10 %
        (TileConfig(overlap=0.25), 0.25, 0.5, 256, 2.0, Window(0, 0, 512, 512)),  # finer scene: shrink
        (TileConfig(overlap=0.25), 1.0, 0.5, 256, 0.5, Window(0, 0, 128, 128)),  # coarser scene: enlarge
        (TileConfig(overlap=0.25, resample=False), 0.25, 0.5, 256, 1.0, Window(0, 0, 256, 256)),
        (TileConfig(overlap=0.25), 300.0, 0.5, 256, 0.25, Window(0, 0, 64, 64)),  # limited to 4x
        (TileConfig(tile=512, overlap=0.25), None, None, 512, 1.0, Window(0, 0, 512, 512)),
    ],
)
def test_plan_tiles(config: TileConfig, scene_gsd, model_gsd, size: int, scale: float, first: Window) -> None:
    plan = plan_tiles(3000, 2000, config, 256, scene_gsd, model_gsd)
    assert plan.size == size
    assert plan.scale == pytest.approx(scale)
    assert plan.windows[0] == first
    win = first.width
    stride = plan.windows[1].col_off - plan.windows[0].col_off
    assert stride == win - round(config.overlap_px(size) * scale)
    assert max(w.col_off for w in plan.windows) == 3000 - win
