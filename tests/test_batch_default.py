"""Tiles per model call chosen by the backend: ``TileConfig(batch=None)`` (the default) runs what the predictor
prefers (1 on the CPU, 8 on CUDA); an int still forces it."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from _fixtures import BrightObjectPredictor, paint_box, write_geotiff

from detector.backends.base import CPU_BATCH, DEFAULT_BATCH, GPU_BATCH, preferred_batch
from detector.detections import Detections
from detector.pipeline import Detector
from detector.tiling import TileConfig

ROOT = Path(__file__).resolve().parents[1]
ONNX = ROOT / "weights" / "detector.onnx"
CHIP = "P1478__1__853___962"


@pytest.fixture(scope="module")
def onnx_model() -> Path:
    if not ONNX.is_file():
        pytest.skip(f"{ONNX} missing (the shipped model)")
    return ONNX


@pytest.fixture
def chip(shared_data: Path) -> Path:
    p = shared_data / "dota" / "demo" / "images" / f"{CHIP}.png"
    if not p.is_file():
        pytest.skip(f"{p} missing")
    return p


def _spy_calls(predictor: object, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the batch size of every call of ``predictor.run`` (the network call of ONNX / OpenVINO)."""
    sizes: list[int] = []
    real = predictor.run  # type: ignore[attr-defined]

    def run(x: np.ndarray, *stream: int) -> np.ndarray:
        sizes.append(len(x))
        return real(x, *stream)

    monkeypatch.setattr(predictor, "run", run)
    return sizes


# ---------------------------------------------------------------------------------------------------------
# TileConfig and the resolution rule


def test_tile_config_batch_defaults_to_none_and_ints_still_force() -> None:
    assert TileConfig().batch is None
    assert TileConfig(batch=None).batch is None
    assert TileConfig(batch=3).batch == 3


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_tile_config_rejects_a_batch_that_is_not_a_positive_integer(bad: float) -> None:
    with pytest.raises(ValueError, match=r"TileConfig\.batch must be a positive integer or None"):
        TileConfig(batch=bad)  # type: ignore[arg-type]


class _Says(BrightObjectPredictor):
    """The fake model of the pipeline tests, with a preferred batch of its own."""

    def __init__(self, preferred: object, imgsz: int = 64) -> None:
        super().__init__(imgsz)
        self.preferred_batch = preferred
        self.sizes: list[int] = []

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        self.sizes.append(len(tiles))
        return super().predict_batch(tiles)


def test_resolution_forced_int_then_the_predictor_then_the_fallback() -> None:
    quiet = BrightObjectPredictor()  # says nothing
    assert preferred_batch(quiet) == DEFAULT_BATCH == 8
    assert preferred_batch(quiet, 2) == 2
    assert preferred_batch(_Says(3)) == 3 and preferred_batch(_Says(3), 5) == 5
    assert Detector(_Says(3)).tiles_per_call() == 3
    assert Detector(_Says(3)).tiles_per_call(TileConfig(batch=1)) == 1
    assert Detector(quiet).tiles_per_call(TileConfig()) == 8


@pytest.mark.parametrize("bad", [0, 2.5, True, "8"])
def test_a_bad_preferred_batch_names_the_predictor(bad: object) -> None:
    with pytest.raises((ValueError, TypeError), match="_Says.preferred_batch|invalid literal"):
        preferred_batch(_Says(bad))


def test_the_pipeline_calls_the_model_with_the_preferred_batch(tmp_path: Path) -> None:
    """A 200 x 140 px scene in 64 px tiles (overlap 16): 4 x 3 = 12 tiles; preferred 5 -> calls of 5, 5, 2; a
    forced batch wins; every variant finds the same objects."""
    image = np.full((3, 140, 200), 40, np.uint8)
    for box in [(10, 10, 20, 18), (100, 60, 112, 70), (170, 110, 190, 122)]:
        paint_box(image, *box)
    path = write_geotiff(tmp_path / "s.tif", image)
    runs = {}
    for preferred, forced, expected in [(5, None, [5, 5, 2]), (1, None, [1] * 12), (5, 12, [12])]:
        model = _Says(preferred)
        dets = Detector(model, sizes=False).predict(path, tile=TileConfig(overlap=16, grow=1.0, batch=forced))
        assert dets.meta["tiles"] == 12 and model.sizes == expected, (preferred, forced)
        runs[(preferred, forced)] = dets
    ref = runs[(5, None)]
    assert len(ref) == 3
    for dets in runs.values():
        np.testing.assert_array_equal(dets.xyxy, ref.xyxy)
        np.testing.assert_array_equal(dets.class_ids, ref.class_ids)


# ---------------------------------------------------------------------------------------------------------
# each backend's choice


def test_onnx_session_batch_follows_its_providers() -> None:
    from detector.backends.onnx import session_batch

    cpu = SimpleNamespace(get_providers=lambda: ["CPUExecutionProvider"])
    cuda = SimpleNamespace(get_providers=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert session_batch(cpu) == CPU_BATCH == 1
    assert session_batch(cuda) == GPU_BATCH == 8


def test_onnx_predictor_on_the_cpu_prefers_1_and_on_cuda_8(
    onnx_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    from detector.backends.onnx import OnnxPredictor

    pred = OnnxPredictor(onnx_model, threads=1)
    assert pred.session.get_providers()[0] == "CPUExecutionProvider"
    assert pred.preferred_batch == 1
    # device="cuda" without a CUDA provider falls back to the CPU, and so does the batch
    on_cuda = OnnxPredictor(onnx_model, device="cuda", threads=1)
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert on_cuda.preferred_batch == (8 if has_cuda else 1)
    # a session whose providers include CUDA (mocked: this is what onnxruntime-gpu reports)
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(pred.session, "get_providers", lambda: providers)
    assert pred.preferred_batch == 8
    assert Detector(pred).tiles_per_call() == 8 and Detector(pred).tiles_per_call(TileConfig(batch=2)) == 2


def test_openvino_predictor_prefers_1(onnx_model: Path) -> None:
    from detector.backends.openvino import OpenVinoPredictor

    pytest.importorskip("openvino")
    pred = OpenVinoPredictor(onnx_model, threads=2)  # one stream unless asked
    assert pred.streams.n == 1 and pred.preferred_batch == 1 and Detector(pred).tiles_per_call() == 1
    two = OpenVinoPredictor(onnx_model, threads=2, streams=2)  # one tile per stream
    assert two.preferred_batch == 2 and Detector(two).tiles_per_call() == 2


def test_torch_predictor_on_the_cpu_prefers_1(pretrained_pt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from detector.backends.torch import TorchPredictor

    pred = TorchPredictor(pretrained_pt, device="cpu")
    assert pred.device.type == "cpu" and pred.preferred_batch == 1
    assert Detector(pred).tiles_per_call() == 1
    monkeypatch.setattr(pred, "device", torch.device("cuda", 0))  # what a CUDA predictor holds
    assert pred.preferred_batch == 8


# ---------------------------------------------------------------------------------------------------------
# the real model: same detections, one tile per call


def _assert_same(a: Detections, b: Detections, box_atol: float = 1e-2, score_atol: float = 1e-4) -> None:
    assert len(a) == len(b) > 0
    close = np.all(np.isclose(a.xyxy[:, None], b.xyxy[None], atol=box_atol, rtol=1e-5), -1)
    close &= (a.class_ids[:, None] == b.class_ids[None]) & np.isclose(
        a.scores[:, None], b.scores[None], atol=score_atol
    )
    assert close.any(1).all() and close.any(0).all()  # every detection has its twin in the other run
    b = b[close.argmax(1)]
    np.testing.assert_allclose(a.scores, b.scores, atol=score_atol)
    np.testing.assert_allclose(a.xyxy, b.xyxy, atol=box_atol, rtol=1e-5)
    if a.xywhr is not None and b.xywhr is not None:
        np.testing.assert_allclose(a.xywhr, b.xywhr, atol=box_atol, rtol=1e-5)
    assert a.is_rotated == b.is_rotated


def test_real_model_batch_none_equals_batch_8_in_one_call_per_tile(
    onnx_model: Path, chip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    det = Detector.load(onnx_model, threads=2)
    assert det.predictor.streams.n == 2 and det.tiles_per_call() == 2  # one tile per stream
    sizes = _spy_calls(det.predictor, monkeypatch)
    default = det.predict(chip)  # TileConfig() : batch None -> one tile per stream on the CPU
    tiles = default.meta["tiles_run"]
    assert default.meta["tiles"] == tiles > 1
    assert sizes == [1] * tiles  # one session call per tile
    sizes.clear()
    eight = det.predict(chip, tile=TileConfig(batch=8))
    batches = [min(8, tiles)] * (tiles // 8) + ([tiles % 8] if tiles % 8 else [])
    halves = [n - n // 2 if k else n // 2 for n in batches for k in (0, 1) if n > 1] + [
        1 for n in batches if n == 1
    ]
    assert sorted(sizes) == sorted(halves)  # each batch split over the two streams
    _assert_same(default, eight)


def test_real_model_on_openvino_runs_one_tile_per_call(
    onnx_model: Path, chip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openvino")
    det = Detector.load(onnx_model, threads=2, runtime="openvino")
    sizes = _spy_calls(det.predictor, monkeypatch)
    dets = det.predict(chip)
    assert len(dets) > 0 and sizes == [1] * dets.meta["tiles_run"]


# ---------------------------------------------------------------------------------------------------------
# the CLI and the bench follow


def test_cli_batch_defaults_to_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from detector import cli

    seen: list[TileConfig | None] = []
    model = _Says(1, imgsz=64)

    def load(cls: type, path: object = None, **kwargs: object) -> Detector:
        return Detector(model)

    real = Detector.predict

    def spy(self: Detector, source: object, **kw: object) -> Detections:
        seen.append(kw.get("tile"))  # type: ignore[arg-type]
        return real(self, source, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Detector, "load", classmethod(load))
    monkeypatch.setattr(Detector, "predict", spy)
    image = np.full((3, 100, 150), 40, np.uint8)
    paint_box(image, 20, 20, 40, 30)
    scene = write_geotiff(tmp_path / "a.tif", image)
    runner = CliRunner()
    r = runner.invoke(cli.cli, ["predict", str(scene), "-o", str(tmp_path / "o"), "--no-quicklook"])
    assert r.exit_code == 0, r.output
    assert seen[0] is not None and seen[0].batch is None
    assert model.sizes and set(model.sizes) == {1}  # the predictor's own choice reached the model
    help_text = " ".join(runner.invoke(cli.cli, ["predict", "--help"]).output.split())
    assert "backend's own, 1 on the CPU, 8 on CUDA" in help_text


def test_bench_defaults_to_the_backend_and_reports_the_batch_used(onnx_model: Path, tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import _bench_report as report
    import bench

    cache = ["--cache", str(tmp_path)]
    assert bench.parse_args(cache).batch is None  # the worker passes None: the backend chooses
    assert bench.parse_args([*cache, "--batch", "8"]).batch == 8
    with pytest.raises(SystemExit):
        bench.parse_args([*cache, "--batch", "0"])
    s = SimpleNamespace(batch=None)
    r = {"a": {"x": {"ours": {"batch": 1}, "int8": {"batch": 1}}}, "c": {"600": {"batch": 1}}}
    assert report._batches_used(r) == [1] and report._batches_used(r, "d") == []
    text = report._batch_text(s, report._batches_used(r))
    assert text.startswith("1 tile per model call") and "backend's own choice" in text
    forced = report._batch_text(SimpleNamespace(batch=8), [8])
    assert forced == "8 tiles per model call, as `--batch 8` asks"


def test_bench_dask_warm_up_runs_the_batch_the_tasks_will_run(onnx_model: Path) -> None:
    """(d)'s warm-up resolves the batch on the worker (where the model is), as the tasks do."""
    import os

    from detector.batch import ModelSpec

    sys.path.insert(0, str(ROOT / "scripts"))
    import _bench_worker as worker

    spec = ModelSpec(weights=str(onnx_model), threads=1)
    assert worker._warm_worker(spec, TileConfig()) == {"pid": os.getpid(), "batch": 1}
    assert worker._warm_worker(spec, TileConfig(batch=3))["batch"] == 3
