"""The class list is data: a generated model whose classes differ from ours runs end to end without code edits.

A tiny randomly initialised Ultralytics model with its own raw classes ``plane, boat, car`` is mapped to an
own class list ``(aircraft, boat)`` (``car`` dropped) and exported to ONNX with that list in its metadata.
Its class head is set so that every anchor scores ``boat`` (``car``, unmapped, second; ``plane`` never), so the
detections are known without training. It then goes through ``Detector.predict`` on a generated GeoTIFF, every
writer, ``detector predict --classes`` (checked against the model's names), ``detector info``, ``detector eval``
on a generated labelled set read through a custom taxonomy file, and chips built with that taxonomy with the
head remap training starts from; a one-epoch training run on them (``slow``) exports a model that carries the
new class list by itself.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from _fixtures import paint_box, write_geotiff
from click.testing import CliRunner
from PIL import Image

from detector.detections import Detections
from detector.taxonomy import default_classes, fallback_colour, load_taxonomy

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")

RAW = {0: "plane", 1: "boat", 2: "car"}
OURS = ("aircraft", "boat")
#: Logit of each raw class at every anchor: boat wins, car (not in the class map) is the runner-up.
CLASS_LOGITS = (-8.0, 8.0, 4.0)
IMGSZ = 64
TAXONOMY_YAML = {
    "classes": [{"name": "aircraft", "colour": [250, 20, 20], "description": "planes"}, "boat"],
    "datasets": {"mine": {"plane": "aircraft", "boat": "boat", "car": "ignore"}},
}


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def _random_model(names: dict[int, str], logits: tuple[float, ...]):
    """A randomly initialised YOLOv8n detect model whose class logits are the constants ``logits``."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=len(names), verbose=False)
    model.names = dict(names)
    with torch.no_grad():
        for branch in model.model[-1].cv3:  # one per scale; the last 1x1 conv gives the class logits
            branch[-1].weight.zero_()
            branch[-1].bias.copy_(torch.tensor(logits))
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The generated checkpoint, its ONNX export with our own class list (``detector export --class-map
    --names``, verified against PyTorch), and the custom taxonomy file."""
    from detector import cli

    root = tmp_path_factory.mktemp("classlist")
    pt = root / "random.pt"
    torch.save({"model": _random_model(RAW, CLASS_LOGITS), "train_args": {"imgsz": IMGSZ}}, pt)
    onnx = root / "boats.onnx"
    args = ["export", str(pt), "-o", str(onnx), "--name", "boats", "--class-map", "0=aircraft,boat=boat"]
    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    try:
        r = CliRunner().invoke(cli.cli, [*args, "--names", "aircraft,boat"])
        assert r.exit_code == 0, r.output
        bad = CliRunner().invoke(cli.cli, [*args, "--class-map", "0"])
        assert bad.exit_code == 2 and "RAW=OURS" in bad.output
    finally:
        torch.set_num_threads(old)
    tax = root / "taxonomy.yaml"
    tax.write_text(yaml.safe_dump(TAXONOMY_YAML, sort_keys=False))
    return {"pt": pt, "onnx": onnx, "taxonomy": tax, "root": root}


def _scene(path: Path, size: int = 128) -> Path:
    bands = np.full((3, size, size), 40, np.uint8)
    paint_box(bands, 20, 30, 50, 44)
    return write_geotiff(path, bands)


def test_the_model_file_carries_its_own_class_list(files):
    from detector.model import read_meta

    meta = read_meta(files["onnx"])
    assert meta.names == OURS and meta.raw_names == ("plane", "boat", "car")
    assert meta.class_map == {0: "aircraft", 1: "boat"}  # car is dropped at decode time
    assert meta.gsd_range is None and json.loads(meta.to_json())["names"] == list(OURS)
    # the checkpoint itself, read without a map, outputs its own raw classes
    assert read_meta(files["pt"]).names == ("plane", "boat", "car")


def test_predict_and_every_writer(files, tmp_path):
    from detector import writers
    from detector.pipeline import Detector

    det = Detector.load(files["onnx"], conf=0.5, threads=1)
    assert det.meta.names == OURS
    dets = det.predict(_scene(tmp_path / "scene.tif"))
    assert isinstance(dets, Detections) and len(dets) > 0
    assert dets.class_names == (*OURS, "transport-aircraft", "small-aircraft")  # split by size
    assert set(dets.class_name.tolist()) == {"boat"}  # every anchor scores boat; car is never output
    assert (dets.scores > 0.99).all()
    assert writers.category_id("boat", dets.class_names) == 2

    gj = json.loads(writers.write_geojson(dets, tmp_path / "d.geojson").read_text())
    assert {f["properties"]["class"] for f in gj["features"]} == {"boat"} and len(gj["features"]) == len(dets)
    with writers.write_csv(dets, tmp_path / "d.csv").open(newline="") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))  # after the provenance
    assert {r["class"] for r in rows} == {"boat"} and len(rows) == len(dets)
    coco = json.loads(writers.write_coco(dets, tmp_path / "d.coco.json").read_text())
    derived = [{"id": 3, "name": "transport-aircraft"}, {"id": 4, "name": "small-aircraft"}]
    assert coco["categories"] == [{"id": 1, "name": "aircraft"}, {"id": 2, "name": "boat"}, *derived]
    assert {e["category_id"] for e in coco["annotations"]} == {2} and len(coco["annotations"]) == len(dets)
    assert writers.coco_categories(dets.class_names) == [
        {"id": 1, "name": "aircraft"},
        {"id": 2, "name": "boat"},
        *derived,
    ]
    pyogrio = pytest.importorskip("pyogrio")
    gpkg = writers.write_gpkg(dets, tmp_path / "d.gpkg")
    table = pyogrio.read_dataframe(gpkg) if hasattr(pyogrio, "read_dataframe") else None
    if table is not None:
        assert set(table["class"]) == {"boat"} and len(table) == len(dets)
    else:  # pragma: no cover - pyogrio without geopandas
        assert pyogrio.read_info(gpkg)["features"] == len(dets)
    ql = writers.write_quicklook(dets, tmp_path / "d.png", source=tmp_path / "scene.tif")
    pixels = np.asarray(Image.open(ql).convert("RGB")).reshape(-1, 3)
    boat = fallback_colour("boat")  # not in the shipped taxonomy: the stable fallback colour
    assert writers.class_colour("boat") == boat
    assert (pixels == boat).all(axis=1).sum() > 20


def test_cli_checks_classes_against_the_model(files, tmp_path):
    from detector import cli

    scene = _scene(tmp_path / "scene.tif")
    runner = CliRunner()
    base = ["predict", str(scene), "-w", str(files["onnx"]), "--threads", "1", "--conf", "0.5"]
    r = runner.invoke(cli.cli, [*base, "-o", str(tmp_path / "bad"), "--classes", "helicopter"])
    assert r.exit_code == 2 and "unknown class 'helicopter'" in r.output and "aircraft, boat" in r.output
    assert not (tmp_path / "bad").exists()
    out = tmp_path / "out"
    r = runner.invoke(cli.cli, [*base, "-o", str(out), "--classes", "boat", "-f", "geojson,csv,coco,gpkg"])
    assert r.exit_code == 0, r.output
    gj = json.loads((out / "scene.geojson").read_text())
    assert gj["features"] and {f["properties"]["class"] for f in gj["features"]} == {"boat"}
    assert "boat" in r.output and "helicopter" not in r.output  # the summary has the model's classes
    r = runner.invoke(cli.cli, ["info", str(files["onnx"]), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["classes"] == list(OURS)


def _labelled_set(root: Path, n: int = 2, prefix: str = "P") -> Path:
    """DOTA-style images with ``plane``, ``boat`` and ``car`` boxes (classes of the custom taxonomy)."""
    (root / "images").mkdir(parents=True)
    (root / "labelTxt").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 60, (96, 96, 3), dtype=np.uint8)
        lines = []
        for cls, (x1, y1, x2, y2) in (
            ("plane", (8, 8, 30, 24)),
            ("boat", (50, 40, 80, 56)),
            ("car", (10, 60, 20, 70)),
        ):
            img[y1:y2, x1:x2] = 220
            lines.append(f"{x1} {y1} {x2} {y1} {x2} {y2} {x1} {y2} {cls} 0")
        Image.fromarray(img).save(root / "images" / f"{prefix}{i:04d}.png")
        (root / "labelTxt" / f"{prefix}{i:04d}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_eval_with_a_custom_taxonomy(files, tmp_path):
    from detector import cli

    _labelled_set(tmp_path / "data" / "mine")
    config = tmp_path / "eval.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "conf": 0.25,
                "conf_eval": 0.001,
                "overlap": 0.0,
                "sets": {
                    "mine/test": {
                        "format": "dota",
                        "name": "mine",
                        "path": "mine",
                        "taxonomy": str(files["taxonomy"]),
                        "classes": ["aircraft", "boat"],
                    }
                },
            }
        )
    )
    out = tmp_path / "report"
    r = CliRunner().invoke(
        cli.cli,
        [
            "eval",
            "-w",
            str(files["onnx"]),
            "--config",
            str(config),
            "--data",
            str(tmp_path / "data"),
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    (result,) = json.loads((out / "eval.json").read_text())["models"][0]["sets"]
    classes = result["classes"]
    assert list(classes) == ["aircraft", "boat"]  # car is ignored by the taxonomy, never scored
    assert classes["aircraft"]["n_gt"]["all"] == 2 and classes["aircraft"]["n_det"] == 0
    assert classes["boat"]["n_gt"]["all"] == 2 and classes["boat"]["n_det"] > 0
    assert "boat" in (out / "eval.md").read_text()


@pytest.fixture
def chips(files, tmp_path) -> Path:
    """A chip dataset built with the custom taxonomy (``detector data build``); returns its data YAML."""
    from training.chips import BuildConfig, build

    data = tmp_path / "data"
    _labelled_set(data / "train", n=4)
    _labelled_set(data / "val", n=1, prefix="V")  # other names: the build drops duplicates by name
    source = {"format": "dota", "name": "mine"}
    cfg = BuildConfig.from_dict(
        {
            "name": "mine",
            "out": str(tmp_path / "chips"),
            "data_root": str(data),
            "taxonomy": str(files["taxonomy"]),
            "chip": 96,
            "overlap": 0,
            "empty_share": 0.0,
            "image_format": "png",
            "sources": [
                {"name": "t", "dataset": {**source, "path": "train"}, "split": "train"},
                {"name": "v", "dataset": {**source, "path": "val"}, "split": "val"},
            ],
        }
    )
    assert cfg.classes == OURS
    summary = build(cfg)
    assert summary.splits["train"]["instances"] == {"aircraft": 4, "boat": 4}  # cars are ignored
    return tmp_path / "chips" / "data.yaml"


def test_chips_and_head_remap_of_a_custom_taxonomy(files, chips):
    """The dataset names the taxonomy it was built with; training starts each class from its own channel."""
    from training.train import build_model, dataset_classes

    data_yaml = yaml.safe_load(chips.read_text())
    assert data_yaml["names"] == dict(enumerate(OURS))
    assert data_yaml["taxonomy"] == str(files["taxonomy"].resolve())
    names, tax = dataset_classes(chips)
    assert names == OURS and tax.path == files["taxonomy"].resolve()
    model, report = build_model(files["pt"], names=names, taxonomy=tax)  # class_index "auto"
    assert model.names == dict(enumerate(OURS)) and len(report.remapped) == 6
    head = model.model[-1].cv3
    for branch in head:  # boat starts from the checkpoint's boat channel, aircraft (no "aircraft" raw) fresh
        assert branch[-1].bias[1].item() == pytest.approx(CLASS_LOGITS[1])
        assert branch[-1].bias[0].item() != pytest.approx(CLASS_LOGITS[0])


@pytest.mark.slow
def test_train_on_chips_of_a_custom_taxonomy(files, chips, tmp_path):
    """One epoch on those chips: the trained model's export carries the class list by itself."""
    pytest.importorskip("albumentations")
    from detector.model import read_meta
    from detector.pipeline import Detector
    from training.export import export_onnx
    from training.train import TrainConfig, train

    best = train(
        TrainConfig(
            name="mine",
            data=str(chips),
            weights=str(files["pt"]),  # raw plane/boat/car: "auto" starts boat from the boat channel
            project=str(tmp_path / "runs"),
            imgsz=IMGSZ,
            batch=4,
            epochs=1,
            workers=0,
            warmup_epochs=0.0,
            close_mosaic=0,
            val=False,
        )
    )
    assert torch.load(best, map_location="cpu", weights_only=False)["model"].names == dict(enumerate(OURS))
    # no class map, no names: the model's own list (export verification is tested in test_model.py)
    onnx = export_onnx(best, tmp_path / "trained.onnx", verify=False)
    meta = read_meta(onnx)
    assert meta.names == OURS and meta.class_map == {0: "aircraft", 1: "boat"}
    dets = Detector.load(onnx, conf=0.001, threads=1).predict(
        tmp_path / "data" / "val" / "images" / "V0000.png"
    )
    assert dets.class_names == OURS


def test_default_model_names_are_the_shipped_taxonomy():
    """Older model files have no ``names`` in their metadata: they get the shipped classes."""
    from detector.backends.base import ModelMeta

    old = json.loads(
        ModelMeta(raw_names=("a", "b"), class_map={1: "helicopter"}, imgsz=64, task="detect").to_json()
    )
    del old["names"], old["gsd_range"]
    meta = ModelMeta.from_json(json.dumps(old))
    assert meta.names == default_classes() == load_taxonomy().classes and meta.gsd_range is None
    ranged = ModelMeta(
        raw_names=("a",),
        class_map={0: "boat"},
        imgsz=64,
        task="detect",
        names=("boat",),
        gsd_range=(0.3, 0.6),
    )
    assert ModelMeta.from_json(ranged.to_json()) == ranged and ranged.gsd_range == (0.3, 0.6)
    with pytest.raises(ValueError, match="not one of the model's names"):
        ModelMeta(raw_names=("a",), class_map={0: "boat"}, imgsz=64, task="detect")
    with pytest.raises(ValueError, match="gsd_range"):
        ModelMeta(
            raw_names=("a",),
            class_map={0: "boat"},
            imgsz=64,
            task="detect",
            names=("boat",),
            gsd_range=(0.6, 0.3),
        )
    with pytest.raises(ValueError, match="twice"):
        ModelMeta(raw_names=("a",), class_map={0: "boat"}, imgsz=64, task="detect", names=("boat", "boat"))
