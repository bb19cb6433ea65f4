"""The resolution guard: a scene far coarser than the model's GSD range is refused unless forced; finer
scenes are resampled into the range; scenes without georeferencing run and say that sizes are unknown."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _fixtures import BrightObjectPredictor, paint_box, write_geotiff
from affine import Affine
from PIL import Image

from detector.errors import DetectorError, ModelError, ResolutionError
from detector.pipeline import Detector
from detector.tiling import TileConfig

ROOT = Path(__file__).resolve().parents[1]
RANGE = (0.1, 1.0)
TILES = TileConfig(overlap=32)


def _predictor(gsd_range: tuple[float, float] | None = RANGE) -> BrightObjectPredictor:
    predictor = BrightObjectPredictor(256)
    predictor.meta = replace(predictor.meta, gsd_range=gsd_range)
    return predictor


def _scene(tmp_path: Path, gsd: float, name: str) -> Path:
    """A 600 x 500 px UTM GeoTIFF at ``gsd`` m/px with one bright 40 x 20 px object."""
    image = np.full((3, 500, 600), 40, np.uint8)
    paint_box(image, 300, 200, 340, 220)
    return write_geotiff(tmp_path / name, image, transform=Affine(gsd, 0, 500000, 0, -gsd, 4e6))


def test_scene_inside_the_range_runs_at_its_own_resolution(tmp_path: Path) -> None:
    dets = Detector(_predictor()).predict(_scene(tmp_path, 0.3, "fine.tif"), tile=TILES)
    assert len(dets) == 1 and dets.class_name.tolist() == ["small-aircraft"]  # 12 x 6 m
    assert dets.meta["scale"] == 1.0 and dets.meta["size_known"] is True
    assert dets.gsd == pytest.approx(0.3)
    assert dets.meta["gsd_range"] == RANGE
    np.testing.assert_allclose(dets.xyxy, [[300, 200, 340, 220]])


@pytest.mark.parametrize("gsd", [30.0, 300.0])
def test_far_coarser_scene_is_refused_in_one_line(tmp_path: Path, gsd: float) -> None:
    path = _scene(tmp_path, gsd, "coarse.tif")
    predictor = _predictor()
    with pytest.raises(ResolutionError) as info:
        Detector(predictor).predict(path, tile=TILES)
    message = str(info.value)
    assert isinstance(info.value, DetectorError)
    assert message == (
        f"{path}: scene GSD {gsd:g} m/px is far coarser than the model's range 0.1-1 m/px; "
        "pass --force-resolution to run anyway"
    )
    assert predictor.calls == 0  # refused before any tile is read


def test_forced_coarse_scene_runs(tmp_path: Path) -> None:
    path = _scene(tmp_path, 300.0, "coarse.tif")
    dets = Detector(_predictor()).predict(path, tile=TILES, force=True)
    assert dets.meta["size_known"] is True and dets.meta["tiles_run"] >= 1
    # enlarged 4x at most (the zoom limit): the object is still found, in scene pixels
    assert dets.meta["scale"] == pytest.approx(0.25)
    assert len(dets) == 1
    np.testing.assert_allclose(dets.xyxy, [[300, 200, 340, 220]], atol=1)


def test_gsd_override_beats_the_georeferencing(tmp_path: Path) -> None:
    # a 300 m georeferenced file that the user says is 0.3 m (e.g. a wrong geotransform)
    dets = Detector(_predictor()).predict(_scene(tmp_path, 300.0, "wrong.tif"), tile=TILES, gsd=0.3)
    assert len(dets) == 1 and dets.gsd == pytest.approx(0.3) and dets.meta["scale"] == 1.0
    # ... and the other way round: a 0.3 m scene declared 300 m is refused
    with pytest.raises(ResolutionError, match="scene GSD 300 m/px"):
        Detector(_predictor()).predict(_scene(tmp_path, 0.3, "fine.tif"), tile=TILES, gsd=300)


def test_finer_scene_is_resampled_into_the_range(tmp_path: Path) -> None:
    image = np.full((3, 1200, 1400), 40, np.uint8)
    paint_box(image, 600, 400, 680, 440)  # 80 x 40 px at 0.05 m = 4 x 2 m
    path = write_geotiff(tmp_path / "very-fine.tif", image, transform=Affine(0.05, 0, 5e5, 0, -0.05, 4e6))
    predictor = _predictor()
    dets = Detector(predictor).predict(path, tile=TILES)
    assert dets.meta["scale"] == pytest.approx(2.0)  # 0.05 m -> the range's fine end, 0.1 m
    assert predictor.tiles < 16  # 512 px windows, not 256 px ones
    np.testing.assert_allclose(dets.xyxy, [[600, 400, 680, 440]], atol=2)


def test_scene_without_georeferencing_runs_and_says_size_unknown(tmp_path: Path) -> None:
    image = np.full((300, 400, 3), 40, np.uint8)
    image[100:120, 200:240] = 255
    path = tmp_path / "chip.png"
    Image.fromarray(image).save(path)
    dets = Detector(_predictor()).predict(path, tile=TILES)
    assert len(dets) == 1 and dets.gsd is None
    assert dets.meta["size_known"] is False and dets.meta["scale"] == 1.0
    # an array too, and a model without a range
    assert Detector(_predictor()).predict(image, tile=TILES).meta["size_known"] is False
    coarse = _scene(tmp_path, 300.0, "coarse.tif")
    assert Detector(_predictor(None)).predict(coarse, tile=TILES).meta["gsd_range"] is None


def test_resolution_factor_is_configurable(tmp_path: Path) -> None:
    path = _scene(tmp_path, 3.0, "3m.tif")  # 3x the range's coarse end
    with pytest.raises(ResolutionError):
        Detector(_predictor()).predict(path, tile=TILES)  # default: refuse beyond 2x
    scale = Detector(_predictor(), resolution_factor=4).predict(path, tile=TILES).meta["scale"]
    assert scale == pytest.approx(1 / 3, abs=0.01)  # enlarged to the coarse end (85 px windows)
    assert len(Detector(_predictor(), resolution_factor=None).predict(path, tile=TILES)) == 1
    with pytest.raises(ValueError, match="resolution_factor"):
        Detector(_predictor(), resolution_factor=-1)


def test_real_landsat_scene_is_refused_by_the_shipped_model(shared_data: Path) -> None:
    model = ROOT / "weights" / "detector.onnx"
    detector = Detector.load(model)
    if detector.meta.gsd_range is None:
        pytest.fail(f"{model} carries no gsd_range: run python -m training.metadata {model} --gsd-range ...")
    with pytest.raises(ResolutionError, match=r"scene GSD 300 m/px is far coarser than the model's range"):
        detector.predict(shared_data / "geotiff" / "RGB.byte.tif")


# -- training.metadata: the range inside the ONNX file ------------------------------------------------------


@pytest.fixture
def onnx_copy(tmp_path: Path) -> Path:
    src = ROOT / "weights" / "detector.onnx"
    if not src.is_file():
        pytest.skip(f"{src} missing")
    return Path(shutil.copy(src, tmp_path / "model.onnx"))


def test_set_gsd_range_rewrites_only_the_metadata(onnx_copy: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from detector.model import read_meta
    from training.metadata import main, set_gsd_range

    before = onnx.load(str(onnx_copy))
    meta = set_gsd_range(onnx_copy, (0.2, 0.8), note="test")
    assert meta.gsd_range == (0.2, 0.8) and meta.extra["gsd_range_note"] == "test"
    assert read_meta(onnx_copy).gsd_range == (0.2, 0.8)
    after = onnx.load(str(onnx_copy))
    assert after.graph.SerializeToString() == before.graph.SerializeToString()
    assert [p.name for p in onnx_copy.parent.iterdir()] == ["model.onnx"]  # no temporary file left
    assert main([str(onnx_copy), "--gsd-range", "none"]) == 0
    assert read_meta(onnx_copy).gsd_range is None
    with pytest.raises(SystemExit):
        main([str(onnx_copy), "--gsd-range", "1.0,0.5"])
    with pytest.raises(SystemExit):
        main([str(onnx_copy)])  # a model without --gsd-range


def test_set_gsd_range_on_bad_files(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from training.metadata import set_gsd_range

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="junk.onnx: not an ONNX model"):
        set_gsd_range(junk, (0.1, 1.0))
    with pytest.raises(ModelError, match="only .onnx"):
        set_gsd_range(tmp_path / "model.pt", (0.1, 1.0))
    assert junk.read_bytes() == b"not a model"


def test_measure_gsd_on_real_sources(shared_data: Path, tmp_path: Path) -> None:
    from training.metadata import measure_gsd, suggest_range

    config = tmp_path / "small.yaml"
    config.write_text(
        f"""name: small
out: {tmp_path / "out"}
data_root: {shared_data}
sources:
  - name: kit
    scales: [1.0, 0.4]
    dataset: {{format: yolo, name: kit-aerial-cars, path: kit-aerial-cars/MOS74-93,
               names: kit-aerial-cars/aerial.names, gsd: 0.13}}
  - name: demo
    dataset: {{format: dota, name: dota, path: dota/demo}}
"""
    )
    rows, ref = measure_gsd([config])
    by = {(r.source, r.scale): r for r in rows}
    assert by["kit", 1.0].p50 == pytest.approx(0.13) and by["kit", 0.4].p50 == pytest.approx(0.325)
    assert by["kit", 1.0].how == "stated"
    assert 4.0 < ref["car"] < 6.0  # a car box is about 5 m long
    # the DOTA demo scenes state 0.12-0.13 m in their headers
    assert 0.11 < by["demo", 1.0].p50 < 0.14
    assert suggest_range(rows, min_images=1) == (0.1, 0.4)


# -- the command line ---------------------------------------------------------------------------------------


def test_cli_refuses_a_300_m_scene_unless_forced(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from detector import cli

    model = ROOT / "weights" / "detector.onnx"
    if not model.is_file():
        pytest.skip(f"{model} missing")
    image = np.full((3, 200, 250), 40, np.uint8)
    scene = write_geotiff(tmp_path / "landsat-like.tif", image, transform=Affine(300, 0, 5e5, 0, -300, 4e6))
    out = tmp_path / "out"
    args = ["predict", str(scene), "-o", str(out), "-w", str(model), "--no-quicklook", "--tile", "256"]
    refused = CliRunner().invoke(cli.cli, args)
    assert refused.exit_code == 1
    lines = [line for line in refused.output.splitlines() if "error" in line]
    assert (
        len(lines) == 1 and "scene GSD 300 m/px is far coarser than the model's range 0.1-1 m/px" in lines[0]
    )
    assert not list(out.glob("*.geojson"))  # no detections written
    forced = CliRunner().invoke(
        cli.cli, [*args, "--force-resolution", "--no-resample", "--cross-class-iou", "0.9"]
    )
    assert forced.exit_code == 0, forced.output
    assert (out / "landsat-like.geojson").is_file()
