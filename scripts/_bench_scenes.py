"""Scenes for ``scripts/bench.py``: the headline mosaic of labelled scenes, and large generated GeoTIFFs.

Everything generated here goes into the benchmark's cache folder (``build/bench``), never into the repository.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

#: Version of the generated GeoTIFFs (bump to regenerate cached files).
GENERATOR_VERSION = "1"


@dataclass
class BenchScene:
    """A scene of section (a): the image file both sides read, and its labels (``None``: unlabelled)."""

    name: str
    path: Path
    width: int
    height: int
    labels: Any = None  # detector.labels.LabeledImage
    headline: bool = False
    note: str = ""

    @property
    def mpix(self) -> float:
        return self.width * self.height / 1e6


def pack_shelves(sizes: list[tuple[int, int]], side: int) -> list[tuple[int, int] | None]:
    """Place rectangles ``(width, height)`` in a ``side`` x ``side`` square, tallest first, in rows.

    Returns the top-left ``(x, y)`` of each rectangle (input order), ``None`` for those that do not fit.
    """
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i][1], -sizes[i][0], i))
    placed: list[tuple[int, int] | None] = [None] * len(sizes)
    x = y = row_h = 0
    for i in order:
        w, h = sizes[i]
        if x + w <= side and y + h <= side:  # in the current row
            placed[i] = (x, y)
        elif w <= side and y + row_h + h <= side:  # in a new row below it
            x, y, row_h = 0, y + row_h, 0
            placed[i] = (x, y)
        else:
            continue
        x += w
        row_h = max(row_h, h)
    return placed


def build_mosaic(images: list[Any], side: int, path: Path) -> tuple[Any, list[dict[str, Any]]]:
    """A ``side`` x ``side`` PNG of labelled images placed side by side (black elsewhere), and its labels.

    Returns a :class:`detector.labels.LabeledImage` for ``path`` whose annotations are those of the placed
    images, shifted, and the layout (which image went where).
    """
    from PIL import Image

    from detector.labels import LabeledImage

    sizes = [(int(im.width), int(im.height)) for im in images]
    where = pack_shelves(sizes, side)
    if not any(where):
        raise ValueError(f"none of the labelled scenes fits a {side} px headline scene")
    annotations = []
    layout = []
    canvas = Image.new("RGB", (side, side))
    for im, xy in zip(images, where, strict=True):
        if xy is None:
            continue
        with Image.open(im.image) as src:
            canvas.paste(src.convert("RGB"), xy)
        offset = np.array(xy, np.float64)
        for a in im.annotations:
            annotations.append(replace(a, image=path, polygon=a.polygon + offset))
        layout.append(
            {"image": im.image.name, "x": xy[0], "y": xy[1], "width": im.width, "height": im.height}
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    canvas.save(tmp)
    os.replace(tmp, path)
    return LabeledImage(
        path, side, side, None, annotations, group="mosaic", dataset=images[0].dataset
    ), layout


# --------------------------------------------------------------------------------------------------------------
# generated GeoTIFFs for (c)


def texture_sources(images: list[Any] | None, seed: int = 0) -> list[np.ndarray]:
    """RGB arrays to texture the generated rasters with: the labelled scenes, else procedural texture."""
    from PIL import Image

    out = []
    for im in images or []:
        with Image.open(im.image) as src:
            out.append(np.asarray(src.convert("RGB")))
    if out:
        return out
    rng = np.random.default_rng(seed)
    for _ in range(4):  # smoothed noise at a few scales (compresses like imagery, not like a flat colour)
        base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        big = np.kron(base, np.ones((16, 16, 1), np.uint8))
        noise = rng.normal(0, 12, big.shape)
        out.append(np.clip(big + noise, 0, 255).astype(np.uint8))
    return out


def write_textured_geotiff(
    path: Path, side: int, sources: list[np.ndarray], *, seed: int = 0, block: int = 512
) -> Path:
    """Write a ``side`` x ``side`` 3-band uint8 GeoTIFF, internally tiled (``block``), DEFLATE, strip by strip.

    Each ``block`` x ``block`` block is a randomly placed, rotated and flipped patch of one of ``sources``
    (real imagery compresses like real imagery). Only one strip of ``block`` rows is held in memory. The file
    is written under a temporary name and renamed, and tagged with its parameters so it can be reused.
    """
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.windows import Window

    tags = _geotiff_tags(side, seed, block, sources)
    if path.is_file():
        try:
            with rasterio.open(path) as ds:
                if ds.tags().get("BENCH") == tags["BENCH"] and ds.width == side and ds.height == side:
                    return path
        except rasterio.errors.RasterioIOError:
            pass
    rng = np.random.default_rng(seed)
    profile = dict(
        driver="GTiff",
        width=side,
        height=side,
        count=3,
        dtype="uint8",
        crs=CRS.from_epsg(32633),
        transform=Affine(0.12, 0.0, 500000.0, 0.0, -0.12, 4500000.0),
        tiled=True,
        blockxsize=block,
        blockysize=block,
        compress="deflate",
        photometric="RGB",
        interleave="pixel",
        BIGTIFF="IF_SAFER",
        NUM_THREADS="ALL_CPUS",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        for row in range(0, side, block):
            h = min(block, side - row)
            strip = np.empty((h, side, 3), np.uint8)
            for col in range(0, side, block):
                w = min(block, side - col)
                strip[:, col : col + w] = _patch(rng, sources, block)[:h, :w]
            dst.write(np.moveaxis(strip, -1, 0), window=Window(0, row, side, h))
        dst.update_tags(**tags)
    os.replace(tmp, path)
    return path


def _patch(rng: np.random.Generator, sources: list[np.ndarray], block: int) -> np.ndarray:
    src = sources[int(rng.integers(len(sources)))]
    if src.shape[0] < block or src.shape[1] < block:
        reps = (math.ceil(block / src.shape[0]), math.ceil(block / src.shape[1]), 1)
        src = np.tile(src, reps)
    y = int(rng.integers(src.shape[0] - block + 1))
    x = int(rng.integers(src.shape[1] - block + 1))
    p = np.rot90(src[y : y + block, x : x + block], int(rng.integers(4)))
    return p[:, ::-1] if rng.integers(2) else p


def _geotiff_tags(side: int, seed: int, block: int, sources: list[np.ndarray]) -> dict[str, str]:
    h = hashlib.sha256()
    for s in sources:
        h.update(str(s.shape).encode())
        h.update(np.ascontiguousarray(s[:: max(1, s.shape[0] // 64), :: max(1, s.shape[1] // 64)]).tobytes())
    return {
        "BENCH": f"v{GENERATOR_VERSION} side={side} seed={seed} block={block} sources={h.hexdigest()[:16]}"
    }
