"""Opening scenes: band choice, radiometry, nodata, windowed reads, GSD and errors that name the file."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from _fixtures import write_geotiff
from affine import Affine
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from detector.raster import PAD_VALUE, RasterError, Scene, open_dataset, open_scene


def _ramp(rows: int = 64, cols: int = 80, count: int = 3, dtype: str = "uint8") -> np.ndarray:
    values = np.arange(rows * cols).reshape(rows, cols) % 251
    return np.stack([(values + 50 * b) % 251 for b in range(count)]).astype(dtype)


# -- band choice ---------------------------------------------------------------------------------------


def test_bands_follow_colour_interpretation(tmp_path: Path) -> None:
    data = _ramp()
    path = write_geotiff(
        tmp_path / "bgr.tif", data, colorinterp=[ColorInterp.blue, ColorInterp.green, ColorInterp.red]
    )
    with open_scene(path) as scene:
        assert scene.bands == (3, 2, 1)
        rgb, valid = scene.read(Window(0, 0, 80, 64))
    np.testing.assert_array_equal(rgb, np.moveaxis(data[::-1], 0, -1))  # 8-bit passes unchanged
    assert valid.all()


@pytest.mark.parametrize(
    ("count", "interp", "bands", "expected"),
    [
        (1, [ColorInterp.gray], None, (1, 1, 1)),
        (2, [ColorInterp.gray, ColorInterp.alpha], None, (1, 1, 1)),  # gray + alpha
        (4, [ColorInterp.undefined] * 4, None, (1, 2, 3)),
        (4, [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha], None, (1, 2, 3)),
        (4, [ColorInterp.undefined] * 4, (4, 3, 2), (4, 3, 2)),
        (2, [ColorInterp.undefined] * 2, (2,), (2, 2, 2)),
    ],
)
def test_band_choice(tmp_path: Path, count: int, interp, bands, expected) -> None:
    extra = {"alpha": "YES"} if ColorInterp.alpha in interp else {}
    path = write_geotiff(tmp_path / "b.tif", _ramp(count=count), colorinterp=interp, **extra)
    with open_scene(path, bands=bands) as scene:
        assert scene.bands == expected
        rgb, _ = scene.read(Window(0, 0, 8, 8))
        assert rgb.shape == (8, 8, 3)


def test_two_band_raster_is_an_error_naming_file_and_count(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "two.tif", _ramp(count=2), colorinterp=[ColorInterp.undefined] * 2)
    with pytest.raises(RasterError, match=r"two\.tif.*2 image bands.*bands="):
        open_scene(path)


def test_band_out_of_range_is_an_error(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "rgb.tif", _ramp())
    with pytest.raises(RasterError, match=r"rgb\.tif: band 5 does not exist \(the file has 3 bands"):
        open_scene(path, bands=(5, 2, 1))


@pytest.mark.parametrize("bands", [5, "red", (1, "g", 3)])
def test_bands_that_are_not_band_numbers(tmp_path: Path, bands: object) -> None:
    path = write_geotiff(tmp_path / "rgb.tif", _ramp())
    with pytest.raises(RasterError, match=r"rgb\.tif: bands must be 1-based band numbers"):
        open_scene(path, bands=bands)  # type: ignore[arg-type]


@pytest.mark.parametrize("gsd", ["fine", -1.0, 0, float("nan"), True])
def test_gsd_that_is_not_a_positive_number(tmp_path: Path, gsd: object) -> None:
    path = write_geotiff(tmp_path / "rgb.tif", _ramp())
    with pytest.raises(ValueError, match="gsd must be a positive number of metres per pixel"):
        open_scene(path, gsd=gsd)  # type: ignore[arg-type]


# -- radiometry ----------------------------------------------------------------------------------------


def test_16_bit_data_is_stretched_once_per_scene_not_divided_by_255(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(900, 60, (3, 300, 300)).clip(1, None).astype("uint16")
    data[:, 100:105, 100:110] = 3500  # a small bright object
    data[:, :, :100] = 0  # nodata: must not pull the stretch down to 0
    path = write_geotiff(tmp_path / "u16.tif", data, nodata=0)
    with open_scene(path) as scene:
        assert scene.dtype == "uint16"
        assert scene.stretch.low.min() > 600  # percentiles of valid pixels only
        obj, _ = scene.read(Window(100, 100, 10, 5))
        background, valid = scene.read(Window(150, 150, 100, 100))
        nodata, nodata_valid = scene.read(Window(0, 0, 50, 50))
    assert obj.min() == 255
    assert 80 < np.median(background) < 180  # mid-grey, not 900 / 255 = 3
    assert valid.all() and not nodata_valid.any() and not nodata.any()


def test_stretch_is_the_same_for_every_window(tmp_path: Path) -> None:
    data = np.tile(np.linspace(0, 4000, 400, dtype="float32"), (3, 400, 1))
    path = write_geotiff(tmp_path / "f32.tif", data)
    with open_scene(path) as scene:
        left, _ = scene.read(Window(190, 0, 20, 20))
        whole, _ = scene.read(Window(0, 0, 400, 400))
    np.testing.assert_array_equal(left, whole[0:20, 190:210])


def test_large_scene_without_overviews_is_sampled_by_windows(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.gamma(4, 150, (3, 2048, 2560)).astype("uint16")  # 5.2 MP: above the decimated-read limit
    data[:, :1500, :] = 0  # mostly nodata: the window grid samples the valid band below
    path = write_geotiff(tmp_path / "big16.tif", data, nodata=0, blockxsize=512, blockysize=512)
    with open_scene(path) as scene:
        sampled = scene.stretch
    expected = np.percentile(data[0, 1500:], [0.5, 99.5])
    np.testing.assert_allclose([sampled.low[0], sampled.high[0]], expected, rtol=0.1)
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4, 8])
    with open_scene(path) as scene:
        np.testing.assert_allclose(scene.stretch.low, sampled.low, rtol=0.1)
        np.testing.assert_allclose(scene.stretch.high, sampled.high, rtol=0.1)


def test_small_valid_island_in_a_large_nodata_scene_is_found(tmp_path: Path) -> None:
    data = np.zeros((1, 2100, 2100), "uint8")
    data[0, 1000:1040, 1000:1040] = 90  # between the sample windows
    path = write_geotiff(tmp_path / "island.tif", data, nodata=0, colorinterp=[ColorInterp.gray])
    with open_scene(path) as scene:
        _, valid = scene.read(Window(990, 990, 60, 60))
    assert valid.sum() == 40 * 40


def test_float_nan_is_invalid(tmp_path: Path) -> None:
    data = np.ones((1, 50, 50), "float32")
    data[0, :, 25:] = np.nan
    data[0, 10, 10] = 5
    path = write_geotiff(tmp_path / "nan.tif", data, colorinterp=[ColorInterp.gray])
    with open_scene(path) as scene:
        rgb, valid = scene.read(Window(0, 0, 50, 50))
    assert valid[:, :25].all() and not valid[:, 25:].any()
    assert (rgb[:, 25:] == 0).all()


# -- masks and windows ---------------------------------------------------------------------------------


def test_alpha_band_and_internal_mask_make_pixels_invalid(tmp_path: Path) -> None:
    data = np.concatenate([_ramp(), np.full((1, 64, 80), 255, "uint8")])
    data[3, :10] = 0
    path = write_geotiff(
        tmp_path / "rgba.tif",
        data,
        colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha],
    )
    with open_scene(path) as scene:
        _, valid = scene.read(Window(0, 0, 80, 64))
    assert not valid[:10].any() and valid[10:].all()

    path = write_geotiff(tmp_path / "masked.tif", _ramp())
    with rasterio.open(path, "r+") as ds:
        mask = np.full((64, 80), 255, "uint8")
        mask[:, :5] = 0
        ds.write_mask(mask)
    with open_scene(path) as scene:
        _, valid = scene.read(Window(0, 0, 80, 64))
    assert not valid[:, :5].any() and valid[:, 5:].all()


def test_window_past_the_edge_is_padded_and_invalid(tmp_path: Path) -> None:
    data = _ramp()
    path = write_geotiff(tmp_path / "small.tif", data)
    with open_scene(path) as scene:
        rgb, valid = scene.read(Window(-10, 50, 100, 30))
    assert rgb.shape == (30, 100, 3)
    np.testing.assert_array_equal(rgb[:14, 10:90], np.moveaxis(data[:, 50:64, :], 0, -1))
    assert valid[:14, 10:90].all()
    assert not valid[14:].any() and not valid[:, :10].any() and not valid[:, 90:].any()
    assert (rgb[14:] == PAD_VALUE).all() and (rgb[:, :10] == PAD_VALUE).all()  # Ultralytics' gray


def test_resampled_read_averages(tmp_path: Path) -> None:
    data = np.zeros((3, 64, 64), "uint8")
    data[:, :, 1::2] = 200  # vertical stripes average to 100
    path = write_geotiff(tmp_path / "stripes.tif", data)
    with open_scene(path) as scene:
        rgb, valid = scene.read(Window(0, 0, 64, 64), out_shape=(32, 32))
        padded, pvalid = scene.read(Window(32, 32, 64, 64), out_shape=(32, 32))
    assert rgb.shape == (32, 32, 3) and valid.all()
    assert np.abs(rgb.astype(int) - 100).max() <= 1
    assert pvalid[:16, :16].all() and not pvalid[16:].any() and not pvalid[:, 16:].any()


# -- georeferencing and GSD ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crs", "transform", "gsd"),
    [
        (CRS.from_epsg(32633), Affine(0.5, 0, 500000, 0, -0.5, 4e6), 0.5),
        (CRS.from_epsg(2263), Affine(1, 0, 1e6, 0, -1, 2e5), 0.3048006),  # US survey feet
        (
            CRS.from_epsg(32633),
            Affine.translation(5e5, 4e6) @ Affine.rotation(30) @ Affine.scale(0.3, -0.3),
            0.3,
        ),
        (CRS.from_epsg(4326), Affine(1e-5, 0, 10.0, 0, -1e-5, 0.5), 1.1095),  # equator: 1e-5 deg ~ 1.11 m
        (
            CRS.from_epsg(4326),
            Affine(1e-5, 0, 10.0, 0, -1e-5, 60.0),
            0.7885,
        ),  # 60 deg N: a degree of longitude halves
    ],
)
def test_gsd_in_metres(tmp_path: Path, crs, transform, gsd: float) -> None:
    path = write_geotiff(tmp_path / "g.tif", _ramp(), crs=crs, transform=transform)
    with open_scene(path) as scene:
        assert scene.gsd == pytest.approx(gsd, rel=2e-3)
        assert scene.crs == crs
        assert scene.transform.almost_equals(transform)
    with open_scene(path, gsd=0.31) as scene:
        assert scene.gsd == 0.31


def test_png_without_georeferencing(tmp_path: Path) -> None:
    array = np.moveaxis(_ramp(), 0, -1).copy()
    Image.fromarray(array).save(tmp_path / "plain.png")
    with open_scene(tmp_path / "plain.png") as scene:
        assert scene.transform is None and scene.crs is None and scene.gsd is None
        rgb, valid = scene.read(Window(0, 0, 80, 64))
    np.testing.assert_array_equal(rgb, array)
    assert valid.all()
    with open_scene(tmp_path / "plain.png", gsd=0.5) as scene:
        assert scene.gsd == 0.5


def test_jpeg_and_paletted_png(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:64, 0:80]
    array = np.stack([xx * 3, yy * 3, (xx + yy) * 2], axis=-1).astype("uint8")  # smooth: JPEG keeps it
    Image.fromarray(array).save(tmp_path / "photo.jpg", quality=95)
    with open_scene(tmp_path / "photo.jpg") as scene:
        rgb, _ = scene.read(Window(0, 0, 80, 64))
    assert np.abs(rgb.astype(int) - array).mean() < 3
    paletted = Image.fromarray(array).convert("P")
    paletted.save(tmp_path / "pal.png")
    with open_scene(tmp_path / "pal.png") as scene:
        rgb, _ = scene.read(Window(0, 0, 80, 64))
    np.testing.assert_array_equal(rgb, np.asarray(paletted.convert("RGB")))


def test_from_array() -> None:
    array = np.moveaxis(_ramp(dtype="uint16") * 16, 0, -1)
    with Scene.from_array(array, gsd=0.5) as scene:
        assert (scene.width, scene.height, scene.dtype, scene.gsd, scene.transform) == (
            80,
            64,
            "uint16",
            0.5,
            None,
        )
        rgb, valid = scene.read(Window(0, 0, 80, 64))
    assert rgb.max() == 255 and valid.all()
    gray = _ramp(count=1)[0]
    with Scene.from_array(gray) as scene:
        rgb, _ = scene.read(Window(0, 0, 80, 64))
    np.testing.assert_array_equal(rgb, np.repeat(gray[..., None], 3, axis=-1))


def test_real_landsat_geotiff(shared_data: Path) -> None:
    with open_scene(shared_data / "geotiff" / "RGB.byte.tif") as scene:
        assert scene.crs == CRS.from_epsg(32618)
        assert scene.gsd == pytest.approx(300.04, rel=1e-3)
        rgb, valid = scene.read(Window(0, 0, 64, 64))
    assert not valid[0, 0]  # nodata corner of the rotated Landsat footprint
    assert (rgb[~valid] == 0).all()


# -- layout warnings and errors ------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_big_striped_raster_warns_with_the_fix(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    profile = dict(driver="GTiff", width=9000, height=8000, count=1, dtype="uint8", SPARSE_OK=True)
    with rasterio.open(tmp_path / "striped.tif", "w", **profile):
        pass  # sparse: no data written, the file stays tiny
    with caplog.at_level(logging.WARNING, logger="detector.raster"):
        open_scene(tmp_path / "striped.tif").close()
    assert "gdal_translate -co TILED=YES -co COMPRESS=DEFLATE" in caplog.text
    assert "striped.tif" in caplog.text
    caplog.clear()
    with rasterio.open(tmp_path / "tiled.tif", "w", tiled=True, **profile):
        pass
    with caplog.at_level(logging.WARNING, logger="detector.raster"):
        open_scene(tmp_path / "tiled.tif").close()
    assert "gdal_translate" not in caplog.text


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RasterError, match=r"nope\.tif: file not found"):
        open_scene(tmp_path / "nope.tif")


def test_corrupt_bytes(tmp_path: Path) -> None:
    (tmp_path / "junk.tif").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(RasterError, match=r"junk\.tif: not a raster GDAL can read"):
        open_scene(tmp_path / "junk.tif")


def test_truncated_geotiff(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 255, (3, 512, 512), dtype="uint8")
    path = write_geotiff(tmp_path / "cut.tif", data, compress="deflate")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(RasterError, match=r"cut\.tif"):
        with open_scene(path) as scene:
            scene.read(Window(0, 0, 512, 512))


def test_complex_data_type(tmp_path: Path) -> None:
    path = write_geotiff(
        tmp_path / "complex.tif", np.ones((1, 16, 16), "complex64"), colorinterp=[ColorInterp.gray]
    )
    with pytest.raises(RasterError, match=r"complex\.tif: unsupported data type complex64"):
        open_scene(path)


def test_all_nodata_scene(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "empty.tif", np.zeros((3, 40, 40), "uint8"), nodata=0)
    with pytest.raises(RasterError, match=r"empty\.tif: every pixel is nodata"):
        open_scene(path)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((0, 10, 3), "uint8"), "empty scene"),
        (np.zeros((4, 4, 3), "complex64"), "unsupported data type"),
        (np.zeros((2, 3, 4, 5), "uint8"), "expected an image array"),
        (np.zeros((3, 3, 3), "uint8"), r"cannot tell the channel axis of an array of shape \(3, 3, 3\)"),
        (np.zeros((3, 100, 3), "uint8"), "cannot tell the channel axis"),  # 3 rows of 100 RGB, or 3 bands?
        (np.zeros((8, 60, 60), "uint16"), "with 1 to 4 channels"),  # multispectral: pick the bands first
        (np.zeros((60, 60, 8), "uint16"), "with 1 to 4 channels"),
    ],
)
def test_bad_arrays(array: np.ndarray, match: str) -> None:
    with pytest.raises(RasterError, match=match):
        Scene.from_array(array)


# -- input types: band-first arrays, PIL images, open rasterio datasets --------------------------------


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_band_first_array_is_transposed(channels: int) -> None:
    band_first = _ramp(rows=40, cols=50, count=channels)  # what rasterio's read() returns
    band_last = np.moveaxis(band_first, 0, -1)
    with Scene.from_array(band_first) as a, Scene.from_array(band_last) as b:
        assert (a.width, a.height, a.count) == (b.width, b.height, b.count) == (50, 40, channels)
        window = Window(0, 0, 50, 40)
        (rgb_a, valid_a), (rgb_b, valid_b) = a.read(window), b.read(window)
    np.testing.assert_array_equal(rgb_a, rgb_b)
    np.testing.assert_array_equal(valid_a, valid_b)


def test_pil_images(tmp_path: Path) -> None:
    array = np.moveaxis(_ramp(), 0, -1).copy()
    with open_scene(Image.fromarray(array)) as scene:
        assert (scene.width, scene.height, scene.path) == (80, 64, "<PIL image>")
        rgb, valid = scene.read(Window(0, 0, 80, 64))
    np.testing.assert_array_equal(rgb, array)
    assert valid.all()
    rgba = np.concatenate([array, np.full((64, 80, 1), 255, np.uint8)], axis=-1)
    rgba[:, :10, 3] = 0  # transparent: not valid
    with open_scene(Image.fromarray(rgba)) as scene:
        _, valid = scene.read(Window(0, 0, 80, 64))
    assert not valid[:, :10].any() and valid[:, 10:].all()
    paletted = Image.fromarray(array).convert("P")
    with open_scene(paletted) as scene:
        rgb, _ = scene.read(Window(0, 0, 80, 64))
    np.testing.assert_array_equal(rgb, np.asarray(paletted.convert("RGB")))
    gray16 = (_ramp(count=1)[0].astype(np.uint16) * 200).astype(np.uint16)
    with open_scene(Image.fromarray(gray16), gsd=0.3) as scene:
        assert scene.dtype == "uint16" and scene.gsd == 0.3 and scene.bands == (1, 1, 1)


def test_truncated_pil_image_is_a_raster_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(tmp_path / "cut.png")
    raw = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    with Image.open(tmp_path / "cut.png") as im:  # PIL decodes lazily: the header reads fine
        with pytest.raises(RasterError, match=r"<PIL image .*cut\.png>: cannot decode the image"):
            open_scene(im)


def test_open_rasterio_dataset_keeps_georeferencing_and_stays_open(tmp_path: Path) -> None:
    data = _ramp(rows=60, cols=70)
    data[:, :, :5] = 0
    path = write_geotiff(tmp_path / "geo.tif", data, nodata=0)
    with rasterio.open(path) as ds:
        with open_scene(ds) as scene:
            assert scene.path == str(path)
            assert scene.crs == CRS.from_epsg(32633) and scene.transform == ds.transform
            assert scene.gsd == pytest.approx(0.5)
            rgb, valid = scene.read(Window(0, 0, 70, 60))
        assert not ds.closed  # the caller's dataset
        assert not valid[:, :5].any() and valid[:, 5:].all()  # its nodata is kept
        np.testing.assert_array_equal(rgb[:, 5:], np.moveaxis(data, 0, -1)[:, 5:])
    with pytest.raises(RasterError, match=r"geo\.tif: the rasterio dataset is closed"):
        open_scene(ds)
    with pytest.raises(RasterError, match=r"cannot read a scene from a dict"):
        open_scene({"path": str(path)})  # type: ignore[arg-type]


def test_predict_takes_band_first_arrays_pil_images_and_datasets(tmp_path: Path) -> None:
    from _fixtures import BrightObjectPredictor, paint_box

    from detector.pipeline import Detector
    from detector.tiling import TileConfig

    image = np.full((3, 300, 400), 40, np.uint8)
    paint_box(image, 100, 50, 140, 70)
    path = write_geotiff(tmp_path / "scene.tif", image)
    detector = Detector(BrightObjectPredictor(256))
    tile = TileConfig(tile=256, overlap=0.25)
    from_file = detector.predict(path, tile=tile)
    np.testing.assert_array_equal(from_file.xyxy, [[100, 50, 140, 70]])
    band_first = detector.predict(image, tile=tile)  # (3, 300, 400): not 3 rows of 300 channels
    pil = detector.predict(Image.fromarray(np.moveaxis(image, 0, -1).copy()), tile=tile)
    for dets in (band_first, pil):
        np.testing.assert_array_equal(dets.xyxy, from_file.xyxy)
        assert dets.source is None and dets.transform is None
    with rasterio.open(path) as ds:
        from_ds = detector.predict(ds, tile=tile)
        assert not ds.closed
    np.testing.assert_array_equal(from_ds.xyxy, from_file.xyxy)
    assert from_ds.crs == CRS.from_epsg(32633) and from_ds.source == str(path)
    assert from_ds.transform == from_file.transform


# -- strict reading: a file that does not decode to its end is an error --------------------------------


def _noisy_rgb(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """An RGB image whose bytes are spread over the whole file (noise on a ramp, hard to compress)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    ramp = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1)
    return (ramp + rng.integers(0, 40, (rows, cols, 3))).clip(0, 255).astype(np.uint8)


def _write(path: Path, rows: int, cols: int) -> Path:
    array = _noisy_rgb(rows, cols)
    if path.suffix == ".tif":
        return write_geotiff(path, np.moveaxis(array, -1, 0), compress="deflate")
    Image.fromarray(array).save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
    return path


#: ``name -> (rows, cols)`` of the files cut in the truncation test.
TRUNCATED_CASES = {
    "small.png": (200, 240),  # one block for GDAL: its whole-image fast path fills the missing rows
    "edge.png": (640, 640),  # read whole for the stretch sample: the same fast path
    "large.png": (1100, 1300),  # over a megapixel: sampled by a decimated read
    "photo.jpg": (640, 640),
    "scene.tif": (700, 600),  # tiled, deflate
}


@pytest.fixture(scope="module")
def intact_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The bytes of each file of :data:`TRUNCATED_CASES`, written once for all cuts."""
    folder = tmp_path_factory.mktemp("intact")
    return {name: _write(folder / name, *shape).read_bytes() for name, shape in TRUNCATED_CASES.items()}


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("name", list(TRUNCATED_CASES))
def test_truncated_file_is_a_raster_error_when_opened(
    tmp_path: Path, intact_files: dict[str, bytes], name: str, fraction: float
) -> None:
    raw = intact_files[name]
    path = tmp_path / name
    path.write_bytes(raw[: int(len(raw) * fraction)])
    stem = re.escape(name)
    with pytest.raises(RasterError, match=rf"{stem}: .*(truncated or corrupt|not a raster GDAL can read)"):
        open_scene(path).close()


def test_corrupt_byte_in_a_png_is_a_raster_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "flip.png", 300, 300)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(RasterError, match=r"flip\.png: the PNG file is truncated or corrupt"):
        open_scene(path)


def test_intact_files_still_open(tmp_path: Path) -> None:
    for name in ("ok.png", "ok.jpg", "ok.tif"):
        path = _write(tmp_path / name, 300, 200)
        with open_scene(path) as scene:
            rgb, valid = scene.read(Window(0, 250, 200, 50))
        assert valid.all() and rgb.any()


# -- georeferencing messages and warnings --------------------------------------------------------------


def test_geotransform_without_crs_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_geotiff(tmp_path / "nocrs.tif", _ramp(), crs=None)
    with caplog.at_level(logging.WARNING, logger="detector.raster"):
        with open_scene(path) as scene:
            assert scene.crs is None and scene.transform is not None and scene.gsd is None
    assert "nocrs.tif has a geotransform but no CRS" in caplog.text
    assert "the GSD is unknown unless given (--gsd)" in caplog.text
    assert "not georeferenced" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="detector.raster"):
        with open_scene(path, gsd=0.4) as scene:
            assert scene.gsd == 0.4
    assert "has a geotransform but no CRS" in caplog.text and "--gsd" not in caplog.text


def test_png_opens_without_rasterio_warnings(tmp_path: Path) -> None:
    Image.fromarray(np.moveaxis(_ramp(), 0, -1).copy()).save(tmp_path / "plain.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_scene(tmp_path / "plain.png").close()
        open_dataset(tmp_path / "plain.png").close()
    assert not [w for w in caught if issubclass(w.category, NotGeoreferencedWarning)]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
@pytest.mark.parametrize("name", ["chip.png", "chip.jpg", "rgba.png", "striped.tif", "tiled.tif"])
def test_windows_cut_from_the_whole_image_equal_windowed_reads(tmp_path: Path, name: str) -> None:
    """A strip-organised 8-bit RGB image is decoded once and its windows are cut from memory; every window
    (inside, across the edges, outside, all-nodata) reads as GDAL's windowed read gives it, and a window made
    smaller (averaged in memory by PIL's box filter) as GDAL's averaged read, to a grey level."""
    rows, cols = 300, 420
    array = _noisy_rgb(rows, cols, seed=3)
    path = tmp_path / name
    if name == "rgba.png":
        alpha = np.full((rows, cols, 1), 255, np.uint8)
        alpha[:, :60] = 0  # a nodata border, and a hole
        alpha[100:140, 200:260] = 0
        Image.fromarray(np.concatenate([array, alpha], axis=-1), "RGBA").save(path)
    elif name.endswith(".tif"):
        array[20:40, 20:40] = 0  # nodata
        write_geotiff(path, np.moveaxis(array, -1, 0), tiled=name == "tiled.tif", nodata=0)
    else:
        Image.fromarray(array).save(path, **({"quality": 90} if name.endswith(".jpg") else {}))
    windows = [
        (Window(0, 0, 128, 128), None),
        (Window(37, 51, 128, 96), None),
        (Window(-20, -10, 128, 128), None),
        (Window(350, 250, 128, 128), None),
        (Window(0, 0, 50, 300), None),  # all nodata in rgba.png
        (Window(500, 0, 64, 64), None),  # outside
        (Window(10.5, 10, 64, 64), None),  # fractional offset: GDAL's path
        (Window(10, 10, 64, 64), (128, 128)),  # enlarged: GDAL's path
    ]
    smaller = [
        (Window(10, 10, 200, 200), (100, 100)),
        (Window(0, 0, cols, rows), (240, 336)),  # the quicklook's read: the whole scene, 1.25x smaller
        (Window(-20, 250, 128, 128), (50, 50)),  # across the edge
    ]
    with open_scene(path) as fast, open_scene(path) as plain:
        assert fast._read_whole is (name != "tiled.tif")
        plain._read_whole = False
        for window, shape in windows:
            a_rgb, a_valid = fast.read(window, out_shape=shape)
            b_rgb, b_valid = plain.read(window, out_shape=shape)
            np.testing.assert_array_equal(a_valid, b_valid, err_msg=str(window))
            np.testing.assert_array_equal(a_rgb, b_rgb, err_msg=str(window))
        for window, shape in smaller:
            a_rgb, a_valid = fast.read(window, out_shape=shape)
            b_rgb, b_valid = plain.read(window, out_shape=shape)
            assert a_rgb.shape == b_rgb.shape == (*shape, 3)
            assert (a_valid == b_valid).mean() > 0.98, window  # hole edges may fall one pixel apart
            both = a_valid & b_valid
            assert both.sum() > 300  # something to compare
            # on this noise image two area averages of a 1.25x step differ per pixel (other kernel weights,
            # ~4 grey levels), not over a few pixels: compare 5x5 block means where both are valid
            a, b = (np.where(both[..., None], x, 0).astype(float) for x in (a_rgb, b_rgb))
            r, c = (shape[0] // 5) * 5, (shape[1] // 5) * 5
            blocks = [x[:r, :c].reshape(r // 5, 5, c // 5, 5, 3).mean(axis=(1, 3)) for x in (a, b)]
            full = both[:r, :c].reshape(r // 5, 5, c // 5, 5).all(axis=(1, 3))
            assert np.abs(blocks[0] - blocks[1])[full].mean() < 1.0, window
        assert (fast._whole is not None) is (name != "tiled.tif")
    assert fast._whole is None  # let go on close


def test_a_large_striped_image_is_not_decoded_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import detector.raster as raster

    path = _write(tmp_path / "chip.png", 64, 80)
    monkeypatch.setattr(raster, "WHOLE_READ_BYTES", 64 * 80 * 3 - 1)
    with open_scene(path) as scene:
        assert not scene._read_whole
        scene.read(Window(0, 0, 32, 32))
        assert scene._whole is None


def test_gsd_of_reads_the_georeferencing_as_the_scene_does(tmp_path: Path) -> None:
    from detector.raster import gsd_of

    image = np.full((3, 64, 64), 90, np.uint8)
    utm = write_geotiff(tmp_path / "utm.tif", image)  # 0.5 m
    geo = write_geotiff(
        tmp_path / "geo.tif", image, crs=CRS.from_epsg(4326), transform=Affine(1e-5, 0, 10.0, 0, -1e-5, 50.0)
    )
    plain = write_geotiff(tmp_path / "plain.tif", image, crs=None, transform=Affine.identity())
    for path in (utm, geo, plain):
        with open_scene(path) as scene:
            assert gsd_of(path) == scene.gsd
    assert gsd_of(utm) == 0.5 and gsd_of(plain) is None
    with pytest.raises(RasterError, match="missing.tif: file not found"):
        gsd_of(tmp_path / "missing.tif")
