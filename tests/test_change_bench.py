"""How ``scripts/change_bench.py`` pastes an arrival into date B: the Poisson pastes leave no square of the
donor's ground, keep the object the donor's object, and land where they are asked to."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import change_bench as cb  # noqa: E402


def _donor(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 40x50 crop: light textured tarmac with a dark 16x24 vehicle at rows 12-28, cols 13-37."""
    patch = np.clip(rng.normal(180, 6, (40, 50, 3)), 0, 255)
    patch[12:28, 13:37] = np.clip(rng.normal(80, 4, (16, 24, 3)), 0, 255)
    poly = np.array([[13, 12], [37, 12], [37, 28], [13, 28]], float)
    return patch.astype(np.uint8), poly


def _scene(rng: np.random.Generator) -> np.ndarray:
    """Mid-grey ground with a coarse texture (this scene's own, unlike the donor's)."""
    base = rng.normal(130, 12, (16, 16, 3)).repeat(8, 0).repeat(8, 1)
    return np.clip(base + rng.normal(0, 3, base.shape), 0, 255).astype(np.uint8)


def _ground_step(img: np.ndarray, x0: int, y0: int, h: int, w: int) -> float:
    """How far the crop's ground (a band 5-9 pixels inside its outline, off the object) is from the scene's
    ground just outside the crop (a band 1-4 pixels outside), in grey levels: the square a paste leaves."""
    band_in = np.zeros(img.shape[:2], bool)
    band_in[y0 + 5 : y0 + h - 5, x0 + 5 : x0 + w - 5] = True
    band_in[y0 + 10 : y0 + h - 10, x0 + 10 : x0 + w - 10] = False
    band_out = np.zeros(img.shape[:2], bool)
    band_out[y0 - 4 : y0 + h + 4, x0 - 4 : x0 + w + 4] = True
    band_out[y0 - 1 : y0 + h + 1, x0 - 1 : x0 + w + 1] = False
    return float(np.abs(img[band_in].astype(float).mean(0) - img[band_out].astype(float).mean(0)).mean())


@pytest.mark.parametrize("mixed", [False, True])
def test_a_poisson_paste_leaves_no_square_and_keeps_the_object(mixed: bool) -> None:
    rng = np.random.default_rng(3)
    patch, poly = _donor(rng)
    scene = _scene(rng)
    x0, y0 = 41, 37
    h, w = patch.shape[:2]
    boxed, poisson = scene.copy(), scene.copy()
    cb._blend(boxed, patch, x0, y0, margin=max(2, min(w, h) // 6))
    assert cb._poisson(poisson, patch, poly, x0, y0, mixed=mixed)
    # the box paste shows the donor's light ground as a square; the Poisson paste meets the scene's ground
    assert _ground_step(boxed, x0, y0, h, w) > 35
    assert _ground_step(poisson, x0, y0, h, w) < 20
    # the object is where it was asked to be and keeps its contrast with the ground around it
    obj = poisson[y0 + 14 : y0 + 26, x0 + 15 : x0 + 35].astype(float)
    ground = np.concatenate(
        [poisson[y0 + 4 : y0 + 9, x0 + 15 : x0 + 35], poisson[y0 + 31 : y0 + 36, x0 + 15 : x0 + 35]]
    ).astype(float)
    donor_contrast = 180 - 80
    assert ground.mean() - obj.mean() > 0.7 * donor_contrast
    # a dark vehicle stays a uniform dark object: its own texture, not the scene's 8-pixel blocks
    assert obj.std(axis=(0, 1)).max() < 12
    # nothing outside the crop changed
    outside = np.ones(scene.shape[:2], bool)
    outside[y0 : y0 + h, x0 : x0 + w] = False
    assert np.array_equal(poisson[outside], scene[outside])


def test_mixed_takes_this_scenes_texture_around_the_object_but_not_on_it() -> None:
    rng = np.random.default_rng(4)
    patch, poly = _donor(rng)
    patch[:] = patch.mean(axis=(0, 1), keepdims=True).astype(np.uint8)  # flat donor ground...
    patch[12:28, 13:37] = 80  # ...and a flat object
    scene = np.clip(rng.normal(110, 25, (128, 128, 3)), 0, 255).astype(np.uint8)  # strong texture
    x0, y0 = 41, 37
    normal, mixed = scene.copy(), scene.copy()
    assert cb._poisson(normal, patch, poly, x0, y0, mixed=False)
    assert cb._poisson(mixed, patch, poly, x0, y0, mixed=True)
    margin_rows = (slice(y0 + 4, y0 + 10), slice(x0 + 4, x0 + 46))
    on_object = (slice(y0 + 14, y0 + 26), slice(x0 + 15, x0 + 35))
    # around the object: normal keeps the donor's flat ground, mixed shows the scene's texture
    assert normal[margin_rows].astype(float).std() < 6
    assert mixed[margin_rows].astype(float).std() > 12
    # on the object's footprint both keep it flat
    assert mixed[on_object].astype(float).std() < 6


def test_a_crop_too_small_for_the_solver_is_left_to_the_box_paste() -> None:
    scene = np.full((40, 40, 3), 100, np.uint8)
    patch = np.full((cb.POISSON_MIN_PX - 1, 20, 3), 30, np.uint8)
    poly = np.array([[3, 3], [17, 3], [17, 7], [3, 7]], float)
    before = scene.copy()
    assert not cb._poisson(scene, patch, poly, 5, 5)
    assert np.array_equal(scene, before)


def test_scoring_keeps_each_labelled_changes_scores_and_counts_unexplained_records() -> None:
    from types import SimpleNamespace

    poly = np.array([[0, 0], [40, 0], [40, 20], [0, 20]], float)  # 40 px = 4 m at 0.1 m
    truth = [
        {"cls": "small-vehicle", "status": "departed", "xy": np.array([100.0, 50.0]), "length": 4.0},
        {"cls": "small-vehicle", "status": "arrived", "xy": np.array([130.0, 50.0]), "length": 4.0},
        {"cls": "small-vehicle", "status": "stayed", "xy": np.array([160.0, 50.0]), "length": 4.0},
    ]
    for t in truth:
        t["poly"] = poly
    pair = cb.Pair("p", Path("a.tif"), Path("b.tif"), 0.1, 0.1, np.zeros(2), truth)
    cols = {
        "x": np.array([101.0, 160.5, 300.0]),
        "y": np.array([50.0, 50.0, 50.0]),
        "status": np.array(["departed", "stayed", "arrived"]),
        "class": np.array(["small-vehicle"] * 3),
        "score_before": np.array([0.55, 0.8, np.nan]),
        "score_after": np.array([np.nan, 0.7, 0.45]),
    }
    rows = cb.score_pair(pair, SimpleNamespace(columns=cols), 0.3)
    by = {r["truth"]: r for r in rows}
    assert by["departed"]["got"] == "departed" and by["departed"]["found"]
    assert by["departed"]["score_a"] == 0.55 and by["departed"]["score_b"] is None
    assert by["arrived"]["got"] is None and by["arrived"]["score_a"] is None  # its record is 170 m off
    assert by["stayed"]["got"] == "stayed" and by["departed"]["length_m"] == 4.0
    assert by[None]["got"] == "arrived"  # the far record, explained by no labelled change
    table = {r["class"]: r for r in cb.aggregate(rows, ["small-vehicle"])}
    assert table["all"]["departed"] == (1, 1) and table["all"]["arrived"] == (0, 1)
    assert table["all"]["spurious"] == 1
