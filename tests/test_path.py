"""What the tiled path feeds the model and what it makes of it: gray padding, tiles fitted to strips, the
coarse whole-image pass, and one label per object (the cross-class rule) inside ``Detector.predict``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _fixtures import TAXONOMY, BrightObjectPredictor, paint_box, write_geotiff

from detector.detections import Detections
from detector.merge import RUNNER_UP_CLASS, RUNNER_UP_SCORE
from detector.pipeline import Detector
from detector.raster import PAD_VALUE
from detector.tiling import TileConfig


class RecordingPredictor(BrightObjectPredictor):
    """Keeps every tile it is given; with ``rect`` it also runs non-square tiles (multiples of 32)."""

    def __init__(self, imgsz: int = 256, rect: bool = False) -> None:
        super().__init__(imgsz)
        self.rect_tiles = rect
        self.seen: list[np.ndarray] = []

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        rows, cols = tiles.shape[1:3]
        if rows % 32 or cols % 32 or (not self.rect_tiles and (rows, cols) != (self.meta.imgsz,) * 2):
            raise ValueError(f"bad tile batch {tiles.shape}")
        self.seen.extend(tiles)
        self.calls += 1
        self.tiles += len(tiles)
        return [self._detect(t) for t in tiles]


def _strip(tmp_path: Path, width: int = 1000, height: int = 200) -> Path:
    image = np.full((3, height, width), 40, np.uint8)
    paint_box(image, 100, 50, 140, 70)  # inside the first tile
    paint_box(image, width - 60, 120, width - 20, 140)  # near the right end of the strip
    return write_geotiff(tmp_path / "strip.tif", image)


def test_the_outside_of_a_small_scene_is_ultralytics_gray(tmp_path: Path) -> None:
    predictor = RecordingPredictor(256)
    image = np.full((3, 100, 150), 40, np.uint8)
    paint_box(image, 20, 20, 60, 40)
    dets = Detector(predictor).predict(write_geotiff(tmp_path / "small.tif", image))
    (tile,) = predictor.seen
    assert (tile[:100, :150] == 40).sum() > 0 and (tile[100:] == PAD_VALUE).all()
    assert (tile[:, 150:] == PAD_VALUE).all() and PAD_VALUE == 114
    assert len(dets) == 1  # the padding is no object, and the one object keeps its place
    np.testing.assert_allclose(dets.xyxy, [[20, 20, 60, 40]])


def test_a_strip_runs_on_tiles_fitted_to_it(tmp_path: Path) -> None:
    path = _strip(tmp_path)
    square = RecordingPredictor(256)
    rect = RecordingPredictor(256, rect=True)
    a = Detector(square).predict(path, tile=TileConfig(overlap=0.25))
    b = Detector(rect).predict(path, tile=TileConfig(overlap=0.25))
    assert {t.shape for t in square.seen} == {(256, 256, 3)}
    assert {t.shape for t in rect.seen} == {(224, 256, 3)}  # 200 rows -> 224, not 256
    assert square.tiles == rect.tiles == 5  # the long axis is tiled as before
    assert b.meta["tile"] == 256
    for dets in (a, b):
        order = np.argsort(dets.xyxy[:, 0])
        np.testing.assert_allclose(dets.xyxy[order], [[100, 50, 140, 70], [940, 120, 980, 140]])
    # padded pixels per tile: 56 rows of 256 instead of 24 of 224
    assert sum((t == PAD_VALUE).all(axis=-1).sum() for t in rect.seen) < sum(
        (t == PAD_VALUE).all(axis=-1).sum() for t in square.seen
    )
    # the option turns it off
    off = RecordingPredictor(256, rect=True)
    Detector(off).predict(path, tile=TileConfig(overlap=0.25, fit=False))
    assert {t.shape for t in off.seen} == {(256, 256, 3)}


def test_an_object_cut_by_the_bottom_of_a_fitted_tile_is_not_flagged_cut(tmp_path: Path) -> None:
    # the fitted tile's bottom edge is the scene's bottom edge: an object touching it is whole
    image = np.full((3, 200, 600), 40, np.uint8)
    paint_box(image, 300, 180, 340, 200)
    dets = Detector(RecordingPredictor(256, rect=True)).predict(write_geotiff(tmp_path / "s.tif", image))
    assert len(dets) == 1
    np.testing.assert_allclose(dets.xyxy, [[300, 180, 340, 200]])


def test_coarse_pass_finds_an_object_larger_than_a_tile_whole(tmp_path: Path) -> None:
    image = np.full((3, 600, 1000), 40, np.uint8)
    paint_box(image, 150, 250, 850, 330)  # 700 px long: longer than two 256 px tiles
    paint_box(image, 60, 60, 80, 70)  # a small object: found by the tiles only
    path = write_geotiff(tmp_path / "big.tif", image)
    tiled = Detector(BrightObjectPredictor(256)).predict(path, tile=TileConfig(overlap=0.25))
    big = tiled[tiled.xyxy[:, 2] - tiled.xyxy[:, 0] > 100]
    assert not np.allclose(big.xyxy, [[150, 250, 850, 330]], atol=8)  # in pieces, or not the whole of it
    predictor = BrightObjectPredictor(256)
    both = Detector(predictor).predict(path, tile=TileConfig(overlap=0.25, coarse=True))
    assert predictor.tiles == tiled.meta["tiles_run"] + 1  # one more, downscaled, tile
    order = np.argsort(both.xyxy[:, 0])
    assert len(both) == 2
    np.testing.assert_allclose(both.xyxy[order], [[60, 60, 80, 70], [150, 250, 850, 330]], atol=8)


def test_coarse_pass_is_skipped_when_the_scene_fits_one_tile(tmp_path: Path) -> None:
    image = np.full((3, 200, 250), 40, np.uint8)
    paint_box(image, 20, 20, 60, 40)
    predictor = BrightObjectPredictor(256)
    dets = Detector(predictor).predict(write_geotiff(tmp_path / "s.tif", image), tile=TileConfig(coarse=True))
    assert predictor.tiles == 1 and len(dets) == 1


class TwoLabelPredictor(BrightObjectPredictor):
    """Reports every blob twice: as its class (0.9) and as large-vehicle (0.6), like a hesitant model."""

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        out = []
        for dets in super().predict_batch(tiles):
            other = replace(
                dets,
                xyxy=dets.xyxy + 0.5,
                scores=np.full(len(dets), 0.6, np.float32),
                class_ids=np.full(len(dets), TAXONOMY.index("large-vehicle")),
            )
            out.append(Detections.concatenate([dets, other]))
        return out


def test_detector_gives_one_label_per_object(tmp_path: Path) -> None:
    image = np.full((3, 300, 400), 40, np.uint8)
    paint_box(image, 100, 100, 160, 130)
    path = write_geotiff(tmp_path / "one.tif", image)
    dets = Detector(TwoLabelPredictor(256), sizes=False).predict(path)
    assert dets.class_name.tolist() == ["aircraft"]
    assert dets.data[RUNNER_UP_CLASS].tolist() == ["large-vehicle"]
    np.testing.assert_allclose(dets.data[RUNNER_UP_SCORE], [0.6])
    for off in (None, 0):
        both = Detector(TwoLabelPredictor(256), cross_class_iou=off, sizes=False).predict(path)
        assert sorted(both.class_name.tolist()) == ["aircraft", "large-vehicle"]
        assert RUNNER_UP_CLASS not in both.data
    with pytest.raises(ValueError, match="cross_class_iou"):
        Detector(TwoLabelPredictor(256), cross_class_iou=1.5)
