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


def _coco_file(tmp_path: Path, **overrides: object) -> Path:
    """A valid two-image COCO file with some of its top-level keys replaced."""
    p = _coco(tmp_path, [{"id": 7, "image_id": 0, "category_id": 1, "bbox": [302, 281, 26, 24]}])
    data = {**json.loads(p.read_text()), **overrides}
    p.write_text(json.dumps(data))
    return p


GOOD_IMAGES = [
    {"id": 0, "file_name": "GBG_016_jpg.rf.aa11.jpg", "width": 640, "height": 360},
    {"id": 1, "file_name": "GBG_017_jpg.rf.bb22.jpg", "width": 640, "height": 360},
]


@pytest.mark.parametrize(
    ("overrides", "problem", "read_with_skip"),
    [
        # a category without `id` (its annotation then names an unknown category)
        ({"categories": [{"name": "0"}]}, r"category #0 needs an integer `id` and a `name`", [0, 0]),
        # an image without file_name: that image is skipped
        (
            {"images": [GOOD_IMAGES[0], {"id": 1, "width": 640, "height": 360}]},
            r"image #1 needs .*`file_name`",
            [1],
        ),
        # a non-integer width
        (
            {"images": [GOOD_IMAGES[0], {**GOOD_IMAGES[1], "width": "wide"}]},
            r"image 'GBG_017_jpg\.rf\.bb22\.jpg': width and height must be positive integers, got 'wide'",
            [1],
        ),
        ({"images": [{**GOOD_IMAGES[0], "width": 640.5}, GOOD_IMAGES[1]]}, r"image .*got 640\.5 x 360", [0]),
        (
            {"annotations": [{"id": 7, "image_id": 0, "category_id": 1, "bbox": "x"}]},
            "annotation id 7: malformed bbox",
            [0, 0],
        ),
        ({"annotations": ["not a record"]}, r"annotation #0 has no valid image_id", [0, 0]),
    ],
)
def test_broken_coco_records_are_one_line_errors_or_skipped(
    tmp_path: Path, overrides: dict, problem: str, read_with_skip: list[int]
) -> None:
    p = _coco_file(tmp_path, **overrides)
    with pytest.raises(LabelError, match=rf"^{tmp_path}/_annotations\.coco\.json: {problem}") as info:
        read_coco(p)
    assert "\n" not in str(info.value)
    imgs = read_coco(p, on_error="skip")
    assert [len(i.annotations) for i in imgs] == read_with_skip
    assert sum(len(i.skipped) for i in imgs) >= 1  # every skipped record is counted


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"annotations": None}, "`annotations` must be a list, got null"),
        ({"images": {"0": "a.jpg"}}, "`images` must be a list, got dict"),
        ({"categories": None}, "`categories` must be a list, got null"),
    ],
)
def test_broken_coco_structure_is_an_error_even_when_skipping(
    tmp_path: Path, overrides: dict, problem: str
) -> None:
    p = _coco_file(tmp_path, **overrides)
    for on_error in ("raise", "skip"):
        with pytest.raises(LabelError, match=rf"_annotations\.coco\.json: {problem}"):
            read_coco(p, on_error=on_error)


def test_coco_segmentation_without_area_is_an_error(tmp_path: Path) -> None:
    line = [10, 10, 20, 20, 30, 30]  # three points on a diagonal line
    ann = {"id": 7, "image_id": 0, "category_id": 1, "bbox": [10, 10, 20, 20], "segmentation": [line]}
    p = _coco(tmp_path, [ann])
    with pytest.raises(LabelError, match=r"annotation id 7: segmentation polygon has no area"):
        read_coco(p, use_segmentation=True)
    assert read_coco(p, use_segmentation=True, on_error="skip")[0].annotations == []
    ann["segmentation"] = [[10, 10, "x", 20, 30, 30]]
    p = _coco(tmp_path, [ann])
    with pytest.raises(LabelError, match=r"annotation id 7: segmentation is not a polygon"):
        read_coco(p, use_segmentation=True)


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


@pytest.mark.parametrize(
    "coords",
    [
        "10 10 20 20 30 30 40 40",  # a diagonal line
        "1 187 1 187 1 219 1 219",  # flat on the image edge (as in the real DOTA demo chip P1478)
        "5 5 5 5 5 5 5 5",  # one point
    ],
)
def test_dota_polygon_without_area_names_file_and_line(tmp_path: Path, coords: str) -> None:
    _image(tmp_path / "images" / "P2.png")
    (tmp_path / "labelTxt").mkdir()
    (tmp_path / "labelTxt" / "P2.txt").write_text(f"10 10 30 10 30 20 10 20 plane 0\n{coords} plane 0\n")
    with pytest.raises(LabelError, match=r"P2\.txt:2: polygon has no area \(its 4 points are on a line\)"):
        read_dota(tmp_path, dataset="toy", taxonomy=TAX)
    (img,) = read_dota(tmp_path, dataset="toy", taxonomy=TAX, on_error="skip")
    assert len(img.annotations) == 1 and len(img.skipped) == 1


def test_image_size_of_a_scene_larger_than_pils_bomb_guard(tmp_path: Path) -> None:
    """A whole 20000 px DOTA-size scene: PIL refuses to open it, its size still comes from the header."""
    import struct
    import zlib

    from detector.labels.types import image_size

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 18000, 8, 0, 0, 0, 0)  # 8-bit gray, no pixels written
    path = tmp_path / "P9999.png"
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    assert image_size(path) == (20000, 18000)


def test_unreadable_image_is_a_label_error_after_ultralytics_patched_pil(tmp_path: Path) -> None:
    """Ultralytics replaces ``PIL.Image.open`` at import: an unidentified file then raises an ImportError
    (no HEIF plugin, offline) instead of PIL's own error; the readers still name the file."""
    pytest.importorskip("ultralytics.utils.patches")
    from detector.labels.types import image_size

    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(LabelError, match=r"junk\.png: cannot read the image header"):
        image_size(tmp_path / "junk.png")


def test_dota_skip_counts_files_skipped_whole(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "P1.png")
    (tmp_path / "images" / "P3.png").write_bytes(b"not an image")
    (tmp_path / "labelTxt").mkdir()
    for stem in ("P1", "P3", "P9"):  # P9 has no image, P3's image does not read
        (tmp_path / "labelTxt" / f"{stem}.txt").write_text("10 10 30 10 30 20 10 20 plane 0\n")
    with pytest.raises(LabelError, match=r"P3\.png: cannot read the image header"):
        read_dota(tmp_path, dataset="toy", taxonomy=TAX)
    imgs = read_dota(tmp_path, dataset="toy", taxonomy=TAX, on_error="skip")
    assert [i.image.name for i in imgs] == ["P1.png"]
    assert len(imgs[0].skipped) == 2 and "P9.txt: no image" in imgs[0].skipped[1]


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


def test_yolo_obb_box_without_area(tmp_path: Path) -> None:
    _image(tmp_path / "t.jpg", 100, 100)
    (tmp_path / "t.txt").write_text("0 0.1 0.1 0.3 0.1 0.3 0.5 0.1 0.5\n0 0.1 0.1 0.2 0.2 0.3 0.3 0.4 0.4\n")
    with pytest.raises(LabelError, match=r"t\.txt:2: box has no area"):
        read_yolo_obb(tmp_path, names=["plane"])
    (img,) = read_yolo_obb(tmp_path, names=["plane"], on_error="skip")
    assert len(img.annotations) == 1 and len(img.skipped) == 1


def test_yolo_seg_diagonal_line_is_not_a_box(tmp_path: Path) -> None:
    """A collinear polygon along a diagonal: its axis-aligned box would be a 128 px label with nothing in it."""
    _image(tmp_path / "t.jpg", 512, 512)
    (tmp_path / "t.txt").write_text("0 0.25 0.25 0.375 0.375 0.5 0.5\n")
    with pytest.raises(LabelError, match=r"t\.txt:1: polygon has no area"):
        read_yolo_seg(tmp_path, names=["plane"])
    (img,) = read_yolo_seg(tmp_path, names=["plane"], on_error="skip")
    assert img.annotations == [] and len(img.skipped) == 1


@pytest.mark.parametrize("reader", [read_yolo, read_yolo_obb, read_yolo_seg])
def test_yolo_readers_skip_unreadable_images_and_label_files(tmp_path: Path, reader) -> None:
    _image(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG junk")
    _image(tmp_path / "c.png")
    (tmp_path / "c.txt").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(LabelError, match=r"b\.png: cannot read the image header"):
        reader(tmp_path, names=["plane"])
    imgs = reader(tmp_path, names=["plane"], on_error="skip")
    assert [i.image.name for i in imgs] == ["a.png"]
    assert len(imgs[0].skipped) == 2 and "c.txt: cannot read the label file" in imgs[0].skipped[1]


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        ({"car": 0}, "keys of a dict must be integer class ids"),
        (42, "class names must be a list"),
    ],
)
def test_bad_class_names(names: object, problem: str) -> None:
    with pytest.raises(LabelError, match=problem):
        load_names(names)  # type: ignore[arg-type]


def test_bad_class_name_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("- car\n- bus\n")
    with pytest.raises(LabelError, match=r"a\.yaml: expected a mapping with a `names` key"):
        load_names(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("names: cars\n")
    with pytest.raises(LabelError, match=r"b\.yaml: `names` must be a list"):
        load_names(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("names: {car: 0}\n")
    with pytest.raises(LabelError, match=r"c\.yaml: class names: the keys"):
        load_names(tmp_path / "c.yaml")


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


def test_csv_polygons_skip_unreadable_images_and_lines_without_area(tmp_path: Path) -> None:
    _image(tmp_path / "s.png")
    (tmp_path / "bad.png").write_bytes(b"junk")
    p = tmp_path / "l.csv"
    p.write_text(
        "image_id,geometry,class\n"
        's.png,"POLYGON ((10 10, 30 10, 30 20, 10 20, 10 10))",plane\n'
        's.png,"POLYGON ((10 10, 20 20, 30 30, 10 10))",plane\n'
        'bad.png,"POLYGON ((10 10, 30 10, 30 20, 10 20, 10 10))",plane\n'
    )
    with pytest.raises(LabelError, match=r"l\.csv:4: .*bad\.png: cannot read the image header"):
        read_csv_polygons(p)
    imgs = read_csv_polygons(p, on_error="skip")
    assert [i.image.name for i in imgs] == ["s.png"]
    assert len(imgs[0].annotations) == 1
    assert any("l.csv:3: " in m and "no area" in m for m in imgs[0].skipped)
    assert any("l.csv:4: " in m for m in imgs[0].skipped)


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


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"gsd": "fine"}, r"spec\.yaml: gsd must be a positive number of metres per pixel, got 'fine'"),
        ({"gsd": -0.3}, "gsd must be a positive number"),
        ({"on_error": "ignore"}, r"spec\.yaml: on_error must be 'raise' or 'skip', got 'ignore'"),
        ({"path": 12}, r"spec\.yaml: `path` must be a string, got 12"),
        ({"group_pattern": "(P[0-9+"}, r"group_pattern '\(P\[0-9\+' is not a regular expression"),
    ],
)
def test_bad_dataset_spec_values(tmp_path: Path, extra: dict, problem: str) -> None:
    import yaml

    _image(tmp_path / "imgs" / "a.png")
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump({"format": "yolo", "path": "imgs", "names": ["car"], "taxonomy": None, **extra})
    )
    with pytest.raises(LabelError, match=problem):
        read_dataset(spec)


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
    with pytest.raises(LabelError, match=r"P1478__1__853___962\.txt:2: polygon has no area"):
        read_dota(shared_data / "dota" / "demo", dataset="dota", taxonomy=load_taxonomy())
    imgs = read_dota(shared_data / "dota" / "demo", dataset="dota", taxonomy=load_taxonomy(), on_error="skip")
    skipped = [m for i in imgs for m in i.skipped]
    assert len(skipped) == 2 and all("P1478" in m and "no area" in m for m in skipped)  # flat on the edge
    assert [i.group for i in imgs] == ["P0003", "P0004", "P0005", "P1478"]
    assert all(i.gsd is not None and 0.1 < i.gsd < 0.15 for i in imgs if i.group != "P1478")
