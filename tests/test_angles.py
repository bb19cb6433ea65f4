"""Angle derivation for axis-aligned sources (training/angles.py) on generated scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.detections import Detections
from detector.labels.types import Annotation, LabeledImage, box_polygon
from training.angles import UNRESOLVED, assign_angles, axis_aligned, derive_image, silhouette_boxes

NAMES = ("aircraft", "helicopter", "small-vehicle", "large-vehicle")


def _label_box(xywhr: np.ndarray, cross: bool) -> np.ndarray:
    return silhouette_boxes(xywhr[None], np.array([cross]))[0]


def test_silhouette_of_a_cross_is_tighter_than_the_rectangle_at_45_degrees():
    r = np.array([[100.0, 100.0, 40.0, 40.0, np.pi / 4]])
    rect = silhouette_boxes(r, np.array([False]))[0]
    cross = silhouette_boxes(r, np.array([True]))[0]
    assert rect[2] - rect[0] == pytest.approx(40 * np.sqrt(2))
    assert cross[2] - cross[0] == pytest.approx(40 / np.sqrt(2))
    # at angle 0 both are the rectangle itself
    r0 = np.array([[0.0, 0.0, 30.0, 10.0, 0.0]])
    np.testing.assert_allclose(
        silhouette_boxes(r0, np.array([True])), silhouette_boxes(r0, np.array([False]))
    )


def test_assign_takes_the_model_angle_and_the_label_size():
    truth = np.array([[50.0, 60.0, 30.0, 12.0, 0.5], [200.0, 80.0, 40.0, 36.0, 1.0]])
    boxes = np.array([_label_box(truth[0], False), _label_box(truth[1], True)])
    # the model sees them slightly off in size and position, with the right angles
    dets = truth.copy()
    dets[:, :2] += 1.5
    dets[:, 2:4] *= 1.08
    xywhr, ok = assign_angles(boxes, ["small-vehicle", "aircraft"], dets, ["small-vehicle", "aircraft"])
    assert ok.all()
    np.testing.assert_allclose(xywhr[:, 4], truth[:, 4])
    np.testing.assert_allclose(xywhr[:, :2], (boxes[:, :2] + boxes[:, 2:]) / 2)
    # rescaled to the label: the silhouette of the derived rectangle is the label box again
    np.testing.assert_allclose(xywhr[:, 2:4], truth[:, 2:4], rtol=1e-6)


def test_assign_leaves_unmatched_and_incompatible_labels_unresolved():
    truth = np.array([[50.0, 60.0, 30.0, 12.0, 0.5]])
    box = _label_box(truth[0], False)[None]
    far = truth + [[80.0, 0, 0, 0, 0]]
    _, ok = assign_angles(box, ["small-vehicle"], far, ["small-vehicle"])
    assert not ok.any()
    _, ok = assign_angles(
        box, ["small-vehicle"], truth, ["aircraft"]
    )  # a vehicle never takes an aircraft's angle
    assert not ok.any()
    _, ok = assign_angles(box, ["large-vehicle"], truth, ["small-vehicle"])  # vehicle classes are one group
    assert ok.all()
    # one detection serves one label only
    _, ok = assign_angles(np.vstack([box, box]), ["small-vehicle"] * 2, truth, ["small-vehicle"])
    assert ok.sum() == 1


def test_axis_aligned():
    assert axis_aligned(box_polygon(1, 2, 30, 40))
    assert not axis_aligned(np.array([[0, 0], [10, 2], [8, 12], [-2, 10]], dtype=float))


class _FakeDetector:
    """An OBB 'model' that reports fixed rotated boxes (the derivation's only contract with the model)."""

    def __init__(self, xywhr: np.ndarray, classes: list[int]) -> None:
        self.xywhr = xywhr
        self.classes = classes
        self.seen: list[str] = []

    def predict(self, path: str) -> Detections:
        self.seen.append(path)
        from detector.geometry import corners_to_xyxy, xywhr_to_corners

        return Detections(
            xyxy=corners_to_xyxy(xywhr_to_corners(self.xywhr)),
            scores=np.full(len(self.xywhr), 0.9),
            class_ids=np.array(self.classes),
            class_names=NAMES,
            xywhr=self.xywhr,
        )


def test_derive_image_on_a_generated_scene(tmp_path: Path):
    path = tmp_path / "scene.png"
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(path)
    plane = np.array([120.0, 100.0, 50.0, 46.0, 0.7])
    car = np.array([40.0, 40.0, 20.0, 9.0, 1.2])
    anns = [
        Annotation(path, "aircraft", "0", box_polygon(*_label_box(plane, True))),
        Annotation(path, "small-vehicle", "car", box_polygon(*_label_box(car, False))),
        Annotation(path, "aircraft", "0", box_polygon(250, 150, 290, 190)),  # the model sees nothing there
    ]
    img = LabeledImage(path, 300, 200, None, anns, group="g")
    fake = _FakeDetector(np.stack([plane, car]), [0, 2])
    out, stats = derive_image(img, fake, NAMES, min_iou=0.8)
    assert fake.seen == [str(path)]
    assert (stats.objects, stats.derived, stats.unresolved) == (3, 2, 1)
    a, c, u = out.annotations
    assert a.rotated and c.rotated and not u.rotated
    assert u.attrs[UNRESOLVED] is True and UNRESOLVED not in a.attrs
    # the derived rectangles have the model's headings: their long side points along the model's angle
    for ann, truth in ((a, plane), (c, car)):
        edges = [ann.polygon[1] - ann.polygon[0], ann.polygon[2] - ann.polygon[1]]
        w_edge = min(edges, key=lambda e: abs(np.linalg.norm(e) - truth[2]))
        assert np.linalg.norm(w_edge) == pytest.approx(truth[2], rel=1e-6)
        assert np.arctan2(w_edge[1], w_edge[0]) % np.pi == pytest.approx(truth[4] % np.pi, abs=1e-6)


def test_unresolved_objects_are_painted_gray_in_the_chips(tmp_path: Path):
    from training.chips import BuildConfig, SourceConfig, _render, _SourceStats, plan_image

    path = tmp_path / "scene.png"
    Image.fromarray(np.full((100, 100, 3), 200, np.uint8)).save(path)
    kept = Annotation(
        path, "aircraft", "0", np.array([[10, 10], [40, 15], [37, 33], [7, 28]], float), rotated=True
    )
    lost = Annotation(path, "aircraft", "0", box_polygon(60, 60, 80, 90), attrs={UNRESOLVED: True})
    img = LabeledImage(path, 100, 100, None, [kept, lost], group="g")
    src = SourceConfig(name="s", dataset={})
    cfg = BuildConfig(name="t", out=str(tmp_path / "out"), sources=[src], task="obb", chip=100, overlap=0)
    (chip,) = plan_image(src, "train", img, 1.0, cfg, _SourceStats())
    assert [o.ann_index for o in chip.objects] == [0]  # the unresolved one is no label ...
    np.testing.assert_allclose(chip.paint[0], [60, 60, 80, 90])  # ... but an ignore region
    out = tmp_path / "out"
    for d in ("images/train", "labels/train"):
        (out / d).mkdir(parents=True)
    cfg.image_format = "png"
    _render([chip], cfg, out, None)
    pix = np.asarray(Image.open(out / "images/train" / "s__scene__s100_0_0.png"))
    assert (pix[62:88, 62:78] == 114).all() and (pix[5:50, 45:55] == 200).all()
    assert len((out / "labels/train" / "s__scene__s100_0_0.txt").read_text().splitlines()) == 1


def _yolo_seg_scene(tmp_path: Path, side: int, labels: str, name: str, names: list[str]) -> dict:
    """A black ``side`` px image with YOLO polygon ``labels``; the ``read_dataset`` spec that reads it."""
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(tmp_path / "images" / "t.png")
    (tmp_path / "labels" / "t.txt").write_text(labels)
    return {"format": "yolo_seg", "name": name, "path": "images", "labels": "labels", "names": names}


def test_helicopter_box_rotor_disc_turns_fuselage_labels_into_discs(tmp_path: Path):
    from detector.labels import read_dataset
    from detector.labels.types import ROTOR_K

    # a 40 x 10 px helicopter fuselage (class 0) and a 20 x 10 px car (class 1), normalised polygons
    spec = _yolo_seg_scene(
        tmp_path,
        100,
        "0 0.30 0.45 0.70 0.45 0.70 0.55 0.30 0.55\n1 0.10 0.10 0.30 0.10 0.30 0.20 0.10 0.20\n",
        "t",
        ["helicopter", "car"],
    )
    plain = read_dataset(spec, root=tmp_path, taxonomy=None)[0].annotations
    disc = read_dataset({**spec, "helicopter_box": "rotor_disc"}, root=tmp_path, taxonomy=None)[0].annotations
    np.testing.assert_allclose(disc[1].polygon, plain[1].polygon)  # other classes untouched
    side = ROTOR_K * 40
    lo, hi = disc[0].xyxy[:2], disc[0].xyxy[2:]
    np.testing.assert_allclose(hi - lo, [side, side], atol=1e-6)
    np.testing.assert_allclose((lo + hi) / 2, [50, 50], atol=1e-6)
    from detector.labels import LabelError

    with pytest.raises(LabelError, match="helicopter_box"):
        read_dataset({**spec, "helicopter_box": "fuselage"}, root=tmp_path, taxonomy=None)


def test_object_boxes_per_shape():
    from detector.geometry import class_shapes, object_boxes, with_object_boxes

    r = np.array([[0.0, 0.0, 40.0, 20.0, np.pi / 4]] * 3)
    rect, cross, disc = object_boxes(r, np.array(["rect", "cross", "disc"]))
    k = np.sqrt(0.5)
    np.testing.assert_allclose(rect, [-60 * k / 2, -60 * k / 2, 60 * k / 2, 60 * k / 2])
    np.testing.assert_allclose(cross, [-40 * k / 2, -40 * k / 2, 40 * k / 2, 40 * k / 2])
    np.testing.assert_allclose(disc, [-20, -20, 20, 20])
    assert class_shapes(["aircraft", "transport-aircraft", "helicopter", "small-vehicle"]).tolist() == [
        "cross",
        "cross",
        "disc",
        "rect",
    ]
    dets = Detections(
        xyxy=np.zeros((2, 4)), scores=[0.9, 0.8], class_ids=[0, 2], class_names=NAMES, xywhr=r[:2]
    )
    out = with_object_boxes(dets)
    np.testing.assert_allclose(out.xyxy, [cross, rect])
    np.testing.assert_allclose(out.xywhr, dets.xywhr)  # the footprint stays rotated


def test_ground_truth_boxes_follow_the_outline_in_eval(tmp_path: Path):
    """aabb eval compares the object's own box: a polygon label's outline box, not its rectangle's."""
    from detector.evaluate import _truth_of

    path = tmp_path / "x.png"
    diamond = np.array([[50, 10], [90, 50], [50, 90], [10, 50]], float)  # a 45-degree cross-like outline
    outline = np.array(
        [[50, 20], [55, 45], [80, 50], [55, 55], [50, 80], [45, 55], [20, 50], [45, 45]], float
    )
    ann = Annotation(path, "aircraft", "plane", diamond, rotated=True, attrs={"outline": outline})
    truth = _truth_of(LabeledImage(path, 100, 100, None, [ann], group="g"), "aircraft")
    np.testing.assert_allclose(truth.xyxy, [[20, 20, 80, 80]])  # not the rectangle's [10, 10, 90, 90]
    ann2 = Annotation(path, "aircraft", "plane", box_polygon(20, 20, 40, 30))
    truth2 = _truth_of(LabeledImage(path, 100, 100, None, [ann2], group="g"), "aircraft")
    np.testing.assert_allclose(truth2.xyxy, [[20, 20, 40, 30]])


def _airliner(theta_deg: float, centre=(200.0, 200.0)) -> np.ndarray:
    """The outline of a swept-wing airliner (length 40 px, span 38 px) with its fuselage at ``theta_deg``."""
    half = [  # nose -> tail along +x -> -x, the left half (y >= 0); mirrored below
        (20, 0), (17, 2.5), (4, 3), (-6, 19), (-9, 19), (-4, 3), (-15, 3), (-19, 8), (-21, 8), (-20, 0),
    ]  # fmt: skip
    pts = np.array(half + [(x, -y) for x, y in reversed(half[1:-1])], dtype=np.float64)
    t = np.deg2rad(theta_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return pts @ rot.T + np.asarray(centre)


@pytest.mark.parametrize("theta", [0.0, 17.0, 45.0, 100.0, 160.0])
def test_aircraft_axis_rect_follows_the_fuselage(theta: float):
    from detector.geometry import box_iou_xyxy
    from detector.labels.types import aircraft_axis_rect, min_area_rect, rect_axes
    from training.angles import cross_box

    outline = _airliner(theta)
    rect, symmetry = aircraft_axis_rect(outline)
    assert symmetry > 0.9
    _, length, width, axis = rect_axes(rect)
    found = np.rad2deg(np.arctan2(axis[1], axis[0])) % 90  # fuselage or wing axis: the same rectangle
    assert min(abs(found - theta % 90), 90 - abs(found - theta % 90)) <= 1.5
    assert sorted([length, width]) == pytest.approx([38.0, 41.0], abs=1.0)

    truth = np.r_[outline.min(axis=0), outline.max(axis=0)]
    iou_axis = box_iou_xyxy(truth[None], cross_box(rect)[None])[0, 0]
    iou_min = box_iou_xyxy(truth[None], cross_box(min_area_rect(outline))[None])[0, 0]
    assert iou_axis >= 0.65  # the cross rule puts the wing tips abeam the centre: swept wings cost IoU at 45°
    if theta == 0.0:  # the minimum-area rectangle of this outline is tilted ~40° off the fuselage
        assert iou_axis > 0.95 > 0.8 > iou_min


def test_aircraft_box_axis_relabels_polygon_aircraft_only(tmp_path: Path):
    from detector.labels import LabelError, read_dataset

    plane = " ".join(f"{v / 400:.6f}" for v in _airliner(30.0).ravel())
    labels = f"0 {plane}\n1 0.10 0.10 0.30 0.10 0.30 0.20 0.10 0.20\n"
    spec = _yolo_seg_scene(tmp_path, 400, labels, "isaid", ["plane", "small-vehicle"])
    from detector.taxonomy import load_taxonomy

    tax = load_taxonomy()
    plain = read_dataset(spec, root=tmp_path, taxonomy=tax)[0].annotations
    axis = read_dataset({**spec, "aircraft_box": "axis"}, root=tmp_path, taxonomy=tax)[0].annotations
    assert plain[0].cls == axis[0].cls == "aircraft"
    assert not np.allclose(axis[0].polygon, plain[0].polygon)
    np.testing.assert_allclose(axis[0].xyxy, plain[0].xyxy)  # the outline (and its box) stays
    np.testing.assert_allclose(axis[1].polygon, plain[1].polygon)
    assert axis[0].attrs["axis_symmetry"] > 0.9
    with pytest.raises(LabelError, match="aircraft_box"):
        read_dataset({**spec, "aircraft_box": "min_area"}, root=tmp_path, taxonomy=tax)


def test_axis_check_reports_both_conventions():
    from training.angles import axis_check

    outline = _airliner(0.0)
    ann = Annotation(
        image=Path("x.png"),
        cls="aircraft",
        source_cls="plane",
        polygon=outline[:4],
        rotated=True,
        attrs={"outline": outline},
    )
    img = LabeledImage(image=Path("x.png"), width=400, height=400, gsd=None, group="x", annotations=[ann])
    rep = axis_check([img])
    assert rep["objects"] == 1 and rep["cut_by_edge"] == 0
    assert rep["axis"]["median_iou"] > 0.95 > 0.8 > rep["min_area"]["median_iou"]
    assert rep["min_area"]["share_below_0.5_whole"] in (0.0, 1.0)
