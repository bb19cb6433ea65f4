"""Training: config loading, the DOTA -> 4-class head remap, augmentation, a one-epoch run and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")
pytest.importorskip("albumentations")

from training.augment import AugmentConfig, overhead_augmentations  # noqa: E402
from training.train import (  # noqa: E402
    AUTO,
    TrainConfig,
    auto_class_index,
    build_model,
    load_config,
    remap_state_dict,
    train,
)

TAXONOMY = ("aircraft", "helicopter", "small-vehicle", "large-vehicle")
#: DOTA v1.0 output channel of each of our classes: plane, helicopter, small vehicle, large vehicle.
DOTA_CLASS_INDEX = [0, 11, 10, 9]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------ config
def test_load_config_yaml_then_overrides(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: a\nimgsz: 320\nlr0: 1\naugment:\n  rot90: 0.5\n  jpeg_quality: [50, 90]\n")
    cfg = load_config(p, ["imgsz=640", "time=0.5", "augment.blur=0.3", "cache=false", "ultralytics.nbs=16"])
    assert cfg.name == "a"
    assert cfg.imgsz == 640
    assert cfg.time == 0.5
    assert isinstance(cfg.lr0, float) and cfg.lr0 == 1.0
    assert cfg.augment.rot90 == 0.5 and cfg.augment.blur == 0.3
    assert cfg.augment.jpeg_quality == (50, 90)
    assert cfg.cache is False
    assert cfg.ultralytics == {"nbs": 16}
    assert cfg.class_index == AUTO
    assert load_config(p, ["class_index=[0, null, 3]"]).class_index == [0, None, 3]


@pytest.mark.parametrize(
    "override, match",
    [
        ("imgsz=300", "multiple of 32"),
        ("nosuchkey=1", "unknown key"),
        ("augment.rot90=2", "probability"),
        ("task=segment", "task"),
        ("class_index=dota", "class_index"),
        ("class_index=[0,-1]", "class_index"),
        ("batch=eight", "batch"),
        ("noequals", "key=value"),
        ("ultralytics.lr0=0.1", "top-level"),
    ],
)
def test_load_config_rejects_bad_values_naming_the_file(tmp_path, override, match):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\n")
    with pytest.raises(ValueError, match=match) as e:
        load_config(p, [override])
    if override != "noequals":
        assert "bad.yaml" in str(e.value)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs" / "train").glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / "train" / name)
    # from the DOTA start with the head remapped, or from an earlier stage that already has our 4 classes
    assert cfg.class_index in (AUTO, DOTA_CLASS_INDEX) or (cfg.class_index is None and "runs/" in cfg.weights)
    # it trains on a dataset that one of the shipped data configs builds
    outs = {Path(yaml.safe_load(p.read_text())["out"]) for p in (ROOT / "configs" / "data").glob("*.yaml")}
    assert Path(cfg.data).parent in outs
    assert cfg.plots is False  # plots need a downloaded font


# ------------------------------------------------------------------------------------------------- remap
def test_remap_state_dict_is_pure_and_picks_rows():
    src = {
        "model.22.cv3.0.2.weight": torch.arange(15.0).reshape(15, 1, 1, 1),
        "model.22.cv3.0.2.bias": torch.arange(15.0),
        # a hidden layer of the class branch: copied by shape, never remapped
        "model.22.cv3.0.0.conv.weight": torch.ones(15, 2, 3, 3),
        "model.0.conv.weight": torch.full((4, 3, 3, 3), 7.0),
        "model.22.cv4.0.2.weight": torch.ones(1, 16, 1, 1),
        "model.1.conv.weight": torch.ones(8, 4, 3, 3),  # wrong shape for dst
    }
    dst = {
        "model.22.cv3.0.2.weight": torch.zeros(4, 1, 1, 1),
        "model.22.cv3.0.2.bias": torch.zeros(4),
        "model.22.cv3.0.0.conv.weight": torch.zeros(15, 2, 3, 3),
        "model.0.conv.weight": torch.zeros(4, 3, 3, 3),
        "model.1.conv.weight": torch.zeros(16, 4, 3, 3),
    }
    src_before = {k: v.clone() for k, v in src.items()}
    out, rep = remap_state_dict(src, dst, [0, 11, 10, 9])
    assert out["model.22.cv3.0.2.bias"].tolist() == [0.0, 11.0, 10.0, 9.0]
    assert out["model.22.cv3.0.2.weight"].flatten().tolist() == [0.0, 11.0, 10.0, 9.0]
    assert torch.equal(out["model.0.conv.weight"], src["model.0.conv.weight"])
    assert torch.equal(out["model.1.conv.weight"], dst["model.1.conv.weight"])
    assert sorted(rep.remapped) == ["model.22.cv3.0.2.bias", "model.22.cv3.0.2.weight"]
    assert sorted(rep.transferred) == ["model.0.conv.weight", "model.22.cv3.0.0.conv.weight"]
    assert rep.skipped == ["model.1.conv.weight"]
    assert rep.dropped == ["model.22.cv4.0.2.weight", "model.1.conv.weight"]
    assert all(torch.equal(src[k], src_before[k]) for k in src)
    assert not dst["model.22.cv3.0.2.bias"].any()
    out["model.0.conv.weight"] += 1  # the output owns its tensors
    assert torch.equal(src["model.0.conv.weight"], src_before["model.0.conv.weight"])
    with pytest.raises(ValueError, match="outside the 15 source classes"):
        remap_state_dict(src, dst, [0, 11, 10, 15])
    with pytest.raises(ValueError, match="class_index has 2 entries for 4 classes"):
        remap_state_dict(src, dst, [0, 11])
    # a class without a source channel keeps its initial row
    fresh = {**dst, "model.22.cv3.0.2.bias": torch.full((4,), -5.0)}
    out, rep = remap_state_dict(src, fresh, [0, None, 10, 9])
    assert out["model.22.cv3.0.2.bias"].tolist() == [0.0, -5.0, 10.0, 9.0]
    assert out["model.22.cv3.0.2.weight"].flatten().tolist() == [0.0, 0.0, 10.0, 9.0]


def test_auto_class_index_from_the_taxonomy_or_by_name():
    dota = "plane ship storage-tank baseball-diamond tennis-court basketball-court ground-track-field harbor".split()
    dota += "bridge large-vehicle small-vehicle helicopter roundabout soccer-ball-field swimming-pool".split()
    assert auto_class_index(dota, TAXONOMY) == DOTA_CLASS_INDEX
    assert auto_class_index([n.replace("-", " ") for n in dota], ["small-vehicle", "boat"]) == [10, None]
    # a checkpoint trained on named classes (e.g. our own) maps by name
    assert auto_class_index(["Boat", "aircraft"], ["aircraft", "boat", "car"]) == [1, 0, None]
    assert auto_class_index(["x", "y"], ["aircraft"]) is None


def _class_logits(model, x):
    """Pre-sigmoid class outputs of every scale of the head (the cv3 branches)."""
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in model.model[-1].cv3]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return outs


@pytest.mark.parametrize("task", ["detect", "obb"])
def test_remapped_model_reproduces_pretrained_class_logits(pretrained_pt, task):
    from ultralytics.nn.tasks import DetectionModel, OBBModel, load_checkpoint

    model, rep = build_model(pretrained_pt, task=task)  # class_index "auto": the taxonomy's dota_v1 table
    src, _ = load_checkpoint(pretrained_pt)
    assert type(model) is (DetectionModel if task == "detect" else OBBModel)
    assert model.names == dict(enumerate(TAXONOMY))
    assert not rep.skipped  # the whole network transfers
    assert len(rep.remapped) == 6  # weight + bias of the last conv at 3 scales
    assert all(".cv4." in k for k in rep.dropped) and (len(rep.dropped) > 0) == (task == "detect")
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    ours, theirs = _class_logits(model, x), _class_logits(src, x)
    assert len(ours) == 3
    for a, b in zip(ours, theirs, strict=True):
        assert a.shape[1] == 4 and b.shape[1] == 15
        assert torch.allclose(a, b[:, DOTA_CLASS_INDEX], atol=1e-6)
    if task == "obb":  # the angle branch survives too
        assert torch.allclose(
            model.model[-1].cv4[0](torch.ones(1, 64, 4, 4)), src.model[-1].cv4[0](torch.ones(1, 64, 4, 4))
        )


# ---------------------------------------------------------------------------------------------- augment
def test_augmentations_move_boxes_with_rot90():
    import albumentations as A

    transforms = overhead_augmentations(
        AugmentConfig(rot90=1.0, downscale=0, color=0, gamma=0, haze=0, blur=0, jpeg=0)
    )
    assert [type(t).__name__ for t in transforms] == ["RandomRotate90"]
    rot = A.Compose(transforms, bbox_params=A.BboxParams(format="yolo", label_fields=["cls"]), seed=1)
    img = np.zeros((64, 64, 3), np.uint8)
    img[8:16, 40:56] = 255  # a 16x8 box at x 40-56, y 8-16
    seen = set()
    for _ in range(40):
        out = rot(image=img, bboxes=np.array([[0.75, 0.1875, 0.25, 0.125]]), cls=[0])
        (xc, yc, w, h) = out["bboxes"][0]
        ys, xs = np.nonzero(out["image"][..., 0])
        assert np.allclose([xc * 64, yc * 64], [(xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2])
        assert np.allclose([w * 64, h * 64], [xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()])
        seen.add((round(float(xc), 3), round(float(yc), 3)))
    assert len(seen) == 4  # all four rotations happen


def test_augmentations_are_serialisable_and_size_preserving():
    import albumentations as A

    transforms = overhead_augmentations(
        AugmentConfig(rot90=1, downscale=1, color=1, gamma=1, haze=1, blur=1, jpeg=1)
    )
    # what a checkpoint stores and a resumed run rebuilds
    restored = [A.from_dict(A.to_dict(t)) for t in transforms]
    assert [type(t) for t in restored] == [type(t) for t in transforms]
    img = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    out = A.Compose(restored, seed=0)(image=img)["image"]
    assert out.shape == img.shape and out.dtype == np.uint8 and not np.array_equal(out, img)


# ------------------------------------------------------------------------------------------------- train
def _tiny_dataset(root: Path, n_train: int = 8, n_val: int = 2) -> Path:
    """A generated detect set in Ultralytics layout: noise images with bright painted rectangles."""
    import cv2

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            h, w = int(rng.integers(64, 129)), int(rng.integers(64, 129))
            img = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
            lines = []
            for _ in range(int(rng.integers(1, 4))):
                c = int(rng.integers(0, len(TAXONOMY)))
                bw, bh = int(rng.integers(8, 24)), int(rng.integers(8, 24))
                x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
                img[y0 : y0 + bh, x0 : x0 + bw] = (255, 60 * c, 255 - 60 * c)
                lines.append(f"{c} {(x0 + bw / 2) / w:.6f} {(y0 + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), img)
            (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(
        yaml.safe_dump(
            {
                "path": str(root),
                "train": "images/train",
                "val": "images/val",
                "names": dict(enumerate(TAXONOMY)),
            }
        )
    )
    return data


def _tiny_cfg(tmp_path: Path, weights: Path, **kw) -> TrainConfig:
    base = dict(
        name="tiny",
        data=str(_tiny_dataset(tmp_path / "data")),
        weights=str(weights),
        project=str(tmp_path / "runs"),
        imgsz=64,
        batch=4,
        epochs=1,
        workers=0,
        warmup_epochs=0.0,
        close_mosaic=0,
        val=False,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_train_one_epoch_from_remapped_weights(tmp_path, pretrained_pt):
    cfg = _tiny_cfg(tmp_path, pretrained_pt)
    best = train(cfg)
    run = tmp_path / "runs" / "tiny"
    assert best == run / "weights" / "best.pt" and best.is_file()
    assert yaml.safe_load((run / "config.yaml").read_text()) == cfg.to_dict()
    assert "metrics/mAP50(B)" in (run / "metrics.json").read_text()
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    model = ckpt["model"]
    assert model.names == dict(enumerate(TAXONOMY))
    assert type(model).__name__ == "DetectionModel"
    assert model.model[-1].cv3[0][-1].out_channels == len(TAXONOMY)
    # A finished run is not trained again.
    assert train(cfg) == best


def test_resume_from_last_pt(tmp_path, pretrained_pt):
    cfg = _tiny_cfg(tmp_path, pretrained_pt, epochs=2)
    seen_epochs: list[int] = []

    class Interrupt(Exception):
        pass

    def crash_after_first_save(trainer):
        raise Interrupt

    with pytest.raises(Interrupt):
        train(cfg, callbacks={"on_model_save": [crash_after_first_save]})
    last = tmp_path / "runs" / "tiny" / "weights" / "last.pt"
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 0  # one epoch done, resumable

    with pytest.raises(FileExistsError):
        train(TrainConfig(**{**cfg.__dict__, "resume": False}))
    best = train(cfg, callbacks={"on_train_epoch_start": [lambda t: seen_epochs.append(t.epoch)]})
    assert seen_epochs == [1]  # only the second epoch ran
    assert best.is_file()
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == -1  # finished


def test_train_refuses_a_dataset_with_other_names(tmp_path, pretrained_pt):
    cfg = _tiny_cfg(tmp_path, pretrained_pt)
    data = Path(cfg.data)
    d = yaml.safe_load(data.read_text())
    d["names"] = {0: "plane", 1: "helicopter", 2: "small-vehicle", 3: "large-vehicle"}
    data.write_text(yaml.safe_dump(d))
    with pytest.raises(
        ValueError, match=r"data\.yaml: names must be classes of .*taxonomy\.yaml.*\['plane'\]"
    ):
        train(cfg)


def test_train_missing_data_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        train(TrainConfig(data=str(tmp_path / "nope.yaml"), project=str(tmp_path)))
