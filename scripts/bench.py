"""Benchmark the CPU inference path and write ``BENCHMARKS.md`` (``make bench``).

Every figure of one report comes from one run on one machine, with the same weights, tile size and overlap
on both sides. Three sections:

(a) **Ours vs SAHI** on the labelled DOTA demo scenes and a 2560 x 2560 headline scene (a mosaic of those
    scenes, with their labels): our ONNX path (``Detector.load(onnx).predict``) against SAHI +
    Ultralytics on the CPU (``get_sliced_prediction`` with the ``.pt`` the ONNX file was exported from), SAHI
    run twice: with its defaults (a whole-image pass on top of the slices; Ultralytics' torch threads) and
    with torch set to the threads our side uses. Seconds per scene, megapixels per second, peak RSS, and
    AP50 per class through :mod:`detector.evaluate` on the same labels for both sides.
(b) **Pipeline overhead** over the model-only floor: bare ``onnxruntime`` ``session.run`` time for the tiles
    of each scene, batched as the pipeline batches them, with the pipeline's session options.
(c) **Memory** of ``Detector.predict`` on generated, internally tiled, DEFLATE-compressed GeoTIFFs of
    growing size (5k, 10k, 20k px sides by default; real-imagery texture), in fresh processes.

Each measurement runs in a fresh subprocess (``scripts/_bench_worker.py``), so peak RSS values do not mix and
the ONNX side never imports torch. Measurements run one after another, never in parallel. Progress goes to
stderr; the report is written atomically. ``--quick`` is a development run (< 2 minutes, noisy numbers) that
refuses to write ``BENCHMARKS.md``.

Usage::

    python scripts/bench.py --data ../shared/data --out BENCHMARKS.md
    python scripts/bench.py --quick                     # -> build/bench/BENCHMARKS.quick.md
    python scripts/bench.py --sections c --memory-sides 5000,10000
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's package first
    sys.path.insert(0, str(ROOT))

WORKER = Path(__file__).resolve().with_name("_bench_worker.py")
DEFAULT_ONNX = ROOT / "weights" / "pretrained" / "yolov8n-obb.onnx"
DEFAULT_PT = ROOT / "weights" / "pretrained" / "yolov8n-obb.pt"
DEFAULT_CACHE = ROOT / "build" / "bench"
EVAL_SET = "dota/demo"
SECTIONS = ("a", "b", "c")
#: Peak RSS target of (c), bytes.
MEMORY_TARGET = 1.5 * 1024**3
#: "Flat" memory: the peak grows by at most this fraction from the smallest to the largest scene of (c).
FLAT_GROWTH = 0.20
#: Environment variables that set thread pools; removed from the children so every library uses its defaults.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
#: Version of the generated GeoTIFFs (bump to regenerate cached files).
GENERATOR_VERSION = "1"
PACKAGES = ("onnxruntime", "torch", "ultralytics", "sahi", "numpy", "rasterio", "shapely", "opencv-python")


class BenchError(RuntimeError):
    """A benchmark step failed (the message says which and where its log is)."""


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# scenes


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
        if w > side or h > side:
            continue
        if x + w > side:  # next row
            x, y, row_h = 0, y + row_h, 0
        if y + h > side:
            continue
        placed[i] = (x, y)
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
        raise BenchError(f"none of the labelled scenes fits a {side} px headline scene")
    annotations = []
    layout = []
    canvas = Image.new("RGB", (side, side))
    for im, xy in zip(images, where, strict=True):
        if xy is None:
            log(f"headline: {im.image.name} ({im.width}x{im.height}) does not fit, left out")
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


# --------------------------------------------------------------------------------------------------------------
# running workers


def child_env(cache: Path) -> dict[str, str]:
    """The environment of every measurement: offline Ultralytics, and no thread-count overrides."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    env["YOLO_OFFLINE"] = "1"
    env.setdefault("YOLO_CONFIG_DIR", str(cache / "ultralytics-config"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_worker(job: dict[str, Any], name: str, cache: Path, timeout: float) -> dict[str, Any]:
    """Run one job in a fresh process; its result plus ``wall_s`` and ``child_maxrss`` (from ``wait4``)."""
    jobs = cache / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    job_file, result_file, log_file = (
        jobs / f"{name}.json",
        jobs / f"{name}.result.json",
        jobs / f"{name}.log",
    )
    job_file.write_text(json.dumps(job, indent=1, default=str))
    result_file.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with open(log_file, "w") as logf:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(job_file), str(result_file)],
            cwd=ROOT,
            env=child_env(cache),
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result_file.is_file():
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-25:])
        why = "timed out" if proc.returncode == -signal.SIGKILL else f"exit status {proc.returncode}"
        raise BenchError(f"{name} failed ({why}); log {log_file}:\n{tail}")
    result = json.loads(result_file.read_text())
    result["wall_s"] = wall
    result["child_maxrss"] = int(usage.ru_maxrss) * 1024  # KiB on Linux
    return result


def load_npz(path: Path) -> Any:
    from detector.backends.base import TAXONOMY
    from detector.detections import Detections

    z = np.load(path)
    return Detections(
        xyxy=z["xyxy"],
        scores=z["scores"],
        class_ids=z["class_ids"],
        class_names=TAXONOMY,
        xywhr=z["xywhr"] if bool(z["rotated"]) else None,
    )


# --------------------------------------------------------------------------------------------------------------
# the sections


@dataclass
class Settings:
    data: Path
    out: Path
    cache: Path
    onnx: Path
    pt: Path
    tile: int
    overlap: float
    batch: int
    conf: float
    ap_conf: float | None
    repeats: int
    scenes: list[str] | None
    headline: int
    memory_sides: list[int]
    sections: tuple[str, ...]
    sahi_threads: int
    quick: bool
    timeout: float
    json_out: Path
    command: str
    results: dict[str, Any] = field(default_factory=dict)


def comparison_scenes(s: Settings) -> tuple[list[BenchScene], dict[str, Any]]:
    """The labelled demo scenes asked for, plus the headline mosaic; and the eval set's spec."""
    from detector.evaluate import load_eval_config, load_eval_set

    cfg = load_eval_config()
    images, spec = load_eval_set(EVAL_SET, s.data, config=cfg)
    spec = {**spec, "iou_type": spec.get("iou_type", cfg.get("iou_type", "aabb"))}
    by_name = {im.image.stem: im for im in images}
    chosen = images
    if s.scenes is not None:
        unknown = [n for n in s.scenes if n not in by_name]
        if unknown:
            raise BenchError(f"--scenes: {unknown} not in {EVAL_SET} (have {', '.join(by_name)})")
        chosen = [by_name[n] for n in s.scenes]
    scenes = [BenchScene(im.image.stem, im.image, int(im.width), int(im.height), im) for im in chosen]
    if s.headline:
        path = s.cache / f"headline_{s.headline}.png"
        mosaic, layout = build_mosaic(images, s.headline, path)
        placed = ", ".join(f"{m['image']} at ({m['x']}, {m['y']})" for m in layout)
        content = sum(m["width"] * m["height"] for m in layout) / 1e6
        scenes.append(
            BenchScene(
                f"headline {s.headline}x{s.headline}",
                path,
                s.headline,
                s.headline,
                mosaic,
                headline=True,
                note=f"mosaic of the {EVAL_SET} scenes ({placed}; {content:.2f} MP of imagery, the rest black), "
                "labels shifted with them",
            )
        )
    return scenes, spec


def section_a(s: Settings, scenes: list[BenchScene], spec: dict[str, Any], with_sahi: bool) -> dict[str, Any]:
    """Time ours (and SAHI twice) on every scene; keep the detections for AP."""
    out: dict[str, Any] = {}
    dets_dir = s.cache / "detections"
    dets_dir.mkdir(parents=True, exist_ok=True)
    for k, sc in enumerate(scenes, 1):
        safe = sc.name.replace(" ", "_")
        row: dict[str, Any] = {}
        common = {
            "scene": str(sc.path),
            "tile": s.tile,
            "overlap": s.overlap,
            "repeats": s.repeats,
            "conf": s.conf,
        }
        log(f"[{k}/{len(scenes)}] {sc.name} ({sc.width}x{sc.height}): ours (ONNX)")
        row["ours"] = run_worker(
            {
                **common,
                "kind": "ours",
                "weights": str(s.onnx),
                "batch": s.batch,
                "ap_conf": s.ap_conf if sc.labels is not None and with_sahi else None,
                "save": str(dets_dir / f"{safe}.ours.npz"),
                "save_ap": str(dets_dir / f"{safe}.ours.ap.npz"),
            },
            f"a-{safe}-ours",
            s.cache,
            s.timeout,
        )
        log(f"    ours: {_s(row['ours']['median'])} s median, peak {_mb(row['ours']['peak_rss'])} MB")
        if with_sahi:
            log(f"[{k}/{len(scenes)}] {sc.name}: SAHI + Ultralytics, defaults")
            row["sahi"] = run_worker(
                {
                    **common,
                    "kind": "sahi",
                    "weights": str(s.pt),
                    "threads": None,
                    "standard_pred": True,
                    "ap_conf": s.ap_conf if sc.labels is not None else None,
                    "save": str(dets_dir / f"{safe}.sahi.npz"),
                    "save_ap": str(dets_dir / f"{safe}.sahi.ap.npz"),
                },
                f"a-{safe}-sahi-default",
                s.cache,
                s.timeout,
            )
            log(
                f"    SAHI default: {_s(row['sahi']['median'])} s median, peak {_mb(row['sahi']['peak_rss'])} MB"
            )
            log(f"[{k}/{len(scenes)}] {sc.name}: SAHI + Ultralytics, torch threads {s.sahi_threads}")
            row["sahi_threads"] = run_worker(
                {
                    **common,
                    "kind": "sahi",
                    "weights": str(s.pt),
                    "threads": s.sahi_threads,
                    "standard_pred": True,
                    "ap_conf": None,
                    "save": str(dets_dir / f"{safe}.sahi{s.sahi_threads}t.npz"),
                },
                f"a-{safe}-sahi-{s.sahi_threads}threads",
                s.cache,
                s.timeout,
            )
            log(
                f"    SAHI {s.sahi_threads} threads: {_s(row['sahi_threads']['median'])} s median, "
                f"peak {_mb(row['sahi_threads']['peak_rss'])} MB"
            )
        out[sc.name] = row
    if with_sahi:
        out["_accuracy"] = accuracy(s, scenes, spec)
    return out


def accuracy(s: Settings, scenes: list[BenchScene], spec: dict[str, Any]) -> dict[str, Any]:
    """AP50 per class (low-confidence pass) and P/R at the operating threshold (the timed runs' detections)."""
    from detector.evaluate import evaluate_detections

    dets_dir = s.cache / "detections"
    groups = {
        f"{EVAL_SET} ({len([x for x in scenes if x.labels is not None and not x.headline])} scenes)": [
            x for x in scenes if x.labels is not None and not x.headline
        ],
        **{x.name: [x] for x in scenes if x.headline and x.labels is not None},
    }
    out: dict[str, Any] = {}
    for label, group in groups.items():
        if not group:
            continue
        images = [x.labels for x in group]
        res: dict[str, Any] = {}
        for side in ("ours", "sahi"):
            names = [x.name.replace(" ", "_") for x in group]
            kw = dict(classes=spec.get("classes"), iou_type=spec["iou_type"], conf=s.conf, name=label)
            entry: dict[str, Any] = {}
            if s.ap_conf is not None:
                low = [load_npz(dets_dir / f"{n}.{side}.ap.npz") for n in names]
                entry["ap"] = evaluate_detections(images, low, **kw).to_dict()
            timed = [load_npz(dets_dir / f"{n}.{side}.npz") for n in names]
            entry["operating"] = evaluate_detections(images, timed, **kw).to_dict()
            res[side] = entry
        out[label] = res
    return out


def section_b(s: Settings, scenes: list[BenchScene], timings: dict[str, Any]) -> dict[str, Any]:
    """Bare session.run per batch size, then the floor of every scene as the pipeline batches its tiles."""
    from detector.tiling import TileConfig, plan_tiles

    plans = {}
    for sc in scenes:
        run = timings.get(sc.name, {}).get("ours")
        n = (
            run["tiles_run"]
            if run
            else len(plan_tiles(sc.width, sc.height, TileConfig(s.tile, s.overlap), s.tile).windows)
        )
        plans[sc.name] = [s.batch] * (n // s.batch) + ([n % s.batch] if n % s.batch else [])
    sizes = sorted({1, s.batch, *(b for p in plans.values() for b in p)})
    probe = next((sc for sc in scenes if sc.headline), scenes[-1])
    log(f"floor: bare onnxruntime session.run, batch sizes {sizes}, tiles of {probe.name}")
    floor = run_worker(
        {
            "kind": "floor",
            "weights": str(s.onnx),
            "scene": str(probe.path),
            "tile": s.tile,
            "overlap": s.overlap,
            "batch_sizes": sizes,
            "repeats": max(s.repeats, 3),
        },
        "b-floor",
        s.cache,
        s.timeout,
    )
    per_call = {int(b): v["median"] for b, v in floor["batches"].items()}
    rows = {}
    for sc in scenes:
        batches = plans[sc.name]
        n = sum(batches)
        exact = sum(per_call[b] for b in batches)
        ours = timings.get(sc.name, {}).get("ours")
        rows[sc.name] = {
            "tiles": n,
            "batches": batches,
            "floor_b1": n * per_call[1],
            "floor_bB": n * per_call[s.batch] / s.batch,
            "floor": exact,
            "pipeline": ours["median"] if ours else None,
            "overhead": (ours["median"] / exact - 1) if ours and exact > 0 else None,
        }
    return {"floor": floor, "scenes": rows, "probe": probe.name}


def section_c(s: Settings, sources_images: list[Any] | None) -> dict[str, Any]:
    """Generate the large GeoTIFFs (cached) and run one fresh ``Detector.predict`` on each."""
    sources = texture_sources(sources_images)
    rows = {}
    for side in s.memory_sides:
        path = s.cache / f"textured_{side}.tif"
        t0 = time.perf_counter()
        log(f"memory: {side}x{side} GeoTIFF {path} (generated once, then cached)")
        write_textured_geotiff(path, side, sources)
        gen = time.perf_counter() - t0
        tiles = _n_tiles(s, side)
        log(f"memory: {side}x{side}: {tiles} tiles of {s.tile} px, Detector.predict in a fresh process")
        r = run_worker(
            {
                "kind": "memory",
                "weights": str(s.onnx),
                "scene": str(path),
                "tile": s.tile,
                "overlap": s.overlap,
                "batch": s.batch,
                "conf": s.conf,
            },
            f"c-memory-{side}",
            s.cache,
            s.timeout,
        )
        r["file_mb"] = path.stat().st_size / 1e6
        r["generate_s"] = gen
        rows[side] = r
        log(f"    {_s(r['seconds'])} s, peak {_mb(r['peak_rss'])} MB, {r['n_dets']} detections")
    return rows


def _n_tiles(s: Settings, side: int) -> int:
    from detector.tiling import TileConfig, plan_tiles

    return len(plan_tiles(side, side, TileConfig(s.tile, s.overlap), s.tile).windows)


# --------------------------------------------------------------------------------------------------------------
# the report


def _s(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _mb(x: float | None) -> str:
    return "-" if x is None else f"{x / 2**20:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def _ap(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _table(head: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(head) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    quota = None
    try:
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        quota = None if q == "max" else round(int(q) / int(period), 2)
    except (OSError, ValueError):
        pass
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = "not installed"
    import rasterio

    versions["GDAL"] = rasterio.__gdal_version__
    versions["python"] = platform.python_version()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        commit = f"{commit}{' (uncommitted changes)' if dirty else ''}" if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cgroup_cpu_quota": quota,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "platform": platform.platform(),
        "versions": versions,
        "commit": commit,
    }


def file_info(path: Path) -> str:
    if not path.is_file():
        return f"`{_rel(path)}` (missing)"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"`{_rel(path)}` ({path.stat().st_size / 1e6:.1f} MB, sha256 {digest[:16]})"


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def render(s: Settings, r: dict[str, Any]) -> str:
    m = r["machine"]
    v = m["versions"]
    a = r.get("a") or {}
    b = r.get("b")
    c = r.get("c")
    scenes: list[BenchScene] = r.get("_scenes", [])
    L: list[str] = ["# Benchmarks", ""]
    if s.quick:
        L += [
            "> **QUICK development run** (`--quick`): 1 timed call per scene, small scenes. Not for publication.",
            "",
        ]
    L += [
        f"Generated by `{s.command}` on {r['date']} (took {r['took_s'] / 60:.1f} min). Every number below comes "
        "from this one run on this one machine; rerun `make bench` rather than editing by hand.",
        "",
        "## Setup",
        "",
        f"- **Machine**: {m['cpu']}; {m['cpu_count']} logical CPUs"
        + (f" ({m['affinity']} usable)" if m["affinity"] and m["affinity"] != m["cpu_count"] else "")
        + (f", cgroup quota {m['cgroup_cpu_quota']} CPUs" if m["cgroup_cpu_quota"] else "")
        + f", {m['memory_gb']} GB RAM; {m['platform']}.",
        f"- **Load average** (1 min) before / after: {r['load_before']:.2f} / {r['load_after']:.2f}"
        + (
            " -- **the machine was busy: timings are contaminated**"
            if max(r["load_before"], r["load_after"]) > 0.5 * (m["cpu_count"] or 1)
            else ""
        )
        + ".",
        f"- **Versions**: onnxruntime {v['onnxruntime']}, torch {v['torch']}, ultralytics {v['ultralytics']}, "
        f"sahi {v['sahi']}, numpy {v['numpy']}, rasterio {v['rasterio']} (GDAL {v['GDAL']}), shapely "
        f"{v['shapely']}, opencv {v['opencv-python']}, Python {v['python']}; repository at {m['commit']}.",
        f"- **Weights**: ours {file_info(s.onnx)}, exported from {file_info(s.pt)}, which SAHI runs.",
        f"- **Tiling, both sides**: {s.tile} px tiles (SAHI slices), overlap {s.overlap}; our batch {s.batch} tiles "
        f"per model call; operating confidence {s.conf} on both sides (SAHI's own default is 0.3); each tool's "
        "own within-tile NMS defaults (ours IoU 0.6, Ultralytics 0.7).",
        f"- **Threads**: ours: onnxruntime intra-op {_threads_ours(r)}, inter-op 1, plus one read-ahead thread. "
        f"SAHI default: torch threads as Ultralytics leaves them ({_threads_sahi(r, 'sahi')}). SAHI "
        f"{s.sahi_threads} threads: `torch.set_num_threads({s.sahi_threads})` after loading and again after the "
        f"warm-up call ({_threads_sahi(r, 'sahi_threads')}). Thread variables ({', '.join(THREAD_ENV)}) are "
        "removed from every measurement's environment.",
        f"- **Timing**: each side and scene in a fresh process: load, one warm-up call on the scene, then "
        f"{s.repeats} timed call{'s' if s.repeats > 1 else ''}; the **median** is reported "
        f"(min in the JSON). A call is the whole user-facing function on the image file: read/decode, tiling, "
        "model, decoding, merging. Peak RSS is the process's `ru_maxrss` at the end of the timed calls "
        "(imports, model and warm-up included).",
        "",
    ]
    # ---- (a)
    if a:
        L += ["## (a) Our ONNX path vs SAHI 0.12 + Ultralytics (CPU)", ""]
        has_sahi = any("sahi" in a.get(sc.name, {}) for sc in scenes)
        head = ["scene", "size (MP)", "tiles", "ours s", "ours MP/s"]
        if has_sahi:
            head += [
                "SAHI default s",
                "SAHI default MP/s",
                f"SAHI {s.sahi_threads}t s",
                f"SAHI {s.sahi_threads}t MP/s",
                "SAHI default / ours",
                f"SAHI {s.sahi_threads}t / ours",
            ]
        rows = []
        tot = {"mp": 0.0, "ours": 0.0, "sahi": 0.0, "sahi_threads": 0.0}
        for sc in scenes:
            row = a.get(sc.name)
            if not row:
                continue
            o = row["ours"]
            name = f"**{sc.name}**" if sc.headline else sc.name
            cells = [
                name,
                f"{sc.width}x{sc.height} ({sc.mpix:.2f})",
                str(o["tiles"]),
                _s(o["median"]),
                f"{sc.mpix / o['median']:.2f}",
            ]
            if has_sahi:
                sd, st = row["sahi"], row["sahi_threads"]
                cells += [
                    _s(sd["median"]),
                    f"{sc.mpix / sd['median']:.2f}",
                    _s(st["median"]),
                    f"{sc.mpix / st['median']:.2f}",
                    _ratio(sd["median"], o["median"]),
                    _ratio(st["median"], o["median"]),
                ]
            rows.append(cells)
            if not sc.headline:
                tot["mp"] += sc.mpix
                tot["ours"] += o["median"]
                if has_sahi:
                    tot["sahi"] += row["sahi"]["median"]
                    tot["sahi_threads"] += row["sahi_threads"]["median"]
        if tot["ours"] > 0:
            cells = [
                f"total of the {EVAL_SET} scenes",
                f"{tot['mp']:.2f}",
                "",
                _s(tot["ours"]),
                f"{tot['mp'] / tot['ours']:.2f}",
            ]
            if has_sahi:
                cells += [
                    _s(tot["sahi"]),
                    f"{tot['mp'] / tot['sahi']:.2f}",
                    _s(tot["sahi_threads"]),
                    f"{tot['mp'] / tot['sahi_threads']:.2f}",
                    _ratio(tot["sahi"], tot["ours"]),
                    _ratio(tot["sahi_threads"], tot["ours"]),
                ]
            rows.append(cells)
        L += [_table(head, rows), ""]
        L += [
            "Peak resident memory (MB, fresh process per side and scene) and detections at the operating threshold:",
            "",
        ]
        head = ["scene", "ours peak", "ours after load"]
        if has_sahi:
            head += ["SAHI default peak", "SAHI after load", f"SAHI {s.sahi_threads}t peak"]
        head += ["ours detections"] + (["SAHI detections"] if has_sahi else [])
        rows = []
        for sc in scenes:
            row = a.get(sc.name)
            if not row:
                continue
            o = row["ours"]
            cells = [sc.name, _mb(o["peak_rss"]), _mb(o["rss_after_load"])]
            if has_sahi:
                cells += [
                    _mb(row["sahi"]["peak_rss"]),
                    _mb(row["sahi"]["rss_after_load"]),
                    _mb(row["sahi_threads"]["peak_rss"]),
                ]
            cells += [str(o["n_dets"])] + ([str(row["sahi"]["n_dets"])] if has_sahi else [])
            rows.append(cells)
        L += [_table(head, rows), ""]
        notes = [sc for sc in scenes if sc.note]
        for sc in notes:
            L += [f"- **{sc.name}**: {sc.note}."]
        if has_sahi:
            any_sahi = next(a[sc.name]["sahi"] for sc in scenes if sc.name in a and "sahi" in a[sc.name])
            L += [
                f"- SAHI default = `get_sliced_prediction(slice {s.tile}, overlap {s.overlap})` with its defaults: "
                "`perform_standard_pred=True` adds a whole-image pass (downscaled to the model input) on top of the "
                "slices of every scene larger than one slice; SAHI forces plain NMS (axis-aligned boxes, its IOS "
                "metric, threshold 0.5) to merge OBB predictions. Ultralytics letterboxes each slice to "
                f"imgsz {any_sahi.get('imgsz')}.",
                f"- torch threads in the SAHI default process: {_threads_sahi(r, 'sahi', detail=True)}. Ultralytics' "
                "first prediction runs `select_device()`, which calls `torch.set_num_threads(cpu_count - 1)`: a "
                "count set right after loading is undone by the first call, so the two-thread row sets it again "
                "after the warm-up call and checks it before the timed calls.",
                "- torch was imported by our side's process: "
                + (
                    "yes"
                    if any(a[sc.name]["ours"].get("torch_imported") for sc in scenes if sc.name in a)
                    else "no"
                )
                + ".",
                "",
            ]
        acc = a.get("_accuracy") or {}
        if acc:
            L += ["### Accuracy (same labels, same metric, both sides)", ""]
            L += [
                f"AP50 per class (COCO 101-point, boxes compared as `{r.get('iou_type', 'aabb')}`: enclosing "
                f"axis-aligned boxes) from a separate pass at conf {s.ap_conf} on each side (SAHI then switches its "
                f"merge to NMS/IOU by itself, as it does below conf 0.1); precision / recall at conf {s.conf} "
                "from the timed calls' own detections. Classes without ground truth in the scenes are left out.",
                "",
            ]
            head = ["scenes", "class", "GT", "AP50 ours", "AP50 SAHI", "P / R ours", "P / R SAHI"]
            rows = []
            for label, res in acc.items():
                ours_ap = (res["ours"].get("ap") or {}).get("classes", {})
                sahi_ap = (res["sahi"].get("ap") or {}).get("classes", {})
                ours_op = res["ours"]["operating"]["classes"]
                sahi_op = res["sahi"]["operating"]["classes"]
                for c in ours_op:
                    rows.append(
                        [
                            label,
                            c,
                            str(ours_op[c]["n_gt"]["all"]),
                            _ap((ours_ap.get(c) or {}).get("ap50", {}).get("all")),
                            _ap((sahi_ap.get(c) or {}).get("ap50", {}).get("all")),
                            f"{_ap(ours_op[c]['precision'])} / {_ap(ours_op[c]['recall'])}",
                            f"{_ap(sahi_op.get(c, {}).get('precision'))} / {_ap(sahi_op.get(c, {}).get('recall'))}",
                        ]
                    )
                rows.append(
                    [
                        label,
                        "**mAP50**",
                        "",
                        f"**{_ap((res['ours'].get('ap') or {}).get('map50'))}**",
                        f"**{_ap((res['sahi'].get('ap') or {}).get('map50'))}**",
                        "",
                        "",
                    ]
                )
            L += [_table(head, rows, "llrrrrr"), ""]
    # ---- (b)
    if b:
        fl = b["floor"]
        L += ["## (b) Pipeline overhead over the model-only floor", ""]
        per = ", ".join(
            f"batch {k}: {_s(x['median'])} s per call = {x['per_tile_median'] * 1000:.0f} ms per tile"
            for k, x in sorted(fl["batches"].items(), key=lambda kv: int(kv[0]))
        )
        L += [
            f"Bare `onnxruntime` `session.run` on real {s.tile} px tiles of {b['probe']}, with the session the "
            f"pipeline opens (`open_session(threads=None)`: intra-op {fl['intra_op_threads']}, inter-op "
            f"{fl['inter_op_threads']}, {fl['providers'][0]}), input already normalised, median of "
            f"{len(next(iter(fl['batches'].values()))['times'])} calls after one warm-up per batch size: {per}.",
            "The floor of a scene is the sum of those call times for the batches the pipeline makes of its tiles "
            f"(batches of {s.batch}, the rest in one last batch); the columns `tiles x batch 1` and "
            f"`tiles x batch {s.batch}` show the per-tile cost at either batch size. Overhead = pipeline median / "
            "floor - 1: reading and decoding the image, normalisation, decoding the outputs, NMS, moving to "
            "scene pixels and merging.",
            "",
        ]
        head = [
            "scene",
            "tiles",
            "batches",
            "tiles x batch 1 s",
            f"tiles x batch {s.batch} s",
            "floor s",
            "pipeline s",
            "overhead",
        ]
        rows = []
        for sc in scenes:
            x = b["scenes"].get(sc.name)
            if not x:
                continue
            rows.append(
                [
                    f"**{sc.name}**" if sc.headline else sc.name,
                    str(x["tiles"]),
                    "+".join(map(str, x["batches"])),
                    _s(x["floor_b1"]),
                    _s(x["floor_bB"]),
                    _s(x["floor"]),
                    _s(x["pipeline"]),
                    "-" if x["overhead"] is None else f"{x['overhead'] * 100:+.1f}%",
                ]
            )
        L += [_table(head, rows), ""]
    # ---- (c)
    if c:
        L += ["## (c) Memory and throughput on large GeoTIFFs", ""]
        L += [
            "Generated 3-band uint8 GeoTIFFs, internally tiled 512 x 512, DEFLATE, textured with randomly placed, "
            f"rotated and flipped 512 px patches of the {EVAL_SET} imagery (cached in `{_rel(s.cache)}`, not "
            f"committed). One fresh process per file: `Detector.load` (ONNX), one warm-up model call on a batch "
            f"of {s.batch} blank tiles, then one `Detector.predict(file, tile={s.tile}, overlap={s.overlap}, "
            f"batch={s.batch})`. Peak = `ru_maxrss` of the process (`after warm-up` = the peak before predict).",
            "",
        ]
        head = [
            "side (px)",
            "MP",
            "file MB",
            "tiles",
            "seconds",
            "MP/s",
            "s per tile",
            "peak RSS MB",
            "after warm-up MB",
            "detections",
        ]
        rows = []
        for x in c.values():
            mp = x["width"] * x["height"] / 1e6
            rows.append(
                [
                    f"{x['width']} x {x['height']}",
                    f"{mp:.0f}",
                    f"{x['file_mb']:.0f}",
                    str(x["tiles"]),
                    _s(x["seconds"]),
                    f"{mp / x['seconds']:.2f}",
                    f"{x['seconds'] / max(x['tiles_run'], 1):.3f}",
                    _mb(x["peak_rss"]),
                    _mb(x["peak_rss_ready"]),
                    str(x["n_dets"]),
                ]
            )
        L += [_table(head, rows), ""]
    # ---- targets
    L += ["## Targets", ""] + [f"- {t}" for t in targets(s, r)] + [""]
    return "\n".join(L)


def _threads_ours(r: dict[str, Any]) -> str:
    for row in (r.get("a") or {}).values():
        if isinstance(row, dict) and "ours" in row and row["ours"].get("intra_op_threads"):
            return str(row["ours"]["intra_op_threads"])
    fl = (r.get("b") or {}).get("floor")
    return str(fl["intra_op_threads"]) if fl else f"os.cpu_count() = {os.cpu_count()}"


def _threads_sahi(r: dict[str, Any], key: str, detail: bool = False) -> str:
    seen = [
        row[key]["torch_threads"]
        for row in (r.get("a") or {}).values()
        if isinstance(row, dict) and key in row
    ]
    if not seen:
        return "not measured"
    t = seen[0]
    if detail:
        return (
            f"{t['after_import']} after import, {t['after_load']} after loading the model, "
            f"{t['after_first_call']} after the first prediction, {t['timed_calls']} during the timed calls"
        )
    return f"{t['timed_calls']} during the timed calls"


def targets(s: Settings, r: dict[str, Any]) -> list[str]:
    """Pass/fail lines for the targets the numbers can answer."""
    out = []
    a, b, c = r.get("a") or {}, r.get("b"), r.get("c")
    head = next((sc for sc in r.get("_scenes", []) if sc.headline), None)

    def mark(ok: bool) -> str:
        return "**met**" if ok else "**NOT met**"

    if head and head.name in a and "sahi" in a[head.name]:
        row = a[head.name]
        d = row["sahi"]["median"] / row["ours"]["median"]
        t = row["sahi_threads"]["median"] / row["ours"]["median"]
        out.append(f"At least 2x faster than SAHI's default on the headline scene: {d:.2f}x, {mark(d >= 2)}.")
        out.append(
            f"Faster than SAHI with {s.sahi_threads} torch threads on the headline scene: {t:.2f}x, {mark(t > 1)}."
        )
    acc = a.get("_accuracy") or {}
    for label, res in acc.items():
        ours = (res["ours"].get("ap") or {}).get("map50")
        sahi = (res["sahi"].get("ap") or {}).get("map50")
        if ours is not None and sahi is not None:
            out.append(
                f"mAP50 equal or better than SAHI on {label}: {ours:.3f} vs {sahi:.3f}, {mark(ours >= sahi)}."
            )
    if b:
        worst = [(n, x["overhead"]) for n, x in b["scenes"].items() if x["overhead"] is not None]
        if head and head.name in b["scenes"] and b["scenes"][head.name]["overhead"] is not None:
            o = b["scenes"][head.name]["overhead"]
            out.append(f"Pipeline overhead <= 10% on the headline scene: {o * 100:+.1f}%, {mark(o <= 0.10)}.")
        if worst:
            n, o = max(worst, key=lambda kv: kv[1])
            out.append(f"Largest overhead of any scene: {o * 100:+.1f}% ({n}).")
    if c:
        peaks = {side: x["peak_rss"] for side, x in c.items()}
        top = max(peaks.values())
        out.append(
            f"Peak RSS <= 1.5 GB on every generated scene: max {top / 2**30:.2f} GB, {mark(top <= MEMORY_TARGET)}."
        )
        if len(peaks) > 1:
            sides = sorted(peaks, key=int)
            lo, hi = peaks[sides[0]], peaks[sides[-1]]
            g = hi / lo - 1
            out.append(
                f"Memory flat as the scene grows ({sides[0]} -> {sides[-1]} px, "
                f"{(int(sides[-1]) / int(sides[0])) ** 2:.0f}x the pixels): peak {_mb(lo)} -> {_mb(hi)} MB "
                f"({g * 100:+.1f}%; flat = at most {FLAT_GROWTH * 100:.0f}%), {mark(g <= FLAT_GROWTH)}."
            )
    if s.quick:
        out.append("Quick run: none of these verdicts counts; run `make bench` on an idle machine.")
    return out


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> Settings:
    p = argparse.ArgumentParser(
        prog="bench.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from detector.tiling import TileConfig

    default_data = os.environ.get("DETECTOR_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    p.add_argument("--data", default=default_data, help="shared data root (holds dota/demo)")
    p.add_argument(
        "--out",
        default=None,
        help="report path (default BENCHMARKS.md; --quick: build/bench/BENCHMARKS.quick.md)",
    )
    p.add_argument("--json", default=None, help="raw results (default: CACHE/bench.json, or .quick.json)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="generated scenes, detections and worker logs")
    p.add_argument("--onnx", default=str(DEFAULT_ONNX), help="our model (ONNX)")
    p.add_argument(
        "--pt",
        default=str(DEFAULT_PT),
        help="the Ultralytics checkpoint the ONNX file was exported from (SAHI side)",
    )
    p.add_argument("--tile", type=int, default=1024, help="tile / slice size in pixels, both sides")
    p.add_argument("--overlap", type=float, default=0.2, help="tile overlap fraction, both sides")
    p.add_argument(
        "--batch", type=int, default=TileConfig().batch, help="our tiles per model call (TileConfig default)"
    )
    p.add_argument(
        "--conf", type=float, default=0.25, help="operating confidence of the timed calls, both sides"
    )
    p.add_argument(
        "--ap-conf",
        default=None,
        help="confidence of the accuracy pass (default: conf_eval of configs/eval.yaml); 'none' skips it",
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="timed calls per scene after one warm-up (median reported)"
    )
    p.add_argument(
        "--scenes", default=None, help="comma-separated demo scene names (default: all of dota/demo)"
    )
    p.add_argument(
        "--headline", type=int, default=2560, help="side of the headline mosaic scene; 0 leaves it out"
    )
    p.add_argument(
        "--memory-sides", default="5000,10000,20000", help="sides in px of the generated GeoTIFFs of (c)"
    )
    p.add_argument("--sections", default="a,b,c", help="a: vs SAHI, b: overhead over the floor, c: memory")
    p.add_argument(
        "--sahi-threads",
        type=int,
        default=None,
        help="torch threads of the second SAHI row (default: os.cpu_count())",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="development run (< 2 min on 2 cores): 1 timed call, the 1024 px demo chip + headline, memory 2000,4000",
    )
    p.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds before a measurement process is killed"
    )
    a = p.parse_args(argv)

    sections = tuple(x.strip() for x in a.sections.split(",") if x.strip())
    bad = [x for x in sections if x not in SECTIONS]
    if bad or not sections:
        p.error(f"--sections: expected a comma-separated subset of {','.join(SECTIONS)}, got {a.sections!r}")
    cache = Path(a.cache).resolve()
    if a.quick:
        out = Path(a.out) if a.out else cache / "BENCHMARKS.quick.md"
        if out.resolve() == (ROOT / "BENCHMARKS.md").resolve():
            p.error("--quick numbers are not publishable: write them anywhere but BENCHMARKS.md")
    else:
        out = Path(a.out) if a.out else ROOT / "BENCHMARKS.md"
    sides_arg = a.memory_sides if not (a.quick and a.memory_sides == "5000,10000,20000") else "2000,4000"
    try:
        sides = [int(x) for x in sides_arg.split(",") if x.strip()]
    except ValueError:
        p.error(f"--memory-sides: expected comma-separated integers, got {sides_arg!r}")
    if any(x < 1 for x in sides):
        p.error(f"--memory-sides must be positive, got {sides_arg!r}")
    if a.ap_conf is None:
        from detector.evaluate import load_eval_config

        ap_conf: float | None = float(load_eval_config().get("conf_eval", 0.001))
    elif str(a.ap_conf).lower() == "none":
        ap_conf = None
    else:
        ap_conf = float(a.ap_conf)
    scenes = [x.strip() for x in a.scenes.split(",") if x.strip()] if a.scenes else None
    if a.quick and scenes is None:
        scenes = ["P1478__1__853___962"]
    repeats = 1 if a.quick and a.repeats == 3 else a.repeats
    if repeats < 1 or a.tile < 32 or not 0 <= a.overlap < 1 or a.batch < 1:
        p.error("--repeats, --tile, --batch must be positive and --overlap in [0, 1)")
    json_out = Path(a.json) if a.json else cache / ("bench.quick.json" if a.quick else "bench.json")
    return Settings(
        data=Path(a.data).resolve(),
        out=out,
        cache=cache,
        onnx=Path(a.onnx).resolve(),
        pt=Path(a.pt).resolve(),
        tile=a.tile,
        overlap=a.overlap,
        batch=a.batch,
        conf=a.conf,
        ap_conf=ap_conf,
        repeats=repeats,
        scenes=scenes,
        headline=a.headline,
        memory_sides=sides,
        sections=sections,
        sahi_threads=a.sahi_threads or os.cpu_count() or 1,
        quick=a.quick,
        timeout=a.timeout,
        json_out=json_out,
        command=" ".join(
            shlex.quote(x)
            for x in [Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])]
        ),
    )


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    t_start = time.perf_counter()
    for w, why in ((s.onnx, "ours"), (s.pt, "SAHI")):
        if not w.is_file() and (why == "ours" or "a" in s.sections):
            raise BenchError(
                f"{w} not found ({why} side): run `make setup` to fetch and export the pretrained weights"
            )
    load_before = os.getloadavg()[0]
    if load_before > 0.5 * (os.cpu_count() or 1):
        log(
            f"warning: load average {load_before:.2f} on {os.cpu_count()} CPUs: the timings will be contaminated"
        )
    r: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }
    r["load_before"] = load_before
    scenes: list[BenchScene] = []
    spec: dict[str, Any] = {}
    if "a" in s.sections or "b" in s.sections:
        scenes, spec = comparison_scenes(s)
        r["iou_type"] = spec.get("iou_type")
        r["a"] = section_a(s, scenes, spec, with_sahi="a" in s.sections)
    if "b" in s.sections:
        r["b"] = section_b(s, scenes, r["a"])
    if "c" in s.sections:
        images = None
        try:
            from detector.evaluate import load_eval_set

            images, _ = load_eval_set(EVAL_SET, s.data)
        except ValueError as e:
            log(f"memory: {e}; texturing the generated scenes procedurally")
        r["c"] = section_c(s, images)
    r["load_after"] = os.getloadavg()[0]
    r["took_s"] = time.perf_counter() - t_start
    r["_scenes"] = scenes
    text = render(s, r)
    write_atomic(s.out, text)
    raw = {k: v for k, v in r.items() if k != "_scenes"}
    raw["scenes"] = [
        {
            "name": x.name,
            "path": str(x.path),
            "width": x.width,
            "height": x.height,
            "headline": x.headline,
            "note": x.note,
        }
        for x in scenes
    ]
    raw["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(s).items() if k != "results"}
    write_atomic(s.json_out, json.dumps(raw, indent=1, default=str))
    log(f"wrote {s.out} and {s.json_out} in {r['took_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
