"""Scenes on Dask (detector.distributed, batch.run(client=...), predict --workers): same detections as one process.

Real scenes (the DOTA demo images, with real vehicles) through the shipped model on a LocalCluster of worker
processes; generated GeoTIFFs with objects painted across tile seams through the fake predictor for the
split-scene merge; a corrupt scene and a worker that dies for the failure paths.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from _fixtures import YELLOW, BrightObjectPredictor, paint_box, paint_rotated, write_geotiff
from affine import Affine
from conftest import ROOT

from detector import batch
from detector.batch import BatchConfig, ModelSpec
from detector.errors import CommandError
from detector.pipeline import Detector
from detector.tiling import TileConfig

distributed_mod = pytest.importorskip("distributed", reason="needs the dask extra (distributed)")
from detector import distributed as D  # noqa: E402

WEIGHTS = ROOT / "weights" / "detector.onnx"
#: Small tiles keep the real model fast: about 20 tiles per DOTA demo image.
REAL_TILE = TileConfig(tile=320)


# ----------------------------------------------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes, the way ``predict --workers 2`` makes it."""
    with D.local_cluster(2) as cluster, distributed_mod.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def thread_client():
    """Workers as threads of this process: the same code paths, for models defined in this test module."""
    with (
        D.local_cluster(2, processes=False) as cluster,
        distributed_mod.Client(cluster, set_as_default=False) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def real_scenes(shared_data: Path, tmp_path_factory) -> list[str]:
    """Two DOTA demo images as they are (PNG) and one cut out as a georeferenced GeoTIFF (UTM, 0.5 m)."""
    import rasterio

    if not WEIGHTS.is_file():
        pytest.skip(f"{WEIGHTS} missing (the shipped model)")
    demo = shared_data / "dota" / "demo" / "images"
    pngs = [demo / "P0004.png", demo / "P0005.png"]
    if not all(p.is_file() for p in pngs + [demo / "P0003.png"]):
        pytest.skip(f"DOTA demo images missing in {demo}")
    with rasterio.open(demo / "P0003.png") as src:
        bands = src.read([1, 2, 3])[:, :800, :900]
    tif = write_geotiff(tmp_path_factory.mktemp("real") / "P0003_utm.tif", bands)
    return [str(pngs[0]), str(tif), str(pngs[1])]


@pytest.fixture(scope="module")
def real_model() -> ModelSpec:
    return ModelSpec(weights=str(WEIGHTS), threads=1)


def _same(a, b) -> None:
    """Identical detections: every array bit for bit, and the scene facts."""
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.xyxy, b.xyxy)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.class_ids, b.class_ids)
    if b.xywhr is None:
        assert a.xywhr is None
    else:
        np.testing.assert_array_equal(a.xywhr, b.xywhr)
    assert sorted(a.data) == sorted(b.data)
    for key in b.data:
        np.testing.assert_array_equal(a.data[key], b.data[key])
    assert (a.crs, a.transform, a.gsd, a.source, a.meta) == (b.crs, b.transform, b.gsd, b.source, b.meta)


@dataclass(frozen=True)
class FakeSpec(ModelSpec):
    """A model spec for the fake bright-object predictor (workers are threads here: nothing is imported)."""

    imgsz: int = 128
    task: str = "detect"

    def load(self, **kwargs) -> Detector:
        return Detector(BrightObjectPredictor(imgsz=self.imgsz, task=self.task))


class _CrashingDetector(Detector):
    def predict(self, source, **kwargs):  # type: ignore[override]
        if Path(str(source)).name == "crash.tif":
            os._exit(3)  # the worker process dies, as on a segfault or the OOM killer
        return super().predict(source, **kwargs)


@dataclass(frozen=True)
class CrashSpec(ModelSpec):
    """The fake predictor, in a detector that kills its worker process on a scene named ``crash``."""

    def load(self, **kwargs) -> Detector:
        return _CrashingDetector(BrightObjectPredictor(imgsz=128))


def _seam_scene(path: Path, rows: int = 700, cols: int = 900) -> Path:
    """A georeferenced scene with objects across tile seams and corners, a rotated one, and a nodata strip."""
    image = np.full((3, rows, cols), 40, np.uint8)
    for x0, y0, x1, y1 in [
        (95, 20, 125, 60),
        (200, 95, 260, 118),
        (300, 300, 330, 330),
        (510, 190, 560, 215),
    ]:
        paint_box(image, x0, y0, x1, y1)
    paint_box(image, 400, 500, 412, 508, YELLOW)
    paint_rotated(image, 620.0, 410.0, 70.0, 24.0, 0.6)
    image[:, :, 860:] = 0  # nodata strip on the right
    transform = Affine(0.5, 0, 600000.0, 0, -0.5, 5000000.0)
    return write_geotiff(path, image, transform=transform, nodata=0)


# ----------------------------------------------------------------------------------------------------------
# many scenes
# ----------------------------------------------------------------------------------------------------------


def test_local_cluster_equals_the_sequential_run(client, real_scenes, real_model) -> None:
    config = BatchConfig(tile=REAL_TILE)
    got = dict(D.predict_scenes(client, real_scenes, real_model, config, split_pixels=None))
    assert sorted(got) == [0, 1, 2]
    detector = Detector.load(WEIGHTS, threads=2)
    for k, scene in enumerate(real_scenes):
        ref = detector.predict(scene, tile=REAL_TILE)
        assert len(ref) > 10, f"{scene}: the real model should find vehicles"
        assert not isinstance(got[k], str), got[k]
        _same(got[k], ref)
    assert got[1].crs is not None and got[1].transform is not None  # the GeoTIFF stays georeferenced


def test_batch_on_a_cluster_writes_every_scene_and_reports_the_corrupt_one(
    client, real_scenes, real_model, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00" + bytes(range(256)) * 8)  # a TIFF header, then garbage
    sources = [real_scenes[0], str(corrupt), real_scenes[2]]
    config = BatchConfig(formats=("geojson", "csv"), tile=REAL_TILE, quicklook=False)
    events: list[batch.SceneProgress] = []
    results = batch.run(
        sources, tmp_path / "dask", config=config, model=real_model, client=client, progress=events.append
    )
    assert [r.source for r in results] == sources  # input order, whatever the completion order
    assert results[1].error is not None and str(corrupt) in results[1].error and "\n" not in results[1].error
    assert not list((tmp_path / "dask").glob("corrupt*"))
    sequential = batch.run(
        [sources[0], sources[2]], tmp_path / "one", config=config, model=replace(real_model, threads=2)
    )
    for r, s in zip([results[0], results[2]], sequential, strict=True):
        assert r.error is None and r.counts == s.counts and sum(r.counts.values()) > 0
        assert [p.name for p in r.outputs] == [p.name for p in s.outputs]
        for mine, theirs in zip(r.outputs, s.outputs, strict=True):
            assert mine.read_bytes() == theirs.read_bytes(), mine.name
    # progress reached the last tile of both good scenes, through the workers' events
    last = {e.index: (e.done, e.total) for e in events}
    assert last[0][0] == last[0][1] > 0 and last[2][0] == last[2][1] > 0


def test_batch_with_a_client_needs_a_model_spec(client, real_scenes, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ModelSpec"):
        batch.run(real_scenes[:1], tmp_path, detector=Detector(BrightObjectPredictor()), client=client)


# ----------------------------------------------------------------------------------------------------------
# a huge scene split into blocks of tiles
# ----------------------------------------------------------------------------------------------------------


def test_split_real_scene_equals_the_single_process_run(client, real_scenes, real_model) -> None:
    config = BatchConfig(tile=REAL_TILE)
    scene = real_scenes[1]
    detector = Detector.load(WEIGHTS, threads=2)
    ref = detector.predict(scene, tile=REAL_TILE)
    ticks: list[tuple[int, int, int]] = []
    got = dict(
        D.predict_scenes(
            client,
            [scene],
            real_model,
            config,
            split_pixels=0,
            block_tiles=2,
            progress=lambda *a: ticks.append(a),
        )
    )
    assert ref.meta["tiles"] > 3 * 2  # at least 4 blocks (9 tiles of 384 px: the balanced grid)
    _same(got[0], ref)
    assert ticks and ticks[-1] == (0, ref.meta["tiles"], ref.meta["tiles"])  # one count over all blocks


@pytest.mark.parametrize("task", ["detect", "obb"])
@pytest.mark.parametrize("block_tiles", [1, 4, 7])
def test_split_scene_merges_seams_as_one_process(
    thread_client, tmp_path: Path, task: str, block_tiles: int
) -> None:
    scene = str(_seam_scene(tmp_path / "seams.tif"))
    spec = FakeSpec(task=task)
    tile = TileConfig(tile=128, overlap=0.25, batch=3)
    ref = spec.load().predict(scene, tile=tile)
    assert ref.meta["tiles"] > block_tiles and len(ref) == 6  # every painted object once, seams merged
    got = dict(
        D.predict_scenes(
            thread_client, [scene], spec, BatchConfig(tile=tile), split_pixels=0, block_tiles=block_tiles
        )
    )
    _same(got[0], ref)


def test_split_scene_with_the_coarse_pass_and_a_class_filter(thread_client, tmp_path: Path) -> None:
    scene = str(_seam_scene(tmp_path / "seams.tif"))
    spec = FakeSpec()
    tile = TileConfig(tile=128, overlap=0.25, coarse=True)
    config = BatchConfig(tile=tile, classes=("aircraft",))
    ref = spec.load().predict(scene, tile=tile, classes=["aircraft"])
    got = dict(D.predict_scenes(thread_client, [scene], spec, config, split_pixels=0, block_tiles=5))
    _same(got[0], ref)
    assert len(got[0]) and set(got[0].class_name) <= {"transport-aircraft", "small-aircraft"}


def test_a_failing_block_fails_its_scene_only(thread_client, tmp_path: Path) -> None:
    good = str(_seam_scene(tmp_path / "good.tif"))
    bad = tmp_path / "vanishing.tif"
    shutil.copy(good, bad)

    @dataclass(frozen=True)
    class DeletingSpec(FakeSpec):
        """Deletes ``vanishing.tif`` once its tile count is known: the blocks then cannot open it."""

        def load(self, **kwargs) -> Detector:
            detector = super().load(**kwargs)
            plan = detector.plan

            def plan_then_delete(scene, *args, **kwargs):
                result = plan(scene, *args, **kwargs)
                if scene.path == str(bad) and bad.exists():
                    bad.unlink()
                return result

            detector.plan = plan_then_delete  # type: ignore[method-assign]
            return detector

    tile = TileConfig(tile=128)
    got = dict(
        D.predict_scenes(
            thread_client,
            [str(bad), good],
            DeletingSpec(),
            BatchConfig(tile=tile),
            split_pixels=0,
            block_tiles=8,
        )
    )
    assert isinstance(got[0], str) and str(bad) in got[0] and "file not found" in got[0]
    _same(got[1], FakeSpec().load().predict(good, tile=tile))


# ----------------------------------------------------------------------------------------------------------
# failures, resources, plumbing
# ----------------------------------------------------------------------------------------------------------


def test_a_crashed_worker_is_retried_once_then_its_scene_is_reported(tmp_path: Path) -> None:
    good = str(_seam_scene(tmp_path / "good.tif"))
    crash = str(_seam_scene(tmp_path / "crash.tif"))
    with D.local_cluster(1) as cluster, distributed_mod.Client(cluster) as c:
        # the spec's class lives in this module: let the worker process unpickle it by value
        import cloudpickle

        cloudpickle.register_pickle_by_value(__import__(__name__))
        try:
            got = dict(
                D.predict_scenes(c, [crash, good], CrashSpec(), BatchConfig(tile=TileConfig(tile=128)))
            )
        finally:
            cloudpickle.unregister_pickle_by_value(__import__(__name__))
    assert isinstance(got[0], str) and crash in got[0] and "died" in got[0]
    assert not isinstance(got[1], str) and len(got[1]) == len(
        FakeSpec().load().predict(good, tile=TileConfig(tile=128))
    )


def test_work_units_pickle(tmp_path: Path) -> None:
    scene = str(_seam_scene(tmp_path / "s.tif"))
    spec, config = ModelSpec(weights="w.onnx", threads=1), BatchConfig(tile=TileConfig(tile=128))
    assert pickle.loads(pickle.dumps((spec, config, range(3, 9)))) == (spec, config, range(3, 9))
    parts = FakeSpec().load().predict_tiles(scene, range(2, 9), tile=TileConfig(tile=128))
    back = pickle.loads(pickle.dumps(parts))
    assert (back.source, back.tiles, back.tiles_run) == (parts.source, parts.tiles, parts.tiles_run)
    np.testing.assert_array_equal(back.windows, parts.windows)


def test_worker_peak_rss_and_threads(client) -> None:
    peaks = D.worker_peak_rss(client)
    assert len(peaks) == 2 and all(50 * 2**20 < v < 1.5 * 2**30 for v in peaks.values())
    assert set(D.reset_peak_rss(client)) == set(peaks)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert D.worker_threads(client) == max(1, cpus // 2)
    assert D.with_worker_threads(ModelSpec(threads=5), client).threads == 5


def test_connect_errors(monkeypatch) -> None:
    with pytest.raises(CommandError, match="not both"), D.connect(2, "tcp://127.0.0.1:1"):
        pass
    monkeypatch.setattr(D, "CONNECT_TIMEOUT_S", 1)
    with (
        pytest.raises(CommandError, match="tcp://127.0.0.1:1: cannot reach"),
        D.connect(None, "tcp://127.0.0.1:1"),
    ):
        pass
    with D.connect() as nothing:
        assert nothing is None
    with pytest.raises(ValueError, match="workers"):
        D.local_cluster(0)


def test_predict_cli_with_two_workers_writes_what_one_process_writes(real_scenes, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from detector.cli import cli

    args = ["-q", "predict", *real_scenes[:2], "-w", str(WEIGHTS), "--tile", "320", "--no-quicklook"]
    one = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "one"), "--threads", "2"])
    two = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "two"), "--workers", "2"])
    assert one.exit_code == 0, one.output
    assert two.exit_code == 0, two.output
    for a in sorted((tmp_path / "one").glob("*.geojson")):
        b = tmp_path / "two" / a.name
        assert json.loads(a.read_text())["features"], a.name
        assert a.read_bytes() == b.read_bytes(), a.name
    assert len(list((tmp_path / "two").glob("*.geojson"))) == 2
    bad = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "x"), "--workers", "2", "--scheduler", "a:1"])
    assert bad.exit_code == 1 and "not both" in bad.output
