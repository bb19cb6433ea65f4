"""Streams: a batch's tiles run as a few model calls at once, each on a share of the threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from detector.backends.base import CPU_STREAMS, Streams, cpu_streams
from detector.detections import Detections
from detector.model import load_predictor

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "detector.onnx"
DEMO_CHIP = "dota/demo/images/P1478__1__853___962.png"


def _marked(tiles: np.ndarray) -> list[Detections]:
    """One detection per tile whose score is the tile's first pixel, so the order can be checked."""
    return [
        Detections(
            xyxy=np.array([[0.0, 0, 4, 4]]),
            scores=np.array([t[0, 0, 0] / 255], np.float32),
            class_ids=np.array([0]),
            class_names=("a",),
        )
        for t in tiles
    ]


def test_streams_split_a_batch_in_order_and_run_the_parts_at_once():
    seen: list[tuple[int, int, str]] = []
    both = threading.Barrier(2, timeout=10)  # passes only when two parts run at the same time

    def call(tiles: np.ndarray, stream: int) -> list[Detections]:
        seen.append((stream, len(tiles), threading.current_thread().name))
        both.wait()
        return _marked(tiles)

    tiles = np.zeros((5, 32, 32, 3), np.uint8)
    tiles[:, 0, 0, 0] = np.arange(5) * 10
    out = Streams(2).map(call, tiles)
    assert [round(float(d.scores[0]) * 255) for d in out] == [0, 10, 20, 30, 40]
    assert sorted((s, n) for s, n, _ in seen) == [(0, 2), (1, 3)]  # distinct streams, contiguous parts
    assert all(name.startswith("detector-model") for *_, name in seen)
    assert Streams(2).bounds(5) == [0, 2, 5] and Streams(2).bounds(1) == [0, 1]  # the cuts map makes
    assert Streams(3).bounds(7) == [0, 2, 5, 7] and Streams(1).bounds(4) == [0, 4]


def test_one_tile_or_one_stream_runs_in_the_callers_thread():
    names = []

    def call(tiles: np.ndarray, stream: int) -> list[Detections]:
        names.append((stream, threading.current_thread().name))
        return _marked(tiles)

    one = np.zeros((1, 32, 32, 3), np.uint8)
    assert len(Streams(2).map(call, one)) == 1
    assert len(Streams(1).map(call, np.zeros((3, 32, 32, 3), np.uint8))) == 3
    assert names == [(0, threading.current_thread().name)] * 2


def test_a_failing_stream_raises_after_the_others_finish():
    done = []

    def call(tiles: np.ndarray, stream: int) -> list[Detections]:
        if stream == 0:
            raise RuntimeError("tile broke")
        time.sleep(0.05)
        done.append(stream)
        return _marked(tiles)

    with pytest.raises(RuntimeError, match="tile broke"):
        Streams(2).map(call, np.zeros((2, 32, 32, 3), np.uint8))
    assert done == [1]


def test_stream_counts():
    assert cpu_streams(2) == CPU_STREAMS == 2
    assert cpu_streams(1) == 1  # never more streams than threads
    assert cpu_streams(16, 4) == 4 and cpu_streams(3, 1) == 1
    with pytest.raises(ValueError, match="streams must be at least 1"):
        cpu_streams(2, 0)
    with pytest.raises(ValueError, match="at least 1 stream"):
        Streams(0)


@pytest.fixture(scope="module")
def car_park(shared_data: Path) -> np.ndarray:
    """Four 512 px tiles of a real DOTA car park (many cars in each)."""
    from PIL import Image

    chip = np.asarray(Image.open(shared_data / DEMO_CHIP).convert("RGB"))
    return np.stack([chip[y : y + 512, x : x + 512] for y in (0, 512) for x in (0, 512)])


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_two_streams_give_the_detections_of_one(car_park: np.ndarray, runtime: str):
    if not SHIPPED.is_file():
        pytest.skip(f"{SHIPPED} missing")
    if runtime == "openvino":
        pytest.importorskip("openvino")
    one = load_predictor(SHIPPED, threads=2, streams=1, runtime=runtime)
    two = load_predictor(SHIPPED, threads=2, streams=2, runtime=runtime)
    assert (one.streams.n, one.preferred_batch) == (1, 1)
    assert (two.streams.n, two.preferred_batch) == (2, 2)
    a, b = one.predict_batch(car_park), two.predict_batch(car_park)
    assert len(a) == len(b) == 4
    for da, db in zip(a, b, strict=True):
        assert len(da) == len(db) and len(da) > 10
        order_a, order_b = np.lexsort(da.xyxy.T), np.lexsort(db.xyxy.T)
        np.testing.assert_allclose(da.xyxy[order_a], db.xyxy[order_b], atol=0.05)
        np.testing.assert_allclose(da.scores[order_a], db.scores[order_b], atol=1e-3)
        assert (da.class_ids[order_a] == db.class_ids[order_b]).all()


def test_onnxruntime_shares_the_threads_among_its_streams():
    if not SHIPPED.is_file():
        pytest.skip(f"{SHIPPED} missing")
    opts = lambda p: p.session.get_session_options().intra_op_num_threads  # noqa: E731
    default = load_predictor(SHIPPED, threads=2)
    assert default.streams.n == 2 and opts(default) == 1 and default.preferred_batch == 2
    single = load_predictor(SHIPPED, threads=1)
    assert single.streams.n == 1 and opts(single) == 1
    wide = load_predictor(SHIPPED, threads=4, streams=1)
    assert wide.streams.n == 1 and opts(wide) == 4
