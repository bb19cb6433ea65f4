"""Group iSAID 512 px tiles by the DOTA scene they were cut from, and list the test tiles of unseen scenes.

``isaid-512/{train,valid,test}`` are tiles of DOTA v1.0 scenes that their exporter split *at random*, so tiles of
one scene sit in train and test and ``isaid-512/test`` overstates. This module recovers the scenes from the
pixels and the tile names, and writes ``configs/isaid-scenes.json`` (tile -> scene group, and the test tiles
whose group holds no train or valid tile), which the eval set ``isaid-512/test-unseen`` reads through the
``include`` key of :func:`detector.labels.read_dataset`.

Evidence the grouping rests on (measured on the 1,328 tiles):

* The tiles abut on a grid without overlap. The border column of a tile continues into the first column of its
  right-hand neighbour (mean absolute difference about the size of the gradient inside a tile, ~5-15 grey
  levels, against ~30-60 for unrelated tiles), so neighbours are found by matching border strips.
* The file names count the kept tiles row-major, scene after scene: all 141 right/left links found from pixels
  alone join ``tile_i`` to ``tile_{i+1}``, and bottom/top links join ``tile_i`` to a later ``tile_{i+k}`` (k
  varies within a scene: the exporter numbered only the tiles it kept). Scenes therefore occupy contiguous
  index ranges; the stitched mosaics (``--mosaics``) are seamless.
* The counter ran twice (the same index names two different tiles 44 times, all below 4,842), so an index
  range below ~4,850 may hold tiles of two runs.

The grouping (:func:`group_tiles`) is union-find over three kinds of evidence, each one merging, never
splitting, so errors make groups too large (a test tile wrongly counted as seen), not too small:

1. border links (:func:`border_links`): mutual best matches of right/left and bottom/top strips that pass a
   ratio test against the second-best match, show texture (no flat tarmac, water or black padding) and whose
   difference is close to the gradient inside the tiles;
2. span absorption: a tile whose index lies inside the index span of a linked group (and groups whose spans
   overlap) joins it;
3. index chaining: tiles whose indices differ by at most ``gap`` join (``gap`` 20 by default: tiles of one
   scene 8, 11 and 15 indices apart were seen by eye in mosaics, and the sampled subset leaves gaps).

Run (from the repository root; numpy and Pillow only, ~1 minute on a CPU)::

    python -m training.isaid_scenes --data ../shared/data -o configs/isaid-scenes.json [--mosaics out/isaid-scenes]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from detector.errors import LabelError

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
#: Splits whose scenes count as seen by a model trained on isaid-512 (valid picks the checkpoint).
SEEN_SPLITS = ("train", "valid")
_INDEX = re.compile(r"tile_(\d+)")


@dataclass(frozen=True)
class Strips:
    """Border lines of N equally sized RGB tiles and the gradient next to each border.

    ``left``/``right`` are the first/last column (``(N, H, 3)`` float32), ``top``/``bottom`` the first/last row
    (``(N, W, 3)``). ``grad_*`` (``(N,)``) is the mean absolute difference between neighbouring lines inside the
    tile next to that border: the larger of the one between the border line and the next, and the one across the
    JPEG block boundary 8 px in (the seam between two tiles cut at multiples of 8 px is a block boundary in both,
    where JPEG errors peak, so a seam is compared with a block boundary).
    """

    left: np.ndarray
    right: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    grad_left: np.ndarray
    grad_right: np.ndarray
    grad_top: np.ndarray
    grad_bottom: np.ndarray


def _lines(a: np.ndarray) -> dict[str, np.ndarray]:
    """Border lines and gradients of one ``(H, W, 3)`` float32 tile (the fields of :class:`Strips`)."""

    def grad(outer: np.ndarray, nxt: np.ndarray, b7: np.ndarray | None, b8: np.ndarray | None) -> np.ndarray:
        g = float(np.abs(outer - nxt).mean())
        if b7 is not None and b8 is not None:
            g = max(g, float(np.abs(b7 - b8).mean()))
        return np.asarray(g, dtype=np.float32)

    deep = a.shape[0] >= 16 and a.shape[1] >= 16
    return {
        "left": a[:, 0],
        "right": a[:, -1],
        "top": a[0],
        "bottom": a[-1],
        "grad_left": grad(a[:, 0], a[:, 1], *((a[:, 7], a[:, 8]) if deep else (None, None))),
        "grad_right": grad(a[:, -1], a[:, -2], *((a[:, -8], a[:, -9]) if deep else (None, None))),
        "grad_top": grad(a[0], a[1], *((a[7], a[8]) if deep else (None, None))),
        "grad_bottom": grad(a[-1], a[-2], *((a[-8], a[-9]) if deep else (None, None))),
    }


def _stack(per_tile: list[dict[str, np.ndarray]]) -> Strips:
    return Strips(**{k: np.stack([t[k] for t in per_tile]) for k in per_tile[0]})


@dataclass(frozen=True)
class Link:
    """Tile ``b`` continues tile ``a`` to the right (``kind="right"``) or below (``kind="below"``)."""

    a: int
    b: int
    kind: str
    difference: float  # mean absolute difference across the seam (grey levels)
    ratio: float  # difference / second-best difference (smaller: more certain)


def strips_of(images: Sequence[np.ndarray]) -> Strips:
    """The border lines of tiles given as ``(H, W, 3)`` uint8 arrays of one size.

    Raises:
        ValueError: the tiles differ in size or are not RGB.
    """
    if not images:
        raise ValueError("no tiles given")
    shape = images[0].shape
    bad = [i for i, a in enumerate(images) if a.shape != shape or a.ndim != 3 or a.shape[2] != 3]
    if bad:
        raise ValueError(f"tiles must all be RGB of size {shape}, tile {bad[0]} is {images[bad[0]].shape}")
    return _stack([_lines(np.asarray(a, dtype=np.float32)) for a in images])


def read_strips(paths: Sequence[Path]) -> Strips:
    """:func:`strips_of` for image files (decoded one at a time; only the border lines are kept).

    Raises:
        LabelError: a file cannot be read as an image, or the tiles differ in size.
    """
    from PIL import Image

    per_tile: list[dict[str, np.ndarray]] = []
    shape = None
    for p in paths:
        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert("RGB"), dtype=np.float32)
        except OSError as e:
            raise LabelError(f"{p}: cannot read the tile ({e})") from e
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise LabelError(
                f"{p}: tile is {a.shape[1]}x{a.shape[0]} px, the first tile was {shape[1]}x{shape[0]}"
            )
        per_tile.append(_lines(a))
    if not per_tile:
        raise LabelError("no tiles given")
    return _stack(per_tile)


def _differences(a: np.ndarray, b: np.ndarray, chunk: int = 64) -> np.ndarray:
    """``(N, N)`` mean absolute difference between line ``a[i]`` and line ``b[j]``."""
    n = len(a)
    fa, fb = a.reshape(n, -1), b.reshape(n, -1)
    out = np.empty((n, n), np.float32)
    for i in range(0, n, chunk):
        out[i : i + chunk] = np.abs(fa[i : i + chunk, None, :] - fb[None, :, :]).mean(-1)
    np.fill_diagonal(out, np.inf)
    return out


def border_links(
    strips: Strips, *, max_ratio: float = 0.7, min_texture: float = 8.0, max_gradient_ratio: float = 3.0
) -> list[Link]:
    """Pairs of tiles that abut, from their border strips alone.

    A pair (a, b) links when b's first column (row) is a's best match for its last column (row) and a is b's,
    the difference is at most ``max_ratio`` of the second-best difference on either side, both border lines have
    a grey-level standard deviation of at least ``min_texture`` (flat tarmac, water and black padding match
    anything), and the difference is at most ``max_gradient_ratio`` times the larger gradient next to the seam
    inside the two tiles (:class:`Strips`).
    """
    n = len(strips.left)
    links: list[Link] = []
    if n < 2:
        return links
    for kind, ea, grad_a, eb, grad_b in (
        ("right", strips.right, strips.grad_right, strips.left, strips.grad_left),
        ("below", strips.bottom, strips.grad_bottom, strips.top, strips.grad_top),
    ):
        d = _differences(ea, eb)
        tex_a = ea.mean(-1).std(-1)
        tex_b = eb.mean(-1).std(-1)
        best_b = d.argmin(1)
        best_a = d.argmin(0)
        part = np.partition(d, 1, axis=1)[:, 1] if n > 2 else np.full(n, np.inf)
        part_col = np.partition(d, 1, axis=0)[1] if n > 2 else np.full(n, np.inf)
        for a in range(n):
            b = int(best_b[a])
            if best_a[b] != a:
                continue
            diff = float(d[a, b])
            second = float(min(part[a], part_col[b]))
            ratio = diff / second if second > 0 else 1.0
            if ratio > max_ratio or min(tex_a[a], tex_b[b]) < min_texture:
                continue
            if diff > max_gradient_ratio * max(grad_a[a], grad_b[b], 1.0):
                continue
            links.append(Link(a, b, kind, round(diff, 2), round(ratio, 3)))
    return links


def tile_index(name: str) -> int | None:
    """The exporter's running tile number (``tile_000123_jpg.rf.<hash>.jpg`` -> 123), ``None`` if absent."""
    m = _INDEX.search(name)
    return int(m.group(1)) if m else None


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def group_tiles(n: int, links: Sequence[Link], index: Sequence[int | None], *, gap: int = 20) -> np.ndarray:
    """Scene group id per tile (0, 1, ... in order of the first tile), from border links and tile indices.

    Args:
        n: number of tiles.
        links: border links (:func:`border_links`).
        index: the running tile number of each tile (:func:`tile_index`), ``None`` where unknown; tiles without
            one are grouped by their links only.
        gap: tiles whose indices differ by 1..``gap`` join one group (0: no chaining). Equal indices (the
            exporter's counter ran twice) are not joined by this rule themselves, but both join the tiles of
            the nearest index values within ``gap``, so they usually end in one group (merging is the safe
            direction).

    Raises:
        ValueError: ``index`` is not of length ``n``, ``gap`` is negative, or a link names a tile outside 0..n-1.
    """
    if len(index) != n:
        raise ValueError(f"got {len(index)} tile indices for {n} tiles")
    if gap < 0:
        raise ValueError(f"gap must be >= 0, got {gap!r}")
    uf = _UnionFind(n)
    for lk in links:
        if not (0 <= lk.a < n and 0 <= lk.b < n):
            raise ValueError(f"link {lk} names a tile outside 0..{n - 1}")
        uf.union(lk.a, lk.b)
    known = [i for i in range(n) if index[i] is not None]
    idx = {i: int(index[i]) for i in known}  # type: ignore[arg-type]
    # span absorption: a linked group covers the index range between its lowest and highest tile
    members: dict[int, list[int]] = defaultdict(list)
    for i in known:
        members[uf.find(i)].append(i)
    spans = sorted(
        (min(idx[i] for i in m), max(idx[i] for i in m), m[0]) for m in members.values() if len(m) > 1
    )
    order = sorted(known, key=lambda i: idx[i])
    values = np.array([idx[i] for i in order])
    for lo, hi, root in spans:
        for k in range(int(np.searchsorted(values, lo, "right")), int(np.searchsorted(values, hi, "left"))):
            uf.union(order[k], root)
    # groups whose spans overlap join (spans sorted by their start)
    reach_hi, reach_root = -1, -1
    for lo, hi, root in spans:
        if lo <= reach_hi:
            uf.union(root, reach_root)
        if hi > reach_hi:
            reach_hi, reach_root = hi, root
    if gap:
        by_value: dict[int, list[int]] = defaultdict(list)
        for i in order:
            by_value[idx[i]].append(i)
        distinct = sorted(by_value)
        for v, w in zip(distinct, distinct[1:], strict=False):
            if w - v <= gap:
                for a in by_value[v]:
                    for b in by_value[w]:
                        uf.union(a, b)
    roots: dict[int, int] = {}
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = roots.setdefault(uf.find(i), len(roots))
    return out


def unseen(
    groups: np.ndarray, splits: Sequence[str], *, target: str = "test", seen: Sequence[str] = SEEN_SPLITS
) -> np.ndarray:
    """Boolean mask: tiles of split ``target`` whose group holds no tile of the ``seen`` splits."""
    splits_arr = np.asarray(splits)
    seen_groups = set(groups[np.isin(splits_arr, list(seen))].tolist())
    return (splits_arr == target) & ~np.isin(groups, list(seen_groups))


def list_tiles(root: Path) -> list[Path]:
    """The tiles of ``root/{train,valid,test}/images``, sorted by (split, name).

    Raises:
        LabelError: none of the split folders exist.
    """
    paths = [p for s in SPLITS for p in sorted((root / s / "images").glob("*.jpg"))]
    if not paths:
        raise LabelError(
            f"{root}: no tiles under {{train,valid,test}}/images (is this the isaid-512 folder?)"
        )
    return paths


def _class_counts(label: Path, names: dict[int, str]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    if label.is_file():
        for line in label.read_text().splitlines():
            tok = line.split()
            if tok and tok[0].isdigit() and int(tok[0]) in names:
                counts[names[int(tok[0])]] += 1
    return dict(counts)


#: isaid-512 label index -> class, as in ``isaid-512/CLASSES_VERIFIED.txt`` (the ones the eval set scores).
COUNTED = {0: "small-vehicle", 1: "large-vehicle", 6: "helicopter", 7: "plane"}


def build(root: Path, *, gap: int = 20) -> dict:
    """Group the tiles under ``root`` (the isaid-512 folder) and return the ``isaid-scenes.json`` document."""
    paths = list_tiles(root)
    keys = [f"{p.parent.parent.name}/{p.name}" for p in paths]
    splits = [p.parent.parent.name for p in paths]
    logger.info("reading the borders of %d tiles", len(paths))
    strips = read_strips(paths)
    links = border_links(strips)
    index = [tile_index(p.name) for p in paths]
    groups = group_tiles(len(paths), links, index, gap=gap)
    mask = unseen(groups, splits)
    mask_train = unseen(groups, splits, seen=("train",))
    counts = [
        _class_counts(p.parent.parent / "labels" / f"{p.stem}.txt", COUNTED) if s == "test" else {}
        for p, s in zip(paths, splits, strict=True)
    ]

    def total(sel: np.ndarray) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(COUNTED.values(), 0)
        for i in np.flatnonzero(sel):
            for k, v in counts[i].items():
                out[k] += v
        return out

    test = np.asarray(splits) == "test"
    summary = {
        "tiles": {s: splits.count(s) for s in SPLITS},
        "border_links": {
            "right": sum(lk.kind == "right" for lk in links),
            "below": sum(lk.kind == "below" for lk in links),
        },
        "right_links_to_next_index": sum(
            lk.kind == "right" and (ia := index[lk.a]) is not None and index[lk.b] == ia + 1 for lk in links
        ),
        "groups": int(groups.max()) + 1,
        "groups_by_links_only": int(group_tiles(len(paths), links, [None] * len(paths)).max()) + 1,
        "test_tiles": int(test.sum()),
        "test_instances (label lines)": total(test),
        "test_tiles_unseen (no train or valid tile in the group)": int(mask.sum()),
        "test_instances_unseen": total(mask),
        "test_tiles_no_train_tile (valid may share the scene)": int(mask_train.sum()),
        "test_instances_no_train_tile": total(mask_train),
        "by_gap (unseen test tiles, their helicopters)": {
            str(g): [int(m.sum()), total(m)["helicopter"]]
            for g in (0, 2, 5, 10, 15, 20, 30)
            for m in [unseen(group_tiles(len(paths), links, index, gap=g), splits)]
        },
    }
    return {
        "about": (
            "Scene groups of the isaid-512 tiles (DOTA v1.0 scenes cut into 512 px tiles, split at random by their "
            "exporter), from border-strip matches and the tiles' running numbers; see training/isaid_scenes.py. "
            "'tiles' maps split/file -> group id; 'test-unseen' lists the test tiles whose group holds no train "
            "or valid tile (the eval set isaid-512/test-unseen)."
        ),
        "command": f"python -m training.isaid_scenes --data ../shared/data -o configs/isaid-scenes.json --gap {gap}",
        "params": {"gap": gap, "seen_splits": list(SEEN_SPLITS)},
        "summary": summary,
        "test-unseen": [k.split("/", 1)[1] for k, m in zip(keys, mask, strict=True) if m],
        "tiles": {k: int(g) for k, g in zip(keys, groups, strict=True)},
    }


def write_mosaics(root: Path, doc: dict, out: Path, *, max_groups: int = 6, thumb: int = 256) -> list[Path]:
    """Stitch the largest linked groups into mosaic PNGs (tiles placed by their border links) for checking by eye."""
    from PIL import Image, ImageDraw

    keys = list(doc["tiles"])
    paths = [root / k.split("/")[0] / "images" / k.split("/")[1] for k in keys]
    strips = read_strips(paths)
    links = border_links(strips)
    linked = group_tiles(len(paths), links, [None] * len(paths))
    sizes = np.bincount(linked)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for g in np.argsort(-sizes)[:max_groups]:
        pos = {int(np.flatnonzero(linked == g)[0]): (0, 0)}
        todo = [next(iter(pos))]
        while todo:
            a = todo.pop()
            for lk in links:
                for src, dst, step in ((lk.a, lk.b, 1), (lk.b, lk.a, -1)):
                    if src == a and dst not in pos:
                        x, y = pos[a]
                        pos[dst] = (x + step, y) if lk.kind == "right" else (x, y + step)
                        todo.append(dst)
        xs = [p[0] for p in pos.values()]
        ys = [p[1] for p in pos.values()]
        canvas = Image.new("RGB", ((max(xs) - min(xs) + 1) * thumb, (max(ys) - min(ys) + 1) * thumb), "black")
        draw = ImageDraw.Draw(canvas)
        for i, (x, y) in pos.items():
            with Image.open(paths[i]) as im:
                tile = im.convert("RGB").resize((thumb, thumb))
            ox, oy = (x - min(xs)) * thumb, (y - min(ys)) * thumb
            canvas.paste(tile, (ox, oy))
            draw.text((ox + 4, oy + 4), f"{keys[i].split('/')[0]} {tile_index(keys[i])}", fill="yellow")
        p = out / f"group_{int(g)}_{int(sizes[g])}tiles.png"
        canvas.save(p)
        written.append(p)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.isaid_scenes", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"), help="the shared data root")
    p.add_argument("-o", "--output", type=Path, default=Path("configs/isaid-scenes.json"))
    p.add_argument("--gap", type=int, default=20, help="chain tiles whose running numbers differ by <= this")
    p.add_argument(
        "--mosaics", type=Path, default=None, help="also write mosaics of the largest linked groups here"
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.data / "isaid-512"
    try:
        doc = build(root, gap=args.gap)
        if args.mosaics is not None:
            for m in write_mosaics(root, doc, args.mosaics):
                logger.info("mosaic %s", m)
    except LabelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = json.dumps({k: v for k, v in doc.items() if k != "tiles"}, indent=1)
    tiles = ",\n".join(f"  {json.dumps(k)}: {v}" for k, v in doc["tiles"].items())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text[:-2] + ',\n "tiles": {\n' + tiles + "\n }\n}\n")
    json.loads(args.output.read_text())  # the hand-laid layout must stay valid JSON
    print(json.dumps(doc["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
