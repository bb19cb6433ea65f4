"""The OpenVINO runtime: same file, same metadata, same detections as onnxruntime (within a tolerance)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.errors import ModelError
from detector.model import load_predictor

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "detector.onnx"
INT8 = ROOT / "weights" / "detector-int8.onnx"
DEMO_CHIP = "dota/demo/images/P1478__1__853___962.png"


@pytest.fixture(scope="module")
def shipped() -> Path:
    if not SHIPPED.is_file():
        pytest.skip(f"{SHIPPED} missing")
    return SHIPPED


@pytest.fixture(scope="module")
def real_tiles(shared_data: Path) -> np.ndarray:
    """Two 640 px tiles of a real DOTA car park and one 640 px tile of a GDIT training airport."""
    from PIL import Image

    chip = np.asarray(Image.open(shared_data / DEMO_CHIP).convert("RGB"))
    airport = sorted((shared_data / "gdit-airport/train/images").glob("*.jpg"))[0]
    a = np.zeros((640, 640, 3), np.uint8)
    im = np.asarray(Image.open(airport).convert("RGB"))[:640, :640]
    a[: im.shape[0], : im.shape[1]] = im
    return np.stack([chip[:640, :640], chip[384:1024, 384:1024], a])


def _match(a, b, box_atol: float, score_atol: float, min_share: float = 1.0) -> float:
    """Share of ``a``'s detections with a partner in ``b`` (same class, box and score within the tolerances)."""
    if len(a) == 0:
        return 1.0 if len(b) == 0 else 0.0
    close = np.all(np.abs(a.xyxy[:, None] - b.xyxy[None]) <= box_atol, -1)
    close &= a.class_ids[:, None] == b.class_ids[None]
    close &= np.abs(a.scores[:, None] - b.scores[None]) <= score_atol
    return float(close.any(1).mean())


def test_openvino_matches_onnxruntime_on_real_tiles(shipped: Path, real_tiles: np.ndarray):
    pytest.importorskip("openvino")
    from detector.backends.decode import to_input
    from detector.backends.openvino import OpenVinoPredictor

    ort = load_predictor(shipped, threads=2)
    ov = load_predictor(shipped, threads=2, runtime="openvino")
    assert isinstance(ov, OpenVinoPredictor) and ov.meta == ort.meta and ov.fixed_size is None
    raw_ort, raw_ov = ort.run(to_input(real_tiles)), ov.run(to_input(real_tiles))
    assert raw_ov.shape == raw_ort.shape
    np.testing.assert_allclose(raw_ov[:, :4], raw_ort[:, :4], atol=2e-2, rtol=1e-4)  # pixels
    np.testing.assert_allclose(raw_ov[:, 4:], raw_ort[:, 4:], atol=1e-4)  # class probabilities
    found = 0
    for do, dv in zip(ort.predict_batch(real_tiles), ov.predict_batch(real_tiles), strict=True):
        assert dv.class_names == do.class_names
        assert abs(len(do) - len(dv)) <= max(1, len(do) // 50)  # near-threshold scores may flip
        assert _match(do, dv, box_atol=0.1, score_atol=1e-3) >= 0.98
        found += len(do)
    assert found > 50  # the car park is full: the comparison is not between empty sets


def test_openvino_runs_other_tile_sizes_and_checks_them(shipped: Path, real_tiles: np.ndarray):
    pytest.importorskip("openvino")
    ov = load_predictor(shipped, threads=2, runtime="openvino")
    ort = load_predictor(shipped, threads=2)
    small = np.ascontiguousarray(real_tiles[:2, :320, :320])
    for do, dv in zip(ort.predict_batch(small), ov.predict_batch(small), strict=True):
        assert _match(do, dv, box_atol=0.1, score_atol=1e-3) >= 0.98
    with pytest.raises(ValueError, match="multiple of 32"):
        ov.predict_batch(np.zeros((1, 100, 100, 3), np.uint8))
    assert ov.predict_batch(np.zeros((0, 320, 320, 3), np.uint8)) == []


def test_openvino_compiles_each_tile_shape_once_and_keeps_a_few(
    shipped: Path, real_tiles: np.ndarray, monkeypatch
):
    """A dynamic-axes file is compiled per input shape (static shapes run faster), each shape once, the least
    recently used dropped past ``STATIC_SHAPES``; outputs equal those of the shape met first."""
    pytest.importorskip("openvino")
    import detector.backends.openvino as backend

    monkeypatch.setattr(backend, "STATIC_SHAPES", 2)
    ov = load_predictor(shipped, threads=2, runtime="openvino")
    assert ov.fixed_size is None and not ov._compiled  # nothing compiled before the first tile
    tiles = {s: np.ascontiguousarray(real_tiles[:1, :s, :s]) for s in (320, 256, 192)}
    first = ov.predict_batch(tiles[320])[0]
    compiled = ov._compiled[(1, 3, 320, 320)]
    ov.predict_batch(tiles[320])
    assert list(ov._compiled) == [(1, 3, 320, 320)] and ov._compiled[(1, 3, 320, 320)] is compiled
    ov.predict_batch(tiles[256])
    ov.predict_batch(tiles[320])  # used again: now the most recent
    ov.predict_batch(tiles[192])
    assert list(ov._compiled) == [(1, 3, 320, 320), (1, 3, 192, 192)]
    again = ov.predict_batch(tiles[320])[0]
    assert len(first) > 5 and _match(first, again, box_atol=1e-4, score_atol=1e-6) == 1.0


def test_compiled_models_are_cached_between_runs_where_asked(
    shipped: Path, real_tiles: np.ndarray, tmp_path: Path, monkeypatch
):
    pytest.importorskip("openvino")
    from detector.backends.openvino import cache_dir

    monkeypatch.setenv("DETECTOR_OPENVINO_CACHE", "")
    assert cache_dir() is None
    monkeypatch.delenv("DETECTOR_OPENVINO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "detector" / "openvino"
    monkeypatch.setenv("DETECTOR_OPENVINO_CACHE", str(tmp_path / "ov"))
    tile = np.ascontiguousarray(real_tiles[:1, :256, :256])
    first = load_predictor(shipped, threads=2, runtime="openvino").predict_batch(tile)[0]
    blobs = list((tmp_path / "ov").iterdir())
    assert blobs and not (tmp_path / "xdg").exists()
    again = load_predictor(shipped, threads=2, runtime="openvino").predict_batch(tile)[0]  # from the cache
    assert sorted((tmp_path / "ov").iterdir()) == sorted(blobs)
    assert len(first) > 3 and _match(first, again, box_atol=1e-4, score_atol=1e-6) == 1.0
    (tmp_path / "ro").write_text("a file, not a folder")
    monkeypatch.setenv("DETECTOR_OPENVINO_CACHE", str(tmp_path / "ro" / "cache"))
    assert len(load_predictor(shipped, threads=2, runtime="openvino").predict_batch(tile)[0]) == len(first)


def test_detector_load_with_openvino(shipped: Path, shared_data: Path):
    pytest.importorskip("openvino")
    from detector.pipeline import Detector
    from detector.tiling import TileConfig

    scene = shared_data / DEMO_CHIP
    a = Detector.load(shipped, threads=2).predict(scene, tile=TileConfig(tile=640))
    b = Detector.load(shipped, threads=2, runtime="openvino").predict(scene, tile=TileConfig(tile=640))
    assert len(a) > 50 and abs(len(a) - len(b)) <= max(2, len(a) // 50)
    assert _match(a, b, box_atol=0.2, score_atol=1e-3) >= 0.97


def test_int8_model_on_both_runtimes(real_tiles: np.ndarray):
    """The shipped INT8 file runs on onnxruntime and OpenVINO and finds what the fp32 model finds."""
    pytest.importorskip("openvino")
    if not INT8.is_file() or not SHIPPED.is_file():
        pytest.skip(f"{INT8} missing: run `detector quantize` (make model)")
    fp32 = load_predictor(SHIPPED, threads=2).predict_batch(real_tiles)
    for runtime in ("onnxruntime", "openvino"):
        int8 = load_predictor(INT8, threads=2, runtime=runtime).predict_batch(real_tiles)
        for d32, d8 in zip(fp32, int8, strict=True):
            confident = d32[d32.scores > 0.5]
            assert _match(confident, d8, box_atol=3.0, score_atol=0.2) >= 0.85, runtime


def test_openvino_errors(tmp_path: Path, shipped: Path):
    pytest.importorskip("openvino")
    onnx = pytest.importorskip("onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(ModelError, match=r"junk\.onnx is not a readable ONNX model"):
        load_predictor(junk, runtime="openvino")
    with pytest.raises(ModelError, match="not found"):
        load_predictor(tmp_path / "gone.onnx", runtime="openvino")
    proto = onnx.load(str(shipped))
    del proto.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(proto, str(plain))
    with pytest.raises(ModelError, match=r"plain\.onnx has no detector metadata"):
        load_predictor(plain, runtime="openvino")
    entry = proto.metadata_props.add()
    meta = json.loads(onnx.load(str(shipped)).metadata_props[0].value)
    entry.key, entry.value = "detector_meta", json.dumps({**meta, "task": "obb"})
    onnx.save(proto, str(plain))
    with pytest.raises(ModelError, match="output has 8 values"):
        load_predictor(plain, runtime="openvino")
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_predictor(shipped, runtime="tensorrt")


def test_missing_openvino_says_how_to_install(tmp_path: Path, shipped: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now raises ImportError
    with pytest.raises(
        ModelError, match=r"detector\.onnx: the OpenVINO runtime is not installed.*\[openvino\]"
    ):
        load_predictor(shipped, runtime="openvino")


def test_prepare_compiles_the_first_batch_shape_before_any_tile(shipped: Path, real_tiles: np.ndarray):
    """``prepare`` (the pipeline calls it while the first tiles are read) compiles that shape; the batch that
    follows runs on those infer requests, with the outputs of an unprepared predictor."""
    pytest.importorskip("openvino")
    ov = load_predictor(shipped, threads=2, runtime="openvino")
    tiles = np.ascontiguousarray(real_tiles[:1, :320, :320])
    ov.prepare(tiles.shape)
    compiled = ov._compiled[(1, 3, 320, 320)]
    assert list(ov._compiled) == [(1, 3, 320, 320)]
    got = ov.predict_batch(tiles)[0]
    assert ov._compiled[(1, 3, 320, 320)] is compiled and len(ov._compiled) == 1
    want = load_predictor(shipped, threads=2, runtime="openvino").predict_batch(tiles)[0]
    assert len(want) > 5 and _match(want, got, box_atol=1e-4, score_atol=1e-6) == 1.0


def test_prepare_with_two_streams_compiles_the_parts_they_run(shipped: Path, real_tiles: np.ndarray):
    """With 2 streams a batch of 3 runs as parts of 2 and 1 tiles: ``prepare`` compiles those shapes."""
    pytest.importorskip("openvino")
    ov = load_predictor(shipped, threads=2, streams=2, runtime="openvino")
    ov.prepare((3, 256, 256, 3))
    assert sorted(ov._compiled) == [(1, 3, 256, 256), (2, 3, 256, 256)]
    ov.predict_batch(np.ascontiguousarray(real_tiles[:3, :256, :256]))
    assert len(ov._compiled) == 2
