"""Label readers on tiny generated files (every format, malformed lines, stray points) and on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.labels import (
    LabelError,
    group_of,
    load_names,
    read_coco,
    read_csv_polygons,
    read_dataset,
    read_dota,
    read_yolo,
    read_yolo_obb,
    read_yolo_seg,
    roboflow_stem,
)
from detector.labels.types import min_area_rect
from detector.taxonomy import TaxonomyError, load_taxonomy, taxonomy_from_dict

TAX = taxonomy_from_dict(
    {
        "classes": ["aircraft", "helicopter", "small-vehicle", "large-vehicle"],
        "datasets": {
            "toy": {
                "plane": "aircraft",
                "car": "small-vehicle",
                "bus": "large-vehicle",
                "ship": "ignore",
                "0": "aircraft",
            }
        },
    }
)


def _image(path: Path, w: int = 100, h: int = 80) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(path)
    return path


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


# ------------------------------------------------------------------------------------------------ helpers


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("GBG_016_jpg.rf.0123abcd.jpg", "GBG_016"),
        ("373_DT8_jpg.rf.002a70e65c7928e48577a18b09202534.jpg", "373_DT8"),
        ("tile_000087_png.rf.ffff.png", "tile_000087"),
        ("P0003.png", "P0003"),
        ("plain_name.jpg", "plain_name"),
    ],
)
def test_roboflow_stem(name: str, stem: str) -> None:
    assert roboflow_stem(name) == stem


@pytest.mark.parametrize(
    ("name", "pattern", "group"),
    [
        ("GBG_016_jpg.rf.01ab.jpg", r"^([A-Za-z]+)_\d+$", "GBG"),
        ("373_DT8_jpg.rf.01ab.jpg", r"^([A-Za-z]+)_\d+$", "373_DT8"),  # no airport prefix: its own group
        ("P1478__1__853___962.png", r"^(P\d+)", "P1478"),
        ("airport_102_jpg.rf.9a.jpg", None, "airport_102"),
    ],
)
def test_group_of(name: str, pattern: str | None, group: str) -> None:
    assert group_of(name, pattern) == group


def test_min_area_rect_of_a_rotated_square() -> None:
    pts = np.array([[10, 0], [20, 10], [10, 20], [0, 10], [5, 5]], dtype=float)
    rect = min_area_rect(pts)
    assert rect.shape == (4, 2)
    assert _area(rect) == pytest.approx(200.0)


def test_load_names_from_files(tmp_path: Path) -> None:
    (tmp_path / "a.names").write_text("car\ntruck\n\nbus\n")
    (tmp_path / "d.yaml").write_text("names:\n  0: plane\n  1: small vehicle\n")
    assert load_names(tmp_path / "a.names") == {0: "car", 1: "truck", 2: "bus"}
    assert load_names(tmp_path / "d.yaml") == {0: "plane", 1: "small vehicle"}
    assert load_names(["x", "y"]) == {0: "x", 1: "y"}
    with pytest.raises(LabelError, match="missing.names"):
        load_names(tmp_path / "missing.names")


# --------------------------------------------------------------------------------------------------- COCO


def _coco(tmp_path: Path, annotations: list[dict]) -> Path:
    _image(tmp_path / "GBG_016_jpg.rf.aa11.jpg", 640, 360)
    _image(tmp_path / "GBG_017_jpg.rf.bb22.jpg", 640, 360)
    data = {
        "images": [
            {"id": 0, "file_name": "GBG_016_jpg.rf.aa11.jpg", "width": 640, "height": 360},
            {"id": 1, "file_name": "GBG_017_jpg.rf.bb22.jpg", "width": 640, "height": 360},
        ],
        "categories": [{"id": 0, "name": "Aircrafts", "supercategory": "none"}, {"id": 1, "name": "0"}],
        "annotations": annotations,
    }
    p = tmp_path / "_annotations.coco.json"
    p.write_text(json.dumps(data))
    return p


def test_read_coco(tmp_path: Path) -> None:
    p = _coco(tmp_path, [{"id": 7, "image_id": 0, "category_id": 1, "bbox": [302, 281, 26, 24]}])
    imgs = read_coco(p, dataset="toy", taxonomy=TAX, group_pattern=r"^([A-Za-z]+)_\d+$")
    assert [len(i.annotations) for i in imgs] == [1, 0]  # the unlabelled image is kept as a negative
    a = imgs[0].annotations[0]
    assert a.cls == "aircraft" and a.source_cls == "0" and not a.rotated
    np.testing.assert_allclose(a.xyxy, [302, 281, 328, 305])
    assert a.attrs["source_cls"] == "0" and a.attrs["dataset"] == "toy"
    assert imgs[0].group == imgs[1].group == "GBG"
    assert (imgs[0].width, imgs[0].height) == (640, 360)


def test_read_coco_malformed(tmp_path: Path) -> None:
    anns = [
        {"id": 1, "image_id": 0, "category_id": 1, "bbox": [1, 2, 3, 4]},
        {"id": 2, "image_id": 0, "category_id": 1, "bbox": [1, 2, 0, 4]},
        {"id": 3, "image_id": 1, "category_id": 5, "bbox": [1, 2, 3, 4]},
    ]
    p = _coco(tmp_path, anns)
    with pytest.raises(LabelError, match=r"_annotations\.coco\.json.*annotation id 2.*degenerate"):
        read_coco(p, dataset="toy", taxonomy=TAX)
    imgs = read_coco(p, dataset="toy", taxonomy=TAX, on_error="skip")
    assert [len(i.annotations) for i in imgs] == [1, 0]
    assert len(imgs[0].skipped) == 1 and len(imgs[1].skipped) == 1
    assert "category_id 5" in imgs[1].skipped[0]
    with pytest.raises(LabelError, match="not a COCO"):
        (tmp_path / "x.json").write_text("[]")
        read_coco(tmp_path / "x.json")


def test_unknown_class_is_an_error_naming_the_taxonomy_file(tmp_path: Path) -> None:
    p = _coco(tmp_path, [{"id": 7, "image_id": 0, "category_id": 1, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(TaxonomyError, match=r"class '0' of dataset 'gdit-airport'.*taxonomy\.yaml"):
        read_coco(p, dataset="gdit-airport", taxonomy=load_taxonomy())
    with pytest.raises(TaxonomyError, match=r"dataset 'somewhere'.*taxonomy\.yaml"):
        read_coco(p, dataset="somewhere", taxonomy=load_taxonomy())
    with pytest.raises(TaxonomyError):  # not swallowed by on_error="skip": a config error, not a data error
        read_coco(p, dataset="somewhere", taxonomy=load_taxonomy(), on_error="skip")


# --------------------------------------------------------------------------------------------------- DOTA


def test_read_dota(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "P0007.png", 200, 100)
    _image(tmp_path / "images" / "P0008.png", 200, 100)  # no label file: a negative
    (tmp_path / "labelTxt").mkdir()
    (tmp_path / "labelTxt" / "P0007.txt").write_text(
        "imagesource:GoogleEarth\ngsd:0.115\n"
        "10 10 30 10 30 20 10 20 plane 0\n"
        "50.5 60 70 62 68 80 48 78 small-vehicle 1\n"
        "1 1 2 1 2 2 1 2 ship 0\n"
    )
    imgs = read_dota(tmp_path, dataset="dota", taxonomy=load_taxonomy())
    assert [i.image.name for i in imgs] == ["P0007.png", "P0008.png"]
    first = imgs[0]
    assert first.gsd == pytest.approx(0.115) and imgs[1].gsd is None
    assert first.group == "P0007"
    assert [a.cls for a in first.annotations] == ["aircraft", "small-vehicle", "ignore"]
    assert first.annotations[1].difficult and not first.annotations[0].difficult
    assert first.annotations[1].rotated
    np.testing.assert_allclose(first.annotations[1].polygon[0], [50.5, 60])
    assert (first.width, first.height) == (200, 100)


def test_read_dota_null_gsd_and_malformed_lines(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "P1.png")
    (tmp_path / "labelTxt").mkdir()
    lbl = tmp_path / "labelTxt" / "P1.txt"
    lbl.write_text(
        "gsd:null\n10 10 30 10 30 20 10 20 plane 0\n10 10 30 10 30 plane 0\n10 x 30 10 30 20 10 20 plane 0\n"
    )
    with pytest.raises(LabelError, match=r"P1\.txt:3: expected 8 coordinates"):
        read_dota(tmp_path, dataset="toy", taxonomy=TAX)
    imgs = read_dota(tmp_path, dataset="toy", taxonomy=TAX, on_error="skip")
    assert imgs[0].gsd is None
    assert len(imgs[0].annotations) == 1
    assert [s.split(": ")[0].rsplit(":", 1)[1] for s in imgs[0].skipped] == ["3", "4"]


def test_read_dota_label_without_image(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labelTxt").mkdir()
    (tmp_path / "labelTxt" / "P9.txt").write_text("")
    with pytest.raises(LabelError, match="P9.txt: no image"):
        read_dota(tmp_path)


# --------------------------------------------------------------------------------------------------- YOLO


def test_read_yolo_boxes(tmp_path: Path) -> None:
    seq = tmp_path / "MOS74-93"
    _image(seq / "MOS74.png", 200, 100)
    (seq / "MOS74.txt").write_text("0 0.5 0.5 0.1 0.2\n2 0.25 0.75 0.1 0.1\n")
    _image(seq / "MOS75.png", 200, 100)  # no label file: a negative
    imgs = read_yolo(
        seq, names=["car", "truck", "bus"], dataset="toy", taxonomy=TAX, gsd=0.13, group="folder"
    )
    assert [len(i.annotations) for i in imgs] == [2, 0]
    a, b = imgs[0].annotations
    np.testing.assert_allclose(a.xyxy, [90, 40, 110, 60])
    assert a.cls == "small-vehicle" and b.cls == "large-vehicle" and b.source_cls == "bus"
    assert {i.group for i in imgs} == {"MOS74-93"} and imgs[0].gsd == 0.13


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("7 0.5 0.5 0.1 0.1", "class id 7"),
        ("x 0.5 0.5 0.1 0.1", "class id must be an integer"),
        ("0 0.5 0.5 0.1", "expected 5 fields"),
        ("0 0.5 0.5 0 0.1", "positive"),
        ("0 0.5 abc 0.1 0.1", "not numbers"),
        ("0 5 0.5 0.1 0.1", "not normalised"),
    ],
)
def test_read_yolo_malformed_line(tmp_path: Path, line: str, problem: str) -> None:
    _image(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text(f"0 0.5 0.5 0.1 0.1\n\n{line}\n")
    with pytest.raises(LabelError, match=rf"a\.txt:3: .*{problem}"):
        read_yolo(tmp_path, names=["car"], dataset="toy", taxonomy=TAX)
    imgs = read_yolo(tmp_path, names=["car"], dataset="toy", taxonomy=TAX, on_error="skip")
    assert len(imgs[0].annotations) == 1 and len(imgs[0].skipped) == 1


def test_read_yolo_obb(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "P0861__1024__0___1648.jpg", 200, 100)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "P0861__1024__0___1648.txt").write_text(
        "0 0.1 0.1 0.3 0.1 0.3 0.5 0.1 0.5\n1 0.8 0.5 0.9 0.6 0.8 0.7 0.7 0.6\n"
    )
    imgs = read_yolo_obb(
        tmp_path / "images",
        labels=tmp_path / "labels",
        names={0: "plane", 1: "ship"},
        dataset="toy",
        taxonomy=TAX,
        group_pattern=r"^(P\d+)",
    )
    a, b = imgs[0].annotations
    np.testing.assert_allclose(a.polygon, [[20, 10], [60, 10], [60, 50], [20, 50]])
    assert a.rotated and a.cls == "aircraft" and b.cls == "ignore"
    assert imgs[0].group == "P0861"
    (tmp_path / "labels" / "P0861__1024__0___1648.txt").write_text("0 0.1 0.1 0.3 0.1 0.3 0.5\n")
    with pytest.raises(LabelError, match="expected 9 fields"):
        read_yolo_obb(tmp_path / "images", labels=tmp_path / "labels", names=["plane"])


def test_read_yolo_seg_drops_stray_zero_points(tmp_path: Path) -> None:
    _image(tmp_path / "t.jpg", 100, 100)
    square = "0.2 0.2 0.4 0.2 0.4 0.3 0.2 0.3"
    (tmp_path / "t.txt").write_text(f"0 {square}\n0 0 0 {square} 0 0\n")
    imgs = read_yolo_seg(tmp_path, names=["plane"], dataset="toy", taxonomy=TAX)
    a, b = imgs[0].annotations
    for ann in (a, b):  # the (0,0) points would stretch the rectangle to the corner if they were kept
        np.testing.assert_allclose(ann.xyxy, [20, 20, 40, 30], atol=1e-6)
        assert _area(ann.polygon) == pytest.approx(200.0)
        assert ann.rotated


@pytest.mark.parametrize(
    ("coords", "problem"),
    [
        ("0.1 0.1 0.2 0.2", "even number"),
        ("0.1 0.1 0.2 0.2 0.3", "even number"),
        ("0 0 0.1 0.1 0 0 0.2 0.2 0 0", "fewer than 3 distinct"),
        ("1 0.1 1 0.2 1 0.3 1 0.4", "no area"),
    ],
)
def test_read_yolo_seg_malformed(tmp_path: Path, coords: str, problem: str) -> None:
    _image(tmp_path / "t.jpg", 100, 100)
    (tmp_path / "t.txt").write_text(f"0 {coords}\n")
    with pytest.raises(LabelError, match=rf"t\.txt:1: .*{problem}"):
        read_yolo_seg(tmp_path, names=["plane"])
    assert read_yolo_seg(tmp_path, names=["plane"], on_error="skip")[0].annotations == []


# ---------------------------------------------------------------------------------------------------- CSV


def test_read_csv_polygons(tmp_path: Path) -> None:
    _image(tmp_path / "scene_a.png", 100, 100)
    _image(tmp_path / "scene_b.png", 100, 100)
    (tmp_path / "labels.csv").write_text(
        "image_id,geometry,class\n"
        'scene_a.png,"POLYGON ((10 10, 30 10, 30 20, 10 20, 10 10))",plane\n'
        'scene_a,"POLYGON ((50 40, 60 50, 50 60, 40 50, 50 40))",car\n'
        'scene_b.png,"POLYGON ((1 1, 5 1, 5 4, 1 1))",bus\n'
    )
    imgs = read_csv_polygons(tmp_path / "labels.csv", dataset="toy", taxonomy=TAX)
    # "scene_a" and "scene_a.png" are different ids on purpose here: both resolve to scene_a.png
    by_name: dict[str, list] = {}
    for i in imgs:
        by_name.setdefault(i.image.name, []).extend(i.annotations)
    plane, car = sorted(by_name["scene_a.png"], key=lambda a: a.source_cls, reverse=True)
    assert not plane.rotated and plane.cls == "aircraft"
    np.testing.assert_allclose(plane.xyxy, [10, 10, 30, 20])
    assert car.rotated and _area(car.polygon) == pytest.approx(200.0)
    (bus,) = by_name["scene_b.png"]
    assert bus.rotated and bus.cls == "large-vehicle"


def test_read_csv_polygons_malformed(tmp_path: Path) -> None:
    _image(tmp_path / "s.png")
    p = tmp_path / "l.csv"
    p.write_text(
        'image_id,geometry,class\ns.png,"POLYGON ((10 10, 30 10, 30 20, 10 20, 10 10))",plane\ns.png,"POLYGON ((1 1",plane\n'
    )
    with pytest.raises(LabelError, match=r"l\.csv:3: .*not valid WKT"):
        read_csv_polygons(p, dataset="toy", taxonomy=TAX)
    imgs = read_csv_polygons(p, dataset="toy", taxonomy=TAX, on_error="skip")
    assert len(imgs[0].annotations) == 1 and len(imgs[0].skipped) == 1
    p.write_text("image,geometry,class\n")
    with pytest.raises(LabelError, match=r"missing column\(s\) \['image_id'\]"):
        read_csv_polygons(p)
    p.write_text('image_id,geometry,class\nnope.png,"POLYGON ((1 1, 5 1, 5 4, 1 1))",bus\n')
    with pytest.raises(LabelError, match=r"l\.csv:2: image 'nope.png' not found"):
        read_csv_polygons(p)


# ----------------------------------------------------------------------------------------------- dispatch


def test_read_dataset_from_yaml_spec(tmp_path: Path) -> None:
    _image(tmp_path / "data" / "imgs" / "a.png", 100, 100)
    (tmp_path / "data" / "imgs" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    spec = tmp_path / "data" / "spec.yaml"
    spec.write_text("format: yolo\nname: kit-aerial-cars\npath: imgs\nnames: [car]\ngroup: folder\n")
    (img,) = read_dataset(spec)  # paths relative to the spec file; the default taxonomy
    assert img.annotations[0].cls == "small-vehicle" and img.group == "imgs"
    (img,) = read_dataset(
        {"format": "yolo", "path": "imgs", "names": ["car"], "taxonomy": None}, root=tmp_path / "data"
    )
    assert img.annotations[0].cls == "car"
    with pytest.raises(LabelError, match="format must be one of"):
        read_dataset({"format": "voc", "path": "x"})
    with pytest.raises(LabelError, match=r"unknown key\(s\) \['colour'\]"):
        read_dataset({"format": "yolo", "path": "x", "colour": 1})
    with pytest.raises(LabelError, match="`names` is required"):
        read_dataset({"format": "yolo", "path": "imgs"}, root=tmp_path / "data")


# ------------------------------------------------------------------------------------------- real data


def test_real_hrplanes_and_gdit(shared_data: Path) -> None:
    tax = load_taxonomy()
    hr = read_coco(
        shared_data / "hrplanes" / "valid" / "_annotations.coco.json", dataset="hrplanes", taxonomy=tax
    )
    assert len(hr) == 415
    assert sum(len(i.annotations) for i in hr) == 2551  # the published count
    assert {a.cls for i in hr for a in i.annotations} == {"aircraft"}
    assert all(i.image.is_file() for i in hr[:20])
    gd = read_dota(shared_data / "gdit-airport" / "valid", dataset="gdit-airport", taxonomy=tax)
    assert len(gd) == 68 and all(i.width == 600 and i.height == 600 for i in gd)


def test_real_isaid_polygons(shared_data: Path) -> None:
    root = shared_data / "isaid-512" / "valid"
    names = [
        "small-vehicle",
        "large-vehicle",
        "baseball-diamond",
        "bridge",
        "basketball-court",
        "roundabout",
        "helicopter",
        "plane",
        "storage-tank",
        "ship",
        "harbor",
        "swimming-pool",
        "soccer-ball-field",
        "tennis-court",
        "ground-track-field",
    ]
    imgs = read_yolo_seg(
        root / "images",
        labels=root / "labels",
        names=names,
        dataset="isaid",
        taxonomy=load_taxonomy(),
        on_error="skip",
    )
    assert len(imgs) == 193
    anns = [a for i in imgs for a in i.annotations]
    assert sum(a.cls == "helicopter" for a in anns) >= 60
    xyxy = np.array([a.xyxy for a in anns])  # tight boxes of the outlines stay on the 512 px tile
    assert (xyxy[:, :2] >= 0).all() and (xyxy[:, 2:] <= 512).all()
    assert not any((a.outline == 0).all(axis=1).any() for a in anns)  # no stray (0,0) points left


def test_real_dota_demo_header(shared_data: Path) -> None:
    imgs = read_dota(shared_data / "dota" / "demo", dataset="dota", taxonomy=load_taxonomy())
    assert [i.group for i in imgs] == ["P0003", "P0004", "P0005", "P1478"]
    assert all(i.gsd is not None and 0.1 < i.gsd < 0.15 for i in imgs if i.group != "P1478")
