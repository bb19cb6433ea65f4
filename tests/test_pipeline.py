"""The tiled pipeline end to end, with a fake model that finds painted objects in generated GeoTIFFs."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _fixtures import YELLOW, BrightObjectPredictor, paint_box, paint_rotated, write_geotiff
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from detector.detections import Detections
from detector.pipeline import Detector
from detector.raster import RasterError
from detector.taxonomy import default_classes
from detector.tiling import TileConfig, tile_grid

TILES = TileConfig(overlap=64, batch=4)  # 256 px tiles stepping by 192: seams at 192..256, 384..448, ...
ROOT = Path(__file__).resolve().parents[1]
TAXONOMY = default_classes()  # our classes in id order (configs/taxonomy.yaml)


def _scene(rows: int = 700, cols: int = 900, value: int = 40) -> np.ndarray:
    return np.full((3, rows, cols), value, np.uint8)


# objects (x0, y0, x1, y1) that tiles cut: across a vertical seam, a horizontal one, a 4-tile corner, the
# scene edge, and one larger than the overlap (cut in both tiles that see it)
SEAM_OBJECTS = [
    (230, 50, 270, 70),
    (50, 240, 80, 280),
    (420, 420, 460, 450),
    (880, 600, 900, 640),
    (150, 100, 330, 120),
]


@pytest.mark.parametrize("task", ["detect", "obb"])
def test_objects_cut_by_seams_come_out_once(tmp_path: Path, task: str) -> None:
    image = _scene()
    for box in SEAM_OBJECTS:
        paint_box(image, *box)
    paint_box(image, 600, 100, 612, 130, YELLOW)
    path = write_geotiff(tmp_path / "seams.tif", image)
    predictor = BrightObjectPredictor(256, task)
    dets = Detector(predictor, sizes=False).predict(path, tile=TILES)

    expected = np.array([*SEAM_OBJECTS, (600, 100, 612, 130)], float)
    order = np.lexsort((dets.xyxy[:, 1], dets.xyxy[:, 0]))
    exp_order = np.lexsort((expected[:, 1], expected[:, 0]))
    assert len(dets) == len(expected)
    np.testing.assert_allclose(dets.xyxy[order], expected[exp_order], atol=1.0)
    assert sorted(dets.class_ids.tolist()) == sorted(
        [TAXONOMY.index("aircraft")] * 5 + [TAXONOMY.index("small-vehicle")]
    )
    assert dets.is_rotated == (task == "obb")
    assert predictor.tiles == len(tile_grid(900, 700, 256, 64)) == 20


@pytest.mark.parametrize(
    ("xywhr", "atol"),
    [
        ((400, 200, 60, 16, 0.7), 0.5),  # whole in one tile, cut in the three others round the corner
        ((415, 225, 90, 24, 0.7), 3.0),  # wider than the overlap: cut in all four tiles, pieces joined
    ],
)
def test_rotated_object_across_a_corner_comes_out_once(tmp_path: Path, xywhr: tuple, atol: float) -> None:
    image = _scene()
    paint_rotated(image, *xywhr)  # over the 4-tile corner at (384..448, 192..256)
    path = write_geotiff(tmp_path / "rot.tif", image)
    predictor = BrightObjectPredictor(256, "obb")
    dets = Detector(predictor).predict(path, tile=TILES)
    assert len(dets) == 1
    # what the model reports when it sees the whole object in one tile
    uncut = predictor.predict_batch(np.moveaxis(image[:, 97:353, 287:543], 0, -1)[None].copy())[0]
    np.testing.assert_allclose(dets.xywhr[0], uncut.xywhr[0] + [287, 97, 0, 0, 0], atol=atol)
    np.testing.assert_allclose(dets.xywhr[0, :2], xywhr[:2], atol=1.0)


@pytest.mark.parametrize(
    "transform",
    [
        Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0),
        # rotated, non north-up grid
        Affine.translation(500000.0, 4000000.0) @ Affine.rotation(-25) @ Affine.scale(0.5, -0.5),
    ],
)
def test_painted_object_comes_out_at_its_map_coordinates(tmp_path: Path, transform: Affine) -> None:
    crs = CRS.from_epsg(32633)
    # pick a map point, find its pixel with the inverse transform, paint there (across a seam)
    target = transform @ (250.0, 330.0)
    col, row = ~transform @ target
    image = _scene()
    col, row = round(col), round(row)
    paint_box(image, col - 15, row - 8, col + 15, row + 8)
    path = write_geotiff(tmp_path / "geo.tif", image, transform=transform, crs=crs)
    dets = Detector(BrightObjectPredictor(256)).predict(path, tile=TILES)
    assert len(dets) == 1
    assert dets.crs == crs and dets.transform.almost_equals(transform)
    assert dets.gsd == pytest.approx(0.5)
    assert dets.source == str(path)
    cx, cy = (dets.xyxy[0, :2] + dets.xyxy[0, 2:]) / 2
    x, y = dets.transform @ (cx, cy)
    assert np.hypot(x - target[0], y - target[1]) < 0.5 * 0.5  # within half a pixel on the ground


def test_scene_finer_than_the_model_is_resampled(tmp_path: Path) -> None:
    image = _scene(900, 1100)
    paint_box(image, 500, 380, 580, 420)  # 80 x 40 px at 0.25 m = 20 x 10 m
    path = write_geotiff(tmp_path / "fine.tif", image, transform=Affine(0.25, 0, 500000, 0, -0.25, 4e6))
    predictor = BrightObjectPredictor(256, gsd=0.5)
    dets = Detector(predictor).predict(path, tile=TILES)
    assert dets.meta["scale"] == 2.0  # 512 scene px per 256 px tile
    assert predictor.tiles == len(tile_grid(1100, 900, 512, 128))
    np.testing.assert_allclose(dets.xyxy, [[500, 380, 580, 420]], atol=2.0)
    same = Detector(BrightObjectPredictor(256, gsd=0.5)).predict(
        path, tile=TileConfig(overlap=64, resample=False)
    )
    assert same.meta["scale"] == 1.0
    np.testing.assert_allclose(same.xyxy, [[500, 380, 580, 420]], atol=1.0)


def test_16_bit_scene_is_detected_after_the_stretch(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    image = rng.uniform(300, 600, (3, 500, 500)).astype(np.uint16)  # dark ground
    image[:, 400:, 400:] = 1500  # a bright roof, 4 % of the scene: it sets the top of the stretch
    paint_box(image, 300, 200, 330, 216, (3000, 3000, 3000))  # /255 would leave it at 11: invisible
    path = write_geotiff(tmp_path / "u16.tif", image)
    dets = Detector(BrightObjectPredictor(256)).predict(path, tile=TILES)
    np.testing.assert_allclose(dets.xyxy, [[300, 200, 330, 216], [400, 400, 500, 500]], atol=1.0)


class _EveryTileCentre:
    """A model that 'sees' a 40 px box at the centre of every tile."""

    def __init__(self) -> None:
        self.meta = BrightObjectPredictor(256).meta
        self.tiles = 0

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        self.tiles += len(tiles)
        box = Detections(xyxy=[[108, 108, 148, 148]], scores=[0.5], class_ids=[0], class_names=TAXONOMY)
        return [box] * len(tiles)


def test_nodata_tiles_are_skipped_and_nodata_detections_dropped(tmp_path: Path) -> None:
    image = _scene(value=60)
    image[:, :, :400] = 0  # nodata: the left 400 columns
    path = write_geotiff(tmp_path / "nodata.tif", image, nodata=0)
    predictor = _EveryTileCentre()
    dets = Detector(predictor).predict(path, tile=TILES)
    windows = tile_grid(900, 700, 256, 64)
    with_data = [w for w in windows if w.col_off + 256 > 400]
    assert predictor.tiles == len(with_data) < len(windows)  # tiles at col 0 and 192 hold no valid pixel
    centres = (dets.xyxy[:, 0] + dets.xyxy[:, 2]) / 2
    # the tile at col 384 has its centre box at 492..532 on data; at col 192 the box would be on nodata
    assert len(dets) == 3 * 4 and (centres > 400).all()  # 3 tile columns on data, 4 tile rows


def test_progress_classes_arrays_and_prefetch(tmp_path: Path) -> None:
    image = _scene()
    paint_box(image, 100, 100, 140, 120)
    paint_box(image, 600, 500, 612, 530, YELLOW)
    path = write_geotiff(tmp_path / "p.tif", image)
    calls: list[tuple[int, int]] = []
    detector = Detector(BrightObjectPredictor(256))
    dets = detector.predict(path, tile=TILES, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 20) and calls[-1] == (20, 20)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    vehicles = detector.predict(path, tile=TILES, classes=["small-vehicle"])
    np.testing.assert_array_equal(vehicles.xyxy, [[600, 500, 612, 530]])
    with pytest.raises(ValueError, match="unknown class 'tank'"):
        detector.predict(path, classes=["tank"])
    from_array = detector.predict(np.moveaxis(image, 0, -1), tile=TILES)
    np.testing.assert_array_equal(from_array.xyxy, dets.xyxy)
    assert from_array.transform is None and from_array.source is None
    serial = Detector(BrightObjectPredictor(256), prefetch=False).predict(path, tile=TILES)
    np.testing.assert_array_equal(serial.xyxy, dets.xyxy)


def test_small_scene_is_one_padded_tile() -> None:
    image = _scene(100, 150)
    paint_box(image, 140, 40, 150, 60)  # touches the scene edge, which is no seam
    predictor = BrightObjectPredictor(256)
    dets = Detector(predictor).predict(np.moveaxis(image, 0, -1), tile=TILES)
    assert predictor.tiles == 1
    np.testing.assert_array_equal(dets.xyxy, [[140, 40, 150, 60]])


def test_bad_source_raises_raster_error(tmp_path: Path) -> None:
    with pytest.raises(RasterError, match="missing.tif: file not found"):
        Detector(BrightObjectPredictor(256)).predict(tmp_path / "missing.tif")


def test_predictor_returning_the_wrong_count_is_an_error(tmp_path: Path) -> None:
    class Broken(BrightObjectPredictor):
        def predict_batch(self, tiles):
            return super().predict_batch(tiles)[:-1]

    with pytest.raises(RuntimeError, match="returned 3 results for 4 tiles"):
        Detector(Broken(256)).predict(np.zeros((700, 900, 3), np.uint8), tile=TILES)


def test_real_pretrained_model_finds_labelled_vehicles(shared_data: Path) -> None:
    """The DOTA-trained model through the whole tiled path, on a real labelled DOTA chip (not training data)."""
    pytest.importorskip("detector.model")
    weights = ROOT / "weights" / "pretrained" / "yolov8n-obb.onnx"
    if not weights.is_file():
        pytest.skip(f"{weights} missing: run `make setup`")
    demo = shared_data / "dota" / "demo"
    rows = [line.split() for line in (demo / "labelTxt" / "P1478__1__853___962.txt").read_text().splitlines()]
    # clear (difficulty 0) vehicles: x1 y1 ... x4 y4 class difficulty
    labelled = [
        np.array(r[:8], float).reshape(4, 2).mean(axis=0)
        for r in rows
        if len(r) == 10 and "vehicle" in r[8] and r[9] == "0"
    ]
    assert len(labelled) > 5
    dets = Detector.load(weights, threads=2).predict(demo / "images" / "P1478__1__853___962.png")
    vehicles = dets[
        np.isin(dets.class_ids, [TAXONOMY.index("small-vehicle"), TAXONOMY.index("large-vehicle")])
    ]
    centres = (vehicles.xyxy[:, :2] + vehicles.xyxy[:, 2:]) / 2
    found = [np.hypot(*(centres - c).T).min() < 10 for c in labelled] if len(centres) else [False]
    assert np.mean(found) > 0.5, f"found {np.sum(found)} of {len(labelled)} labelled vehicles"


@pytest.mark.slow
def test_memory_stays_flat_on_a_20k_scene(tmp_path: Path) -> None:
    """A 20000 x 20000 internally tiled GeoTIFF (1.2 GB of pixels) runs in flat memory (GDAL cache bounded)."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("peak memory is read from /proc (Linux)")
    path = tmp_path / "big.tif"
    profile = dict(
        driver="GTiff",
        width=20000,
        height=20000,
        count=3,
        dtype="uint8",
        tiled=True,
        blockxsize=512,
        blockysize=512,
        compress="deflate",
        crs=CRS.from_epsg(32633),
        transform=Affine(0.5, 0, 5e5, 0, -0.5, 4e6),
    )
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, 20000, 1000):
            block = np.full((3, 1000, 20000), 50, np.uint8)
            for x, y in rng.integers(0, [19960, 980], (100, 2)):
                block[:, y : y + 16, x : x + 30] = 255  # 2000 vehicles, some touching each other
            dst.write(block, window=Window(0, row, 20000, 1000))
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
        from _fixtures import BrightObjectPredictor
        from detector.pipeline import Detector
        from detector.tiling import TileConfig

        start = time.perf_counter()
        dets = Detector(BrightObjectPredictor(640)).predict({str(path)!r}, tile=TileConfig(overlap=0.2, batch=8))
        took = time.perf_counter() - start
        # VmHWM: this process's peak (ru_maxrss would carry the parent's peak across exec)
        peak = [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM")][0] / 1024
        print(len(dets), round(peak), round(took, 1))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    found, peak, took = out.stdout.split()
    assert int(found) >= 1900
    assert float(peak) < 600, f"peak RSS {peak} MB in {took} s"  # the brief allows 1.5 GB; flat is ~150 MB


def test_predict_many_takes_what_the_cli_takes(tmp_path: Path) -> None:
    folder = tmp_path / "scenes"
    folder.mkdir()
    expected = {}
    for k, x in enumerate((100, 300)):
        image = _scene(400, 500)
        paint_box(image, x, 100, x + 40, 120)
        path = write_geotiff(folder / f"s{k}.tif", image)
        expected[str(path)] = [[x, 100, x + 40, 120]]
    (folder / "s0.quicklook.jpg").write_bytes(b"not an image: must never be read as a scene")
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00 truncated")
    detector = Detector(BrightObjectPredictor(256))
    array = np.moveaxis(_scene(300, 300), 0, -1)
    results = list(detector.predict_many([str(folder), array], tile=TILES))
    assert [r.source for r in results] == [*sorted(expected), None]
    for r in results[:2]:
        np.testing.assert_array_equal(r.xyxy, expected[r.source])
    assert len(results[2]) == 0
    with pytest.raises(RasterError, match="broken.tif"):
        list(detector.predict_many([bad, str(folder)], tile=TILES))
    skipped = list(
        detector.predict_many([bad, tmp_path / "nothing-here.tif", str(folder)], on_error="skip", tile=TILES)
    )
    assert [r.source for r in skipped] == sorted(expected)
    with pytest.raises(RasterError, match="nothing-here.tif: file not found"):
        next(detector.predict_many(tmp_path / "nothing-here.tif"))


class _CacheRecorder(BrightObjectPredictor):
    """Records GDAL's block cache setting at every model call."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.seen: set[object] = set()

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        self.seen.add(rasterio.env.getenv().get("GDAL_CACHEMAX") if rasterio.env.hasenv() else None)
        return super().predict_batch(tiles)


def test_gdal_cache_holds_one_row_of_tiles_unless_the_caller_set_it(tmp_path: Path) -> None:
    from detector.pipeline import GDAL_CACHE_MB, GDAL_CACHE_MIN_MB, _cache_bytes
    from detector.raster import open_scene

    det = Detector(_CacheRecorder(256))
    small = write_geotiff(tmp_path / "small.tif", _scene(700, 900))  # blocks of 256
    det.predict(small, tile=TILES)
    assert det.predictor.seen == {GDAL_CACHE_MIN_MB * 2**20}  # 1.1 x 512 rows x 2700 B: below the floor

    wide = write_geotiff(tmp_path / "wide.tif", _scene(300, 12000))
    with open_scene(wide) as scene:
        assert _cache_bytes(scene, det.plan(scene, TILES)) == int(
            1.1 * 2 * 256 * 12000 * 3
        )  # tiles of 256 on blocks of 256: two block rows
    with open_scene(write_geotiff(tmp_path / "wider.tif", _scene(64, 200000, 0))) as scene:
        assert _cache_bytes(scene, det.plan(scene, TILES)) == GDAL_CACHE_MB * 2**20  # the ceiling

    det.predictor.seen.clear()
    with rasterio.Env(GDAL_CACHEMAX=123 * 2**20):
        det.predict(small, tile=TILES)
    assert det.predictor.seen == {123 * 2**20}  # the caller's own setting is left alone


class _GrowingPredictor(BrightObjectPredictor):
    """Reports each blob's rectangle 1.6x larger, so that a blob at the scene edge comes out running past it."""

    def _detect(self, tile: np.ndarray) -> Detections:
        from dataclasses import replace

        from detector.geometry import corners_to_xyxy, xywhr_to_corners

        dets = super()._detect(tile)
        if dets.xywhr is None or not len(dets):
            return dets
        xywhr = dets.xywhr.copy()
        xywhr[:, 2:4] *= 1.6
        return replace(dets, xywhr=xywhr, xyxy=corners_to_xyxy(xywhr_to_corners(xywhr)))


def test_boxes_are_clipped_to_the_scene_but_rectangles_kept(tmp_path: Path) -> None:
    image = _scene()
    paint_box(image, 870, 300, 900, 316, YELLOW)  # a vehicle cut by the right-hand edge of the scene
    paint_box(image, 400, 300, 430, 316, YELLOW)  # and one well inside
    path = write_geotiff(tmp_path / "edge.tif", image)
    dets = Detector(_GrowingPredictor(256, "obb"), sizes=False).predict(path, tile=TILES)
    assert len(dets) == 2
    edge, inner = np.argsort(-dets.xywhr[:, 0])
    np.testing.assert_allclose(
        dets.xyxy[edge], [861, 295.2, 900, 320.8], atol=1.0
    )  # box: the part in the scene
    assert dets.xywhr[edge, 0] + dets.xywhr[edge, 2] / 2 > 905  # rectangle: the model's whole object
    np.testing.assert_allclose(dets.xyxy[inner], [391, 295.2, 439, 320.8], atol=1.0)


class _PreparingPredictor(BrightObjectPredictor):
    """Records ``prepare`` calls and what had run by then."""

    def __init__(self, imgsz: int) -> None:
        super().__init__(imgsz)
        self.prepared: list[tuple[tuple[int, ...], int]] = []

    def prepare(self, shape: tuple[int, ...]) -> None:
        self.prepared.append((tuple(shape), self.calls))


@pytest.mark.parametrize("prefetch", [True, False])
def test_prepare_is_called_once_with_the_first_batch_shape_before_it(tmp_path: Path, prefetch: bool) -> None:
    image = _scene()
    paint_box(image, 100, 100, 140, 120)
    path = write_geotiff(tmp_path / "p.tif", image)
    predictor = _PreparingPredictor(256)
    dets = Detector(predictor, prefetch=prefetch).predict(path, tile=replace(TILES, batch=3))
    assert predictor.prepared == [((3, 256, 256, 3), 0)]  # once, before any model call
    assert predictor.calls == math.ceil(20 / 3)
    plain = Detector(BrightObjectPredictor(256), prefetch=prefetch).predict(
        path, tile=replace(TILES, batch=3)
    )
    np.testing.assert_array_equal(dets.xyxy, plain.xyxy)
