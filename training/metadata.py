"""A model file's GSD range: measure it from the training data, write it into the ONNX metadata.

The range of ground sample distances (metres per pixel) a model was trained for decides how a scene is run
(:mod:`detector.tiling`): inside the range as it is, finer scenes resampled into it, far coarser scenes
refused. Two tools:

* :func:`measure_gsd` reads the sources of data configs (``configs/data/*.yaml``) and estimates the GSD of
  every training image: the stated GSD where the source gives one (KIT, DOTA headers), else from the size in
  pixels of its cars, else of its aircraft, against reference lengths measured on the images whose GSD is
  known (a car box is ~5 m long; an aircraft's length comes from images holding both cars and aircraft).
  Each source's chip ``scales`` divide its GSD (``0.4`` turns 0.13 m into 0.33 m per pixel).
* :func:`set_gsd_range` rewrites the ``detector_meta`` entry of an ONNX file's ``metadata_props`` in place,
  atomically (temporary file, checked by loading it, then ``os.replace``), without re-exporting the network.

Run::

    python -m training.metadata --measure configs/data/cpu.yaml configs/data/cpu-aerial.yaml
    python -m training.metadata weights/detector.onnx --gsd-range 0.1,1.2
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from detector.backends.base import META_KEY, ModelMeta
from detector.errors import DetectorError, ModelError
from detector.writers import atomic_path

logger = logging.getLogger(__name__)

#: Classes whose box length measures the GSD where the source states none, in order of preference.
CAR = "small-vehicle"
AIRCRAFT = "aircraft"
#: An image's GSD is estimated from its cars when it holds at least this many (their median length).
MIN_CARS = 5
#: Sources with fewer measured images than this do not decide the suggested range.
MIN_IMAGES = 10


@dataclass(frozen=True)
class SourceGsd:
    """The measured GSD of one training source at one chip scale.

    Attributes:
        config: the data config it comes from; ``source``: its name there; ``scale``: the chip scale.
        images: images whose GSD could be estimated; ``how``: ``"stated"``, ``"cars"`` or ``"aircraft"``
            (how most of them were estimated).
        p10, p50, p90: percentiles of the images' GSD in m/px, after the scale.
    """

    config: str
    source: str
    scale: float
    images: int
    how: str
    p10: float
    p50: float
    p90: float


def _long_sides(annotations: Sequence[Any], cls: str) -> np.ndarray:
    """The long side in pixels of every annotation of class ``cls`` (its 4-point footprint)."""
    polys = np.array([a.polygon for a in annotations if a.cls == cls], np.float64).reshape(-1, 4, 2)
    e1 = np.linalg.norm(polys[:, 1] - polys[:, 0], axis=1)
    e2 = np.linalg.norm(polys[:, 2] - polys[:, 1], axis=1)
    return np.maximum(e1, e2)


def measure_gsd(
    configs: Sequence[str | Path], data_root: str | Path | None = None, splits: Sequence[str] = ("train",)
) -> tuple[list[SourceGsd], dict[str, float]]:
    """Estimate the GSD of the training sources of data configs (see the module docstring).

    Args:
        configs: data config files (``configs/data/*.yaml``).
        data_root: folder of the sources (default: each config's ``data_root``, or ``$DETECTOR_SHARED_DATA``).
        splits: only sources of these splits.

    Returns:
        ``(rows, references)``: one :class:`SourceGsd` per source and scale, and the reference lengths in
        metres that were measured (``"car"``, ``"aircraft"``).

    Raises:
        BuildError / LabelError: a config or a source cannot be read.
    """
    from detector.labels import read_dataset
    from training.chips import BuildConfig, _data_root

    loaded = []  # (config name, source, images)
    for path in configs:
        cfg = BuildConfig.from_yaml(path)
        root = Path(data_root) if data_root is not None else _data_root(cfg)
        for src in cfg.sources:
            if src.split not in splits:
                continue
            images = read_dataset({**src.dataset, "on_error": "skip"}, root=root)
            loaded.append((Path(path).name, src, images))

    # reference lengths: cars where the GSD is stated, then aircraft where the GSD is stated or car-derived
    seen: set[Path] = set()
    stated_cars: list[np.ndarray] = []
    per_image: dict[Path, tuple[Any, np.ndarray, np.ndarray]] = {}
    for _, _, images in loaded:
        for im in images:
            if im.image in seen:
                continue
            seen.add(im.image)
            cars, planes = _long_sides(im.annotations, CAR), _long_sides(im.annotations, AIRCRAFT)
            per_image[im.image] = (im.gsd, cars, planes)
            if im.gsd and len(cars):
                stated_cars.append(cars * im.gsd)
    if not stated_cars:
        raise ModelError("no source states its GSD and holds cars: nothing to measure the car length on")
    car_m = float(np.median(np.concatenate(stated_cars)))
    plane_m_list = []
    for gsd, cars, planes in per_image.values():
        g = gsd or (car_m / float(np.median(cars)) if len(cars) >= MIN_CARS else None)
        if g and len(planes):
            plane_m_list.append(planes * g)
    plane_m = float(np.median(np.concatenate(plane_m_list))) if plane_m_list else float("nan")

    def image_gsd(key: Path) -> tuple[float | None, str]:
        gsd, cars, planes = per_image[key]
        if gsd:
            return float(gsd), "stated"
        if len(cars) >= MIN_CARS:
            return car_m / float(np.median(cars)), "cars"
        if len(planes) and np.isfinite(plane_m):
            return plane_m / float(np.median(planes)), "aircraft"
        return None, ""

    rows = []
    for cfg_name, src, images in loaded:
        found = [image_gsd(im.image) for im in images]
        values = np.array([g for g, _ in found if g], np.float64)
        if not len(values):
            logger.warning("%s: source %s: no image with a stated GSD, cars or aircraft", cfg_name, src.name)
            continue
        hows = [h for g, h in found if g]
        how = max(set(hows), key=hows.count)
        for scale in src.scales:
            p10, p50, p90 = (float(v) / scale for v in np.percentile(values, [10, 50, 90]))
            rows.append(SourceGsd(cfg_name, src.name, scale, len(values), how, p10, p50, p90))
    return rows, {"car": car_m, "aircraft": plane_m}


def suggest_range(rows: Sequence[SourceGsd], min_images: int = MIN_IMAGES) -> tuple[float, float]:
    """The finest source median and the coarsest source 90th percentile, rounded outwards to 0.1 m (0.05 m
    below 0.1 m); sources with fewer than ``min_images`` measured images are left out."""
    used = [r for r in rows if r.images >= min_images] or list(rows)
    if not used:
        raise ValueError("no measured sources to suggest a GSD range from")
    lo = min(r.p50 for r in used)
    hi = max(r.p90 for r in used)
    step = 0.05 if lo < 0.1 else 0.1
    return (round(max(step, np.floor(lo / step) * step), 3), round(float(np.ceil(hi / 0.1)) * 0.1, 3))


def set_gsd_range(
    path: str | Path, gsd_range: tuple[float, float] | None, note: str | None = None
) -> ModelMeta:
    """Write ``gsd_range`` into an ONNX model's metadata in place (atomically), without re-export.

    Args:
        path: an ``.onnx`` file with our metadata (made by ``detector export``).
        gsd_range: ``(finest, coarsest)`` m/px, or ``None`` to remove it.
        note: how the range was decided, kept in ``extra["gsd_range_note"]``.

    Returns:
        The new metadata, as read back from the written file.

    Raises:
        ModelError: not an ONNX file, unreadable, or without our metadata.
        ValueError: a range that is not ``0 < finest <= coarsest``.
        WriteError: the file cannot be replaced.
    """

    def change(meta: ModelMeta) -> ModelMeta:
        extra = dict(meta.extra)
        if note:
            extra["gsd_range_note"] = note
        else:
            extra.pop("gsd_range_note", None)
        return replace(meta, gsd_range=gsd_range, extra=extra)  # ModelMeta validates the range

    return rewrite_meta(path, change)


def set_extra(path: str | Path, key: str, value: Any) -> ModelMeta:
    """Write ``extra[key] = value`` (JSON-serialisable; ``None`` removes the key) into an ONNX model's metadata
    in place (atomically), as :func:`set_gsd_range` does."""

    def change(meta: ModelMeta) -> ModelMeta:
        extra = dict(meta.extra)
        if value is None:
            extra.pop(key, None)
        else:
            extra[key] = value
        return replace(meta, extra=extra)

    return rewrite_meta(path, change)


def rewrite_meta(path: str | Path, change: Callable[[ModelMeta], ModelMeta]) -> ModelMeta:
    """Replace an ONNX model's metadata by ``change(old)``, atomically, checking the written file reads back
    the new metadata (the graph is byte-identical).

    Raises:
        ModelError: not an ONNX file, unreadable, without our metadata, or the file read back differs.
        WriteError: the file cannot be replaced.
    """
    import onnx

    from detector.model import read_meta

    p = Path(path)
    if p.suffix.lower() != ".onnx":
        raise ModelError(f"{p}: only .onnx files carry editable metadata, got {p.suffix!r}")
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    try:
        proto = onnx.load(str(p))
    except Exception as e:  # onnx raises DecodeError and friends
        raise ModelError(f"{p}: not an ONNX model ({type(e).__name__}: {e})") from e
    entries = [e for e in proto.metadata_props if e.key == META_KEY]
    if not entries:
        raise ModelError(f"{p}: has no {META_KEY!r} metadata; export it with `detector export MODEL.pt`")
    try:
        meta = ModelMeta.from_json(entries[0].value)
    except (ValueError, TypeError) as e:
        raise ModelError(f"{p}: its {META_KEY!r} metadata is malformed ({e})") from e
    new = change(meta)
    entries[0].value = new.to_json()
    with atomic_path(p) as tmp:
        onnx.save(proto, str(tmp))
        written = read_meta(tmp)  # the file loads and says what we wrote, before it replaces the original
        if written.gsd_range != new.gsd_range or written.extra != new.extra:
            raise ModelError(f"{p}: the metadata read back differs from what was written")
    logger.info("%s: metadata rewritten (gsd_range %s -> %s)", p, meta.gsd_range, new.gsd_range)
    return written


_UNSET = object()


def _parse_range(text: str) -> tuple[float, float] | None:
    if text.strip().lower() in ("none", ""):
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(  # noqa: B904  (argparse prints it as a usage error)
            f"expected MIN,MAX in metres per pixel (e.g. 0.1,1.0), got {text!r}"
        )
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"expected 0 < MIN <= MAX, got {text!r}")
    return (lo, hi)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.metadata``: see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m training.metadata", description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="the .onnx file whose metadata is rewritten")
    parser.add_argument(
        "--gsd-range", type=_parse_range, default=_UNSET, metavar="MIN,MAX", help="m/px; 'none' removes it"
    )
    parser.add_argument("--note", help="how the range was decided (stored with it)")
    parser.add_argument("--measure", nargs="+", metavar="CONFIG", help="data configs to measure the GSD of")
    parser.add_argument("--data", help="data root of the configs' sources (default: theirs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.model is not None and args.gsd_range is _UNSET:
        parser.error("MODEL needs --gsd-range MIN,MAX (or 'none' to remove it)")
    if args.model is None and not args.measure:
        parser.error("give MODEL --gsd-range MIN,MAX, or --measure CONFIG ...")
    try:
        if args.measure:
            rows, ref = measure_gsd(args.measure, args.data)
            print(f"reference lengths: car box {ref['car']:.2f} m, aircraft box {ref['aircraft']:.1f} m")
            print("| config | source | scale | images | from | GSD p10 | p50 | p90 (m/px) |")
            print("|---|---|---:|---:|---|---:|---:|---:|")
            for r in rows:
                print(
                    f"| {r.config} | {r.source} | {r.scale:g} | {r.images} | {r.how} | "
                    f"{r.p10:.2f} | {r.p50:.2f} | {r.p90:.2f} |"
                )
            lo, hi = suggest_range(rows)
            print(
                f"suggested: --gsd-range {lo:g},{hi:g} (the finest source median and the coarsest source's "
                f"90th percentile, sources of at least {MIN_IMAGES} images)"
            )
        if args.model is not None:
            meta = set_gsd_range(args.model, args.gsd_range, args.note)
            print(f"{args.model}: gsd_range {meta.gsd_range}")
    except DetectorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
