"""Plumbing of ``scripts/bench.py`` (``make bench``): scene generation, SAHI conversion, the worker processes and
the report. The numbers themselves are not checked here (they depend on the machine)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio

from detector.backends.base import cpu_streams
from detector.labels import Annotation, LabeledImage
from detector.taxonomy import default_classes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import _bench_scenes as scenes  # noqa: E402
import _bench_worker as worker  # noqa: E402
import bench  # noqa: E402

ONNX = ROOT / "weights" / "detector.onnx"
DOTA_ONNX = ROOT / "weights" / "pretrained" / "yolov8n-obb.onnx"
CHIP = "P1478__1__853___962"


@pytest.mark.parametrize(
    ("sizes", "side", "expected"),
    [
        ([(10, 10)], 10, [(0, 0)]),
        ([(6, 4), (4, 6), (5, 5)], 10, [(0, 6), (0, 0), (4, 0)]),  # tallest first, then a new row
        ([(11, 1)], 10, [None]),  # wider than the square
        ([(8, 8), (8, 8)], 10, [(0, 0), None]),  # no room left
        ([(5, 9), (5, 9), (5, 2)], 10, [(0, 0), (5, 0), None]),  # a row full, and no room below it
        (
            [(824, 1464), (1147, 1023), (884, 977), (1024, 1024)],
            2560,
            [(0, 0), (0, 1464), (1147, 1464), (824, 0)],
        ),
    ],
)
def test_pack_shelves(sizes: list[tuple[int, int]], side: int, expected: list) -> None:
    placed = scenes.pack_shelves(sizes, side)
    assert placed == expected
    boxes = [(x, y, x + w, y + h) for (w, h), p in zip(sizes, placed, strict=True) if p for x, y in [p]]
    for i, a in enumerate(boxes):  # inside the square, never overlapping
        assert 0 <= a[0] and 0 <= a[1] and a[2] <= side and a[3] <= side
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def _labeled(tmp: Path, name: str, w: int, h: int, seed: int) -> LabeledImage:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path = tmp / f"{name}.png"
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    box = np.array([[1, 2], [9, 2], [9, 7], [1, 7]], float)
    ann = Annotation(path, "small-vehicle", "small-vehicle", box, rotated=True)
    return LabeledImage(path, w, h, 0.1, [ann], group=name, dataset="dota")


def test_build_mosaic_moves_pixels_and_labels_together(tmp_path: Path) -> None:
    from PIL import Image

    a, b = _labeled(tmp_path, "a", 40, 30, 0), _labeled(tmp_path, "b", 20, 50, 1)
    out = tmp_path / "mosaic.png"
    mosaic, layout = scenes.build_mosaic([a, b], 64, out)
    assert (mosaic.width, mosaic.height, mosaic.image) == (64, 64, out)
    where = {m["image"]: (m["x"], m["y"]) for m in layout}
    assert where == {"b.png": (0, 0), "a.png": (20, 0)}
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (64, 64, 3)
    for im in (a, b):
        x, y = where[im.image.name]
        src = np.asarray(Image.open(im.image))
        np.testing.assert_array_equal(pixels[y : y + im.height, x : x + im.width], src)
    assert pixels[52:, :].max() == 0  # black where no scene went
    polys = sorted(ann.polygon[0].tolist() for ann in mosaic.annotations)
    assert polys == [[1.0, 2.0], [21.0, 2.0]]
    assert all(ann.image == out for ann in mosaic.annotations)


def test_textured_geotiff_is_tiled_deflate_and_textured(tmp_path: Path) -> None:
    sources = scenes.texture_sources(None)
    path = tmp_path / "t.tif"
    scenes.write_textured_geotiff(path, 700, sources, block=256)
    with rasterio.open(path) as ds:
        assert (ds.width, ds.height, ds.count, ds.dtypes) == (700, 700, 3, ("uint8",) * 3)
        assert ds.profile["tiled"] and ds.block_shapes[0] == (256, 256)
        assert ds.compression.name.lower() == "deflate"
        assert ds.crs is not None
        data = ds.read()
    assert data.std() > 20  # texture, not a flat colour
    assert path.stat().st_size > 0.3 * data.nbytes  # DEFLATE does not make it trivial
    mtime = path.stat().st_mtime_ns
    scenes.write_textured_geotiff(path, 700, sources, block=256)  # same parameters: reused
    assert path.stat().st_mtime_ns == mtime
    scenes.write_textured_geotiff(path, 700, sources, seed=1, block=256)  # other parameters: regenerated
    with rasterio.open(path) as ds:
        assert not np.array_equal(ds.read(), data)
    assert not list(tmp_path.glob("*.tmp"))


def _prediction(cat: int, xyxy: list[float], score: float, corners: np.ndarray | None) -> SimpleNamespace:
    mask = None if corners is None else SimpleNamespace(segmentation=[corners.reshape(-1).tolist()])
    return SimpleNamespace(
        category=SimpleNamespace(id=cat),
        bbox=SimpleNamespace(to_xyxy=lambda: list(xyxy)),
        score=SimpleNamespace(value=np.float32(score)),
        mask=mask,
    )


def test_sahi_predictions_become_our_detections() -> None:
    ops = pytest.importorskip("ultralytics.utils.ops")
    xywhr = np.array([[100.0, 50.0, 40.0, 10.0, 0.3], [10.0, 20.0, 8.0, 16.0, 1.2]])
    corners = ops.xywhr2xyxyxyxy(xywhr)  # the order SAHI keeps from result.obb.xyxyxyxy
    class_map = {0: "aircraft", 10: "small-vehicle"}
    preds = [
        _prediction(0, [1, 2, 3, 4], 0.9, corners[0]),
        _prediction(1, [5, 6, 7, 8], 0.8, corners[0]),  # a ship: dropped, as our backends drop it
        _prediction(10, [9, 10, 11, 12], 0.7, corners[1]),
    ]
    xyxy, rboxes, scores, cls = worker.sahi_to_arrays(preds, class_map)
    np.testing.assert_array_equal(xyxy, [[1, 2, 3, 4], [9, 10, 11, 12]])
    np.testing.assert_allclose(scores, [0.9, 0.7], rtol=1e-6)
    assert [default_classes()[c] for c in cls] == ["aircraft", "small-vehicle"]
    from detector.backends.onnx import regularize_rboxes

    np.testing.assert_allclose(rboxes, regularize_rboxes(xywhr), atol=1e-4)
    _, none_rotated, _, _ = worker.sahi_to_arrays([_prediction(0, [1, 2, 3, 4], 0.5, None)], class_map)
    assert none_rotated is None
    empty = worker.sahi_to_arrays([], class_map)
    assert empty[0].shape == (0, 4) and len(empty[2]) == 0


def test_quick_mode_never_writes_benchmarks_md(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--quick", "--out", str(ROOT / "BENCHMARKS.md")])
    assert "not publishable" in capsys.readouterr().err
    s = bench.parse_args(["--quick"])
    assert s.out.name == "BENCHMARKS.quick.md" and s.repeats == 1 and s.scenes == []
    full = bench.parse_args([])
    assert full.out == ROOT / "BENCHMARKS.md" and full.memory_sides == [5000, 10000]
    assert full.dask_split_side == 20000 and full.dask_workers == (1, 2)
    assert full.headline == 2560 and full.repeats == 3 and full.scenes is None
    assert full.sections == ("a", "b", "c", "d", "t", "w")
    with pytest.raises(SystemExit):
        bench.parse_args(["--sections", "a,x"])


def test_defaults_are_the_shipped_model_at_its_own_tile_size() -> None:
    from detector.model import read_meta
    from detector.tiling import TileConfig

    s = bench.parse_args([])
    assert s.onnx == ONNX and s.int8 == ROOT / "weights" / "detector-int8.onnx"
    assert s.tile == read_meta(ONNX).imgsz and s.overlap == TileConfig().overlap
    assert s.rebuild_pt and s.pt == bench.DEFAULT_CACHE / "detector.pt"  # rebuilt by scripts/onnx_to_pt.py
    assert s.overlap_ratio == pytest.approx(s.overlap_px / s.tile)
    px = bench.parse_args(["--overlap", "96"])
    assert px.overlap_px == 96 and px.overlap_ratio == pytest.approx(96 / px.tile)  # pixels from 1 up
    dota = bench.parse_args(["--dota"])
    assert (dota.onnx, dota.pt, dota.tile, dota.overlap) == (DOTA_ONNX, bench.DOTA_PT, 1024, 0.2)
    assert dota.int8 is None and not dota.rebuild_pt
    assert bench.parse_args(["--int8", "none"]).int8 is None
    for bad in (["--overlap", "640"], ["--dask-workers", "0"], ["--dask-workers", "x"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_the_change_bench_section_is_carried_over(tmp_path: Path) -> None:
    out = tmp_path / "B.md"
    assert bench.carry_change_section(out) == ""
    block = f"{bench.CHANGE_START}\n## Change between dates\n\n| a | b |\n{bench.CHANGE_END}"
    out.write_text(f"# Benchmarks\n\nold numbers\n\n{block}\n\ntrailing text\n")
    assert bench.carry_change_section(out) == block
    out.write_text(f"# Benchmarks\n{bench.CHANGE_START}\nno end marker\n")
    assert bench.carry_change_section(out) == ""


def test_largest_object_is_the_longest_side_of_any_label(tmp_path: Path) -> None:
    im = _labeled(tmp_path, "a", 40, 30, 0)  # one 8 x 5 px box
    square = np.array([[0, 0], [0, 20], [20, 20], [20, 0]], float)
    assert bench.largest_object_px(im) == pytest.approx(8.0)
    im.annotations.append(Annotation(im.image, "large-vehicle", "large-vehicle", square, rotated=True))
    assert bench.largest_object_px(im) == pytest.approx(20.0)


def test_end_to_end_ours_floor_and_memory(tmp_path: Path, shared_data: Path) -> None:
    """Our side only (no SAHI): one demo chip with its floor, and one small generated GeoTIFF; the
    change-bench section of the report it replaces survives."""
    out = tmp_path / "B.md"
    change = f"{bench.CHANGE_START}\n## Change between dates\n\nkept as it is\n{bench.CHANGE_END}"
    out.write_text(f"# Benchmarks\n\nstale\n\n{change}\n")
    argv = ["--data", str(shared_data), "--out", str(out), "--cache", str(tmp_path / "cache")]
    argv += [
        "--sections",
        "b,c",
        "--scenes",
        CHIP,
        "--headline",
        "0",
        "--repeats",
        "1",
        "--memory-sides",
        "600",
    ]
    assert bench.main(argv) == 0
    text = out.read_text()
    for needle in ("## Setup", "## (b) Pipeline overhead", "## (c) Memory", "## Targets", CHIP, "600 x 600"):
        assert needle in text
    assert text.count(change) == 1 and text.index(change) > text.index("## Targets") and "stale" not in text
    raw = json.loads((tmp_path / "cache" / "bench.json").read_text())
    ours = raw["a"][CHIP]["ours"]
    assert ours["tiles"] == 4 and ours["tile_size"] == 640  # the 1024 px chip in 2 x 2 tiles of 640 px
    assert ours["n_dets"] > 0 and not ours["torch_imported"]
    assert ours["peak_rss"] >= ours["rss_after_load"] > 0
    row_b = raw["b"]["scenes"][CHIP]
    assert (
        row_b["floor"] > 0 and row_b["rounds"] == bench.floor_rounds(1) == 4
    )  # pipeline and floor alternated
    assert row_b["overhead"] == pytest.approx(row_b["pipeline"] / row_b["floor"] - 1)
    # no --batch: the CPU session's own 1 tile per stream in each call, and the report says so
    n = cpu_streams(os.cpu_count() or 1)
    assert ours["streams"] == row_b["streams"] == n and ours["intra_op_threads"] == max(
        1, (os.cpu_count() or 1) // n
    )
    assert ours["batch"] == n and raw["b"]["scenes"][CHIP]["batches"] == [n] * (4 // n) + [1] * (4 % n)
    assert (
        f"{n} tile{'s' if n > 1 else ''} per model call, the backend's own choice" in text
        and "batch=8" not in text
    )
    assert f"the predictor's {n} stream(s)" in text
    if n > 1:  # the one-stream floor beside it, for reference
        assert row_b["floor_one_stream"] > 0 and "floor, 1 stream s" in text
    mem = raw["c"]["600"]  # one 640 px tile
    assert mem["tiles"] == 1 and mem["peak_rss"] > 0 and not mem["torch_imported"] and mem["batch"] == n
    assert not list(tmp_path.glob(".B.md.*"))  # the atomic write left no temporary file


@pytest.mark.slow
def test_end_to_end_against_sahi(tmp_path: Path, shared_data: Path) -> None:
    """Both sides on the 1024 px demo chip with the shipped model (SAHI on the .pt rebuilt from it), the INT8
    copy on OpenVINO when it exists, with the accuracy pass."""
    pytest.importorskip("sahi")
    out = tmp_path / "A.md"
    argv = ["--data", str(shared_data), "--out", str(out), "--cache", str(tmp_path / "cache")]
    argv += ["--sections", "a", "--scenes", CHIP, "--headline", "0", "--repeats", "1"]
    assert bench.main(argv) == 0
    assert (tmp_path / "cache" / "detector.pt").is_file()  # rebuilt by scripts/onnx_to_pt.py
    raw = json.loads((tmp_path / "cache" / "bench.json").read_text())
    row = raw["a"][CHIP]
    assert not row["sahi"]["is_obb"] and row["sahi"]["n_dets"] > 0 and row["sahi"]["imgsz"] == 640
    assert row["sahi_threads"]["torch_threads"]["timed_calls"] == raw["settings"]["sahi_threads"]
    acc = next(iter(raw["a"]["_accuracy"].values()))
    sides = (
        ("ours", "sahi", "int8") if (ROOT / "weights" / "detector-int8.onnx").is_file() else ("ours", "sahi")
    )
    for side in sides:
        assert acc[side]["ap"]["map50"] > 0.2  # every side sees the chip's vehicles
    assert "AP50 ours" in out.read_text()


@pytest.mark.slow
def test_end_to_end_dask_batch_and_split(tmp_path: Path, shared_data: Path) -> None:
    """Section (d) on two small generated scenes and one split scene, 1 worker: per-worker peaks come back."""
    pytest.importorskip("distributed")
    out = tmp_path / "D.md"
    argv = ["--data", str(shared_data), "--out", str(out), "--cache", str(tmp_path / "cache")]
    argv += ["--sections", "d", "--dask-workers", "1", "--dask-batch", "2", "--dask-split-side", "1500"]
    argv += ["--dask-split-pixels", "1000000"]  # the 1500 px scene (9 tiles) splits into blocks
    assert bench.main(argv) == 0
    raw = json.loads((tmp_path / "cache" / "bench.json").read_text())
    runs = raw["d"]["runs"]
    assert set(runs) == {"batch-1", "split-1"}
    assert runs["batch-1"]["scenes"] == 2 and runs["batch-1"]["tiles"] == 2 * 16  # 2560 px: 4 x 4 of 736 px
    for r in runs.values():
        assert len(r["worker_peak_rss"]) == 1 and all(v > 0 for v in r["worker_peak_rss"].values())
    assert "## (d) Dask" in out.read_text()


@pytest.mark.parametrize("nodata", [None, 0])
def test_direct_8bit_reads_match_the_band_first_path(tmp_path: Path, nodata: int | None) -> None:
    """The overhead work of ``make bench``: 8-bit RGB tiles are read by GDAL straight into the (rows, cols, 3)
    tile; every kind of window (inside, across the edge, outside, resampled both ways) reads as before."""
    from rasterio.windows import Window

    from detector.raster import open_scene

    rng = np.random.default_rng(3)
    data = rng.integers(1, 256, (3, 300, 410), dtype=np.uint8)
    data[:, 100:140, 50:90] = 0  # a nodata hole when nodata=0
    path = tmp_path / "s.tif"
    profile = dict(driver="GTiff", width=410, height=300, count=3, dtype="uint8", tiled=True)
    profile.update(blockxsize=128, blockysize=128, nodata=nodata)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    windows = [
        (Window(0, 0, 128, 128), None),
        (Window(300, 200, 160, 160), (160, 160)),  # across the right and bottom edges: padded
        (Window(-40, -20, 128, 128), (128, 128)),  # across the top-left corner
        (Window(600, 600, 64, 64), (64, 64)),  # outside
        (Window(0, 0, 410, 300), (96, 128)),  # shrunk (average)
        (Window(10, 10, 40, 40), (96, 96)),  # enlarged (bilinear)
    ]
    with open_scene(path) as scene:
        assert scene._direct
        fast = [scene.read(w, out_shape=s) for w, s in windows]
        scene._direct = False
        slow = [scene.read(w, out_shape=s) for w, s in windows]
    for (rgb_f, ok_f), (rgb_s, ok_s) in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(rgb_f, rgb_s)
        np.testing.assert_array_equal(ok_f, ok_s)
    assert not fast[3][1].any()  # outside: all padding
    assert fast[0][1].all() == (nodata is None)  # the hole is invalid where 0 is nodata


def test_ours_job_runs_the_plain_grid_when_asked(tmp_path: Path, shared_data: Path) -> None:
    """The tiling sweep's plain-grid row (grow 1): an 1800 px scene (the demo chip repeated) tiles as 4 x 4 of
    640 px on the plain grid and as 3 x 3 of 704 px on the default balanced grid."""
    from PIL import Image

    chip = np.asarray(Image.open(shared_data / "dota" / "demo" / "images" / f"{CHIP}.png").convert("RGB"))
    scene = tmp_path / "scene.png"
    Image.fromarray(np.tile(chip, (2, 2, 1))[:1800, :1800]).save(scene)
    job = {"weights": str(ONNX), "scene": str(scene), "tile": 640, "overlap": 128, "batch": 8}
    job |= {"repeats": 1, "conf": 0.25}
    plain = worker.run_ours({**job, "grow": 1.0})
    balanced = worker.run_ours({**job, "grow": None})
    assert (plain["tiles_run"], plain["tile_size"]) == (16, 640)
    assert (balanced["tiles_run"], balanced["tile_size"]) == (9, 704)


def test_whole_process_targets_read_the_medians() -> None:
    import _bench_report

    s = SimpleNamespace(quick=False, sahi_threads=2)
    lines = _bench_report.targets(s, {"w": {"median": {"ours": 4.0, "sahi": 13.0, "int8": 2.5}}})
    assert "Whole process at least 3x faster than SAHI's default: 3.25x, **met**." in lines
    assert "Whole process INT8 (OpenVINO) at least 1.5x faster than fp32: 1.60x, **met**." in lines
    slow = _bench_report.targets(s, {"w": {"median": {"ours": 5.0, "sahi": 13.0, "int8": 5.0}}})
    assert any("2.60x, **NOT met**" in x for x in slow) and any("1.00x, **NOT met**" in x for x in slow)
    assert not [x for x in _bench_report.targets(s, {}) if "Whole process" in x]
    two = _bench_report.targets(s, {"w": {"median": {"ours": 4.0, "sahi": 13.0, "sahi_threads": 7.0}}})
    assert "Whole process at least 2x faster than SAHI with 2 threads: 1.75x, **NOT met**." in two
