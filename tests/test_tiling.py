"""The tile grid and tile plan: tables of expected windows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from _fixtures import BrightObjectPredictor, make_meta, paint_box, write_geotiff
from rasterio.windows import Window

from detector.errors import ResolutionError
from detector.tiling import (
    TileConfig,
    balanced_tile,
    check_resolution,
    model_gsd_range,
    plan_tiles,
    resample_scale,
    tile_grid,
)


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


RANGE = (0.3, 0.6)  # a model trained at 0.3-0.6 m/px


@pytest.mark.parametrize(
    ("config", "scene_gsd", "gsd_range", "size", "scale", "first"),
    [
        (TileConfig(overlap=0.25), None, RANGE, 256, 1.0, Window(0, 0, 256, 256)),  # scene GSD unknown
        (TileConfig(overlap=0.25), 0.5, None, 256, 1.0, Window(0, 0, 256, 256)),  # model GSD unknown
        (TileConfig(overlap=0.25), 0.5, RANGE, 256, 1.0, Window(0, 0, 256, 256)),  # inside the range
        (TileConfig(overlap=0.25), 0.3, RANGE, 256, 1.0, Window(0, 0, 256, 256)),  # at its fine end
        (TileConfig(overlap=0.25), 0.15, RANGE, 256, 2.0, Window(0, 0, 512, 512)),  # finer: shrink to 0.3
        (TileConfig(overlap=0.25), 1.2, RANGE, 256, 0.5, Window(0, 0, 128, 128)),  # coarser: enlarge to 0.6
        (TileConfig(overlap=0.25, resample=False), 0.15, RANGE, 256, 1.0, Window(0, 0, 256, 256)),
        (TileConfig(overlap=0.25), 300.0, RANGE, 256, 0.25, Window(0, 0, 64, 64)),  # limited to 4x
        (TileConfig(overlap=0.25), 0.03, RANGE, 256, 4.0, Window(0, 0, 1024, 1024)),  # limited to 4x
        (TileConfig(tile=512, overlap=0.25), None, None, 512, 1.0, Window(0, 0, 512, 512)),
    ],
)
def test_plan_tiles(config: TileConfig, scene_gsd, gsd_range, size: int, scale: float, first: Window) -> None:
    plan = plan_tiles(3000, 2000, config, 256, scene_gsd, gsd_range)
    assert plan.size == size
    assert plan.scale == pytest.approx(scale)
    assert plan.windows[0] == first
    win = first.width
    stride = plan.windows[1].col_off - plan.windows[0].col_off
    assert stride == win - round(config.overlap_px(size) * scale)
    assert max(w.col_off for w in plan.windows) == 3000 - win


def test_a_single_model_gsd_is_a_narrow_range() -> None:
    # old model files know one training GSD: scenes within 10 % of it run as they are
    assert model_gsd_range(make_meta(gsd=0.5)) == pytest.approx((0.5 / 1.1, 0.55))
    assert plan_tiles(3000, 2000, TileConfig(), 256, 0.53, model_gsd=0.5).scale == 1.0
    plan = plan_tiles(3000, 2000, TileConfig(), 256, 0.25, model_gsd=0.5)
    assert plan.scale == pytest.approx(2.0)  # to the model's GSD itself
    assert model_gsd_range(make_meta()) is None
    assert model_gsd_range(replace(make_meta(gsd=0.5), gsd_range=(0.1, 1.0))) == (0.1, 1.0)


@pytest.mark.parametrize(
    ("scene_gsd", "gsd_range", "refused"),
    [
        (300.0, (0.1, 1.0), True),  # Landsat on an aerial model
        (30.0, (0.1, 1.0), True),
        (2.0, (0.1, 1.0), False),  # coarser, but within 2x: enlarged into the range
        (2.01, (0.1, 1.0), True),
        (0.3, (0.1, 1.0), False),
        (0.01, (0.1, 1.0), False),  # finer: resampled, never refused
        (None, (0.1, 1.0), False),  # unknown size: runs
        (300.0, None, False),  # model range unknown
    ],
)
def test_check_resolution(scene_gsd, gsd_range, refused: bool) -> None:
    if not refused:
        check_resolution(scene_gsd, gsd_range, source="a.tif")
        return
    with pytest.raises(ResolutionError) as info:
        check_resolution(scene_gsd, gsd_range, source="a.tif")
    message = str(info.value)
    assert "\n" not in message and message.startswith("a.tif: ")
    assert f"scene GSD {scene_gsd:g} m/px" in message and "range 0.1-1 m/px" in message
    assert "--force-resolution" in message
    check_resolution(scene_gsd, gsd_range, source="a.tif", force=True)  # forced: only a warning
    check_resolution(scene_gsd, gsd_range, source="a.tif", factor=1000)


def test_bad_gsd_range_is_an_error() -> None:
    with pytest.raises(ValueError, match="GSD range"):
        resample_scale(0.5, (1.0, 0.5))


@pytest.mark.parametrize(
    ("width", "height", "fit", "shape", "n_tiles", "first"),
    [
        (1764, 430, False, (1024, 1024), 2, Window(0, 0, 1024, 1024)),  # a strip: tiles 58 % padding
        (1764, 430, True, (448, 1024), 2, Window(0, 0, 1024, 448)),  # ... fitted to its height
        (430, 1764, True, (1024, 448), 2, Window(0, 0, 448, 1024)),  # a tall strip
        (640, 360, True, (384, 640), 1, Window(0, 0, 640, 384)),  # a small chip: one tile, 6 % padding
        (3000, 2000, True, (1024, 1024), 12, Window(0, 0, 1024, 1024)),  # larger than a tile: unchanged
        (20, 20, True, (32, 32), 1, Window(0, 0, 32, 32)),  # never below the stride
    ],
)
def test_strips_get_fitted_tiles(width, height, fit: bool, shape, n_tiles: int, first: Window) -> None:
    plan = plan_tiles(width, height, TileConfig(overlap=0.2, grow=1.0), 1024, fit=fit)  # no balanced grid
    assert plan.out_shape == shape and len(plan.windows) == n_tiles
    assert plan.windows[0] == first and plan.size == max(shape)
    assert all((w.height, w.width) == shape for w in plan.windows)  # scale 1: a window is a tile
    assert max(w.col_off + w.width for w in plan.windows) >= width
    assert max(w.row_off + w.height for w in plan.windows) >= height
    if n_tiles == 2 and shape[1] == 1024:  # the long axis keeps the full tile and its overlap
        assert plan.windows[1].col_off == 1764 - 1024


def test_fitted_tiles_respect_the_model_minimum_and_the_scale() -> None:
    assert plan_tiles(1764, 100, TileConfig(), 1024, fit=True, min_size=256).out_shape == (256, 1024)
    assert plan_tiles(1764, 430, TileConfig(fit=False), 1024, fit=True).out_shape == (1024, 1024)
    # at scale 2 (a 0.15 m scene on a 0.3 m model) a 900 px high strip is 450 tile px high
    plan = plan_tiles(4000, 900, TileConfig(), 1024, 0.15, RANGE, fit=True)
    assert plan.out_shape == (480, 1024) and plan.scale == pytest.approx(2.0)
    assert (plan.windows[0].width, plan.windows[0].height) == (2048, 960)


# --------------------------------------------------------------------------------------------------------------
# the balanced grid (TileConfig.grow) for models that run any multiple of 32


def _axis_offsets(windows: list[Window], axis: str) -> list[int]:
    return sorted({getattr(w, axis) for w in windows})


@pytest.mark.parametrize(
    ("side", "overlap", "n_old", "n_new", "size"),
    [
        (2560, 128, 25, 16, 736),  # 2560 = 4 x 640 leaves no room for an overlap: 5 x 5 tiles of 640
        (2560, 64, 25, 16, 704),
        (5000, 128, 100, 81, 672),
        (5000, 64, 81, 49, 800),
        (20000, 128, 1521, 900, 800),
        (640, 128, 1, 1, 640),  # one nominal tile: unchanged
        (700, 128, 4, 1, 704),  # just over a tile: one grown tile instead of 2 x 2
    ],
)
def test_balanced_grid_table(side: int, overlap: int, n_old: int, n_new: int, size: int) -> None:
    old = plan_tiles(side, side, TileConfig(overlap=overlap, grow=1.0), 640, any_size=True)
    new = plan_tiles(side, side, TileConfig(overlap=overlap), 640, any_size=True)
    assert (len(old.windows), old.size) == (n_old, 640)
    assert (len(new.windows), new.size, new.scale, new.shape) == (n_new, size, 1.0, None)


@pytest.mark.parametrize(
    ("width", "height", "tile", "overlap", "grow", "scene_gsd"),
    [
        (2560, 2560, 640, 128, 1.25, None),
        (5000, 3100, 640, 64, 1.25, None),
        (1999, 20011, 640, 0.2, 1.25, None),
        (4321, 1234, 1024, 0.2, 1.5, None),
        (3000, 2000, 256, 40, 1.25, None),
        (777, 5003, 640, 200, 2.0, None),
        (6000, 4000, 640, 128, 1.25, 0.15),  # resampled 2x into a 0.3-0.6 m model
        (2000, 1500, 640, 128, 1.25, 1.2),  # enlarged 2x
    ],
)
def test_balanced_grid_covers_overlaps_and_saves_pixels(
    width, height, tile, overlap, grow, scene_gsd
) -> None:
    config = TileConfig(tile=tile, overlap=overlap, grow=grow)
    gsd = (0.3, 0.6) if scene_gsd else None
    plan = plan_tiles(width, height, config, 640, scene_gsd, gsd, any_size=True)
    old = plan_tiles(width, height, replace(config, grow=1.0), 640, scene_gsd, gsd, any_size=True)
    cap = int(tile * grow) // 32 * 32
    assert plan.size % 32 == 0 and tile <= plan.size <= cap and plan.shape is None
    assert len(plan.windows) * plan.size**2 <= len(old.windows) * old.size**2
    window = plan.windows[0].width
    assert window == int(round(plan.size * plan.scale)) and plan.scale == pytest.approx(old.scale, rel=0.01)
    assert all((w.width, w.height) == (window, window) for w in plan.windows)
    assert plan.windows == sorted(plan.windows, key=lambda w: (w.row_off, w.col_off))
    # every scene pixel is covered, tiles stay inside the scene along an axis longer than a tile
    covered = np.zeros((height, width), bool)
    for w in plan.windows:
        covered[w.row_off : w.row_off + window, w.col_off : w.col_off + window] = True
    assert covered.all()
    least = min(int(round(config.overlap_px(tile) * old.scale)), window - 1)  # the overlap, scene px
    for axis, extent in (("col_off", width), ("row_off", height)):
        offsets = _axis_offsets(plan.windows, axis)
        if extent <= window:
            assert offsets == [0]
            continue
        assert offsets[0] == 0 and offsets[-1] + window == extent
        steps = np.diff(offsets)
        assert steps.max() <= window - least  # overlap >= the configured one everywhere
        assert steps.max() - steps.min() <= 1  # evenly spread, no short last step


def test_balanced_grid_only_for_models_that_run_any_size() -> None:
    config = TileConfig(overlap=128)
    static = plan_tiles(2560, 2560, config, 640)  # a fixed input size: today's grid, always imgsz
    assert static == plan_tiles(2560, 2560, replace(config, grow=1.0), 640, any_size=True)
    assert static.size == 640 and len(static.windows) == 25
    assert plan_tiles(2560, 2560, config, 640, fit=True).size == 736  # rect tiles run any size too
    assert plan_tiles(2560, 2560, config, 640, 0.15, RANGE).size == 640
    # tile sizes that are no multiple of the stride never grow
    assert balanced_tile(2560, 2560, 600, 128) == 600


@pytest.mark.parametrize(
    ("width", "height", "shape"),
    [(1764, 430, (448, 1024)), (430, 1764, (1024, 448)), (640, 360, (384, 640)), (20, 20, (32, 32))],
)
def test_balanced_grid_leaves_strips_and_small_scenes_fitted(width: int, height: int, shape) -> None:
    config = TileConfig(overlap=0.2)
    plan = plan_tiles(width, height, config, 1024, fit=True)
    assert plan == plan_tiles(width, height, replace(config, grow=1.0), 1024, fit=True)
    assert plan.out_shape == shape


def test_small_scenes_keep_one_nominal_tile() -> None:
    for width, height in ((640, 360), (100, 50), (640, 640)):
        plan = plan_tiles(width, height, TileConfig(), 640, any_size=True)
        assert (plan.size, plan.windows) == (640, [Window(0, 0, 640, 640)])


@pytest.mark.parametrize("grow", [0.9, 2.5, float("nan")])
def test_grow_is_validated(grow: float) -> None:
    with pytest.raises(ValueError, match="grow"):
        TileConfig(grow=grow)


@pytest.mark.parametrize("zoom", [0.2, 5.0, float("nan")])
def test_zoom_is_validated(zoom: float) -> None:
    with pytest.raises(ValueError, match="zoom"):
        TileConfig(zoom=zoom)


def test_zoom_magnifies_on_top_of_the_gsd_resampling() -> None:
    config = TileConfig(tile=256, overlap=0, grow=1.0)
    assert plan_tiles(1024, 1024, config, 256).scale == 1.0
    zoomed = plan_tiles(1024, 1024, replace(config, zoom=2.0), 256)
    assert zoomed.scale == 0.5 and zoomed.windows[1] == Window(128, 0, 128, 128) and len(zoomed.windows) == 64
    # a 2 m scene for a model trained at 0.1-1 m is enlarged 2x to 1 m; zoom 2 enlarges it 2x more
    assert plan_tiles(1024, 1024, config, 256, scene_gsd=2.0, gsd_range=(0.1, 1.0)).scale == 0.5
    both = plan_tiles(1024, 1024, replace(config, zoom=2.0), 256, scene_gsd=2.0, gsd_range=(0.1, 1.0))
    assert both.scale == 0.25
    # off means off: without resampling only the zoom is left
    off = plan_tiles(1024, 1024, replace(config, zoom=2.0, resample=False), 256, 2.0, (0.1, 1.0))
    assert off.scale == 0.5


def test_a_zoomed_scene_gives_its_objects_in_scene_pixels(tmp_path) -> None:
    from detector.pipeline import Detector

    image = np.full((3, 700, 900), 40, np.uint8)
    boxes = [(20, 30, 60, 50), (400, 300, 460, 340), (800, 600, 880, 690)]
    for box in boxes:
        paint_box(image, *box)
    scene = write_geotiff(tmp_path / "scene.tif", image)
    plain, zoomed = BrightObjectPredictor(256), BrightObjectPredictor(256)
    ref = Detector(plain).predict(scene, tile=TileConfig(overlap=64))
    dets = Detector(zoomed).predict(scene, tile=TileConfig(overlap=64, zoom=1.5))
    assert zoomed.tiles > 2 * plain.tiles  # 1.5 ** 2 the model pixels, more with the overlaps
    assert dets.meta["scale"] == pytest.approx(1 / 1.5, abs=0.01)
    for got in (ref, dets):
        np.testing.assert_allclose(got.xyxy[np.argsort(got.xyxy[:, 0])], np.array(boxes, float), atol=1.5)


def test_spread_grid_table() -> None:
    # 1000 px, 256 px tiles, 64 px overlap: 5 tiles either way; spread steps 186/186/186/186 instead of 192 x 3 + 168
    assert tile_grid(1000, 256, 256, 64, spread=True) == _grid([0, 186, 372, 558, 744], [0], 256)
    assert tile_grid(1000, 256, 256, 64) == _grid([0, 192, 384, 576, 744], [0], 256)
    assert tile_grid(641, 100, 640, 128, spread=True) == _grid([0, 1], [0], 640)
    assert tile_grid(100, 50, 256, 0, spread=True) == [Window(0, 0, 256, 256)]


class _AnySizePredictor(BrightObjectPredictor):
    """The fake model with an input size like an ONNX file's: ``fixed_size`` ``None`` runs any square multiple
    of 32, an int only that size."""

    def __init__(self, imgsz: int, fixed_size: int | None) -> None:
        super().__init__(imgsz)
        self.fixed_size = fixed_size
        self.shapes: set[tuple[int, int]] = set()

    def predict_batch(self, tiles: np.ndarray) -> list:
        rows, cols = tiles.shape[1:3]
        if rows != cols or rows % 32 or (self.fixed_size is not None and rows != self.fixed_size):
            raise ValueError(f"bad tile batch {tiles.shape}")
        self.shapes.add((rows, cols))
        self.calls += 1
        self.tiles += len(tiles)
        return [self._detect(t) for t in tiles]


def test_detector_runs_the_balanced_grid_with_the_same_detections(tmp_path) -> None:
    from detector.pipeline import Detector

    image = np.full((3, 1300, 1300), 40, np.uint8)
    boxes = [(10, 10, 40, 30), (300, 240, 350, 270), (600, 630, 640, 700), (1010, 1150, 1060, 1190)]
    boxes += [(1270, 1275, 1299, 1299), (250, 900, 290, 930)]  # at the corner, near seams of either grid
    for box in boxes:
        paint_box(image, *box)
    scene = write_geotiff(tmp_path / "scene.tif", image)
    config = TileConfig(overlap=64, batch=4)
    grown = _AnySizePredictor(256, None)
    dets = Detector(grown).predict(scene, tile=config)
    assert (dets.meta["tile"], dets.meta["tiles"], grown.shapes) == (320, 25, {(320, 320)})
    fixed = _AnySizePredictor(256, 256)
    ref = Detector(fixed).predict(scene, tile=config)  # a static model: today's grid
    assert (ref.meta["tile"], ref.meta["tiles"], fixed.shapes) == (256, 49, {(256, 256)})
    order = np.lexsort(dets.xyxy.T[::-1])
    np.testing.assert_array_equal(dets.xyxy[order], ref.xyxy[np.lexsort(ref.xyxy.T[::-1])])
    np.testing.assert_array_equal(dets.xyxy[order], np.array(sorted(boxes), float))
    # a predictor that says nothing about its input size keeps the model's imgsz
    assert Detector(BrightObjectPredictor(256)).predict(scene, tile=config).meta["tiles"] == 49
