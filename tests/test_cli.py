"""The ``detector`` command line, with a fake predictor (fast, offline) and one slow run of the real model.

The fake predictor is real code on real pixels: it boxes the bright pixels of each tile, so what ``predict``
writes depends on the generated scene, and the full pipeline (raster reads, tiling, merge, writers) runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from detector import cli
from detector.backends.base import ModelMeta
from detector.detections import Detections
from detector.taxonomy import default_classes

pyogrio = pytest.importorskip("pyogrio")

ROOT = Path(__file__).resolve().parents[1]
TAXONOMY = default_classes()  # our classes in id order (configs/taxonomy.yaml)


class BrightBoxPredictor:
    """Boxes the pixels brighter than 200 of each tile as one aircraft (rotated box, angle 0)."""

    def __init__(self, imgsz: int = 64) -> None:
        self.meta = ModelMeta(
            raw_names=TAXONOMY,
            class_map=dict(enumerate(TAXONOMY)),
            imgsz=imgsz,
            task="obb",
            name="bright-box",
        )
        self.calls = 0

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        self.calls += 1
        out = []
        for tile in tiles:
            ys, xs = np.nonzero(tile.min(axis=-1) > 200)
            if len(xs) == 0:
                out.append(Detections.empty(TAXONOMY, rotated=True))
                continue
            x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            out.append(
                Detections(
                    xyxy=[[x1, y1, x2, y2]],
                    scores=[0.9],
                    class_ids=[0],
                    class_names=TAXONOMY,
                    xywhr=[[(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, 0.0]],
                )
            )
        return out


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> dict:
    """``Detector.load`` returns a detector around :class:`BrightBoxPredictor`; records its arguments."""
    from detector.pipeline import Detector

    seen: dict = {}

    def load(cls: type, path: object = None, **kwargs: object) -> Detector:
        seen.update(path=path, **kwargs)
        return Detector(BrightBoxPredictor())

    monkeypatch.setattr(Detector, "load", classmethod(load))
    return seen


def make_scene(
    path: Path,
    box: tuple[int, int, int, int] = (10, 12, 30, 20),
    size: tuple[int, int] = (60, 50),
    georef: bool = True,
) -> Path:
    """A small RGB GeoTIFF (EPSG:32633, 0.5 m) or PNG with one bright rectangle ``(x1, y1, x2, y2)``."""
    width, height = size
    data = np.full((3, height, width), 40, np.uint8)
    x1, y1, x2, y2 = box
    data[:, y1:y2, x1:x2] = 250
    kwargs: dict = {}
    if georef:
        kwargs = {"crs": "EPSG:32633", "transform": Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0)}
    driver = "GTiff" if path.suffix.lower() in (".tif", ".tiff") else "PNG"
    with rasterio.open(
        path, "w", driver=driver, width=width, height=height, count=3, dtype="uint8", **kwargs
    ) as dst:
        dst.write(data)
    return path


def corrupt(path: Path) -> Path:
    path.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    return path


def run(*args: str) -> object:
    return CliRunner().invoke(cli.cli, [str(a) for a in args])


def one_error_line(result: object, *needles: str) -> None:
    """Exit != 0, no traceback, and the error is one line naming the given strings."""
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for n in needles:
        assert n in errors[0], errors[0]


# ------------------------------------------------------------------------------------------------ predict


def test_predict_writes_every_format(tmp_path: Path, fake_model: dict) -> None:
    src = tmp_path / "in"
    src.mkdir()
    make_scene(src / "geo.tif")
    make_scene(src / "plain.png", box=(5, 5, 15, 40), georef=False)
    out = tmp_path / "out"
    r = run(
        "predict",
        src,
        "-o",
        out,
        "-f",
        "geojson,csv",
        "--format",
        "gpkg",
        "-f",
        "coco",
        "--conf",
        "0.3",
        "--tile",
        "64",
    )
    assert r.exit_code == 0, r.output
    assert fake_model["conf"] == 0.3 and fake_model["path"] is None
    names = sorted(p.name for p in out.iterdir())
    endings = (".csv", ".gpkg", ".coco.json", cli.QUICKLOOK_SUFFIX)
    assert names == sorted(
        ["geo.geojson", "plain.px.geojson", *(f"{s}{e}" for s in ("geo", "plain") for e in endings)]
    )
    gj = json.loads((out / "geo.geojson").read_text())
    assert len(gj["features"]) == 1
    p = gj["features"][0]["properties"]
    assert p["class"] == "small-aircraft" and (p["length_m"], p["width_m"]) == (
        10.0,
        4.0,
    )  # 20 x 8 px at 0.5 m
    assert [p["px_xmin"], p["px_ymin"], p["px_xmax"], p["px_ymax"]] == [10, 12, 30, 20]
    lon, lat = np.asarray(gj["features"][0]["geometry"]["coordinates"][0]).mean(0)
    assert 15.0 < lon < 15.001 and 36.0 < lat < 36.2  # UTM 33N, 500 km east, 4000 km north
    plain = json.loads((out / "plain.px.geojson").read_text())
    assert "image pixels" in plain["coordinates"]
    assert "not georeferenced" in r.stderr or "no georeferencing" in r.stderr
    assert pyogrio.read_info(out / "geo.gpkg")["crs"] == "EPSG:32633"
    # summary: a row per scene and the total
    rows = {line.split()[0]: line.split()[1:] for line in r.stdout.splitlines() if line.strip()}
    # columns: our 4 classes, transport-aircraft, small-aircraft (split by size: needs the GSD), total
    assert rows["geo"] == ["0", "0", "0", "0", "0", "1", "1"]
    assert rows["plain"] == ["1", "0", "0", "0", "0", "0", "1"]
    assert rows["total"][-1] == "2"


def test_batch_with_a_corrupt_scene_keeps_the_good_ones(tmp_path: Path, fake_model: dict) -> None:
    a = make_scene(tmp_path / "a.tif")
    bad = corrupt(tmp_path / "bad.tif")
    c = make_scene(tmp_path / "c.tif", box=(0, 0, 10, 10))
    out = tmp_path / "out"
    r = run("predict", a, bad, c, "-o", out, "--no-quicklook")
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert sorted(p.name for p in out.iterdir()) == ["a.geojson", "c.geojson"]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.tif" in errors[0]
    assert "failed: 1 of 3 scenes" in r.stdout and "bad.tif" in r.stdout.split("failed:")[1]
    assert "total (2 scenes)" in r.stdout


def test_missing_scene_among_good_ones(tmp_path: Path, fake_model: dict) -> None:
    a = make_scene(tmp_path / "a.tif")
    r = run("predict", a, tmp_path / "nope.tif", "-o", tmp_path / "out", "--no-quicklook")
    assert r.exit_code == 1
    assert (tmp_path / "out" / "a.geojson").is_file()
    assert "nope.tif: file not found" in r.stdout


@pytest.mark.parametrize("kind", ["missing", "corrupt", "folder"])
def test_bad_input_is_one_line(tmp_path: Path, fake_model: dict, kind: str) -> None:
    if kind == "missing":
        src = tmp_path / "missing.tif"
    elif kind == "corrupt":
        src = corrupt(tmp_path / "broken.tif")
    else:
        src = tmp_path / "empty"
        src.mkdir()
    r = run("predict", src, "-o", tmp_path / "out")
    one_error_line(r, src.name)


def test_unwritable_output_folder(tmp_path: Path, fake_model: dict) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = run("predict", make_scene(tmp_path / "a.tif"), "-o", blocker / "out")
    one_error_line(r, str(blocker / "out"), "cannot create the output folder")


def test_not_a_model(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_text("this is not a model")
    r = run("predict", make_scene(tmp_path / "a.tif"), "-o", tmp_path / "out", "--weights", junk)
    one_error_line(r, "junk.onnx")


def test_debug_shows_the_traceback(tmp_path: Path, fake_model: dict) -> None:
    r = CliRunner().invoke(
        cli.cli, ["--debug", "predict", str(tmp_path / "missing.tif"), "-o", str(tmp_path / "o")]
    )
    assert r.exit_code != 0 and isinstance(r.exception, cli.CommandError)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "shp"], "unknown format 'shp'"),
        (["--classes", "aircraft,tank"], "unknown class 'tank'"),
        (["--bands", "1,2"], "give 3 bands"),
        (["--bands", "r,g,b"], "band numbers"),
        (["--device", "tpu"], "cpu, cuda or cuda:N"),
        (["--conf", "2"], "--conf"),
        (["--tile", "8192"], "4096"),
        (["--tile", "64", "--overlap", "64"], "64 px is not smaller than the 64 px tile"),
        (["--overlap", "inf"], "finite"),
        (["--gsd", "inf"], "finite"),
        (["--gsd", "nan"], "finite"),
        (["--runtime", "tensorrt"], "'tensorrt' is not one of 'onnxruntime', 'openvino'"),
        (["--layer-per-crs"], "needs a .gpkg output file"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, fake_model: dict, args: list[str], message: str) -> None:
    r = run("predict", make_scene(tmp_path / "a.tif"), "-o", tmp_path / "out", *args)
    assert r.exit_code == 2 and message in r.stderr
    assert not (tmp_path / "out").exists()


def test_options_reach_the_pipeline(
    tmp_path: Path, fake_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detector.pipeline import Detector

    calls: list[dict] = []
    real = Detector.predict

    def spy(self: Detector, source: object, **kw: object) -> Detections:
        calls.append(kw)
        return real(self, source, **kw)

    monkeypatch.setattr(Detector, "predict", spy)
    scene = make_scene(tmp_path / "a.tif")
    r = run(
        "predict",
        scene,
        "-o",
        tmp_path / "o",
        "--tile",
        "64",
        "--overlap",
        "0.25",
        "--batch",
        "3",
        "--classes",
        "helicopter",
        "--bands",
        "3,2,1",
        "--gsd",
        "0.3",
        "--no-resample",
        "--no-quicklook",
        "--device",
        "cuda:1",
        "--threads",
        "2",
        "--streams",
        "1",
        "--zoom",
        "1.5",
    )
    assert r.exit_code == 0, r.output
    kw = calls[0]
    t = kw["tile"]
    assert (t.tile, t.overlap, t.batch, t.resample, t.zoom) == (64, 0.25, 3, False, 1.5)
    assert kw["classes"] == ["helicopter"] and kw["bands"] == (3, 2, 1) and kw["gsd"] == 0.3
    assert callable(kw["progress"])
    assert fake_model["device"] == "cuda:1" and fake_model["threads"] == 2 and fake_model["streams"] == 1
    # the bright box is an aircraft, filtered out by --classes helicopter; GSD override reaches the lengths
    assert json.loads((tmp_path / "o" / "a.geojson").read_text())["features"] == []


def test_keep_crs(tmp_path: Path, fake_model: dict) -> None:
    r = run("predict", make_scene(tmp_path / "a.tif"), "-o", tmp_path / "o", "--keep-crs", "--no-quicklook")
    assert r.exit_code == 0, r.output
    gj = json.loads((tmp_path / "o" / "a.geojson").read_text())
    assert gj["crs"]["properties"]["name"].endswith("EPSG::32633")
    x, y = np.asarray(gj["features"][0]["geometry"]["coordinates"][0]).min(0)
    assert (x, y) == (500005.0, 3999990.0)


def test_name_collisions_and_globs(tmp_path: Path, fake_model: dict) -> None:
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        make_scene(tmp_path / d / "scene.tif")
    (tmp_path / "x" / "notes.txt").write_text("not an image")
    r = run("predict", str(tmp_path / "*" / "*"), "-o", tmp_path / "o", "--no-quicklook")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["x_scene.geojson", "y_scene.geojson"]


def test_output_stems() -> None:
    assert cli.output_stems(["a/s.tif", "b/s.tif", "c/t.png"]) == ["a_s", "b_s", "t"]
    assert cli.output_stems(["p/a/s.tif", "q/a/s.tif"]) == ["p_a_s", "q_a_s"]
    assert cli.output_stems(["s.tif", "s.png"]) == ["s", "s_2"]


def test_expand_sources(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("a.tif", "b.JPG", "c.txt", "sub/d.jp2", ".hidden.tif"):
        (tmp_path / name).write_bytes(b"")
    scenes, missing = cli.expand_sources(
        [str(tmp_path), str(tmp_path / "c.txt"), str(tmp_path / "a.tif"), "/no/x.tif"]
    )
    assert [Path(s).name for s in scenes] == ["a.tif", "b.JPG", "d.jp2", "c.txt"]
    assert missing == [("/no/x.tif", "file not found")]


def test_help_states_the_bounds() -> None:
    r = run("predict", "--help")
    assert r.exit_code == 0 and "at most 4096" in r.stdout and "smaller than the tile" in r.stdout


def test_existing_outputs_are_not_overwritten(tmp_path: Path, fake_model: dict) -> None:
    a = make_scene(tmp_path / "a.tif")
    out = tmp_path / "out"
    assert run("predict", a, "-o", out, "-f", "geojson,csv").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    make_scene(a, box=(0, 0, 8, 8))  # the scene changed: a second run would give other outputs
    r = run("predict", a, "-o", out, "-f", "geojson")
    assert r.exit_code == 1
    one_error_line(r, str(out / "a.geojson"), "already exists", "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    r = run("predict", a, "-o", out, "-f", "geojson", "--overwrite")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == [
        "a.geojson",
        f"a{cli.QUICKLOOK_SUFFIX}",
    ]  # a.csv was stale
    assert json.loads((out / "a.geojson").read_text())["features"][0]["properties"]["px_xmax"] == 8


def test_a_symbolic_link_loop_says_so(tmp_path: Path, fake_model: dict) -> None:
    loop = tmp_path / "loop.tif"
    loop.symlink_to(loop)
    one_error_line(run("predict", loop, "-o", tmp_path / "out"), "loop.tif", "symbolic link loop")


def test_ctrl_c_lists_the_scenes_that_never_ran(
    tmp_path: Path, fake_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detector.pipeline import Detector

    scenes = [make_scene(tmp_path / f"{k}.tif") for k in "abc"]
    real = Detector.predict

    def predict(self: Detector, source: object, **kw: object) -> Detections:
        if str(source).endswith("b.tif"):
            raise KeyboardInterrupt
        return real(self, source, **kw)

    monkeypatch.setattr(Detector, "predict", predict)
    r = run("predict", *scenes, "-o", tmp_path / "out", "--no-quicklook")
    assert r.exit_code == 130 and "Traceback" not in r.output
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: interrupted; 2 of 3 scenes never ran: {scenes[1]}, {scenes[2]}"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.geojson"]
    assert "total (1 scenes)" in r.stdout


def test_progress_lines_without_a_terminal(
    tmp_path: Path, fake_model: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from detector.cli import progress

    big = make_scene(tmp_path / "big.tif", size=(200, 150))
    args = ("predict", big, "-o", tmp_path / "out", "--tile", "64", "--batch", "1", "--no-quicklook")
    r = run(*args)
    assert r.exit_code == 0 and "tiles" not in r.stderr  # a short scene: no line within 30 s
    monkeypatch.setattr(progress, "LINE_INTERVAL_S", 0.0)
    r = run(*args, "--overwrite")
    lines = [line for line in r.stderr.splitlines() if line.startswith("[1/1]")]
    assert lines and all(line.startswith(f"[1/1] {big}: ") and line.endswith(" tiles") for line in lines)
    done, total = lines[-1].split(": ")[1].split()[0].split("/")
    assert int(total) == 12 and int(done) < 12  # 4 x 3 tiles of 64 px


def test_one_file_for_the_batch(tmp_path: Path, fake_model: dict) -> None:
    for d in ("x", "y"):
        (tmp_path / d).mkdir()
        make_scene(tmp_path / d / "scene.tif")
    target = tmp_path / "all.gpkg"
    sources = [str(tmp_path / "x" / "scene.tif"), str(tmp_path / "y" / "scene.tif")]
    r = run("predict", *sources, "-o", target)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.gpkg", "x", "y"]  # no quicklooks unless asked
    table = pyogrio.read_dataframe(target)
    assert sorted(table["scene"]) == sources and pyogrio.read_info(target)["crs"] == "EPSG:32633"
    one_error_line(run("predict", *sources, "-o", target), "all.gpkg", "already exists")
    r = run("predict", *sources, "-o", tmp_path / "all.csv", "-f", "geojson")
    assert r.exit_code == 2 and "leave out -f" in r.stderr
    r = run("predict", *sources, "-o", tmp_path / "all.csv", "--layer-per-crs")
    assert r.exit_code == 2 and "only for .gpkg" in r.stderr


def test_predict_imports_no_torch(tmp_path: Path) -> None:
    """The deployable path: ``detector predict`` on an ONNX model never imports torch or the training code."""
    import subprocess
    import sys

    onnx = ROOT / "weights" / "detector.onnx"
    if not onnx.is_file():
        pytest.skip(f"{onnx} missing: run `make setup`")
    scene = make_scene(tmp_path / "a.tif", size=(96, 64))
    code = (
        "import sys\n"
        "from detector.cli import main\n"
        "try:\n"
        f"    main(['-q', 'predict', {str(scene)!r}, '-o', {str(tmp_path / 'out')!r}, '-w', {str(onnx)!r},"
        " '--threads', '1', '--no-quicklook'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print(sorted(m for m in ('torch', 'ultralytics', 'training') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "a.geojson").is_file()


# ------------------------------------------------------------------------------------------------ info, export


def test_info_raster(tmp_path: Path) -> None:
    path = tmp_path / "tiled.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=512,
        height=256,
        count=3,
        dtype="uint16",
        tiled=True,
        blockxsize=256,
        blockysize=256,
        crs="EPSG:32633",
        transform=Affine(0.3, 0, 500000, 0, -0.3, 4000000),
        nodata=0,
    ) as dst:
        dst.write(np.arange(512 * 256 * 3, dtype=np.uint16).reshape(3, 256, 512) % 4000 + 1)
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4])
    r = run("info", "--json", path)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["size"].startswith("512x256") and info["bands"] == 3 and info["dtype"] == "uint16"
    assert info["crs"] == "EPSG:32633" and info["gsd_m"] == pytest.approx(0.3) and info["nodata"] == 0
    assert info["layout"].startswith("tiled (256x256") and info["overviews"] == [2, 4]
    striped = make_scene(tmp_path / "striped.tif")
    r = run("info", striped)
    assert r.exit_code == 0 and "striped" in r.stdout and "EPSG:32633" in r.stdout


def test_info_png_is_quiet_and_says_not_georeferenced(tmp_path: Path) -> None:
    r = run("info", make_scene(tmp_path / "plain.png", georef=False))
    assert r.exit_code == 0, r.output
    assert "Warning" not in r.output and "warning" not in r.stderr
    assert re.search(r"^georeferencing\s+none \(image pixels\)$", r.stdout, re.MULTILINE)


def test_info_transform_without_crs(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=20,
        height=10,
        count=3,
        dtype="uint8",
        transform=Affine(0.5, 0, 100, 0, -0.5, 200),
    ) as dst:
        dst.write(np.zeros((3, 10, 20), np.uint8))
    r = run("info", "--json", path)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["georeferencing"] == "has a geotransform but no CRS" and info["crs"] == "none"
    assert info["bounds"] == [100.0, 195.0, 110.0, 200.0]
    assert "not georeferenced" not in r.output


def test_info_errors(tmp_path: Path) -> None:
    one_error_line(run("info", corrupt(tmp_path / "bad.tif")), "bad.tif")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 not protobuf")
    one_error_line(run("info", junk), "junk.onnx")
    one_error_line(run("info", tmp_path / "nothing.pt"), "nothing.pt")


def test_info_model() -> None:
    onnx = ROOT / "weights" / "pretrained" / "yolov8n-obb.onnx"
    if not onnx.is_file():
        pytest.skip(f"{onnx} missing: run `make setup`")
    r = run("info", "--json", onnx)
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["task"] == "obb" and info["classes"] == list(TAXONOMY)
    assert info["class_map"]["0 plane"] == "aircraft" and info["imgsz"] % 32 == 0


def test_export_checks_the_output_name(tmp_path: Path) -> None:
    r = run("export", tmp_path / "m.pt", "-o", tmp_path / "m.onnx.txt")
    assert r.exit_code == 2 and ".onnx" in r.stderr
    one_error_line(run("export", tmp_path / "m.pt", "-o", tmp_path / "m.onnx"), "m.pt")


# ------------------------------------------------------------------------------------------------ eval, data, train


def test_eval_passes_its_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from detector import evaluate

    seen: dict = {}

    def fake_run(weights: list, **kw: object) -> dict:
        seen.update(weights=weights, **kw)
        return {"markdown": tmp_path / "eval.md", "json": tmp_path / "eval.json", "plots": [], "results": {}}

    monkeypatch.setattr(evaluate, "run", fake_run)
    r = run(
        "eval",
        "-w",
        "a.onnx",
        "-w",
        "b.onnx",
        "--set",
        "hrplanes/test",
        "--limit",
        "5",
        "--tile",
        "640",
        "--zoom",
        "2",
        "-o",
        tmp_path,
    )
    assert r.exit_code == 0, r.output
    assert seen["weights"] == ["a.onnx", "b.onnx"] and seen["sets"] == ["hrplanes/test"]
    assert seen["zoom"] == 2.0
    assert seen["limit"] == 5 and seen["tile"] == 640 and seen["out_dir"] == str(tmp_path)
    r = run("eval", "-o", tmp_path)
    assert seen["weights"] == [None] and seen["sets"] is None


def test_eval_unknown_set_is_one_line(tmp_path: Path) -> None:
    one_error_line(run("eval", "--set", "no-such-set", "-o", tmp_path, "--data", tmp_path), "no-such-set")


def test_training_commands_missing_config(tmp_path: Path) -> None:
    one_error_line(run("data", "build", tmp_path / "none.yaml"), "none.yaml", "file not found")
    one_error_line(run("train", tmp_path / "none.yaml", "epochs=1"), "none.yaml", "file not found")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}")
    r = run("train", cfg, "epochs")
    assert r.exit_code == 2 and "key=value" in r.stderr


def test_train_passes_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    seen: list = []
    fake = types.SimpleNamespace(main=lambda argv: seen.append(argv) or 0)
    from detector.cli import train as train_cmd

    monkeypatch.setattr(train_cmd, "import_training", lambda name: fake)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("{}")
    r = run("train", cfg, "epochs=3", "augment.rot90=0.5")
    assert r.exit_code == 0, r.output
    assert seen == [[str(cfg), "epochs=3", "augment.rot90=0.5"]]


# ------------------------------------------------------------------------------------------------ real model


@pytest.mark.slow
def test_predict_real_model_on_a_dota_scene(tmp_path: Path, shared_data: Path) -> None:
    from detector.model import ModelError, default_weights

    try:
        weights = default_weights()
    except ModelError as e:
        pytest.skip(str(e))
    scene = shared_data / "dota" / "demo" / "images" / "P0005.png"  # a parking lot full of buses and cars
    r = run("predict", scene, "-o", tmp_path, "-f", "geojson,gpkg", "--weights", weights, "--threads", "2")
    assert r.exit_code == 0, r.output
    gj = json.loads((tmp_path / "P0005.geojson").read_text())
    classes = [f["properties"]["class"] for f in gj["features"]]
    assert classes.count("large-vehicle") >= 20 and classes.count("small-vehicle") >= 5
    assert pyogrio.read_info(tmp_path / "P0005.gpkg")["features"] == len(classes)
    assert (tmp_path / f"P0005{cli.QUICKLOOK_SUFFIX}").is_file()


def test_coco_output_takes_the_ids_of_a_real_dataset(tmp_path: Path, shared_data: Path) -> None:
    """HRPlanes' COCO test set: our aircraft are its category "0" (through the taxonomy), image ids are its own."""
    folder = shared_data / "hrplanes" / "test"
    dataset = json.loads((folder / "_annotations.coco.json").read_text())
    chosen = dataset["images"][:2]
    out = tmp_path / "results.coco.json"
    result = run(
        "predict",
        *(folder / im["file_name"] for im in chosen),
        "-o",
        out,
        "--coco-images",
        folder / "_annotations.coco.json",
    )
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert [im["id"] for im in written["images"]] == [im["id"] for im in chosen]
    aircraft = next(c["id"] for c in dataset["categories"] if c["name"] == "0")
    assert written["annotations"], "the shipped model finds aircraft on HRPlanes test images"
    assert {a["category_id"] for a in written["annotations"]} == {aircraft}
    assert {a["image_id"] for a in written["annotations"]} <= {im["id"] for im in chosen}
    assert len({a["id"] for a in written["annotations"]}) == len(written["annotations"])
