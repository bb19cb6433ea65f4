"""The chip builder on generated DOTA-style scenes: grid, clipping, empties, splits, duplicates, summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from detector.errors import LabelError, RasterError
from training.chips import BuildConfig, BuildError, build, chip_starts, same_content

TAXONOMY = ("aircraft", "helicopter", "small-vehicle", "large-vehicle")
TAXONOMY_YAML = {
    "classes": list(TAXONOMY),
    "datasets": {"toy": {"plane": "aircraft", "car": "small-vehicle", "ship": "ignore"}},
}


def _scene(root: Path, name: str, size: tuple[int, int], objects: list[tuple], seed: int = 0) -> Path:
    """A DOTA-style image + label file; ``objects`` are ``(class, x1, y1, x2, y2)`` axis-aligned boxes."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labelTxt").mkdir(parents=True, exist_ok=True)
    w, h = size
    pixels = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    img = root / "images" / f"{name}.png"
    Image.fromarray(pixels).save(img)
    lines = [f"{x1} {y1} {x2} {y1} {x2} {y2} {x1} {y2} {c} 0" for c, x1, y1, x2, y2 in objects]
    (root / "labelTxt" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return img


def _config(tmp_path: Path, sources: list[dict], **kw) -> BuildConfig:
    tax = tmp_path / "taxonomy.yaml"
    tax.write_text(yaml.safe_dump(TAXONOMY_YAML))
    base = {
        "name": "toy",
        "out": str(tmp_path / "out"),
        "data_root": str(tmp_path / "data"),
        "taxonomy": str(tax),
        "chip": 64,
        "overlap": 0,
        "empty_share": 0.0,
        "image_format": "png",
    }
    return BuildConfig.from_dict({**base, **kw, "sources": sources})


def _src(name: str, path: str, split: str = "train", **kw) -> dict:
    return {"name": name, "split": split, "dataset": {"format": "dota", "name": "toy", "path": path}, **kw}


def _labels(out: Path, split: str) -> dict[str, list[list[float]]]:
    return {
        p.stem: [[float(v) for v in line.split()] for line in p.read_text().splitlines()]
        for p in sorted((out / "labels" / split).glob("*.txt"))
    }


@pytest.fixture(autouse=True)
def _no_env_data_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DETECTOR_SHARED_DATA", raising=False)


@pytest.mark.parametrize(
    ("length", "chip", "overlap", "starts"),
    [
        (64, 64, 16, [0]),
        (50, 64, 16, [0]),  # smaller than a chip: one padded chip
        (128, 64, 0, [0, 64]),
        (640, 320, 48, [0, 160, 320]),
        (360, 320, 48, [0, 40]),
        (512, 320, 48, [0, 192]),
        (600, 320, 48, [0, 140, 280]),
        (100, 64, 16, [0, 36]),
    ],
)
def test_chip_starts(length: int, chip: int, overlap: int, starts: list[int]) -> None:
    got = chip_starts(length, chip, overlap)
    assert got == starts
    assert got[-1] + chip >= length  # covers the axis
    assert all(
        b - a <= chip - overlap for a, b in zip(got, got[1:], strict=False)
    )  # neighbours share >= overlap


def test_clipping_at_chip_borders(tmp_path: Path) -> None:
    _scene(
        tmp_path / "data" / "a",
        "P0001",
        (128, 64),
        [
            ("plane", 10, 10, 30, 30),  # whole in the left chip
            ("car", 58, 20, 78, 30),  # 30 % left (dropped there), 70 % right (kept, truncated)
            ("plane", 54, 40, 74, 50),  # exactly 50 % on each side: kept in both, truncated
            ("ship", 100, 5, 110, 15),  # ignored class
        ],
    )
    cfg = _config(tmp_path, [_src("a", "a")], min_visible=0.5)
    summary = build(cfg)
    labels = _labels(tmp_path / "out", "train")
    assert sorted(labels) == ["a__P0001__s100_0_0", "a__P0001__s100_64_0"]
    left = sorted(labels["a__P0001__s100_0_0"])
    right = sorted(labels["a__P0001__s100_64_0"])
    np.testing.assert_allclose(
        left, [[0, 20 / 64, 20 / 64, 20 / 64, 20 / 64], [0, 59 / 64, 45 / 64, 10 / 64, 10 / 64]]
    )
    np.testing.assert_allclose(
        right, [[0, 5 / 64, 45 / 64, 10 / 64, 10 / 64], [2, 7 / 64, 25 / 64, 14 / 64, 10 / 64]]
    )
    train = summary.splits["train"]
    assert train["chips"] == 2 and train["empty_chips"] == 0
    assert train["instances"] == {"aircraft": 3, "helicopter": 0, "small-vehicle": 1, "large-vehicle": 0}
    assert train["truncated"] == 3
    src = summary.sources["a"]
    assert src["cut_below_min_visible"] == 1 and src["ignored_objects"] == {"ship": 1}
    # the chip pixels are the image pixels
    img = np.asarray(Image.open(tmp_path / "data" / "a" / "images" / "P0001.png"))
    chip = np.asarray(Image.open(tmp_path / "out" / "images" / "train" / "a__P0001__s100_64_0.png"))
    np.testing.assert_array_equal(chip, img[:, 64:128])
    data = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())
    assert data["names"] == dict(enumerate(TAXONOMY)) and data["train"] == "images/train"
    assert data["taxonomy"] == str((tmp_path / "taxonomy.yaml").resolve())
    assert (tmp_path / "out" / "READY").is_file()
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["splits"]["train"]["chips"] == 2


def test_higher_min_visible_drops_the_half_object(tmp_path: Path) -> None:
    _scene(
        tmp_path / "data" / "a", "P0001", (128, 64), [("plane", 54, 40, 74, 50), ("plane", 10, 10, 30, 30)]
    )
    summary = build(_config(tmp_path, [_src("a", "a")], min_visible=0.6))
    assert summary.splits["train"]["instances"]["aircraft"] == 1
    assert summary.sources["a"]["cut_below_min_visible"] == 2


def test_obb_task_and_scales(tmp_path: Path) -> None:
    _scene(tmp_path / "data" / "a", "P0001", (128, 64), [("plane", 10, 10, 30, 30)])
    build(_config(tmp_path, [_src("a", "a", scales=[0.5])], task="obb"))
    labels = _labels(tmp_path / "out", "train")
    (rows,) = labels.values()  # 128x64 at 0.5 is 64x32: one chip, padded
    (row,) = rows
    assert len(row) == 9 and row[0] == 0
    pts = np.array(row[1:]).reshape(4, 2) * 64
    np.testing.assert_allclose(pts.min(axis=0), [5, 5], atol=0.5)
    np.testing.assert_allclose(pts.max(axis=0), [15, 15], atol=0.5)
    chip = np.asarray(Image.open(next((tmp_path / "out" / "images" / "train").iterdir())))
    assert chip.shape == (64, 64, 3) and (chip[32:] == 0).all()  # black padding below the image


def test_empty_chip_share(tmp_path: Path) -> None:
    # 640x64 -> ten 64 px chips, objects in two of them
    _scene(
        tmp_path / "data" / "a", "P0001", (640, 64), [("plane", 10, 10, 30, 30), ("car", 330, 10, 350, 30)]
    )
    summary = build(_config(tmp_path, [_src("a", "a")], empty_share=0.5))
    s = summary.sources["a"]
    assert s["chips_with_objects_kept"] == 2 and s["empty_chips"] == 8 and s["empty_chips_kept"] == 2
    labels = _labels(tmp_path / "out", "train")
    assert len(labels) == 4 and sum(1 for rows in labels.values() if not rows) == 2
    assert summary.splits["train"]["empty_chips"] == 2


def test_max_chips_keeps_priority_classes_and_covers_images(tmp_path: Path) -> None:
    for i in range(6):  # six images, four chips each, a car in every chip; one helicopter-free plane image
        objs = [("car", x + 20, 20, x + 30, 30) for x in (0, 64, 128, 192)]
        if i == 3:
            objs.append(("plane", 140, 40, 160, 60))
        _scene(tmp_path / "data" / "a", f"P{i:04d}", (256, 64), objs, seed=i)
    summary = build(_config(tmp_path, [_src("a", "a", max_chips=7, keep_classes=["aircraft"])]))
    labels = _labels(tmp_path / "out", "train")
    assert len(labels) == 7
    assert any(row[0] == 0 for rows in labels.values() for row in rows)  # the plane chip is kept
    images = {name.split("__")[1] for name in labels}
    assert len(images) == 6  # round-robin: every image gives a chip before any gives a second
    assert summary.sources["a"]["priority_chips"] == 1


def test_splits_by_group_never_leak(tmp_path: Path) -> None:
    for g in range(12):
        for k in range(2):  # two frames per scene P00gg: they must land in one split
            _scene(
                tmp_path / "data" / "a",
                f"P{g:04d}__{k}",
                (64, 64),
                [("plane", 10, 10, 30, 30)],
                seed=g * 10 + k,
            )
    summary = build(_config(tmp_path, [_src("a", "a", split="auto", val_fraction=0.5)]))
    groups = {}
    for split in ("train", "val"):
        for name in _labels(tmp_path / "out", split):
            groups.setdefault(name.split("__")[1], set()).add(split)
    assert all(len(s) == 1 for s in groups.values())
    assert summary.splits["train"]["chips"] > 0 and summary.splits["val"]["chips"] > 0
    assert summary.leakage["shared_groups"] == [] and summary.leakage["remaining"] == []


def test_leakage_between_sources_is_dropped_from_val(tmp_path: Path) -> None:
    _scene(tmp_path / "data" / "tr", "P0001__0", (64, 64), [("plane", 10, 10, 30, 30)], seed=1)
    _scene(tmp_path / "data" / "va", "P0001__1", (64, 64), [("plane", 10, 10, 30, 30)], seed=2)  # same scene
    _scene(tmp_path / "data" / "va", "P0002__0", (64, 64), [("plane", 10, 10, 30, 30)], seed=3)
    sources = [_src("tr", "tr"), _src("va", "va", split="val")]
    summary = build(_config(tmp_path, sources))
    assert summary.leakage["shared_groups"] == ["toy:P0001"] and summary.leakage["images_dropped"] == 1
    assert summary.sources["va"]["leakage_dropped"] == 1
    assert list(_labels(tmp_path / "out", "val")) == ["va__P0002__0__s100_0_0"]
    with pytest.raises(BuildError, match="two splits"):
        build(_config(tmp_path, sources, leakage="error"), out=tmp_path / "out2")
    summary = build(_config(tmp_path, sources, leakage="report"), out=tmp_path / "out3")
    assert summary.leakage["remaining"] == ["toy:P0001"]


def test_roboflow_duplicates_are_dropped(tmp_path: Path) -> None:
    root = tmp_path / "data" / "a"
    img = _scene(root, "x_jpg.rf.aaaa", (64, 64), [("plane", 10, 10, 30, 30)], seed=5)
    # an augmented copy (flipped, brighter) under another Roboflow hash: a duplicate
    copy = np.clip(np.asarray(Image.open(img))[:, ::-1].astype(int) + 20, 0, 255).astype(np.uint8)
    _scene(root, "x_jpg.rf.bbbb", (64, 64), [("plane", 34, 10, 54, 30)])
    Image.fromarray(copy).save(root / "images" / "x_jpg.rf.bbbb.png")
    # same stem, different picture (iSAID's export reuses tile names): not a duplicate
    _scene(root, "y_jpg.rf.cccc", (64, 64), [("plane", 10, 10, 30, 30)], seed=6)
    _scene(root, "y_jpg.rf.dddd", (64, 64), [("plane", 10, 10, 30, 30)], seed=7)
    summary = build(_config(tmp_path, [_src("a", "a")]))
    assert summary.sources["a"]["duplicates_dropped"] == 1
    assert summary.splits["train"]["chips"] == 3
    a = np.asarray(Image.open(img).convert("L"), dtype=float)
    assert not same_content((a - a.mean()) / a.std(), np.random.default_rng(0).normal(size=a.shape))


def test_build_is_deterministic(tmp_path: Path) -> None:
    for i in range(4):
        _scene(
            tmp_path / "data" / "a", f"P{i:04d}", (192, 128), [("plane", 20 * i, 30, 20 * i + 40, 60)], seed=i
        )
    cfg = _config(tmp_path, [_src("a", "a", split="auto", max_chips=5)], empty_share=0.3, seed=3)
    build(cfg, out=tmp_path / "o1")
    build(cfg, out=tmp_path / "o2")
    for split in ("train", "val"):
        assert _labels(tmp_path / "o1", split) == _labels(tmp_path / "o2", split)


def test_config_errors(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"unknown key\(s\) \['chips'\]"):
        BuildConfig.from_dict({"name": "x", "out": "o", "chips": 3, "sources": []})
    with pytest.raises(BuildError, match="overlap"):
        _config(tmp_path, [_src("a", "a")], overlap=64)
    with pytest.raises(BuildError, match="keep_classes"):
        _config(tmp_path, [_src("a", "a", keep_classes=["boat"])])
    with pytest.raises(BuildError, match="unique"):
        _config(tmp_path, [_src("a", "a"), _src("a", "b")])
    (tmp_path / "notours").mkdir()
    (tmp_path / "notours" / "precious.txt").write_text("x")
    _scene(tmp_path / "data" / "a", "P0001", (64, 64), [])
    with pytest.raises(BuildError, match="refusing to overwrite"):
        build(_config(tmp_path, [_src("a", "a")]), out=tmp_path / "notours")
    assert (tmp_path / "notours" / "precious.txt").is_file()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"out": None}, r"missing key\(s\) \['out'\]"),  # None: the key is left out
        ({"sources": {"a": 1}}, "`sources` must be a list"),
        ({"sources": ["gdit"]}, r"source #0 must be a mapping"),
        ({"sources": [{"name": "a"}]}, r"source #0 \(a\): needs a `name` and a `dataset` mapping"),
        ({"sources": [{"name": "a", "dataset": {}, "scales": ["fast"]}]}, r"source #0 \(a\): bad value"),
        ({"chip": "large"}, r"bad value"),
    ],
)
def test_malformed_build_config_values(tmp_path: Path, change: dict, problem: str) -> None:
    data = {"name": "x", "out": str(tmp_path / "o"), "sources": [_src("a", "a")], **change}
    path = tmp_path / "build.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    with pytest.raises(BuildError, match=rf"build\.yaml: {problem}"):
        BuildConfig.from_yaml(path)


def test_failed_build_leaves_no_staging_folder(tmp_path: Path) -> None:
    root = tmp_path / "data" / "a"
    _scene(root, "P0001", (128, 64), [("plane", 10, 10, 30, 30)])
    cfg = _config(tmp_path, [_src("a", "a")])
    build(cfg)  # a good dataset first: a failed rebuild must leave it as it was
    before = sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*"))
    stage = tmp_path / "out.building"
    # a bad label line: the readers stop the build
    (root / "labelTxt" / "P0001.txt").write_text("10 10 20 20 30 30 40 40 plane 0\n")  # no area
    with pytest.raises(LabelError, match=r"P0001\.txt:1: polygon has no area"):
        build(cfg)
    assert not stage.exists()
    # an image whose header reads but whose pixels are cut: the build stops while writing chips
    _scene(root, "P0001", (128, 64), [("plane", 10, 10, 30, 30)])
    _scene(root, "P0002", (128, 64), [("plane", 10, 10, 30, 30)])
    img = root / "images" / "P0002.png"
    img.write_bytes(img.read_bytes()[:2000])
    with pytest.raises(RasterError, match=r"P0002\.png: cannot decode the image"):
        build(cfg)
    assert not stage.exists()
    assert sorted(p.relative_to(tmp_path / "out") for p in (tmp_path / "out").rglob("*")) == before


def test_shipped_configs_parse() -> None:
    root = Path(__file__).resolve().parents[1] / "configs" / "data"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert {"cpu.yaml", "cpu-aerial.yaml", "cpu-aerial-obb.yaml", "gpu-workstation.yaml"} <= set(names)
    for name in names:
        cfg = BuildConfig.from_yaml(root / name)
        paths = " ".join(str(s.dataset["path"]) for s in cfg.sources)
        # evaluation sets never feed a build
        assert "test" not in paths and "demo" not in paths and "MunichStreet02" not in paths
        assert {s.split for s in cfg.sources} == {"train", "val"}


def test_self_intersecting_outline_uses_its_hull(tmp_path: Path) -> None:
    """A bow-tie outline: its hull (40x20) straddles the chip border 75/25; buffer(0) would keep one triangle."""
    from training.chips import _clip_object

    bowtie = np.array([[34, 10], [74, 30], [74, 10], [34, 30]], dtype=float)
    frac, pts = _clip_object(bowtie, (0.0, 0.0, 64.0, 64.0), 0.5)
    assert frac == pytest.approx(0.75)
    assert pts is not None
    np.testing.assert_allclose([pts.min(axis=0), pts.max(axis=0)], [[34, 10], [64, 30]])
