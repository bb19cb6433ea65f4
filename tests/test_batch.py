"""detector.batch: sources, output targets, overwriting, per-scene results and interruption.

Scenes are generated GeoTIFFs with painted bright objects; the model is the fake ``BrightObjectPredictor``
(real code on real pixels), so the whole path (raster reads, tiling, merge, writers) runs in milliseconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from _fixtures import BrightObjectPredictor, paint_box, write_geotiff

from detector import batch, writers
from detector.batch import BatchConfig, ModelSpec
from detector.errors import OutputExistsError, RasterError
from detector.pipeline import Detector
from detector.tiling import TileConfig

FAST = BatchConfig(tile=TileConfig(tile=64, overlap=0.2), quicklook=False)


def scene(
    path: Path, box: tuple[int, int, int, int] = (10, 12, 30, 20), size: tuple[int, int] = (80, 60)
) -> Path:
    """A small RGB GeoTIFF (EPSG:32633, 0.5 m) with one white box ``(x0, y0, x1, y1)``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((3, size[1], size[0]), 30, np.uint8)
    paint_box(image, *box)
    return write_geotiff(path, image, tiled=False)


def detector() -> Detector:
    return Detector(BrightObjectPredictor(imgsz=64))


# ------------------------------------------------------------------------------------------------ sources


def test_expansion_never_reads_our_outputs(tmp_path: Path) -> None:
    a = scene(tmp_path / "in" / "a.tif")
    (tmp_path / "in" / "a.quicklook.jpg").write_bytes(b"")
    (tmp_path / "in" / "a.quicklook.png").write_bytes(b"")
    out = tmp_path / "in" / "out"
    scene(out / "old.tif")  # e.g. a copy someone left in the output folder
    scenes, missing = batch.expand_sources([str(tmp_path / "in")], exclude=out)
    assert scenes == [str(a)] and missing == []
    scenes, _ = batch.expand_sources([str(tmp_path / "in" / "**" / "*")], exclude=out)
    assert scenes == [str(a)]
    # only the output folder itself is excluded, not the folder that holds it
    scenes, missing = batch.expand_sources([str(out)], exclude=out)
    assert scenes == [] and "never read as scenes" in missing[0][1]


def test_symbolic_link_loop_is_named(tmp_path: Path) -> None:
    loop = tmp_path / "loop.tif"
    os.symlink(loop, loop)
    dangling = tmp_path / "gone.tif"
    os.symlink(tmp_path / "nothing.tif", dangling)
    scenes, missing = batch.expand_sources([str(loop), str(dangling), str(tmp_path / "none.tif")])
    assert scenes == []
    assert missing == [
        (str(loop), "symbolic link loop"),
        (str(dangling), f"broken symbolic link (to {tmp_path / 'nothing.tif'})"),
        (str(tmp_path / "none.tif"), "file not found"),
    ]
    good = scene(tmp_path / "good.tif")
    scenes, _ = batch.expand_sources([str(tmp_path)])  # a loop inside a folder is skipped, not fatal
    assert scenes == [str(good)]


# ------------------------------------------------------------------------------------------------ one line


def test_describe_error_is_self_contained() -> None:
    assert (
        batch.describe_error(RasterError("a.tif: read failed. See previous exception."))
        == "a.tif: read failed"
    )
    assert (
        batch.describe_error(RasterError("a.tif: cannot read (Read failed. See previous exception)"), "a.tif")
        == "a.tif: cannot read (Read failed)"
    )
    try:
        try:
            raise ValueError("band 4 does not exist")
        except ValueError as e:
            raise RuntimeError("See previous exception") from e
    except RuntimeError as e:
        assert batch.describe_error(e, "b.tif") == "b.tif: band 4 does not exist"
    assert batch.describe_error(KeyError("x"), "c.tif") == "c.tif: KeyError: 'x'"


# ------------------------------------------------------------------------------------------------ a batch


def test_run_keeps_the_source_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = scene(tmp_path / "x" / "scene.tif"), scene(tmp_path / "y" / "scene.tif", box=(40, 30, 60, 50))
    given = [str(x), os.path.relpath(y)]  # one absolute, one relative: both kept as typed
    written: dict[str, str | None] = {}
    real = writers.write

    def spy(dets, path, fmt, **kw):  # noqa: ANN001, ANN003, ANN202
        written[Path(path).name] = dets.source
        return real(dets, path, fmt, **kw)

    monkeypatch.setattr(writers, "write", spy)
    results = batch.run(given, tmp_path / "out", config=FAST, detector=detector())
    assert [r.source for r in results] == given and [r.name for r in results] == ["x_scene", "y_scene"]
    assert written == {"x_scene.geojson": given[0], "y_scene.geojson": given[1]}
    assert all(r.error is None and r.counts["small-aircraft"] == 1 for r in results)
    for name, source in zip(("x_scene", "y_scene"), given, strict=True):
        features = json.loads((tmp_path / "out" / f"{name}.geojson").read_text())["features"]
        assert [f["properties"]["source"] for f in features] == [source]


def test_existing_outputs_stop_the_batch_before_it_runs(tmp_path: Path) -> None:
    a, b = scene(tmp_path / "a.tif"), scene(tmp_path / "b.tif")
    out = tmp_path / "out"
    config = BatchConfig(formats=("geojson", "csv"), tile=TileConfig(tile=64), quicklook=True)
    batch.run([str(a), str(b)], out, config=config, detector=detector())
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert sorted(before) == sorted(
        f"{s}{e}" for s in "ab" for e in (".geojson", ".csv", batch.QUICKLOOK_SUFFIX)
    )
    model = BrightObjectPredictor(imgsz=64)
    with pytest.raises(OutputExistsError, match=r"a\.geojson: already exists; use --overwrite") as info:
        batch.run([str(a), str(b)], out, config=config, detector=Detector(model))
    assert str(info.value).startswith(str(out / "a.geojson")) and model.calls == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    # any one target is enough to refuse (here a's quicklook)
    (out / "a.geojson").unlink()
    (out / "a.csv").unlink()
    with pytest.raises(OutputExistsError, match="a.quicklook.jpg"):
        batch.run([str(a)], out, config=config, detector=Detector(model))


def test_overwrite_removes_stale_outputs_of_these_scenes_only(tmp_path: Path) -> None:
    a, b = scene(tmp_path / "a.tif"), scene(tmp_path / "b.tif")
    out = tmp_path / "out"
    batch.run(
        [str(a), str(b)],
        out,
        config=BatchConfig(formats=("geojson", "csv"), tile=TileConfig(tile=64)),
        detector=detector(),
    )
    for name in ("other.csv", "a.notes.txt", "a_backup.csv"):  # not named like our outputs for a or b
        (out / name).write_text("keep me")
    config = BatchConfig(formats=("geojson",), tile=TileConfig(tile=64), quicklook=False, overwrite=True)
    results = batch.run([str(a)], out, config=config, detector=detector())
    assert results[0].outputs == [out / "a.geojson"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["a.geojson", "other.csv", "a.notes.txt", "a_backup.csv", "b.geojson", "b.csv", "b.quicklook.jpg"]
    )


def test_a_folder_run_twice_into_itself(tmp_path: Path) -> None:
    """Output folder inside the input folder: the second run reads neither the outputs nor the quicklooks."""
    folder = tmp_path / "scenes"
    scene(folder / "a.tif")
    out = folder / "detections"
    config = BatchConfig(tile=TileConfig(tile=64), overwrite=True)
    first = batch.run([str(folder)], out, config=config, detector=detector())
    second = batch.run([str(folder)], out, config=config, detector=detector())
    assert [r.source for r in first] == [r.source for r in second] == [str(folder / "a.tif")]
    assert sorted(p.name for p in out.iterdir()) == ["a.geojson", "a.quicklook.jpg"]


def test_interrupt_lists_the_scenes_that_never_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [str(scene(tmp_path / f"{k}.tif")) for k in "abc"]
    det = detector()
    real = Detector.predict

    def predict(self: Detector, source: object, **kw: object):  # noqa: ANN202
        if str(source).endswith("b.tif"):
            raise KeyboardInterrupt
        return real(self, source, **kw)

    monkeypatch.setattr(Detector, "predict", predict)
    with pytest.raises(batch.BatchInterrupted) as info:
        batch.run(paths, tmp_path / "out", config=FAST, detector=det)
    e = info.value
    assert isinstance(e, KeyboardInterrupt)
    assert [r.source for r in e.not_run] == paths[1:] and not any(r.ran for r in e.not_run)
    assert [r.error for r in e.results] == [None, f"{paths[1]}: interrupted", f"{paths[2]}: not run"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.geojson"]


def test_progress_events(tmp_path: Path) -> None:
    a = scene(tmp_path / "a.tif", size=(150, 100))
    events: list[batch.SceneProgress] = []
    config = BatchConfig(tile=TileConfig(tile=64, overlap=0.2, batch=1), quicklook=False)
    batch.run([str(a)], tmp_path / "out", config=config, detector=detector(), progress=events.append)
    assert events[0].done == 0 and events[-1].done == events[-1].total == 6  # 3 x 2 tiles of 64 px
    assert {(e.scene, e.name, e.index, e.count) for e in events} == {(str(a), "a", 0, 1)}


# ------------------------------------------------------------------------------------------------ one file


def test_one_file_for_the_whole_batch(tmp_path: Path) -> None:
    x, y = scene(tmp_path / "x" / "s.tif"), scene(tmp_path / "y" / "s.tif", box=(40, 30, 60, 50))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + bytes(200))
    target = tmp_path / "all.gpkg"
    results = batch.run([str(x), str(bad), str(y)], target, config=FAST, detector=detector())
    assert [r.error is None for r in results] == [True, False, True]
    assert results[0].outputs == [target] and results[0].detections is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "all.gpkg",
        "bad.tif",
        "x",
        "y",
    ]  # nothing per scene
    pyogrio = pytest.importorskip("pyogrio")
    table = pyogrio.read_dataframe(target)
    assert sorted(table["scene"]) == sorted([str(x), str(y)]) and len(table) == 2
    with pytest.raises(OutputExistsError, match="all.gpkg"):
        batch.run([str(x)], target, config=FAST, detector=detector())


def test_one_layer_per_crs_needs_a_gpkg(tmp_path: Path) -> None:
    a = scene(tmp_path / "a.tif")
    model = BrightObjectPredictor(imgsz=64)
    with pytest.raises(ValueError, match="one layer per CRS needs a .gpkg"):
        batch.run(
            [str(a)], tmp_path / "all.csv", config=BatchConfig(layer_per_crs=True), detector=Detector(model)
        )
    assert model.calls == 0  # refused before the first scene


def test_collection_format() -> None:
    assert batch.collection_format("out/all.GPKG") == "gpkg"
    assert batch.collection_format("out/all.parquet") == "parquet"
    assert batch.collection_format("out/detections") is None
    assert batch.collection_format("out/v1.2") is None


# ------------------------------------------------------------------------------------------------ models


def test_model_spec_passes_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    import detector.model as model_mod

    seen: dict = {}

    def new_load(
        path=None,
        device="cpu",
        conf=0.25,
        iou=0.6,
        max_det=1000,
        threads=None,
        runtime="onnxruntime",
        streams=None,
    ):  # noqa: ANN001, ANN202
        seen.update(path=path, runtime=runtime, streams=streams)
        return BrightObjectPredictor(imgsz=64)

    monkeypatch.setattr(model_mod, "load_predictor", new_load)
    det = ModelSpec("m.onnx", runtime="openvino", streams=3).load(cache=False)
    assert seen == {"path": "m.onnx", "runtime": "openvino", "streams": 3} and isinstance(det, Detector)


def test_work_units_pickle() -> None:
    import pickle

    config = BatchConfig(formats=("geojson", "csv"), tile=TileConfig(tile=64), classes=("aircraft",))
    spec = ModelSpec("m.onnx", conf=0.4, threads=2)
    assert pickle.loads(pickle.dumps((config, spec))) == (config, spec)


def test_outputs_record_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    weights = tmp_path / "m.onnx"
    weights.write_bytes(b"not really a model, but a file to hash")
    monkeypatch.setattr(Detector, "load", classmethod(lambda cls, path=None, **kw: detector()))
    a = scene(tmp_path / "a.tif")
    config = BatchConfig(formats=("geojson", "csv"), tile=TileConfig(tile=64, overlap=8), quicklook=False)
    batch.run([str(a)], tmp_path / "out", config=config, model=ModelSpec(str(weights), conf=0.4))
    for name in ("a.geojson", "a.csv"):
        record = writers.read_provenance(tmp_path / "out" / name)
        assert record["model_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert (record["model_file"], record["conf"], record["tile"], record["overlap"]) == (
            "m.onnx",
            0.4,
            64,
            8,
        )
        assert record["runtime"] == "onnxruntime" and record["scenes"][0]["source"] == str(a)


def test_an_overlap_too_large_for_the_models_tile_fails_once(tmp_path: Path) -> None:
    model = BrightObjectPredictor(imgsz=64)
    config = BatchConfig(tile=TileConfig(overlap=64), quicklook=False)  # tile: the model's 64 px
    with pytest.raises(ValueError, match="gives 64 px, not less than the 64 px tile"):
        batch.run([str(scene(tmp_path / "a.tif"))], tmp_path / "out", config=config, detector=Detector(model))
    assert model.calls == 0


def test_describe_error_keeps_a_relative_path_that_starts_the_message() -> None:
    from detector.errors import ResolutionError

    err = ResolutionError("../data/scene.tif: scene GSD 300 m/px is far coarser than the model's range")
    assert batch.describe_error(err, "../data/scene.tif") == str(err)


def _png(path: Path, size: tuple[int, int] = (300, 200)) -> Path:
    """A PNG (decoded whole by the scene reader) with two white boxes."""
    from PIL import Image

    image = np.full((3, size[1], size[0]), 30, np.uint8)
    paint_box(image, 20, 30, 60, 50)
    paint_box(image, 200, 120, 230, 160)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.moveaxis(image, 0, -1)).save(path)
    return path


def test_quicklook_is_drawn_on_the_view_read_with_the_tiles(tmp_path: Path, monkeypatch) -> None:
    """The batch reads the quicklook's view while the scene is open for the tiles (a PNG is decoded once) and
    the quicklook comes out byte for byte as when the writer reads the scene itself."""
    src = _png(tmp_path / "in" / "a.png")
    config = BatchConfig(formats=("geojson",), tile=TileConfig(tile=64, overlap=0.2), quicklook=True)
    reads: list[tuple[str, bool]] = []  # the scene read, and whether its pixels were decoded already
    real = writers.quicklook_view
    monkeypatch.setattr(
        writers, "quicklook_view", lambda s, *a: reads.append((s.path, s._whole is not None)) or real(s, *a)
    )
    (tmp_path / "one").mkdir()
    result = batch.predict_scene(str(src), "a", tmp_path / "one", config, detector())
    assert result.error is None and result.counts["aircraft"] == 2
    assert reads == [(str(src), True)]  # once, from the pipeline's scene, decoded for the tiles
    alone = writers.write_quicklook(
        batch.detect(str(src), config, detector()), tmp_path / "alone.quicklook.jpg", source=src
    )
    assert (tmp_path / "one" / "a.quicklook.jpg").read_bytes() == alone.read_bytes()


def test_a_view_that_cannot_be_read_with_the_tiles_is_read_by_the_writer(tmp_path: Path, monkeypatch) -> None:
    src = _png(tmp_path / "in" / "a.png")
    config = BatchConfig(formats=("geojson",), tile=TileConfig(tile=64, overlap=0.2), quicklook=True)
    calls = iter([RasterError("a.png: cannot read the image (a passing failure)")])
    real = writers.quicklook_view

    def flaky(scene, *a):
        err = next(calls, None)
        if err is not None:
            raise err
        return real(scene, *a)

    monkeypatch.setattr(writers, "quicklook_view", flaky)
    (tmp_path / "out").mkdir()
    result = batch.predict_scene(str(src), "a", tmp_path / "out", config, detector())
    assert result.error is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.px.geojson", "a.quicklook.jpg"]
