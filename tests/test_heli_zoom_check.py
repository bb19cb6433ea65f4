"""scripts/heli_zoom_check.py: counting one class's calls on images without it, magnified."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from detector.detections import Detections
from detector.evaluate import spread_evenly
from detector.labels.types import Annotation, LabeledImage
from detector.pipeline import Detector
from tests._fixtures import TAXONOMY, BrightObjectPredictor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import heli_zoom_check  # noqa: E402


def _image(path: Path, n: int = 0) -> LabeledImage:
    box = np.array([[10, 10], [20, 10], [20, 20], [10, 20]], float)
    ann = [Annotation(image=path, cls="helicopter", source_cls="helicopter", polygon=box)] * n
    return LabeledImage(image=path, width=None, height=None, gsd=None, annotations=ann, group=path.stem)


def test_calls_keep_one_class_at_the_threshold() -> None:
    dets = Detections(
        xyxy=np.zeros((4, 4)) + [0, 0, 5, 5],
        scores=np.array([0.9, 0.3, 0.2, 0.8], np.float32),
        class_ids=np.array(
            [TAXONOMY.index(c) for c in ("helicopter", "helicopter", "helicopter", "aircraft")]
        ),
        class_names=TAXONOMY,
    )
    assert np.allclose(heli_zoom_check.calls(dets, 0.25), [0.9, 0.3])
    assert np.allclose(heli_zoom_check.calls(dets, 0.25, "aircraft"), [0.8])
    assert len(heli_zoom_check.calls(Detections.empty(TAXONOMY), 0.25)) == 0


def test_images_with_the_class_are_left_out_and_the_rest_spread(tmp_path: Path) -> None:
    images = [_image(tmp_path / f"{k}.png", n=k % 2) for k in range(10)]
    kept = heli_zoom_check.without_class(images)
    assert [im.image.name for im in kept] == ["0.png", "2.png", "4.png", "6.png", "8.png"]
    assert [im.image.name for im in spread_evenly(kept, 3)] == ["0.png", "4.png", "8.png"]
    assert spread_evenly(kept, None) == kept


def test_zoom_reaches_the_detector(tmp_path: Path) -> None:
    # three white 3 x 3 px blobs: below the fake model's 16-pixel minimum at native scale, found when magnified
    rgb = np.zeros((200, 200, 3), np.uint8)
    for x in (40, 100, 160):
        rgb[100:103, x : x + 3] = 255
    path = tmp_path / "scene.png"
    Image.fromarray(rgb).save(path)
    det = Detector(BrightObjectPredictor(imgsz=256, min_pixels=16))
    native = heli_zoom_check.count(det, [_image(path)], 1.0, 0.25, "aircraft")
    magnified = heli_zoom_check.count(det, [_image(path)], 3.0, 0.25, "aircraft")
    assert native == {"images": 1, "images_with_call": 0, "calls": 0, "calls_0.5": 0}
    assert magnified["images_with_call"] == 1 and magnified["calls"] == 3
