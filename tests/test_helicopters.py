"""training/helicopters.py: the rotor-disc rule, copy-paste, the train-only rule, and the chips `root` key."""

from __future__ import annotations

import json
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from detector.errors import BuildError
from detector.labels import Annotation, LabeledImage, read_dataset
from detector.labels.types import min_area_rect
from detector.taxonomy import load_taxonomy
from training import helicopters as heli

CLASSES = load_taxonomy().classes


def _rect(cx: float, cy: float, length: float, width: float, deg: float) -> np.ndarray:
    t = np.radians(deg)
    u = np.array([np.cos(t), np.sin(t)]) * length / 2
    v = np.array([-np.sin(t), np.cos(t)]) * width / 2
    c = np.array([cx, cy])
    return np.array([c - u - v, c + u - v, c + u + v, c - u + v])


def _inside(poly: np.ndarray, pts: np.ndarray, tol: float = 1.0) -> np.ndarray:
    contour = poly.astype(np.float32).reshape(-1, 1, 2)
    return np.array([cv2.pointPolygonTest(contour, (float(x), float(y)), True) >= -tol for x, y in pts])


def _ann(path: Path, cls: str, outline: np.ndarray) -> Annotation:
    return Annotation(path, cls, cls, min_area_rect(outline), rotated=True, attrs={"outline": outline})


def _texture(rows: int, cols: int, seed: int, level: int = 90) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(level + rng.normal(0, 6, (rows, cols, 3)), 0, 255).astype(np.uint8)


def _instance(tmp_path: Path) -> heli.Instance:
    """A bright 40 x 10 px 'fuselage' with a tail fin on a dark tile, cut as the generator cuts it."""
    rgb = _texture(96, 96, 0, level=60)
    body = _rect(48, 48, 40, 10, 30)
    cv2.fillPoly(rgb, [np.round(body).astype(np.int32)], (230, 230, 230))
    img = LabeledImage(
        tmp_path / "src.jpg", 96, 96, None, [_ann(tmp_path / "src.jpg", "helicopter", body)], "src"
    )
    (inst,) = heli.cut_instances(img, rgb)
    return inst


@pytest.mark.parametrize("deg", [0.0, 30.0, 135.0])
def test_rotor_disc_of_a_fuselage_is_an_aligned_square(deg: float) -> None:
    fuselage = _rect(100, 80, 60, 15, deg)
    disc = heli.rotor_disc(fuselage)
    centre, length, width, axis = heli.rect_axes(disc)
    assert length == pytest.approx(heli.ROTOR_K * 60) and width == pytest.approx(heli.ROTOR_K * 60)
    np.testing.assert_allclose(centre, [100, 80], atol=1e-9)
    assert abs(axis @ [np.cos(np.radians(deg)), np.sin(np.radians(deg))]) == pytest.approx(1.0)
    assert _inside(disc, fuselage, tol=1e-6).all()


def test_rotor_disc_of_a_disc_like_label_keeps_its_length() -> None:
    disc = heli.rotor_disc(_rect(50, 50, 54, 49, 10))  # blades traced: aspect 1.1
    _, length, width, _ = heli.rect_axes(disc)
    assert length == pytest.approx(54) and width == pytest.approx(54)


def test_rotor_disc_refuses_an_empty_rectangle() -> None:
    with pytest.raises(ValueError, match="positive length"):
        heli.rotor_disc(np.zeros((4, 2)))


def test_helicopter_labels_are_written_as_rotor_discs_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "images" / "t.jpg"
    path.parent.mkdir()
    Image.fromarray(_texture(128, 128, 1)).save(path)
    img = LabeledImage(
        path, 128, 128, None,
        [_ann(path, "helicopter", _rect(64, 64, 40, 10, 0)), _ann(path, "small-vehicle", _rect(20, 20, 10, 4, 0)),
         _ann(path, "ignore", _rect(100, 100, 10, 10, 0))],
        "t",
    )  # fmt: skip
    (tmp_path / "labels").mkdir()
    lines = heli.yolo_obb_lines(heli.image_boxes(img, CLASSES), 128, 128)
    (tmp_path / "labels" / "t.txt").write_text("\n".join(lines) + "\n")
    spec = {"format": "yolo_obb", "name": heli.DATASET, "path": "images", "labels": "labels",
            "names": list(CLASSES[:4])}  # fmt: skip
    (back,) = read_dataset(spec, root=tmp_path)
    got = {a.cls: heli.rect_axes(a.polygon)[1:3] for a in back.annotations}
    assert set(got) == {"helicopter", "small-vehicle"}  # the ignored class is not written
    assert got["helicopter"] == pytest.approx((44, 44), abs=1e-3)
    assert got["small-vehicle"] == pytest.approx((10, 4), abs=1e-3)


def test_a_paste_is_covered_by_its_label(tmp_path: Path) -> None:
    inst = _instance(tmp_path)
    bg = _texture(160, 160, 2)
    before = bg.copy()
    rect, outline, alpha = heli.paste(bg, inst, (80, 80), 70.0, 1.2)
    disc = heli.rotor_disc(rect)
    changed = np.argwhere(np.abs(bg.astype(int) - before.astype(int)).max(axis=2) > 0)[:, ::-1]
    assert len(changed) > 300  # a 48 x 12 px fuselage is on the image
    assert _inside(disc, changed).all()
    assert _inside(disc, outline).all()
    _, length, width, _ = heli.rect_axes(rect)
    assert (length, width) == pytest.approx((48, 12), abs=1.5)  # scaled 1.2, not stretched
    # the bright body came through the brightness match brighter than the background around it
    body = heli.polygon_mask(outline, bg.shape[:2]).astype(bool)
    assert bg[body].mean() > before.mean() + 40


def test_paste_matches_the_background_brightness(tmp_path: Path) -> None:
    inst = _instance(tmp_path)  # a 230 gray body on a 60 gray tile: 170 above its ground
    for level in (20, 70):
        bg = _texture(160, 160, 3, level=level)
        _, outline, _ = heli.paste(bg, inst, (80, 80), 0.0, 1.0)
        core = cv2.erode(heli.polygon_mask(outline, bg.shape[:2]), np.ones((3, 3), np.uint8)).astype(bool)
        assert bg[core].mean() == pytest.approx(level + 170, abs=12)  # follows the scene's lighting
        raw = _texture(160, 160, 3, level=level)
        heli.paste(raw, inst, (80, 80), 0.0, 1.0, match=False)
        assert raw[core].mean() == pytest.approx(230, abs=12)  # (without the match: as cut)


def test_nothing_is_pasted_over_an_existing_label(tmp_path: Path) -> None:
    inst = _instance(tmp_path)
    path = tmp_path / "bg.jpg"
    rgb = _texture(256, 256, 4)
    rgb[:, :40] = 0  # black padding of an edge tile: no paste there either
    labels = [_ann(path, c, _rect(x, y, 24, 10, d)) for c, x, y, d in [
        ("aircraft", 70, 60, 20), ("small-vehicle", 200, 50, 80), ("large-vehicle", 130, 200, 0),
        ("ignore", 220, 210, 45), ("small-vehicle", 120, 120, 10)]]  # fmt: skip
    bg = LabeledImage(path, 256, 256, None, labels, "bg")
    n_pasted = 0
    for seed in range(12):
        image, boxes, sources = heli.make_paste_image(
            bg, rgb, [inst], CLASSES, random.Random(seed), n_paste=4
        )
        n_pasted += len(sources)
        changed = np.abs(image.astype(int) - rgb.astype(int)).max(axis=2) > 0
        for ann in labels:
            under = heli.polygon_mask(ann.polygon, changed.shape).astype(bool)
            assert not changed[under].any(), f"seed {seed}: pasted over {ann.cls}"
        assert not changed[:, :40].any()
        discs = [b for c, b in boxes if c == CLASSES.index("helicopter")]
        assert len(discs) == len(sources) and len(boxes) == 4 + len(sources)  # ignore is not written
        for i, d in enumerate(discs):
            assert not any(heli.boxes_overlap(d, a.polygon) for a in labels)
            assert not any(heli.boxes_overlap(d, e) for e in discs[i + 1 :])
    assert n_pasted >= 12  # it does paste: the test is not passing on an empty image


@pytest.mark.parametrize("path", ["isaid-512/valid", "isaid-512/test/images", "data/val/x"])
def test_the_generator_refuses_validation_and_test_paths(path: str, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="only reads training tiles"):
        heli.check_train_path(path)
    with pytest.raises(BuildError, match="only reads training tiles"):
        heli.generate(tmp_path, tmp_path / "out", train_dir=path, model=None)
    assert not (tmp_path / "out").exists()


def test_a_source_root_outside_the_data_root(tmp_path: Path) -> None:
    """training/chips.py's per-source `root:` key: generated data next to the shared data root."""
    from training.chips import BuildConfig, build

    gen = tmp_path / "gen"
    (gen / "images").mkdir(parents=True)
    (gen / "labels").mkdir()
    Image.fromarray(_texture(64, 64, 5)).save(gen / "images" / "a.jpg")
    (gen / "labels" / "a.txt").write_text("1 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n")
    (tmp_path / "shared").mkdir()
    dataset = {"format": "yolo_obb", "name": heli.DATASET, "path": "images", "labels": "labels",
               "names": list(CLASSES[:4])}  # fmt: skip
    cfg = {"name": "t", "out": str(tmp_path / "out"), "task": "obb", "chip": 64, "overlap": 0,
           "sources": [{"name": "heli", "split": "train", "root": str(gen), "dataset": dataset}]}  # fmt: skip
    summary = build(BuildConfig.from_dict(cfg), data_root=tmp_path / "shared", dry_run=True)
    assert summary.splits["train"]["chips"] == 1
    cfg["sources"][0].pop("root")
    with pytest.raises(Exception, match="images"):
        build(BuildConfig.from_dict(cfg), data_root=tmp_path / "shared", dry_run=True)


def _isaid_root(tmp_path: Path) -> Path:
    """A tiny isaid-512/train: one tile with a helicopter, two with a plane or cars, one with nothing."""
    root = tmp_path / "data"
    images, labels = root / "isaid-512/train/images", root / "isaid-512/train/labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    heli_poly = _rect(64, 64, 40, 10, 20)
    tiles = {
        "h": [(6, heli_poly)],
        "p": [(7, _rect(40, 40, 30, 30, 0))],
        "v": [(0, _rect(100, 100, 10, 4, 0)), (0, _rect(30, 100, 10, 4, 90))],
        "e": [],
    }
    for i, (name, objs) in enumerate(tiles.items()):
        rgb = _texture(128, 128, 10 + i)
        for _, poly in objs:
            cv2.fillPoly(rgb, [np.round(poly).astype(np.int32)], (220, 220, 220))
        Image.fromarray(rgb).save(images / f"{name}.jpg")
        rows = [f"{c} " + " ".join(f"{v / 128:.6f}" for v in poly.reshape(-1)) for c, poly in objs]
        (labels / f"{name}.txt").write_text("".join(r + "\n" for r in rows))
    return root


def test_generate_writes_three_readable_subsets(tmp_path: Path) -> None:
    root = _isaid_root(tmp_path)
    free = [str(root / "isaid-512/train/images" / f"{n}.jpg") for n in ("e", "p", "v")]
    cache = tmp_path / "scores.jsonl"  # the model's scores, as a scan left them: no model run needed
    cache.write_text(
        "".join(
            json.dumps({"image": p, "scores": s}) + "\n"
            for p, s in zip(free, [[], [0.3], [0.2]], strict=True)
        )
    )
    out = tmp_path / "out"
    report = heli.generate(root, out, n_paste_images=4, model=tmp_path / "absent.onnx", cache=cache)
    assert report["negatives"]["tiles_scanned"] == 3 and report["negatives"]["tiles_with_call"] == 1
    spec = {"format": "yolo_obb", "name": heli.DATASET, "names": list(CLASSES[:4])}
    sets = {
        sub: read_dataset({**spec, "path": f"{sub}/images", "labels": f"{sub}/labels"}, root=out)
        for sub in ("paste", "negatives", "isaid-train")
    }
    assert [i.image.name for i in sets["negatives"]] == ["neg_p.jpg"]  # the tile with a 0.3 call
    assert len(sets["isaid-train"]) == 4
    (h,) = [a for i in sets["isaid-train"] for a in i.annotations if a.cls == "helicopter"]
    assert heli.rect_axes(h.polygon)[1:3] == pytest.approx((44, 44), abs=0.1)  # the disc, not the fuselage
    assert sets["paste"], "no paste image written"
    for img in sets["paste"]:
        pasted = [a for a in img.annotations if a.cls == "helicopter"]
        assert pasted and all(heli.rect_axes(a.polygon)[1] > 35 for a in pasted)  # 0.8-1.25 x 44 px
        assert not img.image.name.endswith(("_h.jpg",))  # never onto the helicopter tile itself
    again = heli.generate(
        root, tmp_path / "out2", n_paste_images=4, model=tmp_path / "absent.onnx", cache=cache
    )
    assert again["paste"] == report["paste"]  # seeded
    for a, b in zip(
        sorted((out / "paste/labels").iterdir()),
        sorted((tmp_path / "out2/paste/labels").iterdir()),
        strict=True,
    ):
        assert a.read_text() == b.read_text()


def test_only_negatives_keeps_the_pastes_and_redoes_the_negatives(tmp_path: Path) -> None:
    root = _isaid_root(tmp_path)
    free = [str(root / "isaid-512/train/images" / f"{n}.jpg") for n in ("e", "p", "v")]
    cache = tmp_path / "scores.jsonl"
    cache.write_text("".join(json.dumps({"image": p, "scores": []}) + "\n" for p in free))
    out = tmp_path / "out"
    first = heli.generate(root, out, n_paste_images=4, model=tmp_path / "absent.onnx", cache=cache)
    assert first["negatives"]["tiles_with_call"] == 0 and (out / "negatives" / "images").is_dir()
    pastes = sorted(p.name for p in (out / "paste" / "images").iterdir())
    (out / "report.json").unlink()  # as when a run is stopped while mining
    cache.write_text("".join(json.dumps({"image": p, "scores": [0.5]}) + "\n" for p in free))
    report = heli.generate(
        root, out, n_paste_images=4, model=tmp_path / "absent.onnx", cache=cache, scan=2, only_negatives=True
    )
    assert sorted(p.name for p in (out / "paste" / "images").iterdir()) == pastes
    assert report["negatives"]["tiles_scanned"] == 2 and report["negatives"]["tiles_with_call"] == 2
    assert report["paste"]["helicopters_pasted"] == first["paste"]["helicopters_pasted"]
    assert len(list((out / "negatives" / "images").iterdir())) == report["negatives"]["tiles_with_call"]


def test_a_broken_negatives_cache_is_named(tmp_path: Path) -> None:
    cache = tmp_path / "scores.jsonl"
    cache.write_text('{"image": "a.jpg"}\n')
    with pytest.raises(BuildError, match=r"scores.jsonl:1: not a negatives cache line"):
        heli.mine_negatives([], "absent.onnx", cache=cache)
