"""INT8 quantisation: calibration tiles from training images only, both quantisers on a tiny random model,
the metadata the INT8 file carries, and the shipped INT8 model's record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detector.errors import ConfigError, ModelError

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("aircraft", "helicopter", "small-vehicle", "large-vehicle")
IMGSZ = 64


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> Path:
    """A randomly initialised 4-class YOLOv8n detect model (64 px) exported with our metadata."""
    torch = pytest.importorskip("torch")
    from ultralytics.nn.tasks import DetectionModel

    from training.export import export_onnx

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=len(NAMES), verbose=False)
    model.names = dict(enumerate(NAMES))
    for m in model.modules():  # batch norms from one random batch, so activations have a spread
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, IMGSZ, IMGSZ))
    model.eval()
    folder = tmp_path_factory.mktemp("tiny")
    pt = folder / "tiny.pt"
    torch.save({"model": model, "train_args": {"imgsz": IMGSZ}}, pt)
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    try:
        # export itself is verified in test_model.py
        return export_onnx(pt, folder / "tiny.onnx", name="tiny", verify=False)
    finally:
        torch.set_num_threads(old)


@pytest.fixture()
def calib_root(tmp_path: Path) -> Path:
    """A data root with two generated image folders (train-like) and an eval-set folder name."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for folder, n, size in (("a/train", 3, (100, 80)), ("b/train/images", 4, (200, 150))):
        d = tmp_path / folder
        d.mkdir(parents=True)
        for i in range(n):
            im = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
            im[10:30, 20:50] = 255  # a bright "object"
            Image.fromarray(im).save(d / f"im{i}.png")
    return tmp_path


def _config(root: Path, tmp_path: Path, body: str) -> Path:
    p = tmp_path / "q.yaml"
    p.write_text(f"data_root: {root}\n" + body)
    return p


def test_calibration_tiles_are_what_the_pipeline_feeds(calib_root: Path, tmp_path: Path, tiny_onnx: Path):
    from detector.model import read_meta
    from training.quantize import calibration_tiles, load_quantize_config

    cfg = load_quantize_config(
        _config(
            calib_root,
            tmp_path,
            "per_image: 2\nseed: 3\ntile: 64\nsources:\n"
            "  - {path: a/train, tiles: 2}\n  - {path: b/train/images, tiles: 5}\n",
        )
    )
    tiles, record = calibration_tiles(cfg, read_meta(tiny_onnx))
    assert [r["tiles"] for r in record] == [2, 5] and len(tiles) == 7
    assert record[0]["images"] == 1 and record[1]["images"] == 3  # at most 2 tiles from one image
    assert all(t.dtype == np.uint8 and t.shape == (64, 64, 3) for t in tiles)
    again, _ = calibration_tiles(cfg, read_meta(tiny_onnx))
    assert all(np.array_equal(x, y) for x, y in zip(tiles, again, strict=True))  # seeded


def test_config_errors_name_the_file_and_the_key(calib_root: Path, tmp_path: Path):
    from training.quantize import calibration_tiles, load_quantize_config

    bad = {
        "sources: []\n": "no calibration sources",
        "sources:\n  - {path: a/train, tiles: 0}\n": r"sources\[0\]\.tiles must be a positive integer",
        "colour: red\nsources:\n  - {path: a/train, tiles: 1}\n": r"unknown key\(s\) \['colour'\]",
        "method: magic\nsources:\n  - {path: a/train, tiles: 1}\n": "method must be one of",
        "tile: 100\nsources:\n  - {path: a/train, tiles: 1}\n": "tile must be a multiple of 32",
    }
    for body, message in bad.items():
        with pytest.raises(ConfigError, match=rf"q\.yaml: .*{message}"):
            load_quantize_config(_config(calib_root, tmp_path, body))
    with pytest.raises(ConfigError, match=r"nope\.yaml: quantize config not found"):
        load_quantize_config(tmp_path / "nope.yaml")
    from tests._fixtures import make_meta

    for path, message in (
        ("gdit-airport/test/images", "eval set folder 'gdit-airport/test'"),
        ("dota/demo", "eval set folder 'dota/demo'"),
        ("missing/train", "has no images"),
    ):
        cfg = load_quantize_config(
            _config(calib_root, tmp_path, f"sources:\n  - {{path: {path}, tiles: 1}}\n")
        )
        with pytest.raises(ConfigError, match=message):
            calibration_tiles(cfg, make_meta(64))


@pytest.mark.parametrize("method", ["nncf", "onnxruntime"])
def test_quantize_a_tiny_model(tiny_onnx: Path, tmp_path: Path, method: str):
    onnx = pytest.importorskip("onnx")
    if method == "nncf":
        pytest.importorskip("nncf")
    from detector.backends.decode import to_input
    from detector.backends.onnx import OnnxPredictor
    from detector.model import read_meta
    from training.quantize import CalibSource, QuantizeConfig, head_decode_nodes, quantize_onnx, sha256

    rng = np.random.default_rng(0)
    tiles = [(rng.random((IMGSZ, IMGSZ, 3)) * 255).astype(np.uint8) for _ in range(6)]
    cfg = QuantizeConfig(
        sources=(CalibSource("unused", 6),), data_root=tmp_path, method=method, source_file="q.yaml"
    )
    out = quantize_onnx(tiny_onnx, tmp_path / "int8" / "tiny-int8.onnx", cfg, tiles=tiles)
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny-int8.onnx"]  # no temporary left behind
    meta, fp32 = read_meta(out), read_meta(tiny_onnx)
    rec = meta.extra["quantization"]
    assert rec["int8"] is True and rec["method"] == method
    assert rec["source_model"] == {"file": "tiny.onnx", "name": "tiny", "sha256": sha256(tiny_onnx)}
    assert rec["calibration"]["tiles"] == 6 and rec["calibration"]["config"] == "q.yaml"
    assert meta.name == "tiny-int8" and meta.names == fp32.names and meta.class_map == fp32.class_map
    assert meta.imgsz == fp32.imgsz and meta.extra["export_versions"] == fp32.extra["export_versions"]
    proto = onnx.load(str(out))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    # the box decoding of the head stays float: nothing quantised feeds the DFL or the box arithmetic
    decode = set(head_decode_nodes(onnx.load(str(tiny_onnx))))
    assert decode and "/model.22/dfl/conv/Conv" in decode
    producers = {o: n for n in proto.graph.node for o in n.output}
    dfl = [n for n in proto.graph.node if n.name == "/model.22/dfl/conv/Conv"]
    assert dfl and all(producers.get(i, dfl[0]).op_type != "DequantizeLinear" for i in dfl[0].input)
    x = to_input(np.stack(tiles[:2]))
    ref = OnnxPredictor(tiny_onnx, threads=1).run(x)
    got = OnnxPredictor(out, threads=1).run(x)
    assert got.shape == ref.shape
    assert np.abs(got[:, 4:] - ref[:, 4:]).mean() < 0.05  # class probabilities, on calibration-like input
    with pytest.raises(ModelError, match="already quantised"):
        quantize_onnx(out, tmp_path / "twice.onnx", cfg, tiles=tiles)
    with pytest.raises(ModelError, match=r"can only quantise \.onnx"):
        quantize_onnx(tmp_path / "m.pt", tmp_path / "x.onnx", cfg, tiles=tiles)


def test_cli_quantize(tiny_onnx: Path, calib_root: Path, tmp_path: Path):
    pytest.importorskip("onnx")
    from click.testing import CliRunner

    from detector.cli import cli
    from detector.model import read_meta

    cfg = _config(
        calib_root, tmp_path, "method: onnxruntime\nsources:\n  - {path: b/train/images, tiles: 3}\n"
    )
    out = tmp_path / "cli-int8.onnx"
    r = CliRunner().invoke(cli, ["quantize", str(tiny_onnx), "--calib", str(cfg), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "INT8, onnxruntime, 3 calibration tiles" in r.output
    rec = read_meta(out).extra["quantization"]
    # per_image: 2, so 3 tiles take 2 images
    assert rec["calibration"]["sources"] == [{"path": "b/train/images", "images": 2, "tiles": 3}]
    r = CliRunner().invoke(
        cli, ["quantize", str(tiny_onnx), "--calib", str(cfg), "-o", str(tmp_path / "x.pt")]
    )
    assert r.exit_code == 2 and "must end in .onnx" in r.output


def test_shipped_int8_model_record():
    """weights/detector-int8.onnx: INT8, calibrated on training tiles only, made from the shipped fp32 model."""
    from detector.model import read_meta
    from training.quantize import _eval_folders, sha256

    int8, fp32 = ROOT / "weights" / "detector-int8.onnx", ROOT / "weights" / "detector.onnx"
    if not int8.is_file():
        pytest.skip(f"{int8} missing: run `detector quantize weights/detector.onnx -o {int8}` (make model)")
    meta = read_meta(int8)
    rec = meta.extra["quantization"]
    assert rec["int8"] is True and rec["method"] in ("nncf", "onnxruntime")
    assert rec["source_model"]["file"] == "detector.onnx"
    assert rec["source_model"]["sha256"] == sha256(fp32), "the INT8 file was not made from the shipped model"
    cal = rec["calibration"]
    assert cal["config"] == "quantize.yaml" and cal["tiles"] >= 100
    evals = [str(p) for p in _eval_folders()]
    assert evals and all(not any(s["path"].startswith(e) for e in evals) for s in cal["sources"])
    assert all("train" in s["path"] or "MOS74-93" in s["path"] for s in cal["sources"])
    assert meta.names == read_meta(fp32).names
    assert json.loads(meta.to_json())["extra"]["quantization"] == rec
