"""``cross_fill``: how far a rotated aircraft's box reaches beyond the cross of its centre lines
(:func:`detector.geometry.object_boxes`), its fit on labelled images (``training.boxfit``) and the model file's
value reaching the pipeline."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from _fixtures import BrightObjectPredictor, make_meta

from detector.errors import ModelError
from detector.geometry import model_cross_fill, model_rect_fill, object_boxes
from detector.pipeline import Detector
from training.boxfit import fill_samples, merged_fits, rect_fill_samples

ROOT = Path(__file__).resolve().parents[1]


def _rects(angles_deg: list[float], w: float = 40.0, h: float = 36.0) -> np.ndarray:
    return np.array([[100.0 + 90 * k, 100.0, w, h, np.radians(a)] for k, a in enumerate(angles_deg)])


def test_cross_fill_moves_the_cross_box_towards_the_enclosing_box() -> None:
    r = _rects([0.0, 30.0, 45.0])
    cross = object_boxes(r, np.full(3, "cross"))
    rect = object_boxes(r, np.full(3, "rect"))
    half = object_boxes(r, np.full(3, "cross"), cross_fill=0.5)
    np.testing.assert_allclose(object_boxes(r, np.full(3, "cross"), cross_fill=1.0), rect)
    np.testing.assert_allclose(half, (cross + rect) / 2)
    np.testing.assert_allclose(half[0], rect[0])  # at angle 0 the cross, the rectangle and the mix agree
    assert (np.diff(cross[2].reshape(2, 2), axis=0) < np.diff(half[2].reshape(2, 2), axis=0)).all()
    # vehicles and rotor discs do not move
    shapes = np.array(["rect", "disc", "cross"])
    np.testing.assert_allclose(
        object_boxes(r, shapes, cross_fill=0.7)[:2], object_boxes(r, shapes, cross_fill=0.0)[:2]
    )
    with pytest.raises(ValueError, match="cross_fill must be in"):
        object_boxes(r, np.full(3, "cross"), cross_fill=1.5)


@pytest.mark.parametrize("fill", [0.0, 0.25, 0.6])
def test_fill_samples_recover_the_fill_that_made_the_labels(fill: float) -> None:
    angles = [0.0, 5.0, 20.0, 33.0, 45.0, 60.0, 80.0]
    r = _rects(angles)
    labels = object_boxes(r, np.full(len(r), "cross"), cross_fill=fill)
    s = fill_samples(labels[::-1], r)  # label order does not matter (Hungarian matching)
    assert len(s) >= 8  # the two near-0 angles give no samples on at least one axis
    np.testing.assert_allclose(s, fill, atol=1e-9)


def test_fill_samples_skip_unmatched_and_axis_aligned_detections() -> None:
    r = _rects([0.0, 45.0])
    far = np.array([[900.0, 900.0, 950.0, 950.0]])  # a label far from every detection
    assert len(fill_samples(far, r)) == 0
    assert len(fill_samples(object_boxes(r[:1], np.array(["cross"])), r[:1])) == 0  # angle 0: undefined
    assert len(fill_samples(np.zeros((0, 4)), r)) == 0 and len(fill_samples(far, np.zeros((0, 5)))) == 0


def test_rect_fill_moves_a_vehicles_box_between_its_ellipse_and_its_rectangle() -> None:
    r = _rects([0.0, 30.0, 45.0], w=20.0, h=10.0)
    rect = object_boxes(r, np.full(3, "rect"))
    ell = object_boxes(r, np.full(3, "rect"), rect_fill=0.0)
    np.testing.assert_allclose(object_boxes(r, np.full(3, "rect"), rect_fill=1.0), rect)  # 1 is the default
    np.testing.assert_allclose(ell[0], rect[0])  # along the image axes both are the rectangle
    # at 45 degrees a 2:1 rectangle's enclosing box is 15 / sqrt(2) * 2 = 21.2 px a side, its ellipse's
    # sqrt((20^2 + 10^2) / 2) = 15.8 px
    np.testing.assert_allclose(rect[2, 2:] - rect[2, :2], [21.213, 21.213], atol=1e-3)
    np.testing.assert_allclose(ell[2, 2:] - ell[2, :2], [15.811, 15.811], atol=1e-3)
    np.testing.assert_allclose(object_boxes(r, np.full(3, "rect"), rect_fill=0.5), (rect + ell) / 2)
    # aircraft and rotor discs do not move
    shapes = np.array(["cross", "disc", "rect"])
    np.testing.assert_allclose(object_boxes(r, shapes, rect_fill=0.2)[:2], object_boxes(r, shapes)[:2])
    with pytest.raises(ValueError, match="rect_fill must be in"):
        object_boxes(r, np.full(3, "rect"), rect_fill=-0.1)


@pytest.mark.parametrize("fill", [0.0, 0.4, 1.0])
def test_rect_fill_samples_recover_the_fill_that_made_the_labels(fill: float) -> None:
    r = _rects([0.0, 20.0, 33.0, 45.0, 70.0], w=24.0, h=10.0)
    labels = object_boxes(r, np.full(len(r), "rect"), rect_fill=fill)
    s = rect_fill_samples(labels[::-1], r)
    assert len(s) == 8  # angle 0 gives none
    np.testing.assert_allclose(s, fill, atol=1e-9)


def test_the_model_files_rect_fill_reaches_the_pipeline() -> None:
    from detector.taxonomy import default_classes

    pred = BrightObjectPredictor(imgsz=64, task="obb")
    assert model_rect_fill(pred.meta) == 1.0 and Detector(pred).rect_fill == 1.0
    pred.meta = replace(make_meta(64, "obb"), extra={"object_box": {"cross_fill": 0.2, "rect_fill": 0.3}})
    det = Detector(pred, sizes=False)
    assert (det.cross_fill, det.rect_fill) == (0.2, 0.3)
    image = np.zeros((64, 64, 3), np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    image[(np.abs((xx - 32) - (yy - 32)) < 4) & (np.abs(xx - 32) < 14)] = (255, 255, 0)  # a diagonal vehicle
    got = det.predict(image)
    assert len(got) == 1 and got.class_names[got.class_ids[0]] == "small-vehicle" in default_classes()
    np.testing.assert_allclose(
        got.xyxy, object_boxes(got.xywhr, np.array(["rect"]), rect_fill=0.3), atol=1e-6
    )
    assert (got.xyxy[0, 2:] - got.xyxy[0, :2] < object_boxes(got.xywhr, np.array(["rect"]))[0, 2:] - 1).all()
    pred.meta = replace(make_meta(64, "obb"), extra={"object_box": {"rect_fill": 2}})
    with pytest.raises(ModelError, match="rect_fill must be a number in"):
        Detector(pred)


def test_the_model_files_fill_reaches_the_pipeline() -> None:
    from detector.detections import Detections

    pred = BrightObjectPredictor(imgsz=64, task="obb")
    assert model_cross_fill(pred.meta) == 0.0 and Detector(pred).cross_fill == 0.0
    pred.meta = replace(make_meta(64, "obb"), extra={"object_box": {"cross_fill": 0.4, "samples": 3}})
    det = Detector(pred)
    assert det.cross_fill == 0.4
    image = np.zeros((64, 64, 3), np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    image[(np.abs((xx - 32) - (yy - 32)) < 3) & (np.abs(xx - 32) < 18)] = 255  # a diagonal bar: rotated box
    got = det.predict(image)
    assert len(got) == 1 and isinstance(got, Detections)
    assert got.xywhr is not None and 20 < np.degrees(got.xywhr[0, 4]) % 90 < 70
    want = object_boxes(got.xywhr, np.array(["cross"]), cross_fill=0.4)
    np.testing.assert_allclose(got.xyxy, want, atol=1e-6)
    assert not np.allclose(got.xyxy, object_boxes(got.xywhr, np.array(["cross"])))
    for bad in (1.5, "0.3", True):
        pred.meta = replace(make_meta(64, "obb"), extra={"object_box": {"cross_fill": bad}})
        with pytest.raises(ModelError, match="cross_fill must be a number in"):
            Detector(pred)


def test_set_extra_writes_the_fit_into_the_onnx_metadata(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from detector.model import read_meta
    from training.metadata import set_extra

    src = ROOT / "weights" / "pretrained" / "yolov8n-obb.onnx"
    if not src.is_file():
        pytest.skip(f"{src} missing: make weights")
    model = Path(shutil.copy(src, tmp_path / "m.onnx"))
    before = onnx.load(str(model)).graph.SerializeToString()
    meta = set_extra(model, "object_box", {"cross_fill": 0.3, "samples": 10})
    assert meta.extra["object_box"]["cross_fill"] == 0.3
    assert model_cross_fill(read_meta(model)) == 0.3
    assert Detector.load(model).cross_fill == 0.3
    assert onnx.load(str(model)).graph.SerializeToString() == before
    set_extra(model, "object_box", None)
    assert "object_box" not in read_meta(model).extra
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_angle_ratios_bucket_the_size_error_by_angle() -> None:
    from training.boxfit import angle_ratios

    r = _rects([0.0, 40.0])
    cross = object_boxes(r, np.full(2, "cross"))
    labels = object_boxes(r, np.full(2, "cross"), cross_fill=0.5)  # labels wider than the cross when diagonal
    got = sorted(angle_ratios(labels, cross, r))
    assert len(got) == 2
    (a0, w0, h0), (a1, w1, h1) = got
    assert a0 == pytest.approx(0.0) and (w0, h0) == pytest.approx((1.0, 1.0))
    assert a1 == pytest.approx(40.0) and w1 < 0.9 and h1 < 0.9
    assert angle_ratios(np.zeros((0, 4)), cross, r) == []


def test_each_fit_keeps_the_others_value_in_the_model_file() -> None:
    aircraft = {"cross_fill": 0.2, "samples": 40}
    vehicles = {"rect_fill": 0.45, "samples": 900}
    box = merged_fits(merged_fits(None, aircraft, kind="aircraft"), vehicles, kind="vehicles")
    assert box == {"cross_fill": 0.2, "samples": 40, "rect_fill": 0.45, "rect_fit": vehicles}
    refit = merged_fits(box, {"cross_fill": 0.3, "samples": 50}, kind="aircraft")
    assert refit == {"cross_fill": 0.3, "samples": 50, "rect_fill": 0.45, "rect_fit": vehicles}


def test_fuselage_discs_are_squares_of_the_longer_side_on_the_same_centre() -> None:
    from detector.geometry import fuselage_discs

    got = fuselage_discs(np.array([[10.0, 20.0, 50.0, 30.0], [0.0, 0.0, 8.0, 20.0]]), 1.2)
    np.testing.assert_allclose(got, [[6.0, 1.0, 54.0, 49.0], [-8.0, -2.0, 16.0, 22.0]])
    for bad in (0.0, 3.5):
        with pytest.raises(ValueError, match="disc_scale must be in"):
            fuselage_discs(got, bad)


def test_disc_samples_recover_the_scale_that_made_the_discs() -> None:
    from detector.geometry import fuselage_discs
    from training.boxfit import disc_samples

    fuselage = np.array([[10.0, 10.0, 50.0, 24.0], [100.0, 100.0, 112.0, 140.0], [200.0, 0.0, 230.0, 30.0]])
    discs = fuselage_discs(fuselage, 1.13)
    found = fuselage[[2, 0]] + 1.0  # two of three found, a pixel off, in another order
    ratios, dets, labels = disc_samples(fuselage, discs, found)
    assert len(ratios) == 2 and np.median(ratios) == pytest.approx(1.13, abs=0.01)
    np.testing.assert_allclose(np.sort(labels[:, 0]), np.sort(discs[[0, 2], 0]))
    assert len(dets) == 2
    assert len(disc_samples(fuselage, discs, np.zeros((0, 4)))[0]) == 0


def test_disc_rules_find_the_measure_the_discs_were_made_from() -> None:
    from detector.geometry import fuselage_discs
    from training.boxfit import disc_rules

    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 400, (40, 2))
    boxes = np.concatenate([lo, lo + rng.uniform([10, 40], [40, 90], (40, 2))], axis=1)
    rules = disc_rules(boxes, fuselage_discs(boxes, 1.2))
    assert rules["longer side"] == {"scale": 1.2, "median_iou": 1.0, "iou50": 1.0}
    assert all(r["median_iou"] < 1.0 for k, r in rules.items() if k != "longer side")


def test_the_model_files_disc_scale_makes_a_detect_models_helicopters_discs() -> None:
    from detector.geometry import fuselage_discs, model_disc_scale

    class HelicopterPredictor(BrightObjectPredictor):
        """Every bright blob a helicopter."""

        def predict_batch(self, tiles: np.ndarray) -> list:
            heli = list(self.meta.names).index("helicopter")
            return [replace(d, class_ids=np.full(len(d), heli)) for d in super().predict_batch(tiles)]

    image = np.zeros((64, 64, 3), np.uint8)
    image[28:36, 20:44] = 255  # a fuselage 24 x 8 px
    pred = HelicopterPredictor(imgsz=64)
    assert model_disc_scale(pred.meta) is None
    plain = Detector(pred, sizes=False).predict(image)
    np.testing.assert_allclose(plain.xyxy, [[20, 28, 44, 36]])
    pred.meta = replace(make_meta(64), extra={"object_box": {"disc_scale": 1.125}})
    got = Detector(pred, sizes=False).predict(image)
    np.testing.assert_allclose(got.xyxy, fuselage_discs(plain.xyxy, 1.125))
    assert got.xyxy[0, 3] - got.xyxy[0, 1] == pytest.approx(27.0)
    assert Detector(pred, sizes=False, object_boxes=False).predict(image).xyxy.tolist() == plain.xyxy.tolist()
    for bad in (0, -1.0, "1.1", True):
        pred.meta = replace(make_meta(64), extra={"object_box": {"disc_scale": bad}})
        with pytest.raises(ModelError, match="disc_scale must be a number in"):
            Detector(pred)


def test_the_helicopter_fit_is_kept_beside_the_others() -> None:
    box = merged_fits(
        {"cross_fill": 0.2, "rect_fill": 0.4}, {"disc_scale": 1.12, "samples": 9}, kind="helicopters"
    )
    assert box == {
        "cross_fill": 0.2,
        "rect_fill": 0.4,
        "disc_scale": 1.12,
        "disc_fit": {"disc_scale": 1.12, "samples": 9},
    }
    again = merged_fits(box, {"cross_fill": 0.3}, kind="aircraft")
    assert again["disc_scale"] == 1.12 and again["rect_fill"] == 0.4 and again["cross_fill"] == 0.3
    with pytest.raises(ValueError, match="kind must be"):
        merged_fits(box, {}, kind="ships")
