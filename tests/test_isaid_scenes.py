"""Scene grouping of tiles (training/isaid_scenes.py) and the ``include`` filter of read_dataset."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.errors import LabelError
from detector.labels import read_dataset
from training.isaid_scenes import (
    Link,
    border_links,
    group_tiles,
    strips_of,
    tile_index,
    unseen,
)

TILE = 96
ROOT = Path(__file__).resolve().parents[1]


def _scene(seed: int, rows: int, cols: int) -> np.ndarray:
    """A textured RGB scene: smooth multi-scale noise plus a few bright 'buildings' and dark 'roads'."""
    rng = np.random.default_rng(seed)
    h, w = rows * TILE, cols * TILE
    img = np.zeros((h, w, 3), np.float32)
    for cell, amp in ((48, 60.0), (12, 40.0), (4, 15.0)):
        coarse = rng.normal(0, 1, (h // cell + 2, w // cell + 2, 3)).astype(np.float32)
        up = np.asarray(
            Image.fromarray(((coarse + 4) * 30).clip(0, 255).astype(np.uint8)).resize(
                ((w // cell + 2) * cell, (h // cell + 2) * cell), Image.BICUBIC
            ),
            np.float32,
        )[:h, :w]
        img += (up / 30 - 4) * amp
    img += 110
    for _ in range(rows * cols * 2):
        y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
        img[y : y + rng.integers(6, 30), x : x + rng.integers(6, 30)] = rng.integers(150, 250)
        if rng.random() < 0.5:
            img[rng.integers(0, h) : None, x : x + 4] = 40.0
    return img.clip(0, 255).astype(np.uint8)


def _jpeg(tile: np.ndarray, quality: int = 80) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(tile).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _cut(scene: np.ndarray) -> list[tuple[tuple[int, int], np.ndarray]]:
    rows, cols = scene.shape[0] // TILE, scene.shape[1] // TILE
    return [
        ((r, c), _jpeg(scene[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE]))
        for r in range(rows)
        for c in range(cols)
    ]


def test_grouping_recovers_scenes_from_jpeg_tiles_and_keeps_unrelated_scenes_apart() -> None:
    tiles = [("a", pos, t) for pos, t in _cut(_scene(1, 3, 4))] + [
        ("b", pos, t) for pos, t in _cut(_scene(2, 3, 3))
    ]
    order = np.random.default_rng(0).permutation(len(tiles))  # shuffled: no order to lean on
    tiles = [tiles[i] for i in order]
    flat = np.full((TILE, TILE, 3), 120, np.uint8)  # flat tarmac matches anything: must stay alone
    images = [t for _, _, t in tiles] + [_jpeg(flat), _jpeg(flat)]
    links = border_links(strips_of(images))

    truth = {i: (scene, pos) for i, (scene, pos, _) in enumerate(tiles)}
    truth.update({len(tiles): ("flat1", (0, 0)), len(tiles) + 1: ("flat2", (0, 0))})
    for lk in links:  # every link found is a true neighbour, in the right direction
        (sa, (ra, ca)), (sb, (rb, cb)) = truth[lk.a], truth[lk.b]
        assert sa == sb
        assert (rb, cb) == ((ra, ca + 1) if lk.kind == "right" else (ra + 1, ca))
    true_pairs = (3 * 3 + 2 * 4) + (3 * 2 + 2 * 3)  # right + below neighbours in both scenes
    assert len(links) >= 0.8 * true_pairs

    groups = group_tiles(len(images), links, [None] * len(images), gap=0)
    ga = {groups[i] for i, (s, _) in truth.items() if s == "a"}
    gb = {groups[i] for i, (s, _) in truth.items() if s == "b"}
    assert len(ga) == 1 and len(gb) == 1 and ga != gb
    assert len(set(groups[-2:])) == 2 and not {groups[-1], groups[-2]} & (ga | gb)


def test_group_tiles_by_index_spans_and_gaps() -> None:
    index = [10, 12, 20, 15, 25, 40, 43, 43, 80, None]
    links = [Link(0, 2, "below", 5.0, 0.2)]  # tiles 10 and 20 abut: 12 and 15 lie inside the span
    g = group_tiles(len(index), links, index, gap=0)
    assert g[0] == g[1] == g[2] == g[3]
    assert len({g[0], g[4], g[5], g[6], g[7], g[8], g[9]}) == 7  # 43 twice: two counter runs, not chained
    g = group_tiles(len(index), links, index, gap=5)
    assert g[4] == g[0] and g[5] == g[6] == g[7] and g[8] != g[5] and g[9] not in set(g[:9])
    overlapping = [Link(0, 2, "below", 5.0, 0.2), Link(1, 4, "right", 5.0, 0.2)]  # spans 10-20 and 12-25
    g = group_tiles(len(index), overlapping, index, gap=0)
    assert g[0] == g[4]
    with pytest.raises(ValueError, match="gap"):
        group_tiles(2, [], [1, 2], gap=-1)
    with pytest.raises(ValueError, match="indices"):
        group_tiles(3, [], [1, 2])


def test_unseen_and_tile_index() -> None:
    groups = np.array([0, 0, 1, 2, 2, 3])
    splits = ["train", "test", "test", "valid", "test", "test"]
    assert unseen(groups, splits).tolist() == [False, False, True, False, False, True]
    assert unseen(groups, splits, seen=("train",)).tolist() == [False, False, True, False, True, True]
    assert tile_index("tile_000123_jpg.rf.ab12.jpg") == 123
    assert tile_index("P0001.png") is None


def _seg_set(tmp_path: Path) -> dict:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (64, 64)).save(tmp_path / name)
        (tmp_path / name.replace(".jpg", ".txt")).write_text("0 0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4\n")
    return {"format": "yolo_seg", "name": "toy", "path": str(tmp_path), "names": ["plane"], "taxonomy": None}


def test_read_dataset_include(tmp_path: Path) -> None:
    spec = _seg_set(tmp_path)
    (tmp_path / "keep.json").write_text(json.dumps({"pick": ["a.jpg", "c.jpg"], "bad": "a.jpg"}))
    (tmp_path / "keep.txt").write_text("# kept\nb.jpg\n\n")
    assert [im.image.name for im in read_dataset(spec)] == ["a.jpg", "b.jpg", "c.jpg"]
    got = read_dataset({**spec, "include": str(tmp_path / "keep.json") + "#pick"})
    assert [im.image.name for im in got] == ["a.jpg", "c.jpg"]
    got = read_dataset({**spec, "path": ".", "include": "keep.txt"}, root=tmp_path)  # relative to the root
    assert [im.image.name for im in got] == ["b.jpg"]
    (tmp_path / "stale.txt").write_text("a.jpg\nz.jpg\n")
    for entry, problem in [
        ("stale.txt", "1 image.*not in the set.*z.jpg"),
        ("keep.json#nokey", "no key 'nokey'"),
        ("keep.json#bad", "list of image file names"),
        ("keep.txt#pick", "JSON file only"),
        ("missing.txt", "cannot read the include list"),
    ]:
        with pytest.raises(LabelError, match=problem):
            read_dataset({**spec, "path": ".", "include": entry}, root=tmp_path)


def test_shipped_scene_file_matches_the_data(shared_data: Path) -> None:
    doc = json.loads((ROOT / "configs" / "isaid-scenes.json").read_text())
    root = shared_data / "isaid-512"
    on_disk = {f"{p.parent.parent.name}/{p.name}" for p in root.glob("*/images/*.jpg")}
    assert set(doc["tiles"]) == on_disk
    seen = {g for k, g in doc["tiles"].items() if not k.startswith("test/")}
    assert doc["test-unseen"], "no unseen test tile listed"
    for name in doc["test-unseen"]:
        assert doc["tiles"][f"test/{name}"] not in seen
    unlisted = {
        k.split("/", 1)[1] for k, g in doc["tiles"].items() if k.startswith("test/") and g not in seen
    }
    assert unlisted == set(doc["test-unseen"])
